//! A library `Source` run through `run_source`: the same transform, gzip member, multipart
//! upload and checkpoints as `landline run`, with the source's own position in the
//! checkpoint. Against moto and s3s-fs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use chrono::NaiveDate;
use landline::checkpoint::{Checkpoint, SourcePosition};
use landline::pipeline::{read_checkpoint, run_source};
use landline::report::RunStatus;
use landline::source::{HttpPages, HttpSource, Page, Source, SourceError};
use landline::{Pipeline, RunError, RunOptions, RunReport};
use serde_json::Value;

use crate::harness::{INGEST_DATE, Style, data, gunzip, mock, pipeline, pipeline_text, verify};
use crate::s3::{self, S3Server};

/// Numbered records, `per_page` a page, each with ~600 bytes of text so parts fill; fails
/// with `fail_at`'s page number if set, or writes a bad record on `bad_at`.
struct Numbers {
    next: u64,
    end: u64,
    per_page: u64,
    fail_at: Option<u64>,
    bad_at: Option<u64>,
    pages: u64,
}

impl Numbers {
    fn new(end: u64) -> Self {
        Numbers {
            next: 0,
            end,
            per_page: 250,
            fail_at: None,
            bad_at: None,
            pages: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the numbers ran out at {0}")]
struct OutOfNumbers(u64);

fn record(id: u64) -> Value {
    serde_json::json!({
        "id": id,
        "name": format!("record-{id}"),
        "text": format!("{id:020}").repeat(30),
    })
}

impl Source for Numbers {
    type Position = u64;
    type Error = OutOfNumbers;

    fn position(&self) -> u64 {
        self.next
    }

    fn resume_at(&mut self, position: u64) -> Result<(), OutOfNumbers> {
        self.next = position;
        Ok(())
    }

    async fn fetch_next(&mut self, page: &mut Page) -> Result<bool, OutOfNumbers> {
        if self.next >= self.end {
            return Ok(false);
        }
        self.pages += 1;
        if self.fail_at == Some(self.pages) {
            return Err(OutOfNumbers(self.next));
        }
        let last = (self.next + self.per_page).min(self.end);
        for id in self.next..last {
            page.push(&record(id)).expect("serialises");
        }
        if self.bad_at == Some(self.pages) {
            page.push_json("[1, 2]");
        }
        self.next = last;
        // A source that takes its time, as a real one does: a time-limited run stops at
        // a checkpoint before it is done.
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(true)
    }
}

/// A pipeline without `[source]`, writing to `prefix` on `s3` (gzip level 0, so 5 MiB parts
/// fill fast), state beside it.
fn library_pipeline(s3: &S3Server, prefix: &str) -> Pipeline {
    pipeline(&format!(
        "name = \"numbers\"\n\
         [transform]\nadd = {{ ingest_date = \"{{ingest_date}}\" }}\n\
         [sink]\nurl = \"s3://{bucket}/{prefix}/date={{ingest_date}}/numbers.jsonl.gz\"\n\
         compression_level = 0\n\
         [state]\nurl = \"s3://{bucket}/{prefix}/_landline/\"\n",
        bucket = s3.bucket
    ))
}

fn options(s3: &S3Server, resume: Option<Checkpoint>, max: Option<Duration>) -> RunOptions {
    RunOptions {
        ingest_date: Some(NaiveDate::parse_from_str(INGEST_DATE, "%Y-%m-%d").expect("date")),
        store_env: s3.env().into(),
        resume,
        max_duration: max,
        ..RunOptions::default()
    }
}

/// Runs `make()`'s source until it completes, each process stopped by a tiny time limit and
/// the next resumed from its checkpoint (bounded: 50 processes). Returns the last report
/// and the number of processes.
async fn run_in_processes<S: Source>(
    s3: &S3Server,
    pipeline: &Pipeline,
    make: impl Fn() -> S,
) -> (RunReport, u32, Vec<Checkpoint>) {
    let mut resume = None;
    let mut seen = Vec::new();
    for process in 1..=50 {
        let report = run_source(
            pipeline,
            make(),
            options(s3, resume.take(), Some(Duration::from_millis(1))),
            std::future::pending(),
        )
        .await
        .unwrap_or_else(|e| panic!("{} process {process}: {e}", s3.name));
        if report.status == RunStatus::Complete {
            return (report, process, seen);
        }
        let url = report
            .checkpoint
            .clone()
            .expect("a continue names its checkpoint");
        let cp = read_checkpoint(&url, &Default::default(), s3.env())
            .await
            .expect("readable")
            .expect("the checkpoint is there");
        seen.push(cp.clone());
        resume = Some(cp);
    }
    panic!("{}: not complete after 50 processes", s3.name);
}

/// One run to the end (or to its failure), no time limit.
async fn run_once<S: Source>(
    s3: &S3Server,
    pipeline: &Pipeline,
    source: S,
) -> Result<RunReport, RunError> {
    run_source(
        pipeline,
        source,
        options(s3, None, None),
        std::future::pending(),
    )
    .await
}

async fn assert_nothing_left(s3: &S3Server, prefix: &str) {
    if s3.supports_list_multipart_uploads {
        let open = s3.list_multipart_uploads(prefix).await;
        assert!(open.is_empty(), "{}: uploads left open: {open:?}", s3.name);
    }
    // Only the run's manifest stays.
    let mut state = s3.list_keys(&format!("{prefix}/_landline/")).await;
    state.retain(|key| !key.contains("/_landline/manifests/"));
    assert!(state.is_empty(), "{}: state left: {state:?}", s3.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_library_source_lands_every_record_once_across_processes_in_one_member() {
    const RECORDS: u64 = 30_000;
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("library");
        let pipeline = library_pipeline(&s3, &prefix);
        let (report, processes, checkpoints) =
            run_in_processes(&s3, &pipeline, || Numbers::new(RECORDS)).await;
        assert!(processes >= 3, "{}: {processes} processes", s3.name);
        // Each checkpoint holds the source's own position: the next number, at a page end.
        for cp in &checkpoints {
            let SourcePosition::Library(Value::Number(next)) = &cp.position else {
                panic!("{}: position {:?}", s3.name, cp.position);
            };
            let next = next.as_u64().expect("a number");
            assert_eq!(next, cp.counters.records, "{}", s3.name);
            assert_eq!(next % 250, 0, "{}: not a page end", s3.name);
        }
        let bytes = s3
            .get_object(&format!("{prefix}/date={INGEST_DATE}/numbers.jsonl.gz"))
            .await
            .expect("the object landed");
        // The single-member reader sees every record: one gzip member.
        let jsonl = gunzip(&bytes);
        let mut count = 0;
        for (i, line) in BufReader::new(&jsonl[..]).lines().enumerate() {
            let got: Value = serde_json::from_str(&line.expect("utf-8")).expect("JSON");
            let mut want = record(i as u64);
            want["ingest_date"] = INGEST_DATE.into();
            assert_eq!(got, want, "{}: line {i}", s3.name);
            count += 1;
        }
        assert_eq!(count, RECORDS, "{}", s3.name);
        assert_eq!(report.records, RECORDS, "{}", s3.name);
        assert_eq!(report.pages, RECORDS / 250, "{}", s3.name);
        assert_eq!(report.bytes_uncompressed, jsonl.len() as u64);
        // The widest line, carried across processes by the checkpoints.
        let widest = jsonl.split(|&b| b == b'\n').map(<[u8]>::len).max();
        assert_eq!(
            Some(report.largest_record_bytes as usize),
            widest,
            "{}",
            s3.name
        );
        assert_nothing_left(&s3, &prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_library_source_that_fails_leaves_no_object_and_no_upload() {
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("library-fails");
        let pipeline = library_pipeline(&s3, &prefix);
        // Past the first parts, so an upload with parts is aborted.
        let source = Numbers {
            fail_at: Some(60),
            ..Numbers::new(30_000)
        };
        let err = run_once(&s3, &pipeline, source)
            .await
            .expect_err("the source fails");
        assert!(
            matches!(err, RunError::Source(SourceError::Library { page: 60, .. })),
            "{}: {err:?}",
            s3.name
        );
        assert!(
            err.to_string()
                .contains("page 60 of the source: the numbers ran out at 14750"),
            "{}: {err}",
            s3.name
        );
        // A record that is not an object: named by page and index, and nothing lands.
        let source = Numbers {
            bad_at: Some(3),
            ..Numbers::new(30_000)
        };
        let err = run_once(&s3, &pipeline, source)
            .await
            .expect_err("the record is refused");
        let message = err.to_string();
        assert!(
            message.contains("page 3 of the source: record 250 of the page"),
            "{}: {message}",
            s3.name
        );
        let keys = s3.list_keys(&prefix).await;
        assert!(keys.is_empty(), "{}: {keys:?}", s3.name);
        assert_nothing_left(&s3, &prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_pages_as_a_source_land_what_run_lands_and_resume_from_their_paging_state() {
    const RECORDS: u64 = 1_500;
    let data = data(RECORDS);
    let server = mock(data.clone(), |_| {}).await;
    let s3 = s3::moto();
    for style in [Style::Token, Style::Offset] {
        let prefix = s3.unique_prefix("http-pages");
        let sink = format!(
            "url = \"s3://{bucket}/{prefix}/date={{ingest_date}}/variants.jsonl.gz\"\n\
             compression_level = 0\n\
             [state]\nurl = \"s3://{bucket}/{prefix}/_landline/\"",
            bucket = s3.bucket
        );
        let pipeline = pipeline(&pipeline_text(&style.source(&server.base_url(), 20), &sink));
        let spec = pipeline.source.clone().expect("a [source]");
        let vars = pipeline
            .run_vars(
                INGEST_DATE.into(),
                "2026-11-25T00:00:00.000Z".into(),
                &BTreeMap::new(),
            )
            .expect("vars");
        let make = || {
            let source = HttpSource::new(spec.config(&vars).expect("config")).expect("client");
            HttpPages::new(source, spec.records.clone())
        };
        let (report, processes, checkpoints) = run_in_processes(&s3, &pipeline, make).await;
        assert!(processes >= 3, "{style:?}: {processes} processes");
        for cp in &checkpoints {
            let SourcePosition::Library(paging) = &cp.position else {
                panic!("{style:?}: {:?}", cp.position);
            };
            assert_eq!(paging["pages"], cp.counters.pages, "{style:?}");
            assert_eq!(
                paging["seen"].as_array().map(Vec::len),
                Some(cp.counters.pages as usize),
                "{style:?}: the loop guard holds the pages written"
            );
        }
        let bytes = s3
            .get_object(&format!("{prefix}/date={INGEST_DATE}/variants.jsonl.gz"))
            .await
            .expect("landed");
        verify(&gunzip(&bytes), &data, &report, 7);
        assert_nothing_left(&s3, &prefix).await;

        // A library source's checkpoint is not `landline run`'s: refused, saying why.
        let first = run_source(
            &pipeline,
            make(),
            options(&s3, None, Some(Duration::from_millis(1))),
            std::future::pending(),
        )
        .await
        .expect("runs");
        assert_eq!(first.status, RunStatus::Continue, "{style:?}");
        let url = first.checkpoint.expect("checkpoint");
        let cp = read_checkpoint(&url, &Default::default(), s3.env())
            .await
            .expect("readable")
            .expect("there");
        let err = landline::run(
            &pipeline,
            options(&s3, Some(cp.clone()), None),
            std::future::pending(),
        )
        .await
        .expect_err("refused");
        assert!(
            err.to_string().contains("written by a library source"),
            "{style:?}: {err}"
        );
        // It goes on as it began, and completes.
        let done = run_source(
            &pipeline,
            make(),
            options(&s3, Some(cp), None),
            std::future::pending(),
        )
        .await
        .expect("completes");
        assert_eq!(done.status, RunStatus::Complete);
        assert_eq!(done.records, RECORDS);
        assert_nothing_left(&s3, &prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_library_source_writing_several_objects_completes_them_at_each_stop() {
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("library-objects");
        let pipeline = pipeline(&format!(
            "name = \"numbers\"\n\
             [transform]\nadd = {{ ingest_date = \"{{ingest_date}}\" }}\n\
             [sink]\nurl = \"s3://{bucket}/{prefix}/date={{ingest_date}}/part-{{part}}.jsonl.gz\"\n\
             max_object_records = 400\n\
             [state]\nurl = \"s3://{bucket}/{prefix}/_landline/\"\n",
            bucket = s3.bucket
        ));
        let (report, processes, checkpoints) =
            run_in_processes(&s3, &pipeline, || Numbers::new(2_000)).await;
        // One page (250 records) a process: each stop completes the object being written.
        // The source only says it has ended when asked for a ninth page: the last process
        // writes nothing, and leaves no object of its own.
        assert_eq!(processes, 9, "{}", s3.name);
        assert_eq!(checkpoints.len(), 8, "{}", s3.name);
        for (i, cp) in checkpoints.iter().enumerate() {
            let done = cp.objects.as_ref().expect("the objects so far");
            assert_eq!(done.landed.len(), i + 1, "{}", s3.name);
            assert_eq!(done.next_part, i as u64 + 2, "{}", s3.name);
        }
        assert_eq!(report.objects.len(), 8, "{}: {:?}", s3.name, report.objects);
        let mut next = 0;
        for (i, url) in report.objects.iter().enumerate() {
            assert!(
                url.ends_with(&format!("part-{:05}.jsonl.gz", i + 1)),
                "{url}"
            );
            let key = url
                .strip_prefix(&format!("s3://{}/", s3.bucket))
                .expect("in the bucket");
            let bytes = s3.get_object(key).await.expect("the object landed");
            for line in BufReader::new(&gunzip(&bytes)[..]).lines() {
                let got: Value = serde_json::from_str(&line.expect("utf-8")).expect("JSON");
                let mut want = record(next);
                want["ingest_date"] = INGEST_DATE.into();
                assert_eq!(got, want, "{}: record {next}", s3.name);
                next += 1;
            }
        }
        assert_eq!(next, 2_000, "{}", s3.name);
        assert_eq!(report.records, 2_000);
        assert_nothing_left(&s3, &prefix).await;
    }
}
