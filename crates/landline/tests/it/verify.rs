//! `landline verify` against the real S3 servers: an object a run landed matches the manifest
//! found in the pipeline's state location; corrupted, truncated and shortened copies of it do
//! not, and the error names each difference.

use std::collections::BTreeMap;
use std::io::Write as _;

use landline::RunOptions;
use landline::verify::{GzipFault, Problem, VerifyError, VerifyOptions};

use crate::harness::{INGEST_DATE, Style, data, gunzip, mock, pipeline, pipeline_text};
use crate::s3;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_landed_object_matches_its_manifest_and_a_corrupted_copy_does_not() {
    let server = mock(data(900), |_| {}).await;
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("verify");
        let b = &s3.bucket;
        let text = pipeline_text(
            &Style::Token.source(&server.base_url(), 50),
            &format!(
                "url = \"s3://{b}/{prefix}/date={{ingest_date}}/variants.jsonl.gz\"\n\
                 [state]\nurl = \"s3://{b}/{prefix}/_landline/\"\n"
            ),
        );
        let pipeline = pipeline(&text);
        let options = RunOptions {
            ingest_date: Some(INGEST_DATE.parse().expect("date")),
            store_env: s3.env().into(),
            ..RunOptions::default()
        };
        let report = landline::run(&pipeline, options, std::future::pending())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        let object_url = report.objects[0].clone();

        // The manifest where the run wrote it.
        let at = landline::pipeline::manifest_location(
            &pipeline,
            Some(INGEST_DATE.parse().expect("date")),
            &BTreeMap::new(),
        )
        .expect("manifest location");
        assert_eq!(report.manifest.as_deref(), Some(at.as_str()), "{}", s3.name);
        let manifest = landline::manifest::read(&at, &Default::default(), s3.env())
            .await
            .expect("read")
            .expect("the manifest");

        let options = VerifyOptions::default();
        let verified = landline::verify::verify(&object_url, &options, s3.env(), Some(&manifest))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        assert_eq!(verified.records, 900);
        assert_eq!(verified.gzip_members, 1);
        assert_eq!(report.sha256.as_deref(), Some(verified.sha256.as_str()));
        assert_eq!(verified.size, report.bytes_written);
        assert!(verified.compared_with_manifest);

        // Copies that are not what the manifest describes.
        let key = format!("{prefix}/date={INGEST_DATE}/variants.jsonl.gz");
        let object = s3.get_object(&key).await.expect("the object");
        let mut flipped = object.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x20;
        let truncated = object[..object.len() - 100].to_vec();
        let lines = gunzip(&object);
        let last = lines[..lines.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .expect("lines");
        let shortened = gzip(&lines[..=last]);
        for (name, bytes) in [
            ("flipped", flipped),
            ("truncated", truncated),
            ("shortened", shortened),
        ] {
            let copy = format!("{prefix}/copies/{name}.jsonl.gz");
            s3.put_object(&copy, bytes.clone()).await;
            let url = format!("s3://{b}/{copy}");
            let e = landline::verify::verify(&url, &options, s3.env(), Some(&manifest))
                .await
                .expect_err(name);
            let text = e.to_string();
            let VerifyError::Mismatch { problems, .. } = e else {
                panic!("{}: {name}: {text}", s3.name);
            };
            assert!(text.contains(&url), "{text}");
            assert!(
                problems.iter().any(|p| matches!(p, Problem::Sha256 { .. })),
                "{}: {name}: {text}",
                s3.name
            );
            match name {
                "flipped" => assert!(
                    problems.iter().any(|p| matches!(
                        p,
                        Problem::Gzip {
                            fault: GzipFault::Deflate { .. } | GzipFault::Crc { .. },
                            ..
                        }
                    )),
                    "{text}"
                ),
                "truncated" => {
                    assert!(text.contains("truncated"), "{text}");
                    assert!(
                        text.contains(&format!(
                            "size {} != manifest {}",
                            bytes.len(),
                            object.len()
                        )),
                        "{text}"
                    );
                }
                _ => assert!(
                    text.contains("899 records (lines) != manifest 900"),
                    "{text}"
                ),
            }
        }
    }
    server.shutdown().await;
}
