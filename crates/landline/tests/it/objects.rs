//! Objects of a chosen size: `{part}` in the key, `[sink] max_object_records` and
//! `max_object_bytes`, against moto and s3s-fs. Every record is compared with what the API
//! served, across the objects.

use landline::RunError;
use landline::compress::Compression;
use landline::manifest::Manifest;
use landline::verify::VerifyOptions;

use crate::harness::{Style, data, mock, pipeline, pipeline_text, run, verify};
use crate::s3::{self, S3Server};

/// Retries that give up at once: a failing API fails the run in milliseconds.
const FAST_RETRY: &str =
    "[source.retry]\nmax_attempts = 3\ninitial_backoff_ms = 1\nmax_backoff_ms = 2\n";

/// The JSON Lines of the object at `key`, in `compression`.
async fn jsonl(s3: &S3Server, key: &str, compression: Compression) -> Vec<u8> {
    let bytes = s3
        .get_object(key)
        .await
        .unwrap_or_else(|| panic!("{}: no object at {key}", s3.name));
    match compression {
        Compression::Gzip => crate::harness::gunzip(&bytes),
        Compression::Zstd => zstd::stream::decode_all(&bytes[..]).expect("zstd decodes"),
        Compression::None => bytes,
    }
}

fn key_of(s3: &S3Server, url: &str) -> String {
    url.strip_prefix(&format!("s3://{}/", s3.bucket))
        .unwrap_or_else(|| panic!("{url} is not in {}", s3.bucket))
        .to_owned()
}

fn lines(jsonl: &[u8]) -> u64 {
    jsonl.iter().filter(|&&b| b == b'\n').count() as u64
}

async fn manifest_of(s3: &S3Server, url: &str) -> Manifest {
    landline::manifest::read(url, &Default::default(), s3.env())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name))
        .unwrap_or_else(|| panic!("{}: no manifest at {url}", s3.name))
}

#[tokio::test]
async fn records_are_cut_into_numbered_objects_and_a_shorter_rerun_replaces_the_set() {
    for s3 in s3::servers() {
        for (compression, ext) in [
            (Compression::Zstd, "jsonl.zst"),
            (Compression::Gzip, "jsonl.gz"),
        ] {
            let prefix = s3.unique_prefix("objects");
            // The run state goes under the test's own prefix: other tests' manifests share
            // the pipeline's name and date.
            let sink = format!(
                "url = \"s3://{b}/{prefix}/date={{ingest_date}}/part-{{part}}.{ext}\"\n\
                 max_object_records = 300\n[state]\nurl = \"s3://{b}/{prefix}/_landline/\"\n",
                b = s3.bucket
            );
            let total = 1_050;
            let served = data(total);
            let server = mock(served.clone(), |_| {}).await;
            let text = pipeline_text(&Style::Token.source(&server.base_url(), 100), &sink);
            let report = run(&pipeline(&text), s3.env())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
            assert_eq!(report.compression, compression);
            assert_eq!(report.objects.len(), 4, "{}: {:?}", s3.name, report.objects);
            let mut all = Vec::new();
            for (i, url) in report.objects.iter().enumerate() {
                assert!(
                    url.ends_with(&format!("/date=2026-11-25/part-{:05}.{ext}", i + 1)),
                    "{url}"
                );
                let object = jsonl(&s3, &key_of(&s3, url), compression).await;
                let expected = if i < 3 { 300 } else { 150 };
                assert_eq!(lines(&object), expected, "{}: {url}", s3.name);
                assert_eq!(report.object_details[i].records, expected);
                assert_eq!(
                    report.object_details[i].bytes_uncompressed,
                    object.len() as u64
                );
                all.extend(object);
            }
            // The union is what the API served, record by record, in order.
            verify(&all, &served, &report, 1);
            assert_eq!(
                report.bytes_written,
                report.object_details.iter().map(|o| o.bytes).sum::<u64>()
            );

            // The manifest lists every object, and each one verifies against it.
            let manifest = manifest_of(&s3, report.manifest.as_deref().expect("a manifest")).await;
            assert!(manifest.object.is_none());
            assert_eq!(manifest.objects.len(), 4);
            assert_eq!(manifest.records, total);
            for url in &report.objects {
                landline::verify::verify(url, &VerifyOptions::default(), s3.env(), Some(&manifest))
                    .await
                    .unwrap_or_else(|e| panic!("{}: verify {url}: {e}", s3.name));
            }
            let listed = s3.list_keys(&format!("{prefix}/date=2026-11-25/")).await;
            assert_eq!(listed.len(), 4, "{listed:?}");
            if s3.supports_list_multipart_uploads {
                assert!(s3.list_multipart_uploads(&prefix).await.is_empty());
            }

            // The same date again with fewer records: two objects, and the two the first run
            // wrote after them are deleted once the new ones have landed.
            let fewer = data(450);
            let server = mock(fewer.clone(), |_| {}).await;
            let text = pipeline_text(&Style::Token.source(&server.base_url(), 100), &sink);
            let again = run(&pipeline(&text), s3.env())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
            assert_eq!(again.objects.len(), 2);
            let summary = again.to_string();
            assert!(
                summary.contains("wrote 2 objects: ")
                    && summary.contains("and deleted 2 left by a longer earlier run"),
                "{summary}"
            );
            assert_eq!(
                again.stale_objects_deleted.len(),
                2,
                "{:?}",
                again.stale_objects_deleted
            );
            assert!(again.stale_objects_deleted[0].ends_with(&format!("part-00003.{ext}")));
            let listed = s3.list_keys(&format!("{prefix}/date=2026-11-25/")).await;
            assert_eq!(listed.len(), 2, "{}: {listed:?}", s3.name);
            let mut all = Vec::new();
            for url in &again.objects {
                all.extend(jsonl(&s3, &key_of(&s3, url), compression).await);
            }
            verify(&all, &fewer, &again, 1);
        }
    }
}

#[tokio::test]
async fn a_failure_midway_aborts_the_open_object_and_names_those_completed() {
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("objects-fail");
        // 100 records a page, 150 an object, page 9 fails: objects 1 to 4 or 5 have ended by
        // then (the last of them may still be on its way when the run stops, and is then
        // aborted with the open one).
        let server = mock(data(3_000), |c| c.faults.error_after_pages = Some(8)).await;
        let text = pipeline_text(
            &format!(
                "{}{FAST_RETRY}",
                Style::Token.source(&server.base_url(), 100)
            ),
            &format!(
                "url = \"s3://{}/{prefix}/part-{{part}}.jsonl\"\nmax_object_records = 150\n",
                s3.bucket
            ),
        );
        let err = run(&pipeline(&text), s3.env())
            .await
            .expect_err("the run must fail");
        let message = err.to_string();
        let RunError::ObjectsLeft { cause, objects } = err else {
            panic!("{}: {message}", s3.name);
        };
        assert!(cause.to_string().contains("500"), "{message}");
        assert!((3..=5).contains(&objects.len()), "{message}");
        assert!(
            message.contains(&format!(
                "the {} objects completed before it stay",
                objects.len()
            )),
            "{message}"
        );
        // What the error names is exactly what is in the store, each object whole.
        let listed = s3.list_keys(&prefix).await;
        assert_eq!(listed.len(), objects.len(), "{}: {listed:?}", s3.name);
        for (i, url) in objects.iter().enumerate() {
            let object = jsonl(&s3, &key_of(&s3, url), Compression::None).await;
            assert_eq!(lines(&object), 150, "{url}");
            assert!(url.ends_with(&format!("part-{:05}.jsonl", i + 1)));
        }
        // The open object's upload was aborted, and nothing else was left.
        if s3.supports_list_multipart_uploads {
            assert!(
                s3.list_multipart_uploads(&prefix).await.is_empty(),
                "{}: uploads left",
                s3.name
            );
        }
    }
}

#[test]
fn limits_need_a_numbered_key() {
    let text = pipeline_text(
        &Style::Token.source("http://127.0.0.1:1", 100),
        "url = \"s3://b/x/v.jsonl.gz\"\nmax_object_records = 10\n",
    );
    let err = landline::PipelineFile::parse(&text, "t.toml")
        .and_then(|f| f.validate(&|_| None))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("sink.url") && err.contains("{part}"), "{err}");
    let text = pipeline_text(
        &Style::Token.source("http://127.0.0.1:1", 100),
        "url = \"s3://b/x/v-{part}.jsonl.gz\"\nmax_object_bytes = 1000\n",
    );
    let err = landline::PipelineFile::parse(&text, "t.toml")
        .and_then(|f| f.validate(&|_| None))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("sink.max_object_bytes"), "{err}");
}
