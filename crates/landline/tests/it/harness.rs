//! Shared pieces of the integration tests: pipeline files for each endpoint of the mock API,
//! running a pipeline in-process, and checking a landed object record by record.

use std::io::{BufRead, BufReader, Read};

use chrono::{DateTime, NaiveDate, SecondsFormat};
use landline::config::PipelineFile;
use landline::{Pipeline, RunError, RunOptions, RunReport};
use landline_mockapi::{DataConfig, MockConfig, MockServer, expected_record, record_times};
use serde_json::Value;

/// The fixed `--ingest-date` of the tests, so object keys are reproducible.
pub(crate) const INGEST_DATE: &str = "2026-11-25";

/// A small data set: `total` records cut from a pool of 50.
pub(crate) fn data(total: u64) -> DataConfig {
    DataConfig {
        total,
        pool: 50,
        ..DataConfig::default()
    }
}

/// Starts the mock API.
pub(crate) async fn mock(data: DataConfig, tweak: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig {
        data,
        ..MockConfig::default()
    };
    tweak(&mut config);
    landline_mockapi::spawn(config)
        .await
        .expect("mock API starts")
}

/// The pagination styles of the mock API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Token,
    NextUrl,
    LinkHeader,
    Offset,
    Page,
    None,
}

impl Style {
    pub(crate) const ALL: [Style; 6] = [
        Style::Token,
        Style::NextUrl,
        Style::LinkHeader,
        Style::Offset,
        Style::Page,
        Style::None,
    ];

    /// The `[source]` section (with its pagination) for this style at `api`, `page` records a page.
    pub(crate) fn source(self, api: &str, page: u64) -> String {
        match self {
            Style::Token => format!(
                "[source]\nurl = \"{api}/variants\"\nquery = {{ count = {page} }}\nrecords = \"/variants\"\n\
                 [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n"
            ),
            Style::NextUrl => format!(
                "[source]\nurl = \"{api}/next_url/variants\"\nquery = {{ count = {page} }}\nrecords = \"/data/items\"\n\
                 [source.pagination]\ntype = \"next_url\"\nnext = \"/links/next\"\n"
            ),
            Style::LinkHeader => format!(
                "[source]\nurl = \"{api}/link/variants\"\nquery = {{ per_page = {page} }}\nrecords = \"\"\n\
                 [source.pagination]\ntype = \"link_header\"\n"
            ),
            Style::Offset => format!(
                "[source]\nurl = \"{api}/offset/variants\"\nrecords = \"/results\"\n\
                 [source.pagination]\ntype = \"offset\"\nparam = \"offset\"\nlimit_param = \"limit\"\nlimit = {page}\n"
            ),
            Style::Page => format!(
                "[source]\nurl = \"{api}/page/variants\"\nrecords = \"/items\"\n\
                 [source.pagination]\ntype = \"page\"\nparam = \"page\"\nlimit_param = \"per_page\"\nlimit = {page}\n"
            ),
            Style::None => {
                format!("[source]\nurl = \"{api}/single/variants\"\nrecords = \"/variants\"\n")
            }
        }
    }
}

/// The `[transform]` section the tests use: the two ingest fields and three timestamps.
pub(crate) const TRANSFORM: &str = "[transform]\n\
    add = { ingest_date = \"{ingest_date}\", ingest_ts = \"{ingest_ts}\" }\n\
    timestamps = [\"created_at\", \"updated_at\", \"published_at\"]\n";

/// A whole pipeline file.
pub(crate) fn pipeline_text(source: &str, sink: &str) -> String {
    format!("{source}{TRANSFORM}[sink]\n{sink}\n")
}

/// Parses and validates a pipeline file (no environment variables).
pub(crate) fn pipeline(text: &str) -> Pipeline {
    PipelineFile::parse(text, "test.toml")
        .and_then(|f| f.validate(&|_| None))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Runs a pipeline in-process with the given store environment.
pub(crate) async fn run(
    pipeline: &Pipeline,
    store_env: Vec<(String, String)>,
) -> Result<RunReport, RunError> {
    let options = RunOptions {
        ingest_date: Some(NaiveDate::parse_from_str(INGEST_DATE, "%Y-%m-%d").expect("date")),
        store_env: store_env.into(),
        ..RunOptions::default()
    };
    landline::run(pipeline, options, std::future::pending()).await
}

/// Decompresses with flate2's single-member reader, which stops after the first gzip member:
/// every record must be in that member.
pub(crate) fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn iso_millis(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .expect("in range")
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The line the run should have written for record `index`.
pub(crate) fn expected_line(index: u64, data: &DataConfig, ingest_ts: &str) -> Value {
    let mut record = expected_record(index, data);
    let times = record_times(index, data);
    let object = record.as_object_mut().expect("records are objects");
    object.insert("created_at".into(), iso_millis(times.created_at_ms).into());
    object.insert("updated_at".into(), iso_millis(times.updated_at_ms).into());
    object.insert(
        "published_at".into(),
        iso_millis(times.published_at_ms).into(),
    );
    object.insert("ingest_date".into(), INGEST_DATE.into());
    object.insert("ingest_ts".into(), ingest_ts.into());
    record
}

/// Checks that `jsonl` holds exactly records 0..total, in order, transformed. Every
/// `full_every`-th record is compared whole; all are checked for id, timestamps and added fields.
pub(crate) fn verify(jsonl: &[u8], data: &DataConfig, report: &RunReport, full_every: u64) {
    let mut count = 0u64;
    for (i, line) in BufReader::new(jsonl).lines().enumerate() {
        let i = i as u64;
        let line = line.expect("utf-8 lines");
        let got: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("line {i}: {e}"));
        assert_eq!(
            got["id"],
            landline_mockapi::ID_BASE + i,
            "line {i} out of order"
        );
        if i.is_multiple_of(full_every) || i + 1 == data.total {
            assert_eq!(got, expected_line(i, data, &report.ingest_ts), "record {i}");
        } else {
            let times = record_times(i, data);
            assert_eq!(
                got["created_at"],
                iso_millis(times.created_at_ms),
                "record {i}"
            );
            assert_eq!(
                got["updated_at"],
                iso_millis(times.updated_at_ms),
                "record {i}"
            );
            assert_eq!(
                got["published_at"],
                iso_millis(times.published_at_ms),
                "record {i}"
            );
            assert_eq!(got["ingest_date"], INGEST_DATE, "record {i}");
            assert_eq!(got["ingest_ts"], report.ingest_ts.as_str(), "record {i}");
        }
        count += 1;
    }
    assert_eq!(count, data.total, "records in the object");
    assert_eq!(report.records, data.total, "records in the report");
    assert_eq!(report.bytes_uncompressed, jsonl.len() as u64);
}

/// A store the integration tests land objects in: the root of its URLs and the
/// environment a run reaches it with.
pub(crate) trait TestStore {
    /// `s3://BUCKET` or `az://CONTAINER`.
    fn root(&self) -> String;
    /// The variables a run's `store_env` needs.
    fn store_env(&self) -> Vec<(String, String)>;
}

impl TestStore for crate::s3::S3Server {
    fn root(&self) -> String {
        format!("s3://{}", self.bucket)
    }
    fn store_env(&self) -> Vec<(String, String)> {
        self.env()
    }
}

/// S3's smallest part, the part size of the runs [`sink`] writes.
pub(crate) const PART: u64 = 5 * 1024 * 1024;

/// The `[sink]` (`part_size_bytes` = [`PART`], then `extra`) and `[state]` of a run into
/// `prefix` of `store`, writing `date=…/name`; the run's state goes to `prefix/_landline/`.
pub(crate) fn sink(store: &impl TestStore, prefix: &str, name: &str, extra: &str) -> String {
    let root = store.root();
    format!(
        "url = \"{root}/{prefix}/date={{ingest_date}}/{name}\"\npart_size_bytes = {PART}\n\
         {extra}[state]\nurl = \"{root}/{prefix}/_landline/\"\n"
    )
}

/// The key [`sink`] lands `name` at.
pub(crate) fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}/date={INGEST_DATE}/{name}")
}

/// Runs that land an object of at least three [`PART`]s in each compressed format:
/// `(format, object name, records, extra [sink] lines)`. zstd at level 1 compresses the
/// mock's records 28 times: 11,500 records make three 5 MiB parts; gzip at its default
/// level, 11,000 records.
pub(crate) const IN_PARTS: [(landline::compress::Compression, &str, u64, &str); 2] = [
    (
        landline::compress::Compression::Gzip,
        "variants.jsonl.gz",
        11_000,
        "",
    ),
    (
        landline::compress::Compression::Zstd,
        "variants.jsonl.zst",
        11_500,
        "compression_level = 1\n",
    ),
];

/// Runs `case` (one of [`IN_PARTS`]) from the mock API into `prefix` of `store` (200
/// records a page) and checks that it took three parts or more; returns what the API
/// served and the report.
pub(crate) async fn land_in_parts(
    store: &impl TestStore,
    prefix: &str,
    case: (landline::compress::Compression, &str, u64, &str),
) -> (DataConfig, RunReport) {
    let (compression, name, records, extra) = case;
    let data = data(records);
    let server = mock(data.clone(), |_| {}).await;
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 200),
        &sink(store, prefix, name, extra),
    );
    let report = run_on(&text, store, RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
    assert!(report.parts >= 3, "{compression:?}: {} parts", report.parts);
    server.shutdown().await;
    (data, report)
}

/// Runs `text` into `store` with `options` (the tests' ingest date and the store's
/// environment added).
pub(crate) async fn run_on(
    text: &str,
    store: &impl TestStore,
    options: RunOptions,
) -> Result<RunReport, RunError> {
    let options = RunOptions {
        ingest_date: Some(INGEST_DATE.parse().expect("date")),
        store_env: store.store_env().into(),
        ..options
    };
    landline::run(&pipeline(text), options, std::future::pending()).await
}
