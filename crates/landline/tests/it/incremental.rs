//! `[source.incremental]` against the mock API, which serves its data set "as of" a given
//! instant and filters by `updated_since`: day 1 lands what exists, day 2 only what changed
//! (the boundary again: at least once), and the union is every record; failed runs leave the
//! cursor alone; a second run at once is refused; a run continued over several processes
//! asks the same question in each; the cursor lives under `_landline/` in the store.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::NaiveDate;
use landline::checkpoint::Checkpoint;
use landline::incremental::{CursorValue, IncrementalError, IncrementalState};
use landline::pipeline::read_checkpoint;
use landline::report::RunStatus;
use landline::{Pipeline, RunError, RunOptions, RunReport};
use landline_mockapi::{DataConfig, MockServer, record_updated_at_ms, visible_offsets};
use serde_json::Value;

use crate::harness::{Style, expected_line, gunzip, mock, pipeline, pipeline_text};
use crate::s3::{self, S3Server};

const RECORDS: u64 = 400;
const START: &str = "2000-01-01T00:00:00Z";

fn data() -> DataConfig {
    // Every record distinct, so each has its own updated_at.
    DataConfig {
        total: RECORDS,
        pool: RECORDS as usize,
        ..DataConfig::default()
    }
}

/// Two instants of the data set: the updated_at at the 50th and the 80th percentile.
fn days(data: &DataConfig) -> (i64, i64) {
    let mut times: Vec<i64> = (0..data.total)
        .map(|i| record_updated_at_ms(i, data))
        .collect();
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() * 4 / 5])
}

fn iso(ms: i64) -> String {
    landline_mockapi::iso_millis(ms)
}

fn incremental_pipeline(s3: &S3Server, prefix: &str, api: &MockServer, extra: &str) -> Pipeline {
    incremental_pipeline_with(s3, prefix, api, extra, "")
}

/// [`incremental_pipeline`] with `sink_extra` in `[sink]`.
fn incremental_pipeline_with(
    s3: &S3Server,
    prefix: &str,
    api: &MockServer,
    extra: &str,
    sink_extra: &str,
) -> Pipeline {
    let source = format!(
        "{}[source.incremental]\nfield = \"updated_at\"\nparam = \"updated_since\"\nstart = \"{START}\"\n{extra}",
        Style::Token.source(&api.base_url(), 50)
    );
    pipeline(&pipeline_text(
        &format!("name = \"changes\"\n{source}"),
        &format!(
            "url = \"s3://{}/{prefix}/date={{ingest_date}}/changes.jsonl.gz\"\n{sink_extra}\n\
             [state]\nurl = \"s3://{}/{prefix}/_landline/\"",
            s3.bucket, s3.bucket
        ),
    ))
}

fn options(s3: &S3Server, day: &str) -> RunOptions {
    RunOptions {
        ingest_date: Some(NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("date")),
        store_env: s3.env().into(),
        ..RunOptions::default()
    }
}

async fn run_day(s3: &S3Server, p: &Pipeline, day: &str) -> Result<RunReport, RunError> {
    landline::run(p, options(s3, day), std::future::pending()).await
}

/// The ids of the object of `day`, each line checked against the record the API served.
async fn landed(
    s3: &S3Server,
    prefix: &str,
    day: &str,
    data: &DataConfig,
    report: &RunReport,
) -> Vec<u64> {
    let key = format!("{prefix}/date={day}/changes.jsonl.gz");
    let bytes = s3.get_object(&key).await.expect("the object landed");
    let mut ids = Vec::new();
    for line in String::from_utf8(gunzip(&bytes)).expect("UTF-8").lines() {
        let got: Value = serde_json::from_str(line).expect("a JSON line");
        let index = got["id"].as_u64().expect("an id") - landline_mockapi::ID_BASE;
        let mut want = expected_line(index, data, &report.ingest_ts);
        want["ingest_date"] = day.into();
        assert_eq!(got, want, "record {index}");
        ids.push(index);
    }
    ids
}

async fn stored_cursor(s3: &S3Server, prefix: &str) -> Option<IncrementalState> {
    let key = format!("{prefix}/_landline/incremental/changes/cursor.json");
    s3.get_object(&key)
        .await
        .map(|bytes| serde_json::from_slice(&bytes).expect("a state object"))
}

#[tokio::test]
async fn day_two_asks_only_for_what_changed_and_together_they_hold_every_record() {
    for s3 in s3::servers() {
        let data = data();
        let (t1, t2) = days(&data);
        let prefix = s3.unique_prefix("incremental");

        // Day 1: the data set as of t1, asked from `start`.
        let api = mock(data.clone(), |c| c.as_of = Some(t1)).await;
        let p = incremental_pipeline(&s3, &prefix, &api, "");
        let day1 = run_day(&s3, &p, "2026-11-24").await.expect("day 1 lands");
        let inc = day1.incremental.clone().expect("an incremental report");
        assert_eq!(inc.since, START);
        assert_eq!(inc.previous, None);
        assert_eq!(inc.high_water, Some(CursorValue(iso(t1).into())));
        assert_eq!(inc.cursor, inc.high_water);
        assert_eq!(inc.records_without_value, 0);
        let ids1 = landed(&s3, &prefix, "2026-11-24", &data, &day1).await;
        assert_eq!(ids1, visible_offsets(&data, None, Some(t1)), "{}", s3.name);
        let state = stored_cursor(&s3, &prefix)
            .await
            .expect("the cursor is stored");
        assert_eq!(state.cursor, CursorValue(iso(t1).into()));
        assert_eq!(state.run.as_ref().map(|r| r.records), Some(day1.records));
        // Every request asked from start.
        assert!(api.request_log().iter().all(|r| {
            r.path_and_query
                .contains("updated_since=2000-01-01T00%3A00%3A00Z")
        }));

        // Day 2: the data set as of t2, asked from day 1's cursor (inclusive).
        let api = mock(data.clone(), |c| c.as_of = Some(t2)).await;
        let p = incremental_pipeline(&s3, &prefix, &api, "");
        let day2 = run_day(&s3, &p, "2026-11-25").await.expect("day 2 lands");
        let inc = day2.incremental.clone().expect("an incremental report");
        assert_eq!(inc.since, iso(t1));
        assert_eq!(inc.previous, Some(CursorValue(iso(t1).into())));
        assert_eq!(inc.high_water, Some(CursorValue(iso(t2).into())));
        let ids2 = landed(&s3, &prefix, "2026-11-25", &data, &day2).await;
        assert_eq!(ids2, visible_offsets(&data, Some(t1), Some(t2)));
        assert!(ids2.len() < ids1.len(), "day 2 asks for less");

        // Together: every record of t2, once, but the boundary's (updated exactly at t1).
        let union: BTreeSet<u64> = ids1.iter().chain(&ids2).copied().collect();
        let all: BTreeSet<u64> = visible_offsets(&data, None, Some(t2)).into_iter().collect();
        assert_eq!(union, all, "no record lost");
        let repeated: Vec<u64> = ids1.iter().filter(|i| ids2.contains(i)).copied().collect();
        assert!(!repeated.is_empty(), "the boundary is fetched again");
        assert!(
            repeated
                .iter()
                .all(|&i| record_updated_at_ms(i, &data) == t1)
        );

        // The manifest records the boundary too.
        let manifest = s3
            .get_object(&format!(
                "{prefix}/_landline/manifests/changes/2026-11-25.json"
            ))
            .await
            .expect("a manifest");
        let manifest: Value = serde_json::from_slice(&manifest).expect("JSON");
        assert_eq!(manifest["report"]["incremental"]["since"], iso(t1));
        // No lock is left.
        assert!(
            s3.list_keys(&format!("{prefix}/_landline/locks/"))
                .await
                .is_empty()
        );
    }
}

#[tokio::test]
async fn a_failed_run_leaves_the_cursor_where_it_was_and_releases_the_lock() {
    let s3 = s3::s3s();
    let data = data();
    let (t1, _) = days(&data);
    let prefix = s3.unique_prefix("incremental-fail");
    let api = mock(data.clone(), |c| c.as_of = Some(t1)).await;
    let p = incremental_pipeline(&s3, &prefix, &api, "");
    run_day(&s3, &p, "2026-11-24").await.expect("day 1 lands");
    let before = stored_cursor(&s3, &prefix).await.expect("stored");

    let failing = mock(data.clone(), |c| {
        c.faults.error_after_pages = Some(2);
    })
    .await;
    let p = incremental_pipeline(&s3, &prefix, &failing, "[source.retry]\nmax_attempts = 1\n");
    let err = run_day(&s3, &p, "2026-11-25")
        .await
        .expect_err("the API fails");
    assert!(matches!(err, RunError::Source(_)), "{err}");
    assert_eq!(stored_cursor(&s3, &prefix).await, Some(before.clone()));
    assert!(
        s3.list_keys(&format!("{prefix}/_landline/locks/"))
            .await
            .is_empty()
    );

    // Refused after the lock was taken, before any request (a time limit with checkpoints
    // off): the lock goes too.
    let text = pipeline_text(
        &format!(
            "name = \"changes\"\n{}[source.incremental]\nfield = \"updated_at\"\n\
             param = \"updated_since\"\nstart = \"{START}\"\n",
            Style::Token.source(&api.base_url(), 50)
        ),
        &format!(
            "url = \"s3://{b}/{prefix}/date={{ingest_date}}/changes.jsonl.gz\"\n\
             [state]\nurl = \"s3://{b}/{prefix}/_landline/\"\ncheckpoints = false",
            b = s3.bucket
        ),
    );
    let options = RunOptions {
        max_duration: Some(Duration::from_secs(60)),
        ..options(&s3, "2026-11-25")
    };
    let err = landline::run(&pipeline(&text), options, std::future::pending())
        .await
        .expect_err("refused");
    assert!(matches!(err, RunError::Checkpoint { .. }), "{err}");
    assert_eq!(stored_cursor(&s3, &prefix).await, Some(before));
    assert!(
        s3.list_keys(&format!("{prefix}/_landline/locks/"))
            .await
            .is_empty(),
        "the lock is released"
    );
}

#[tokio::test]
async fn a_second_run_at_once_is_refused_naming_the_lock() {
    let s3 = s3::moto();
    let data = data();
    let prefix = s3.unique_prefix("incremental-lock");
    let api = mock(data.clone(), |c| c.latency = Duration::from_millis(100)).await;
    let p = incremental_pipeline(&s3, &prefix, &api, "");
    let first = tokio::spawn({
        let (s3, p) = (s3.clone(), p.clone());
        async move { run_day(&s3, &p, "2026-11-25").await }
    });
    let lock = format!("{prefix}/_landline/locks/changes/run.json");
    let mut waited = 0;
    while s3.get_object(&lock).await.is_none() {
        assert!(waited < 200, "the first run never took the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let err = run_day(&s3, &p, "2026-11-25").await.expect_err("refused");
    assert!(
        matches!(err, RunError::Incremental(IncrementalError::Locked { .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("another run of this pipeline holds the lock"),
        "{err}"
    );
    let report = first.await.expect("joined").expect("the first run lands");
    assert_eq!(report.records, RECORDS);
    assert!(s3.get_object(&lock).await.is_none(), "released");
}

/// A run stopped at checkpoints and continued in several processes asks from the same value
/// in each (the checkpoint's), and its high-water mark spans all of them. Stored deflate
/// (level 0) makes parts of the ~28 KB records, so the run has checkpoints to stop at.
#[tokio::test]
async fn a_continued_run_keeps_its_question_and_its_high_water_mark() {
    let s3 = s3::s3s();
    let data = DataConfig {
        total: 1000,
        pool: 1000,
        ..DataConfig::default()
    };
    let highest = (0..data.total)
        .map(|i| record_updated_at_ms(i, &data))
        .max()
        .expect("records");
    let prefix = s3.unique_prefix("incremental-resume");
    let api = mock(data.clone(), |_| {}).await;
    let p = incremental_pipeline_with(
        &s3,
        &prefix,
        &api,
        "[source.retry]\nmax_attempts = 1\n",
        "compression_level = 0",
    );
    let mut resume: Option<Checkpoint> = None;
    let mut processes = 0;
    let report = loop {
        processes += 1;
        assert!(processes <= 100, "not complete after 100 processes");
        let options = RunOptions {
            resume: resume.take(),
            max_duration: Some(Duration::from_millis(1)),
            ..options(&s3, "2026-11-25")
        };
        let report = landline::run(&p, options, std::future::pending())
            .await
            .expect("each process runs");
        if report.status == RunStatus::Complete {
            break report;
        }
        let url = report.checkpoint.clone().expect("a checkpoint");
        let cp = read_checkpoint(&url, &Default::default(), s3.env())
            .await
            .expect("readable")
            .expect("there");
        assert_eq!(
            cp.incremental.as_ref().map(|i| i.since.as_str()),
            Some(START)
        );
        resume = Some(cp);
    };
    assert!(processes >= 3, "{processes} processes");
    let inc = report.incremental.clone().expect("incremental");
    assert_eq!(inc.since, START);
    assert_eq!(inc.high_water, Some(CursorValue(iso(highest).into())));
    let ids = landed(&s3, &prefix, "2026-11-25", &data, &report).await;
    assert_eq!(ids, (0..data.total).collect::<Vec<_>>());
    assert_eq!(
        stored_cursor(&s3, &prefix).await.map(|s| s.cursor),
        Some(CursorValue(iso(highest).into()))
    );
    assert!(
        api.request_log()
            .iter()
            .all(|r| r.path_and_query.contains("updated_since=2000-01-01"))
    );
}

/// `{incremental_since}` in a query value instead of `param`: the same question; and the two
/// forms are exclusive.
#[tokio::test]
async fn the_value_can_go_through_a_template_instead_of_a_parameter() {
    let s3 = s3::s3s();
    let data = data();
    let (t1, t2) = days(&data);
    let prefix = s3.unique_prefix("incremental-template");
    let with_template = |api: &MockServer| {
        let source = format!(
            "{}[source.incremental]\nfield = \"updated_at\"\nstart = \"{START}\"\n",
            Style::Token.source(&api.base_url(), 50).replace(
                "count = 50",
                "count = 50, updated_since = \"{incremental_since}\""
            )
        );
        pipeline(&pipeline_text(
            &format!("name = \"changes\"\n{source}"),
            &format!(
                "url = \"s3://{b}/{prefix}/date={{ingest_date}}/changes.jsonl.gz\"\n\
                 [state]\nurl = \"s3://{b}/{prefix}/_landline/\"",
                b = s3.bucket
            ),
        ))
    };
    let api = mock(data.clone(), |c| c.as_of = Some(t1)).await;
    run_day(&s3, &with_template(&api), "2026-11-24")
        .await
        .expect("day 1");
    let api = mock(data.clone(), |c| c.as_of = Some(t2)).await;
    let day2 = run_day(&s3, &with_template(&api), "2026-11-25")
        .await
        .expect("day 2");
    let inc = day2.incremental.clone().expect("incremental");
    assert_eq!((inc.param, inc.since), (None, iso(t1)));
    let ids = landed(&s3, &prefix, "2026-11-25", &data, &day2).await;
    assert_eq!(ids, visible_offsets(&data, Some(t1), Some(t2)));

    for (extra, message) in [
        (
            "param = \"updated_since\"\n",
            "source.incremental.param: the source also uses {incremental_since}",
        ),
        (
            "",
            "source.incremental.param: required, unless {incremental_since}",
        ),
    ] {
        let with = if extra.is_empty() {
            ""
        } else {
            ", updated_since = \"{incremental_since}\""
        };
        let text = pipeline_text(
            &format!(
                "{}[source.incremental]\nfield = \"updated_at\"\nstart = \"{START}\"\n{extra}",
                Style::Token
                    .source(&api.base_url(), 50)
                    .replace("count = 50", &format!("count = 50{with}"))
            ),
            "url = \"out.jsonl.gz\"",
        );
        let err = landline::config::PipelineFile::parse(&text, "p.toml")
            .and_then(|f| f.validate(&|_| None))
            .expect_err("refused");
        assert!(err.to_string().starts_with(message), "{err}");
    }
}

#[tokio::test]
async fn lookback_asks_from_before_the_cursor() {
    let s3 = s3::s3s();
    let data = data();
    let (t1, t2) = days(&data);
    let prefix = s3.unique_prefix("incremental-lookback");
    let api = mock(data.clone(), |c| c.as_of = Some(t1)).await;
    let p = incremental_pipeline(&s3, &prefix, &api, "lookback = \"1h\"\n");
    run_day(&s3, &p, "2026-11-24").await.expect("day 1");
    let api = mock(data.clone(), |c| c.as_of = Some(t2)).await;
    let p = incremental_pipeline(&s3, &prefix, &api, "lookback = \"1h\"\n");
    let day2 = run_day(&s3, &p, "2026-11-25").await.expect("day 2");
    let since = iso(t1 - 3_600_000);
    assert_eq!(day2.incremental.clone().expect("incremental").since, since);
    let ids = landed(&s3, &prefix, "2026-11-25", &data, &day2).await;
    let from = t1 - 3_600_000;
    assert_eq!(ids, visible_offsets(&data, Some(from), Some(t2)));
}
