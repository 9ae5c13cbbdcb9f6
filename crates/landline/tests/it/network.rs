//! A real network's behaviours, over loopback TCP: compressed pages in every encoding, bodies
//! that break off mid-stream and pages that change when fetched again, parallel pages written
//! in order with every stopping rule, rate limits (the configured one and the API's headers)
//! measured by the request times the mock API saw, and errors inside a 200.
//!
//! Every run lands into a local file and is checked record by record; one row of each kind
//! lands into moto too.

use std::time::Duration;

use landline::RunError;
use landline::source::SourceError;
use landline::source::page::PageError;
use landline_mockapi::{Action, Encoding, Fault, RateLimit, RateLimitHeaders, Times, When};

use crate::harness::{Style, data, gunzip, mock, pipeline, pipeline_text, run, verify};
use crate::s3;

/// A local file sink in `dir`.
fn file_sink(dir: &tempfile::TempDir) -> (String, std::path::PathBuf) {
    let path = dir.path().join("variants.jsonl.gz");
    (format!("url = \"{}\"", path.display()), path)
}

/// Fast retries: 3 attempts, backoff of a few milliseconds.
const FAST_RETRY: &str =
    "[source.retry]\nmax_attempts = 3\ninitial_backoff_ms = 1\nmax_backoff_ms = 5\n";

/// Runs `source` (a `[source]` section, sub-tables after the keys) into a local file, checks
/// every one of the `records` served, and returns the report.
async fn lands(name: &str, source: &str, records: u64) -> landline::RunReport {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, path) = file_sink(&dir);
    let text = pipeline_text(source, &sink);
    let report = run(&pipeline(&text), vec![])
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    verify(&gunzip(&bytes), &data(records), &report, 7);
    report
}

/// Runs `source` into a local file; the run must fail and leave no object. Its error.
async fn fails(source: &str) -> RunError {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, path) = file_sink(&dir);
    let err = run(&pipeline(&pipeline_text(source, &sink)), vec![])
        .await
        .expect_err("the run must fail");
    assert!(!path.exists(), "no object after {err}");
    err
}

/// `[source]` of `style` with extra keys, before its sub-tables.
fn source_with(style: Style, api: &str, page: u64, keys: &str) -> String {
    let text = style.source(api, page);
    match text.find("[source.pagination]") {
        Some(at) => format!("{}{keys}\n{}", &text[..at], &text[at..]),
        None => format!("{text}{keys}\n"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compressed_pages_in_every_encoding() {
    for encoding in Encoding::ALL {
        for style in [Style::Token, Style::Offset, Style::None] {
            let name = format!("{encoding} {style:?}");
            let server = mock(data(330), |c| c.encodings = vec![encoding]).await;
            let report = lands(&name, &style.source(&server.base_url(), 100), 330).await;
            let wire = report.network.bytes_wire;
            assert!(
                wire * 4 < report.bytes_in,
                "{name}: {wire} bytes on the wire for {} decoded",
                report.bytes_in
            );
            // Offset pages fetched ahead past the end may be dropped unread.
            let served = server.stats().bytes_served;
            assert!(
                wire == served || style == Style::Offset && wire < served,
                "{name}: {wire} bytes received of {served} sent"
            );
        }
    }
    // Off: nothing is asked for, so nothing is compressed.
    let server = mock(data(330), |c| c.encodings = Encoding::ALL.to_vec()).await;
    let source = source_with(Style::Token, &server.base_url(), 100, "compression = false");
    let report = lands("compression off", &source, 330).await;
    assert_eq!(report.network.bytes_wire, report.bytes_in);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gzipped_paged_run_lands_in_s3() {
    let s3 = s3::moto();
    let server = mock(data(500), |c| c.encodings = vec![Encoding::Gzip]).await;
    let key = format!("{}/variants.jsonl.gz", s3.unique_prefix("gzip"));
    let sink = format!("url = \"s3://{}/{key}\"", s3.bucket);
    let source = source_with(Style::Offset, &server.base_url(), 100, "concurrency = 3");
    let report = run(&pipeline(&pipeline_text(&source, &sink)), s3.env())
        .await
        .expect("the run succeeds");
    let bytes = s3.get_object(&key).await.expect("the object");
    verify(&gunzip(&bytes), &data(500), &report, 5);
    assert!(report.network.bytes_wire * 4 < report.bytes_in);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_cut_midstream_is_fetched_again_without_loss_or_duplicates() {
    // Pages of 100 records are ~2.9 MB: records are written well before the cut.
    for (encoding, after) in [(None, 2_000_000), (Some(Encoding::Gzip), 1_500_000)] {
        for what in [Action::ResetMidBody { after }, Action::Truncate { after }] {
            let name = format!("{what:?} {encoding:?}");
            let rules = vec![
                Fault::new(When::Page(2), what.clone(), Times::First(1)),
                Fault::new(When::Page(3), what, Times::First(2)),
            ];
            let server = mock(data(400), |c| {
                c.faults.rules = rules;
                c.encodings = encoding.into_iter().collect();
            })
            .await;
            let source = format!(
                "{}{FAST_RETRY}",
                Style::Token.source(&server.base_url(), 100)
            );
            let report = lands(&name, &source, 400).await;
            assert_eq!(report.retries, 3, "{name}");
            assert_eq!(report.pages, 4, "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_that_changes_when_fetched_again_is_an_error_naming_it() {
    let rules = vec![
        Fault::new(
            When::Page(2),
            Action::ResetMidBody { after: 2_000_000 },
            Times::First(1),
        ),
        Fault::new(When::Page(2), Action::Shifted(1), Times::Forever),
    ];
    let server = mock(data(400), |c| c.faults.rules = rules).await;
    let source = format!(
        "{}{FAST_RETRY}",
        Style::Token.source(&server.base_url(), 100)
    );
    let err = fails(&source).await;
    assert!(
        matches!(
            &err,
            RunError::Source(SourceError::Page {
                page: 2,
                source: PageError::ChangedOnRetry { found: None, .. },
                ..
            })
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("page 2 of"), "{message}");
    assert!(
        message.contains("changed when it was fetched again"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_pages_are_written_in_order_and_stop_at_the_end() {
    // Page 2 is slow, so pages 3 and 4 arrive before it and must wait for their turn.
    let slow_page_2 = || {
        vec![Fault::new(
            When::Page(2),
            Action::Delay(Duration::from_millis(300)),
            Times::First(1),
        )]
    };
    // (name, style, records, page size, how the total is given)
    let rows: [(&str, Style, u64, u64, &str); 5] = [
        ("offset, short last page", Style::Offset, 530, 50, ""),
        (
            "offset, empty page after a full one",
            Style::Offset,
            500,
            50,
            "",
        ),
        ("page, short last page", Style::Page, 530, 50, ""),
        (
            "offset, total in the body",
            Style::Offset,
            500,
            50,
            "total = \"/total\"",
        ),
        (
            "page, total in a header",
            Style::Page,
            500,
            50,
            "total_header = \"X-Total-Count\"",
        ),
    ];
    for (name, style, records, page, total) in rows {
        let server = mock(data(records), |c| c.faults.rules = slow_page_2()).await;
        let mut source = source_with(style, &server.base_url(), page, "concurrency = 4");
        source.push_str(total);
        source.push('\n');
        let report = lands(name, &source, records).await;
        let pages = records.div_ceil(page);
        let empty_page = u64::from(records % page == 0 && total.is_empty());
        assert_eq!(report.pages, pages + empty_page, "{name}: pages written");
        // Pages past the end may have been fetched ahead, never more than concurrency - 1.
        let requests = server.request_log().len() as u64;
        assert!(
            requests <= pages + empty_page + 3,
            "{name}: {requests} requests"
        );
        if !total.is_empty() {
            assert_eq!(requests, pages, "{name}: none past the total");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_configured_rate_limit_is_held_across_parallel_requests() {
    let server = mock(data(600), |_| {}).await;
    let source = format!(
        "{}[source.rate_limit]\nrequests_per_second = 20\nburst = 1\n",
        source_with(Style::Offset, &server.base_url(), 50, "concurrency = 4")
    );
    let report = lands("rate limit", &source, 600).await;
    let log = server.request_log();
    // 12 full pages and an empty one, and up to 3 fetched ahead past the end.
    let n = log.len() as u32;
    assert!((13..=16).contains(&n), "{n} requests");
    // 20 per second: n requests span at least (n - 1) / 20 s (less 10 % for timer slack).
    let span = log[log.len() - 1].at - log[0].at;
    assert!(
        span >= Duration::from_millis(45) * (n - 1),
        "{n} requests in {span:?}"
    );
    for pair in log.windows(2) {
        let gap = pair[1].at.saturating_duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(35), "requests {gap:?} apart");
    }
    assert!(
        report.network.rate_limit_waits >= 10,
        "{:?}",
        report.network
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_apis_rate_limit_headers_are_honoured_before_it_answers_429() {
    for headers in [RateLimitHeaders::Ietf, RateLimitHeaders::XRateLimit] {
        let name = format!("{headers:?}");
        let limit = RateLimit {
            limit: 3,
            window: Duration::from_secs(1),
            headers,
        };
        let server = mock(data(500), |c| c.rate_limit = Some(limit)).await;
        let source = Style::Token.source(&server.base_url(), 100);
        let report = lands(&name, &source, 500).await;
        assert_eq!(server.stats().rate_limited, 0, "{name}: no 429");
        assert_eq!(report.retries, 0, "{name}");
        assert!(
            report.network.rate_limit_waits >= 1,
            "{name}: {:?}",
            report.network
        );
        assert!(report.network.rate_limit_wait_seconds > 0.5, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_zero_is_no_hint_but_a_backoff() {
    let rules = vec![Fault::new(
        When::Page(2),
        Action::status(503).retry_after(landline_mockapi::RetryAfter::Seconds(0)),
        Times::First(2),
    )];
    let server = mock(data(300), |c| c.faults.rules = rules).await;
    let source = format!(
        "{}[source.retry]\nmax_attempts = 3\ninitial_backoff_ms = 200\nmax_backoff_ms = 400\n",
        Style::Token.source(&server.base_url(), 100)
    );
    let report = lands("Retry-After: 0", &source, 300).await;
    assert_eq!(report.retries, 2);
    // Backoff waits at least half its ceiling: 100 ms, then 200 ms.
    assert!(
        report.network.retry_wait_seconds >= 0.3,
        "{:?}",
        report.network
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_error_inside_a_200_is_retried_then_fails_naming_the_page() {
    let quota = r#"{"error":{"code":"quota","message":"daily quota exceeded"}}"#;
    let once = vec![Fault::new(
        When::Page(2),
        Action::ErrorBody(quota.into()),
        Times::First(1),
    )];
    let server = mock(data(300), |c| c.faults.rules = once).await;
    let source = format!(
        "{}{FAST_RETRY}",
        source_with(Style::Token, &server.base_url(), 100, "error = \"/error\"")
    );
    let report = lands("error once", &source, 300).await;
    assert_eq!(report.retries, 1);

    let forever = vec![Fault::new(
        When::Page(2),
        Action::ErrorBody(quota.into()),
        Times::Forever,
    )];
    let server = mock(data(300), |c| c.faults.rules = forever).await;
    let source = format!(
        "{}{FAST_RETRY}",
        source_with(Style::Token, &server.base_url(), 100, "error = \"/error\"")
    );
    let err = fails(&source).await;
    assert!(
        matches!(
            &err,
            RunError::Source(SourceError::Api {
                page: 2,
                attempts: 3,
                ..
            })
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("daily quota exceeded"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decompression_bomb_is_refused_by_the_page_limit() {
    let server = mock(data(200), |c| c.encodings = vec![Encoding::Gzip]).await;
    let source = source_with(
        Style::Token,
        &server.base_url(),
        100,
        "max_page_bytes = 1000000",
    );
    let err = fails(&source).await;
    assert!(
        matches!(
            &err,
            RunError::Source(SourceError::DecodedTooLarge {
                page: 1,
                limit: 1_000_000,
                encoding: "gzip",
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_large_response_streams_through() {
    // 1,500 records (~43 MB) in a single response, gzipped and slowed to 200 MB/s.
    let server = mock(data(1500), |c| {
        c.encodings = vec![Encoding::Gzip];
        c.bandwidth = Some(200_000_000);
    })
    .await;
    let report = lands("single", &Style::None.source(&server.base_url(), 0), 1500).await;
    assert_eq!(report.pages, 1);
    assert!(report.memory.largest_page_bytes > 40_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_page_is_requested_as_soon_as_its_link_is_known() {
    // Page 1's body stalls for 800 ms after 100 KB; its Link header came first.
    let stall = Duration::from_millis(800);
    let rules = vec![Fault::new(
        When::Page(1),
        Action::Stall {
            after: 100_000,
            stall,
        },
        Times::First(1),
    )];
    let server = mock(data(300), |c| c.faults.rules = rules).await;
    let report = lands(
        "link header ahead",
        &Style::LinkHeader.source(&server.base_url(), 100),
        300,
    )
    .await;
    assert_eq!(report.pages, 3);
    let log = server.request_log();
    assert_eq!(log.len(), 3, "{log:?}");
    let ahead = log[1].at.saturating_duration_since(log[0].at);
    assert!(
        ahead < stall / 2,
        "page 2 was requested {ahead:?} after page 1, not while page 1 stalled"
    );
}
