//! Failures: the run fails loudly, leaves no object and no open upload, and never touches what
//! an earlier run wrote.

use landline::RunError;
use landline::sink::SinkError;
use landline::source::SourceError;

use crate::harness::{Style, data, mock, pipeline, pipeline_text, run};
use crate::s3;

/// Retries quickly so the tests stay fast.
const FAST_RETRY: &str =
    "[source.retry]\nmax_attempts = 3\ninitial_backoff_ms = 1\nmax_backoff_ms = 5\n";

/// An API that answers 500 forever after page 3: non-zero result, no object, no open upload,
/// and the object an earlier run wrote at the same key is untouched.
#[tokio::test]
async fn api_failing_mid_run_leaves_no_object_and_no_upload() {
    for s3 in s3::servers() {
        // A fresh API per server: the fault counts pages served.
        let server = mock(data(3_000), |c| c.faults.error_after_pages = Some(3)).await;
        let prefix = s3.unique_prefix("api-500");
        let key = format!("{prefix}/variants.jsonl.gz");
        s3.put_object(&key, b"earlier run".to_vec()).await;
        let text = pipeline_text(
            &format!(
                "{}{FAST_RETRY}",
                Style::Token.source(&server.base_url(), 100)
            ),
            &format!(
                "url = \"s3://{}/{key}\"\npart_size_bytes = 5242880",
                s3.bucket
            ),
        );
        let err = run(&pipeline(&text), s3.env())
            .await
            .expect_err("the run must fail");
        let message = err.to_string();
        assert!(
            matches!(
                err,
                RunError::Source(SourceError::Status {
                    status: 500,
                    page: 4,
                    attempts: 3,
                    ..
                })
            ),
            "{}: {message}",
            s3.name
        );
        assert!(message.contains("page 4"), "{message}");
        assert!(
            message.contains("/variants?count=100&token=REDACTED"),
            "{message}"
        );
        assert_eq!(
            s3.get_object(&key).await.as_deref(),
            Some(&b"earlier run"[..]),
            "{}",
            s3.name
        );
        assert_eq!(s3.list_keys(&prefix).await, [key.as_str()], "{}", s3.name);
        if s3.supports_list_multipart_uploads {
            assert!(
                s3.list_multipart_uploads(&prefix).await.is_empty(),
                "{}",
                s3.name
            );
        }
        server.shutdown().await;
    }
}

/// Transient 503s with Retry-After are retried and the object is complete.
#[tokio::test]
async fn transient_api_errors_are_retried() {
    let data = data(400);
    let server = mock(data.clone(), |c| {
        c.faults.transient_errors = 2;
        c.faults.retry_after = Some("0".into());
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("out.jsonl.gz");
    let text = pipeline_text(
        &format!(
            "{}{FAST_RETRY}",
            Style::Token.source(&server.base_url(), 100)
        ),
        &format!("url = \"{}\"", target.display()),
    );
    let report = run(&pipeline(&text), vec![])
        .await
        .expect("retries succeed");
    assert_eq!(report.retries, 2 * 4);
    crate::harness::verify(
        &crate::harness::gunzip(&std::fs::read(&target).expect("object")),
        &data,
        &report,
        1,
    );
}

/// A wrong secret key fails at the first request with the store's signature error, before
/// the API has been read.
#[tokio::test]
async fn wrong_secret_key_fails_at_once() {
    for s3 in s3::servers() {
        let server = mock(data(5_000), |_| {}).await;
        let prefix = s3.unique_prefix("bad-secret");
        let mut env = s3.env();
        for (k, v) in &mut env {
            if k == "AWS_SECRET_ACCESS_KEY" {
                *v = "definitely-not-the-secret".into();
            }
        }
        let text = pipeline_text(
            &Style::Token.source(&server.base_url(), 100),
            &format!("url = \"s3://{}/{prefix}/v.jsonl.gz\"", s3.bucket),
        );
        let err = run(&pipeline(&text), env).await.expect_err("must fail");
        let message = err.to_string();
        assert!(
            matches!(err, RunError::Sink(SinkError::Create { .. })),
            "{}: {message}",
            s3.name
        );
        assert!(
            message.contains("SignatureDoesNotMatch") || message.contains("403"),
            "{}: {message}",
            s3.name
        );
        assert!(message.contains("access denied"), "{}: {message}", s3.name);
        assert!(!message.contains('\n'), "{}: {message}", s3.name);
        assert!(!message.contains("definitely-not-the-secret"), "{message}");
        assert!(server.stats().pages_served <= 1, "streamed before failing");
        assert!(s3.list_keys(&prefix).await.is_empty());
        eprintln!("{}: {message}", s3.name);
        server.shutdown().await;
    }
}

/// Records that are not objects, or a record path that is not an array: the error names the
/// page and URL, and nothing is written.
#[tokio::test]
async fn bad_record_paths_fail_clearly() {
    let server = mock(data(50), |_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("out.jsonl.gz");
    let cases = [
        ("/next_token", "points at a string, not an array"),
        ("/nope", "the record path /nope does not exist in the body"),
    ];
    for (records, want) in cases {
        let source = Style::Token
            .source(&server.base_url(), 10)
            .replace(
                "records = \"/variants\"",
                &format!("records = \"{records}\""),
            )
            .replace("next = \"/next_token\"", "next = \"/other\"");
        let text = pipeline_text(&source, &format!("url = \"{}\"", target.display()));
        let err = run(&pipeline(&text), vec![]).await.expect_err("must fail");
        let message = err.to_string();
        assert!(message.contains(want), "{message}");
        assert!(
            message.starts_with("page 1 of http://127.0.0.1:"),
            "{message}"
        );
        assert!(!target.exists());
    }
    server.shutdown().await;
}
