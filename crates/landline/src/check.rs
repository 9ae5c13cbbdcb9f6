//! `landline check`: a pipeline and its environment, checked without writing any data.
//!
//! In order, each step only once the one before passed:
//!
//! 1. the run's values (`[vars]`, `{ingest_date}`) and the destination URL they make;
//! 2. the store: credentials usable and the key writable, by creating a multipart upload of
//!    the object and aborting it at once (the one write, and it leaves nothing);
//! 3. the source: the first page fetched and parsed, records found at the pointer, every
//!    record of it through the transform (objects, no repeated keys, timestamps parseable,
//!    within `max_record_bytes`) into memory, never into the store.
//!
//! The answer says what `run` would do: the destination with secrets redacted, the object's
//! key, the state location and what it keeps there, and the memory budget.

use std::time::Instant;

use serde::Serialize;

use crate::config::Pipeline;
use crate::pipeline::{RunError, RunOptions};
use crate::report::MemorySettings;
use crate::sink::{Destination, ObjectWriter};
use crate::source::{HttpPages, HttpSource, Page, Source as _};
use crate::transform::RecordWriter;

/// What `check` found: everything `run` needs works.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// The run's `{ingest_date}`.
    pub ingest_date: String,
    /// The `[vars]` values of the run.
    pub vars: std::collections::BTreeMap<String, String>,
    /// The object `run` would write (no secret is ever part of a destination URL).
    pub object: String,
    /// Its key (path) in the store.
    pub key: String,
    /// Where run state goes (checkpoints, manifests).
    pub state: String,
    /// Whether runs write checkpoints there.
    pub checkpoints: bool,
    /// Whether runs write manifests there (and compare with the last one).
    pub manifests: bool,
    /// The id of the multipart upload created and aborted, proving the key writable.
    pub upload_checked: String,
    /// The first page, when the pipeline has a `[source]`.
    pub first_page: Option<FirstPage>,
    /// What the settings allow the process to hold.
    pub memory: MemorySettings,
    /// An incremental source's query: the stored cursor and the value a run would send.
    pub incremental: Option<CheckedCursor>,
}

/// What an incremental run would ask for now.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedCursor {
    /// Where the cursor is stored.
    pub state: String,
    /// The stored cursor (`None`: no run has stored one, so `start` is used).
    pub cursor: Option<crate::incremental::CursorValue>,
    /// The query parameter the value is sent in (`None`: through `{incremental_since}`).
    pub param: Option<String>,
    /// The value.
    pub since: String,
}

/// The source's first page, as `check` fetched it.
#[derive(Debug, Clone, Serialize)]
pub struct FirstPage {
    /// Its URL, secrets redacted.
    pub url: String,
    /// Records found at `[source] records`.
    pub records: u64,
    /// Bytes of body, decoded.
    pub bytes: u64,
    /// The timestamp fields normalised on it (values found, over all records).
    pub timestamps_parsed: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Bytes of the widest record's JSON line.
    pub largest_record_bytes: u64,
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "pipeline {} is ready to run (ingest date {})",
            self.pipeline, self.ingest_date
        )?;
        for (name, value) in &self.vars {
            writeln!(f, "  var     {name} = {value}")?;
        }
        match &self.first_page {
            Some(p) => writeln!(
                f,
                "  source  {}: {} records on the first page ({:.1} KiB, {:.2} s), {} timestamps parsed, widest record {} bytes",
                p.url,
                p.records,
                p.bytes as f64 / 1024.0,
                p.seconds,
                p.timestamps_parsed,
                p.largest_record_bytes
            )?,
            None => writeln!(f, "  source  a library source (no [source] to check)")?,
        }
        writeln!(f, "  object  {}", self.object)?;
        writeln!(f, "  key     {}", self.key)?;
        writeln!(
            f,
            "  store   writable: created and aborted multipart upload {}",
            self.upload_checked
        )?;
        let keeps = match (self.checkpoints, self.manifests) {
            (true, true) => "checkpoints and manifests",
            (true, false) => "checkpoints",
            (false, true) => "manifests",
            (false, false) => "nothing",
        };
        writeln!(f, "  state   {} ({keeps})", self.state)?;
        if let Some(inc) = &self.incremental {
            let from = match &inc.cursor {
                Some(cursor) => format!("the cursor {cursor} stored at {}", inc.state),
                None => format!("start (no cursor stored at {} yet)", inc.state),
            };
            let name = inc.param.as_deref().unwrap_or("{incremental_since}");
            writeln!(f, "  cursor  asks {name}={}: {from}", inc.since)?;
        }
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let m = &self.memory;
        write!(
            f,
            "  memory  budget {:.1} MiB: {} parts of {:.0} MiB in flight (+1 filling), {} deflate threads, pages {} x {:.0} KiB, records up to {:.0} MiB",
            mib(m.budget_bytes),
            m.max_parts_in_flight,
            mib(m.part_size_bytes),
            m.compression_threads,
            m.concurrency,
            m.page_buffer_bytes as f64 / 1024.0,
            mib(m.max_record_bytes),
        )
    }
}

/// Checks `pipeline` as [`crate::run`] would run it with `options` (its `ingest_date`,
/// `vars` and `store_env`), writing nothing but a multipart upload it aborts at once.
pub async fn check(pipeline: &Pipeline, options: RunOptions) -> Result<CheckReport, RunError> {
    let vars = crate::pipeline::run_vars(pipeline, options.ingest_date, &options.vars)?;
    let transform = pipeline.transform.build(&vars)?;
    let object = pipeline.sink.object_url(&vars, 1);
    let destination = Destination::open(&object, &pipeline.sink.store, options.store_env.clone())?;
    let writer = ObjectWriter::create(&destination, 1).await?;
    let upload_checked = writer.state().upload_id;
    writer.abort().await?;
    let state = crate::pipeline::state_prefix(pipeline, &object);
    let mut incremental = None;
    let first_page = match &pipeline.source {
        None => None,
        Some(spec) => {
            let mut config = spec.config(&vars)?;
            if let Some(inc) = &spec.incremental {
                let (at, _) = crate::pipeline::incremental_locations(pipeline, &options.vars)?;
                let run = crate::pipeline::incremental_query(
                    inc,
                    &at,
                    &pipeline.sink.store,
                    &options.store_env,
                )
                .await?;
                config = spec.config_since(&vars, &run.since)?;
                incremental = Some(CheckedCursor {
                    state: at,
                    cursor: run.previous,
                    param: inc.param.clone(),
                    since: run.since,
                });
            }
            let source = HttpSource::new(config)?;
            // Nothing changed since the cursor is a normal answer for an incremental source.
            let empty_ok = spec.incremental.is_some();
            Some(first_page(source, spec.records.clone(), &transform, empty_ok).await?)
        }
    };
    let mut memory = crate::pipeline::memory_settings(pipeline);
    if let Some(source) = &pipeline.source {
        let config = source.settings();
        memory.concurrency = config.concurrency as u64;
        memory.page_buffer_bytes = config.page_buffer_bytes as u64;
        memory.max_page_bytes = u64::try_from(config.max_page_bytes).unwrap_or(u64::MAX);
    }
    memory.budget_bytes = memory.budget();
    Ok(CheckReport {
        pipeline: pipeline.name.clone(),
        ingest_date: vars.ingest_date.clone(),
        vars: vars.vars.clone(),
        key: destination.path.to_string(),
        object,
        state,
        checkpoints: pipeline.state.checkpoints,
        manifests: pipeline.state.manifests,
        upload_checked,
        first_page,
        memory,
        incremental,
    })
}

async fn first_page(
    source: HttpSource,
    records: crate::pointer::JsonPointer,
    transform: &crate::transform::Transform,
    empty_ok: bool,
) -> Result<FirstPage, RunError> {
    let started = Instant::now();
    let url = source
        .config()
        .redactor
        .url(&source.config().url)
        .to_string();
    let pointer = records.to_string();
    let mut pages = HttpPages::new(source, records);
    let mut page = Page::default();
    pages.fetch_next(&mut page).await?;
    if page.is_empty() && !empty_ok {
        return Err(RunError::Config(crate::config::ConfigError::Invalid {
            key: "source.records".into(),
            message: format!(
                "the first page ({url}) has no records at {pointer:?}: the pointer is wrong, or the source has nothing today"
            ),
        }));
    }
    let mut lines = Vec::new();
    let mut writer = RecordWriter::new(transform, &mut lines);
    for (index, record) in page.records().enumerate() {
        crate::pages::write_record(&mut writer, index as u64, record).map_err(|source| {
            RunError::Source(crate::source::SourceError::Page {
                page: 1,
                url: pages
                    .source()
                    .config()
                    .redactor
                    .url(&pages.source().config().url),
                source,
            })
        })?;
    }
    let largest_record_bytes = writer.largest() as u64;
    drop(writer);
    let timestamps_parsed = count_timestamps(&lines, transform.timestamp_fields());
    Ok(FirstPage {
        url,
        records: page.len() as u64,
        bytes: page.bytes(),
        timestamps_parsed,
        seconds: started.elapsed().as_secs_f64(),
        largest_record_bytes,
    })
}

/// How many of `fields` hold a string (a normalised timestamp) in the JSON Lines `lines`.
fn count_timestamps(lines: &[u8], fields: &[String]) -> u64 {
    if fields.is_empty() {
        return 0;
    }
    lines
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            serde_json::from_slice::<std::collections::BTreeMap<String, serde_json::Value>>(line)
                .ok()
        })
        .map(|record| {
            fields
                .iter()
                .filter(|f| record.get(f.as_str()).is_some_and(|v| v.is_string()))
                .count() as u64
        })
        .sum()
}
