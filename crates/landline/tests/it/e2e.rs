//! End to end: the mock API over TCP → landline → a local file or a real S3 server, and the
//! object read back record by record.

use crate::harness::{
    INGEST_DATE, Style, data, gunzip, mock, pipeline, pipeline_text, run, verify,
};
use crate::s3;

/// Every pagination style, into a local file: exactly the records served, in order.
#[tokio::test]
async fn every_pagination_style_lands_exactly_the_records_served() {
    let data = data(537);
    let server = mock(data.clone(), |_| {}).await;
    for style in Style::ALL {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("date={ingest_date}/variants.jsonl.gz");
        let page = if style == Style::None { 1000 } else { 50 };
        let text = pipeline_text(
            &style.source(&server.base_url(), page),
            &format!("url = \"{}\"", target.display()),
        );
        let report = run(&pipeline(&text), vec![])
            .await
            .unwrap_or_else(|e| panic!("{style:?}: {e}"));
        let path = dir
            .path()
            .join(format!("date={INGEST_DATE}/variants.jsonl.gz"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{style:?}: {e}"));
        verify(&gunzip(&bytes), &data, &report, 1);
        assert_eq!(report.objects, [format!("file://{}", path.display())]);
        assert_eq!(report.bytes_written, bytes.len() as u64, "{style:?}");
        let pages = if style == Style::None {
            1
        } else {
            537u64.div_ceil(50)
        };
        // offset/page end with a short page; the others know the last page from the cursor.
        assert_eq!(report.pages, pages, "{style:?}");
        // No staging files are left beside the object.
        let entries: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("readdir")
            .collect();
        assert_eq!(entries.len(), 1, "{style:?}: {entries:?}");
    }
    server.shutdown().await;
}

/// A page size that divides the total exactly: offset/page paging needs the empty page after.
#[tokio::test]
async fn offset_paging_stops_at_the_empty_page() {
    let data = data(100);
    let server = mock(data.clone(), |_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("out.jsonl.gz");
    let text = pipeline_text(
        &Style::Offset.source(&server.base_url(), 25),
        &format!("url = \"{}\"", target.display()),
    );
    let report = run(&pipeline(&text), vec![]).await.expect("run");
    assert_eq!(report.pages, 5);
    verify(
        &gunzip(&std::fs::read(&target).expect("object")),
        &data,
        &report,
        7,
    );
}

/// An empty source writes no object at all.
#[tokio::test]
async fn empty_source_writes_no_object() {
    let server = mock(data(0), |_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("out.jsonl.gz");
    let text = pipeline_text(
        &Style::Offset.source(&server.base_url(), 25),
        &format!("url = \"{}\"", target.display()),
    );
    let report = run(&pipeline(&text), vec![]).await.expect("run");
    assert_eq!(report.records, 0);
    assert!(report.objects.is_empty());
    assert!(!target.exists());
    // Only the run's manifest (records: 0, no object), for the next run to compare with.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["_landline"]);
    let manifest = std::fs::read(report.manifest.expect("a manifest").replace("file://", ""))
        .expect("the manifest");
    let manifest = landline::manifest::parse(&manifest, "manifest").expect("a manifest");
    assert_eq!((manifest.records, manifest.object), (0, None));
}

/// Token paging into both S3 servers, with enough data for several 5 MiB parts.
#[tokio::test]
async fn multipart_object_round_trips_through_s3() {
    let data = data(11_000);
    let server = mock(data.clone(), |_| {}).await;
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("multipart");
        let key = format!("{prefix}/date={INGEST_DATE}/variants.jsonl.gz");
        let text = pipeline_text(
            &Style::Token.source(&server.base_url(), 200),
            &format!(
                "url = \"s3://{}/{prefix}/date={{ingest_date}}/variants.jsonl.gz\"\npart_size_bytes = 5242880",
                s3.bucket
            ),
        );
        let report = run(&pipeline(&text), s3.env())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        assert!(report.parts >= 3, "{}: {} parts", s3.name, report.parts);
        assert_eq!(report.objects, [format!("s3://{}/{key}", s3.bucket)]);
        let bytes = s3.get_object(&key).await.expect("object exists");
        assert_eq!(bytes.len() as u64, report.bytes_written, "{}", s3.name);
        verify(&gunzip(&bytes), &data, &report, 97);
        if s3.supports_list_multipart_uploads {
            assert!(s3.list_multipart_uploads(&prefix).await.is_empty());
        }
    }
    server.shutdown().await;
}

/// A small object (under one part, but ~9 compression blocks deflated in parallel) through
/// S3: one gzip member, read whole by flate2's single-member `GzDecoder` and by Python's
/// `gzip` module.
#[tokio::test]
async fn parallel_gzip_is_one_member_for_flate2_and_python() {
    let data = data(300);
    let server = mock(data.clone(), |_| {}).await;
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("small");
        let text = pipeline_text(
            &Style::Token.source(&server.base_url(), 100),
            &format!("url = \"s3://{}/{prefix}/v.jsonl.gz\"", s3.bucket),
        );
        let report = run(&pipeline(&text), s3.env()).await.expect("run");
        assert_eq!(report.parts, 1);
        let bytes = s3
            .get_object(&format!("{prefix}/v.jsonl.gz"))
            .await
            .expect("object");
        verify(&gunzip(&bytes), &data, &report, 1);
        let lines = python_gzip_line_count(&bytes);
        assert_eq!(lines, 300, "{}", s3.name);
    }
    server.shutdown().await;
}

fn python_gzip_line_count(gz: &[u8]) -> u64 {
    let python = std::env::var("LANDLINE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("o.jsonl.gz");
    std::fs::write(&path, gz).expect("write");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import gzip, json, sys\nn = 0\nfor line in gzip.open(sys.argv[1], 'rt'):\n    json.loads(line); n += 1\nprint(n)",
        ])
        .arg(&path)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}
