//! Storage faults: landline writes through the fault-injecting [`Proxy`] to moto and s3s-fs.
//!
//! Transient faults (5xx answers, a reset in the middle of a part, slow or timed-out answers, a
//! failed CompleteMultipartUpload) are retried by the store client and the object is exact;
//! permanent faults fail the run with an error naming the part and the `s3://` location, abort
//! the upload, and leave the object an earlier run wrote untouched.
//!
//! Every run has at least 3 parts of 5 MiB, and retries quickly (`[sink.retry]` backoff of
//! 10–50 ms), so the tests stay fast. Each row uses a fresh mock API and a fresh proxy; the
//! checks of what landed read the server directly, not through the proxy.

use std::time::{Duration, Instant};

use landline::sink::SinkError;
use landline::{RunError, RunReport};
use landline_mockapi::DataConfig;

use crate::harness::{Style, data, gunzip, mock, pipeline, pipeline_text, run, verify};
use crate::proxy::{Fault, Op, Proxy, Rule};
use crate::s3::{self, S3Server};

/// Records per run: enough for at least 3 parts of 5 MiB (checked in every row), stored
/// without compression (`compression_level = 0`) so that few records are needed and every
/// one of them can be checked whole quickly.
const RECORDS: u64 = 600;
/// What an "earlier run" left at the key, in the failure rows.
const EARLIER: &[u8] = b"the object an earlier run wrote";

/// The sink's timeout and retry settings of a row.
#[derive(Debug, Clone, Copy)]
struct Sink {
    /// `[sink] timeout_secs`.
    timeout_secs: f64,
    /// `[sink.retry] max_attempts`.
    max_attempts: u32,
    /// `[sink] part_checksums`.
    part_checksums: bool,
}

/// The settings most rows use: 3 attempts per request, 10 s per request.
const FAST: Sink = Sink {
    timeout_secs: 10.0,
    max_attempts: 3,
    part_checksums: true,
};

/// One run of the pipeline through a proxy with `rules`.
struct Outcome {
    result: Result<RunReport, RunError>,
    proxy: Proxy,
    data: DataConfig,
    prefix: String,
    key: String,
    /// `s3://bucket/key`.
    location: String,
    elapsed: Duration,
}

/// Runs 11,000 records from a fresh mock API through a fresh proxy with `rules` into `s3`.
/// With `earlier`, that object is first put at the key (directly, not through the proxy).
async fn run_with_faults(
    s3: &S3Server,
    test: &str,
    rules: Vec<Rule>,
    sink: Sink,
    earlier: Option<&[u8]>,
) -> Outcome {
    let data = data(RECORDS);
    let api = mock(data.clone(), |_| {}).await;
    let proxy = Proxy::start(s3, rules).await;
    let prefix = s3.unique_prefix(test);
    let key = format!("{prefix}/variants.jsonl.gz");
    if let Some(bytes) = earlier {
        s3.put_object(&key, bytes.to_vec()).await;
    }
    let location = format!("s3://{}/{key}", s3.bucket);
    let text = pipeline_text(
        &Style::Token.source(&api.base_url(), 200),
        &format!(
            "url = \"{location}\"\npart_size_bytes = 5242880\ncompression_level = 0\ntimeout_secs = {:.1}\n\
             part_checksums = {}\n\
             [sink.retry]\nmax_attempts = {}\ninitial_backoff_ms = 10\nmax_backoff_ms = 50\n\
             timeout_secs = 10.0",
            sink.timeout_secs, sink.part_checksums, sink.max_attempts
        ),
    );
    let started = Instant::now();
    let result = run(&pipeline(&text), proxy.env(s3)).await;
    let elapsed = started.elapsed();
    api.shutdown().await;
    eprintln!(
        "{test} on {}: {:.1} s, {}: {}",
        s3.name,
        elapsed.as_secs_f64(),
        match &result {
            Ok(report) => format!("ok, {} parts, {} bytes", report.parts, report.bytes_written),
            Err(e) => format!("failed: {e}"),
        },
        proxy.summary()
    );
    Outcome {
        result,
        proxy,
        data,
        prefix,
        key,
        location,
        elapsed,
    }
}

impl Outcome {
    /// The run succeeded, the object holds exactly the records, nothing else is under the
    /// prefix and no upload is left open. Returns the report.
    async fn assert_exact(&self, s3: &S3Server) -> &RunReport {
        let report = match &self.result {
            Ok(report) => report,
            Err(e) => panic!("{}: the run failed: {e}\n{}", s3.name, self.proxy.summary()),
        };
        assert!(report.parts >= 3, "{}: {} parts", s3.name, report.parts);
        assert_eq!(report.objects, [self.location.as_str()], "{}", s3.name);
        assert_eq!(
            u64::from(self.proxy.max_part()),
            report.parts,
            "{}",
            s3.name
        );
        let bytes = s3.get_object(&self.key).await.expect("the object exists");
        assert_eq!(bytes.len() as u64, report.bytes_written, "{}", s3.name);
        verify(&gunzip(&bytes), &self.data, report, 1);
        assert_eq!(s3.list_keys(&self.prefix).await, [self.key.as_str()]);
        if s3.supports_list_multipart_uploads {
            let open = s3.list_multipart_uploads(&self.prefix).await;
            assert!(open.is_empty(), "{}: {open:?}", s3.name);
        }
        assert_eq!(self.proxy.count(Op::AbortMultipartUpload), 0, "{}", s3.name);
        assert!(
            self.proxy.errors().is_empty(),
            "{}: {}",
            s3.name,
            self.proxy.summary()
        );
        report
    }

    /// The run failed naming the location, the upload was aborted (the server accepted an
    /// abort; moto: none is left open), and the earlier object is byte-identical and alone
    /// under the prefix. Returns the error.
    async fn assert_clean_failure(&self, s3: &S3Server) -> &RunError {
        let err = match &self.result {
            Ok(report) => panic!("{}: the run must fail, got {report:?}", s3.name),
            Err(e) => e,
        };
        let message = err.to_string();
        assert!(message.contains(&self.location), "{}: {message}", s3.name);
        assert!(
            !matches!(
                err,
                RunError::AbortFailed { .. } | RunError::Sink(SinkError::AbortFailed { .. })
            ),
            "{}: the abort failed: {message}",
            s3.name
        );
        // The server accepted an abort. Usually the first; but the part that was uploading
        // when the run failed is dropped by landline only on its side, so it can still reach
        // the server during the abort, and moto then sometimes answers the abort with a 500
        // ("dictionary changed size during iteration" in its log), which is retried.
        let aborts = self.proxy.statuses(Op::AbortMultipartUpload);
        assert!(
            matches!(aborts.last(), Some(Some(200..=299))),
            "{}: aborts answered {aborts:?}: {}",
            s3.name,
            self.proxy.summary()
        );
        assert!(
            aborts[..aborts.len() - 1]
                .iter()
                .all(|status| matches!(status, Some(500..=599))),
            "{}: aborts answered {aborts:?}",
            s3.name
        );
        assert_eq!(
            s3.get_object(&self.key).await.as_deref(),
            Some(EARLIER),
            "{}: the earlier object changed",
            s3.name
        );
        assert_eq!(s3.list_keys(&self.prefix).await, [self.key.as_str()]);
        if s3.supports_list_multipart_uploads {
            let open = s3.list_multipart_uploads(&self.prefix).await;
            assert!(open.is_empty(), "{}: {open:?}", s3.name);
        }
        assert!(
            self.proxy.errors().is_empty(),
            "{}: {}",
            s3.name,
            self.proxy.summary()
        );
        err
    }

    /// Asserts `UploadPart` attempts: `extra` retries of part `part`, one attempt of every
    /// other part.
    fn assert_part_attempts(&self, s3: &S3Server, part: u32, attempts: u32) {
        let parts = self.proxy.max_part();
        assert_eq!(
            self.proxy.part_attempts(part),
            attempts,
            "{}: {}",
            s3.name,
            self.proxy.summary()
        );
        for other in (1..=parts).filter(|&n| n != part) {
            assert_eq!(
                self.proxy.part_attempts(other),
                1,
                "{}: part {other}: {}",
                s3.name,
                self.proxy.summary()
            );
        }
        assert_eq!(
            self.proxy.count(Op::UploadPart),
            parts - 1 + attempts,
            "{}",
            s3.name
        );
    }
}

/// Part 2 answers 500 once, then 503 twice: retried (4 attempts allowed), and the object is
/// exact.
#[tokio::test]
async fn store_faults_part_5xx_is_retried() {
    for s3 in s3::servers() {
        let rules = vec![
            Rule::new(Op::UploadPart, Fault::Status(500)).part(2),
            Rule::new(Op::UploadPart, Fault::Status(503))
                .part(2)
                .times(2),
        ];
        let sink = Sink {
            part_checksums: true,
            max_attempts: 4,
            ..FAST
        };
        let outcome = run_with_faults(&s3, "part-5xx", rules, sink, None).await;
        outcome.assert_exact(&s3).await;
        outcome.assert_part_attempts(&s3, 2, 4);
        assert_eq!(outcome.proxy.faults_injected(), 3);
        assert_eq!(outcome.proxy.count(Op::CompleteMultipartUpload), 1);
    }
}

/// The connection is reset after 1 MiB of part 2's body: retried, and the object is exact.
#[tokio::test]
async fn store_faults_reset_mid_part_is_retried() {
    for s3 in s3::servers() {
        let rules = vec![
            Rule::new(
                Op::UploadPart,
                Fault::ResetMidRequest {
                    after_bytes: 1 << 20,
                },
            )
            .part(2),
        ];
        let outcome = run_with_faults(&s3, "reset-mid-part", rules, FAST, None).await;
        outcome.assert_exact(&s3).await;
        outcome.assert_part_attempts(&s3, 2, 2);
        assert_eq!(outcome.proxy.faults_injected(), 1);
    }
}

/// Every part's answer is 300 ms late, and part 2's first answer comes after the sink's
/// timeout (the part had reached the server: the retry uploads it again). The object is exact.
#[tokio::test]
async fn store_faults_slow_and_timed_out_parts() {
    const TIMEOUT_SECS: f64 = 3.0;
    for s3 in s3::servers() {
        let rules = vec![
            Rule::new(
                Op::UploadPart,
                Fault::Delay(Duration::from_secs_f64(TIMEOUT_SECS + 1.0)),
            )
            .part(2),
            Rule::new(Op::UploadPart, Fault::Delay(Duration::from_millis(300))).always(),
        ];
        let sink = Sink {
            part_checksums: true,
            timeout_secs: TIMEOUT_SECS,
            ..FAST
        };
        let outcome = run_with_faults(&s3, "slow-parts", rules, sink, None).await;
        outcome.assert_exact(&s3).await;
        // The timed-out attempt of part 2 and its retry: every UploadPart was delayed.
        outcome.assert_part_attempts(&s3, 2, 2);
        assert_eq!(
            outcome.proxy.faults_injected() as u32,
            outcome.proxy.count(Op::UploadPart)
        );
        assert!(
            outcome.elapsed >= Duration::from_secs_f64(TIMEOUT_SECS),
            "{}: {:?}",
            s3.name,
            outcome.elapsed
        );
    }
}

/// CompleteMultipartUpload answers 500 once: retried, and the object is exact.
#[tokio::test]
async fn store_faults_complete_5xx_is_retried() {
    for s3 in s3::servers() {
        let rules = vec![Rule::new(Op::CompleteMultipartUpload, Fault::Status(500))];
        let outcome = run_with_faults(&s3, "complete-500", rules, FAST, None).await;
        outcome.assert_exact(&s3).await;
        assert_eq!(outcome.proxy.count(Op::CompleteMultipartUpload), 2);
        assert_eq!(outcome.proxy.count(Op::CreateMultipartUpload), 1);
        outcome.assert_part_attempts(&s3, 1, 1);
    }
}

/// Part 2 answers 500 to every attempt: the run fails naming part 2 and the location, after
/// `max_attempts` attempts; the upload is aborted and the earlier object is untouched.
#[tokio::test]
async fn store_faults_part_failing_for_good_aborts_cleanly() {
    for s3 in s3::servers() {
        let rules = vec![
            Rule::new(Op::UploadPart, Fault::Status(500))
                .part(2)
                .always(),
        ];
        let outcome = run_with_faults(&s3, "part-fails", rules, FAST, Some(EARLIER)).await;
        let err = outcome.assert_clean_failure(&s3).await;
        let message = err.to_string();
        assert!(
            matches!(err, RunError::Sink(SinkError::Part { part: 2, .. })),
            "{}: {message}",
            s3.name
        );
        assert!(
            message.contains(&format!("uploading part 2 of {}", outcome.location)),
            "{}: {message}",
            s3.name
        );
        assert!(message.contains("500"), "{}: {message}", s3.name);
        assert_eq!(
            outcome.proxy.part_attempts(2),
            FAST.max_attempts,
            "{}: {}",
            s3.name,
            outcome.proxy.summary()
        );
        assert_eq!(outcome.proxy.count(Op::CompleteMultipartUpload), 0);
    }
}

/// CompleteMultipartUpload answers 500 to every attempt: the run fails naming the location,
/// the upload is aborted and the earlier object is untouched.
#[tokio::test]
async fn store_faults_complete_failing_for_good_aborts_cleanly() {
    for s3 in s3::servers() {
        let rules = vec![Rule::new(Op::CompleteMultipartUpload, Fault::Status(500)).always()];
        let outcome = run_with_faults(&s3, "complete-fails", rules, FAST, Some(EARLIER)).await;
        let err = outcome.assert_clean_failure(&s3).await;
        let message = err.to_string();
        assert!(
            matches!(err, RunError::Sink(SinkError::Complete { .. })),
            "{}: {message}",
            s3.name
        );
        assert!(
            message.contains(&format!("completing the upload of {}", outcome.location)),
            "{}: {message}",
            s3.name
        );
        assert_eq!(
            outcome.proxy.count(Op::CompleteMultipartUpload),
            FAST.max_attempts,
            "{}",
            s3.name
        );
        let parts = outcome.proxy.max_part();
        assert!(parts >= 3, "{}: {parts} parts", s3.name);
        outcome.assert_part_attempts(&s3, 1, 1);
    }
}

/// CreateMultipartUpload reaches the server, which creates an upload, but the answer is lost
/// (the connection is reset instead), so object_store creates another. landline looks for
/// uploads of its key started during its Create and aborts the one it was not given, so
/// none is left open (where the store lists uploads: moto; s3s-fs cannot, and its stray
/// stays for the lifecycle rule or `landline cleanup`).
#[tokio::test]
async fn store_faults_create_answer_lost_leaves_no_upload_open() {
    for s3 in s3::servers() {
        let rules = vec![Rule::new(
            Op::CreateMultipartUpload,
            Fault::ResetAfterForward,
        )];
        let outcome = run_with_faults(&s3, "create-lost", rules, FAST, None).await;
        assert_eq!(
            outcome.proxy.count(Op::CreateMultipartUpload),
            2,
            "{}: {}",
            s3.name,
            outcome.proxy.summary()
        );
        let report = match &outcome.result {
            Ok(report) => report,
            Err(e) => panic!("{}: the run failed: {e}", s3.name),
        };
        let bytes = s3
            .get_object(&outcome.key)
            .await
            .expect("the object exists");
        verify(&gunzip(&bytes), &outcome.data, report, 1);
        if s3.supports_list_multipart_uploads {
            let open = s3.list_multipart_uploads(&outcome.prefix).await;
            assert!(open.is_empty(), "{}: {open:?}", s3.name);
            assert_eq!(
                outcome.proxy.count(Op::AbortMultipartUpload),
                1,
                "{}",
                s3.name
            );
        }
    }
}

/// CompleteMultipartUpload reaches the server, which completes the object, but the answer is
/// lost (the connection is reset instead), so object_store retries the Complete. moto answers
/// the retry with 200; s3s-fs with 403 (the upload is gone), as real S3 may with
/// `NoSuchUpload` ("might have been aborted or completed"). Either way the run must report
/// what happened: landline looks at the key after a failed Complete, finds this upload's
/// object (same size and part count, written since the upload started), and succeeds without
/// aborting, instead of reporting a failure for an object it wrote.
#[tokio::test]
async fn store_faults_complete_answer_lost() {
    for s3 in s3::servers() {
        let rules = vec![Rule::new(
            Op::CompleteMultipartUpload,
            Fault::ResetAfterForward,
        )];
        let outcome = run_with_faults(&s3, "complete-lost", rules, FAST, Some(EARLIER)).await;
        assert_eq!(
            outcome.proxy.count(Op::CompleteMultipartUpload),
            2,
            "{}: {}",
            s3.name,
            outcome.proxy.summary()
        );
        outcome.assert_part_attempts(&s3, 1, 1);
        let want = if s3.name == "moto" { 200 } else { 403 };
        assert_eq!(
            outcome.proxy.statuses(Op::CompleteMultipartUpload),
            [Some(200), Some(want)],
            "{}",
            s3.name
        );
        assert_eq!(
            outcome.proxy.count(Op::AbortMultipartUpload),
            0,
            "{}: a completed upload is not aborted",
            s3.name
        );
        outcome.assert_exact(&s3).await;
    }
}

/// One bit of part 2 flipped on the way. s3s-fs checks each part against its signed SHA-256
/// (and the `x-amz-checksum-sha256` that landline sends, as S3 does) and refuses it with a
/// 500, which is retried: the object is exact. moto checks neither and stores the damaged
/// part; the SHA-256 landline computed of what it sent (the report's, the manifest's) then
/// differs from the object's, which is what `landline verify` compares.
#[tokio::test]
async fn store_faults_a_part_corrupted_on_the_way() {
    for s3 in s3::servers() {
        let rules = vec![Rule::new(Op::UploadPart, Fault::CorruptBody).part(2)];
        let outcome = run_with_faults(&s3, "corrupt-part", rules, FAST, None).await;
        if s3.name == "moto" {
            let report = outcome
                .result
                .as_ref()
                .expect("moto takes the damaged part");
            let stored = s3.get_object(&outcome.key).await.expect("the object");
            let stored =
                landline::sink::digest::hex(&<sha2::Sha256 as sha2::Digest>::digest(&stored));
            let sent = report.sha256.as_deref().expect("the report's SHA-256");
            assert_ne!(sent, stored, "moto: the damage shows in the SHA-256");
        } else {
            outcome.assert_exact(&s3).await;
            outcome.assert_part_attempts(&s3, 2, 2);
        }
    }
}
