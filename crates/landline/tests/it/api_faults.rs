//! The API fault matrix, over real loopback TCP: each row injects one kind of fault into the
//! mock API (see `landline_mockapi::Fault`) and runs the whole pipeline against a fresh server.
//!
//! - Transient faults (429 with `Retry-After`, 5xx a few times, a connection dropped mid-body,
//!   a truncated body, a slow answer or a stalled body once): the run succeeds, the object holds
//!   exactly the records served (each compared whole), and `report.retries` counts exactly the
//!   injected failures. Each row lands into a local file and into one S3 server (moto and
//!   s3s-fs in turn).
//! - Permanent faults (a 200 that is not JSON, slow forever, a status forever, a body cut short
//!   forever, a next token that leads back, an oversized page): the run fails with a message
//!   naming the page, the URL with its secrets redacted and the cause, and leaves nothing behind
//!   on either S3 server: the object an earlier run wrote at the key is untouched, it is the only
//!   key under the prefix, and no multipart upload is left open.
//!
//! Four pages of 100 records; retries are fast (1-5 ms backoff, 3 attempts) and the request
//! timeout is 1 s, so the slowest rows take a few seconds.

use std::time::{Duration, Instant};

use landline::RunError;
use landline::source::{PaginationError, SourceError};
use landline_mockapi::{Action, Fault, RetryAfter, Times, When};

use crate::harness::{data, gunzip, mock, pipeline, pipeline_text, run, verify};
use crate::s3::{self, S3Server};

/// Records in the data set: four pages.
const RECORDS: u64 = 400;
/// Records a page.
const PAGE: u64 = 100;
/// A secret in the static query, which must never appear in a message.
const SECRET: &str = "sekret-123";
/// `[source] max_page_bytes`: a page of 100 records is about 2.9 MB.
const MAX_PAGE_BYTES: usize = 8_000_000;
/// `[source] timeout_secs`.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Longer than [`TIMEOUT`]: a delay or stall of this long times the request out.
const TOO_SLOW: Duration = Duration::from_millis(1_500);
/// `[source.retry] max_retry_after_secs`.
const MAX_RETRY_AFTER_SECS: u64 = 2;

/// The `[source]` of the token endpoint at `api`, with a secret query parameter, short limits
/// and fast retries.
fn source(api: &str) -> String {
    format!(
        "[source]\nurl = \"{api}/variants\"\nquery = {{ count = {PAGE}, api_key = \"{SECRET}\" }}\n\
         records = \"/variants\"\ntimeout_secs = {timeout:.1}\nmax_page_bytes = {MAX_PAGE_BYTES}\n\
         [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
         [source.retry]\nmax_attempts = 3\ninitial_backoff_ms = 1\nmax_backoff_ms = 5\n\
         max_retry_after_secs = {MAX_RETRY_AFTER_SECS}\n",
        timeout = TIMEOUT.as_secs_f64(),
    )
}

/// The redacted URL of the first page, as messages show it (page 2 on add `&token=REDACTED`).
fn shown_url(api: &str) -> String {
    format!("{api}/variants?api_key=REDACTED&count={PAGE}")
}

/// Where a run lands: a local file (`None`), or an S3 server.
type Target = Option<S3Server>;

/// A transient row: into a local file and into the S3 server `s3` at once (each run with its
/// own mock API, whose fault counters start afresh), the run succeeds, lands every record
/// exactly, and retried exactly `retries` times, one per injected fault. Returns the shorter
/// run's wall time. (Rows alternate between the S3 servers: checking every record of three
/// objects per row would double the time of the file for little.)
async fn transient(row: &'static str, s3: S3Server, rules: Vec<Fault>, retries: u64) -> Duration {
    // Tasks, so that checking one object does not hold up the run into the other.
    let runs = [None, Some(s3)]
        .into_iter()
        .map(|target| tokio::spawn(transient_into(row, rules.clone(), retries, target)));
    let mut shortest = Duration::MAX;
    for run in futures::future::join_all(runs).await {
        match run {
            Ok(elapsed) => shortest = shortest.min(elapsed),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("{row}: {e}"),
        }
    }
    shortest
}

async fn transient_into(
    row: &'static str,
    rules: Vec<Fault>,
    retries: u64,
    target: Target,
) -> Duration {
    let name = format!(
        "{row} into {}",
        target.as_ref().map_or("a file", |s3| s3.name)
    );
    let data = data(RECORDS);
    let server = mock(data.clone(), |c| c.faults.rules = rules).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, env, key) = match &target {
        None => {
            let path = dir.path().join("variants.jsonl.gz");
            (format!("url = \"{}\"", path.display()), vec![], None)
        }
        Some(s3) => {
            let key = format!("{}/variants.jsonl.gz", s3.unique_prefix(row));
            let sink = format!("url = \"s3://{}/{key}\"", s3.bucket);
            (sink, s3.env(), Some(key))
        }
    };
    let text = pipeline_text(&source(&server.base_url()), &sink);
    let started = Instant::now();
    let report = run(&pipeline(&text), env)
        .await
        .unwrap_or_else(|e| panic!("{name}: the run must succeed: {e}"));
    let elapsed = started.elapsed();
    let bytes = match (&target, key) {
        (Some(s3), Some(key)) => s3.get_object(&key).await.expect("the object"),
        _ => std::fs::read(dir.path().join("variants.jsonl.gz")).expect("the object"),
    };
    verify(&gunzip(&bytes), &data, &report, 1);
    assert_eq!(report.pages, RECORDS / PAGE, "{name}");
    assert_eq!(report.bytes_written, bytes.len() as u64, "{name}");
    let stats = server.stats();
    assert_eq!(stats.faults_injected, retries, "{name}: faults injected");
    assert_eq!(report.retries, retries, "{name}: retries");
    // The mock may still be sleeping in a slow answer the client gave up on: do not wait.
    drop(server);
    elapsed
}

/// What a permanent row expects of the error.
struct Expected {
    /// The page the message names.
    page: u64,
    /// Words of the cause, each of which the message contains.
    cause: &'static [&'static str],
    /// Faults injected before the run gave up: 1 if not retried, 3 if retried to the end.
    faults: u64,
    /// The error's variant.
    matches: fn(&RunError) -> bool,
}

/// A permanent row: on both S3 servers at once (each with its own mock API), the run fails as
/// `expected` and leaves the earlier object at the key alone, no other key, and no open upload.
async fn permanent(row: &str, rules: Vec<Fault>, expected: Expected) {
    let runs = s3::servers()
        .into_iter()
        .map(|s3| permanent_on(row, rules.clone(), &expected, s3));
    futures::future::join_all(runs).await;
}

async fn permanent_on(row: &str, rules: Vec<Fault>, expected: &Expected, s3: S3Server) {
    let name = format!("{row} on {}", s3.name);
    let server = mock(data(RECORDS), |c| c.faults.rules = rules).await;
    let api = server.base_url();
    let prefix = s3.unique_prefix(row);
    let key = format!("{prefix}/variants.jsonl.gz");
    let earlier = b"an earlier run's object".to_vec();
    s3.put_object(&key, earlier.clone()).await;
    let text = pipeline_text(
        &source(&api),
        &format!("url = \"s3://{}/{key}\"", s3.bucket),
    );
    let err = run(&pipeline(&text), s3.env())
        .await
        .expect_err("the run must fail");
    let message = err.to_string();
    eprintln!("{name}: {message}");
    assert!((expected.matches)(&err), "{name}: {err:?}");
    let page_and_url = format!("page {} of {}", expected.page, shown_url(&api));
    assert!(message.contains(&page_and_url), "{name}: {message}");
    for word in expected.cause {
        assert!(message.contains(word), "{name}: no {word:?} in {message}");
    }
    assert!(!message.contains(SECRET), "{name}: {message}");
    assert!(!message.contains('\n'), "{name}: {message}");
    assert_eq!(
        server.stats().faults_injected,
        expected.faults,
        "{name}: faults injected"
    );

    assert_eq!(s3.get_object(&key).await, Some(earlier), "{name}");
    assert_eq!(s3.list_keys(&prefix).await, [key.as_str()], "{name}");
    if s3.supports_list_multipart_uploads {
        assert_eq!(s3.list_multipart_uploads(&prefix).await, [], "{name}");
    }
    // The mock may still be sleeping in a slow answer: do not wait for it.
    drop(server);
}

/// Whether the message says the request was retried to the end.
fn gave_up_after_3(err: &RunError) -> bool {
    err.to_string().contains("after 3 attempt(s)")
}

// ---------------------------------------------------------------- transient faults --

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_429_with_retry_after_seconds_is_honoured() {
    let rules = vec![Fault::new(
        When::Page(2),
        Action::status(429).retry_after(RetryAfter::Seconds(1)),
        Times::First(1),
    )];
    let elapsed = transient("429-retry-after-seconds", s3::moto(), rules, 1).await;
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_429_with_retry_after_http_date_is_honoured() {
    // The date is rounded down to the second: the wait is more than 1 s and at most 2 s.
    let rules = vec![Fault::new(
        When::Page(3),
        Action::status(429).retry_after(RetryAfter::DateIn(Duration::from_secs(2))),
        Times::First(1),
    )];
    let elapsed = transient("429-retry-after-date", s3::s3s(), rules, 1).await;
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_retry_after_is_capped_at_max_retry_after_secs() {
    let rules = vec![Fault::new(
        When::Page(2),
        Action::status(503).retry_after(RetryAfter::Seconds(3600)),
        Times::First(1),
    )];
    let elapsed = transient("retry-after-capped", s3::moto(), rules, 1).await;
    let cap = Duration::from_secs(MAX_RETRY_AFTER_SECS);
    assert!(
        elapsed >= cap && elapsed < cap + Duration::from_secs(10),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_500_twice_then_success() {
    let rules = vec![Fault::new(
        When::Page(1),
        Action::status(500),
        Times::First(2),
    )];
    transient("500-twice", s3::s3s(), rules, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_502_twice_then_success() {
    let rules = vec![Fault::new(
        When::Page(3),
        Action::status(502),
        Times::First(2),
    )];
    transient("502-twice", s3::moto(), rules, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_503_twice_on_every_page_then_success() {
    let rules = vec![Fault::new(
        When::Always,
        Action::status(503),
        Times::First(2),
    )];
    transient("503-twice-every-page", s3::s3s(), rules, 2 * RECORDS / PAGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_reset_mid_body_is_retried() {
    let rules = vec![Fault::new(
        When::Page(2),
        Action::ResetMidBody { after: 64 * 1024 },
        Times::First(2),
    )];
    transient("reset-mid-body", s3::moto(), rules, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_truncated_body_is_retried() {
    let rules = vec![Fault::new(
        When::Page(4),
        Action::Truncate { after: 1_000_000 },
        Times::First(2),
    )];
    transient("truncated-body", s3::s3s(), rules, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_slow_answer_once_times_out_and_is_retried() {
    let rules = vec![Fault::new(
        When::Page(2),
        Action::Delay(TOO_SLOW),
        Times::First(1),
    )];
    let elapsed = transient("slow-once", s3::moto(), rules, 1).await;
    assert!(elapsed >= TIMEOUT, "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_body_stalled_once_times_out_and_is_retried() {
    let rules = vec![Fault::new(
        When::Page(3),
        Action::Stall {
            after: 64 * 1024,
            stall: TOO_SLOW,
        },
        Times::First(1),
    )];
    let elapsed = transient("stall-once", s3::s3s(), rules, 1).await;
    assert!(elapsed >= TIMEOUT, "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_first_request_of_each_url_fails_twice_differently() {
    // Every page: a 503, then a dropped connection, then the page.
    let rules = vec![
        Fault::new(When::Always, Action::status(503), Times::First(1)),
        Fault::new(
            When::Always,
            Action::ResetMidBody { after: 1000 },
            Times::First(1),
        ),
    ];
    transient("first-requests-fail", s3::moto(), rules, 2 * RECORDS / PAGE).await;
}

// ---------------------------------------------------------------- permanent faults --

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_200_not_json_fails_without_retrying() {
    let rules = vec![Fault::new(When::Page(3), Action::NotJson, Times::Forever)];
    let expected = Expected {
        page: 3,
        cause: &["the body is not valid JSON"],
        faults: 1,
        matches: |e| matches!(e, RunError::Source(SourceError::Page { page: 3, .. })),
    };
    permanent("not-json", rules, expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_slow_forever_times_out() {
    let rules = vec![Fault::new(
        When::Page(2),
        Action::Delay(TOO_SLOW),
        Times::Forever,
    )];
    let expected = Expected {
        page: 2,
        cause: &["timed out"],
        faults: 3,
        matches: |e| {
            gave_up_after_3(e)
                && matches!(
                    e,
                    RunError::Source(SourceError::Transport {
                        page: 2,
                        attempts: 3,
                        ..
                    })
                )
        },
    };
    permanent("slow-forever", rules, expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_body_stalled_forever_times_out() {
    let rules = vec![Fault::new(
        When::Page(4),
        Action::Stall {
            after: 64 * 1024,
            stall: TOO_SLOW,
        },
        Times::Forever,
    )];
    let expected = Expected {
        page: 4,
        cause: &["timed out"],
        faults: 3,
        matches: |e| {
            gave_up_after_3(e)
                && matches!(
                    e,
                    RunError::Source(SourceError::Transport {
                        page: 4,
                        attempts: 3,
                        ..
                    })
                )
        },
    };
    permanent("stall-forever", rules, expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_status_forever_fails_after_the_last_attempt() {
    let rules = vec![Fault::new(
        When::Page(2),
        Action::status(503),
        Times::Forever,
    )];
    let expected = Expected {
        page: 2,
        cause: &["HTTP 503 after 3 attempt(s)", "injected fault: HTTP 503"],
        faults: 3,
        matches: |e| {
            matches!(
                e,
                RunError::Source(SourceError::Status {
                    page: 2,
                    status: 503,
                    attempts: 3,
                    ..
                })
            )
        },
    };
    permanent("status-forever", rules, expected).await;
}

/// A body cut short on every attempt, by a reset or by a close before its Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_body_cut_short_forever_fails_after_the_last_attempt() {
    let rows: [(&str, Action, &'static [&'static str]); 2] = [
        (
            "reset-forever",
            Action::ResetMidBody { after: 64 * 1024 },
            &["reading the body", "EOF", "after 3 attempt(s)"],
        ),
        (
            "truncated-forever",
            Action::Truncate { after: 1_000_000 },
            &["reading the body", "end of file", "after 3 attempt(s)"],
        ),
    ];
    for (row, action, cause) in rows {
        let rules = vec![Fault::new(When::Page(2), action, Times::Forever)];
        let expected = Expected {
            page: 2,
            cause,
            faults: 3,
            matches: |e| {
                matches!(
                    e,
                    RunError::Source(SourceError::Transport {
                        page: 2,
                        attempts: 3,
                        ..
                    })
                )
            },
        };
        permanent(row, rules, expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_repeated_next_token_is_a_pagination_loop() {
    // Page 3's next token is page 2's again.
    let rules = vec![Fault::new(
        When::Page(3),
        Action::NextOffset(PAGE),
        Times::Forever,
    )];
    let expected = Expected {
        page: 3,
        // The URL named is page 3's, whose token is redacted.
        cause: &[
            "pagination loop",
            "page 3 leads back to an earlier page",
            "&token=REDACTED",
        ],
        faults: 1,
        matches: |e| {
            matches!(
                e,
                RunError::Source(SourceError::Pagination {
                    page: 3,
                    source: PaginationError::Loop { page: 3 },
                    ..
                })
            )
        },
    };
    permanent("repeated-token", rules, expected).await;
}

/// An oversized page, announced by its Content-Length or found while reading a chunked body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fault_oversized_page_is_refused() {
    for (row, chunked) in [("oversized-page", false), ("oversized-chunked-page", true)] {
        let rules = vec![Fault::new(
            When::Page(2),
            Action::Pad {
                bytes: 2 * MAX_PAGE_BYTES,
                chunked,
            },
            Times::Forever,
        )];
        let expected = Expected {
            page: 2,
            cause: &["is larger than max_page_bytes = 8000000"],
            faults: 1,
            matches: |e| {
                matches!(
                    e,
                    RunError::Source(SourceError::PageTooLarge {
                        page: 2,
                        limit: MAX_PAGE_BYTES,
                        ..
                    })
                )
            },
        };
        permanent(row, rules, expected).await;
    }
}
