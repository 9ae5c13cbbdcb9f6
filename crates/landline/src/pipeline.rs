//! `run`: wires the stages of one pipeline run; the data path reads top to bottom here.
//! [`run_source`] is the same run with a library [`Source`] in place of the HTTP API: its
//! pages are fetched on the caller's task and written on a thread of their own, and
//! everything after the transform (encoder, compressor, upload, checkpoints, the end of
//! the run in `conclude`) is shared.
//!
//! ```text
//! page tasks (async, ahead) ─ bodies ─▶ page processor thread: decode + split + transform
//!                                            │ JSON Lines chunks (bounded queue)
//!                                            ▼
//!                          gzip thread ── parts (bounded channel) ──▶ upload task ──▶ store
//! ```
//!
//! Each arrow is bounded, so a slow stage makes the ones before it wait: the upload task takes
//! a part only when a slot is free, the gzip thread blocks on the part channel, the processor
//! on the chunk queue, and a page's fetch task stops reading its connection when the page's
//! byte budget is full (see the `pages` module).
//!
//! Every error path aborts the multipart upload before returning; the upload is created
//! while the first page is fetched, so wrong credentials fail at the first request.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, SecondsFormat, Utc};
use object_store::{Attribute, Attributes, PutMultipartOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::checkpoint::{
    Checkpoint, Checkpoints, Counters, Ledger, SourcePosition, checkpoint_url, default_state_prefix,
};
use crate::compress::{CompressError, Compression, CompressorConfig, MemberState};
use crate::config::{ConfigError, Pipeline};
use crate::encode::LineEncoder;
use crate::incremental::{
    self, HighWater, IncrementalError, IncrementalReport, IncrementalRun, IncrementalSpec, RunLock,
};
use crate::manifest;
use crate::pages::{self, Processed, Processor};
use crate::partition::{Partitions, RunOutput, Shared, Starter};
use crate::report::{
    CpuTimes, MemorySettings, NetworkReport, Progress, Rates, RunReport, RunStatus, peak_rss_bytes,
};
use crate::secret::EnvVars;
use crate::sink::{Destination, ObjectWriter, SinkError, UploadState, Written};
use crate::source::page::Paths;
use crate::source::{HttpSource, Page, Source, SourceError};
use crate::template::RunVars;
use crate::transform::TransformBuildError;
use crate::upload::{CompressedUpload, ObjectSequence, Suspended, TimeLimit};
use serde::Deserialize as _;

/// JSON Lines are handed to the compressor in chunks of this size, each deflated as one
/// block. 256 KiB rather than 512 KiB: about 2 MiB less peak RSS on the incident workload
/// (about five chunks are alive at once) for ~5 % more wall time on loopback, where deflate
/// is the limit (each block is primed with the previous 32 KiB), and +0.1 % in size.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks that may wait for the compressor's coordinator.
pub const CHUNK_QUEUE: usize = 1;

/// Per-run choices that are not part of the pipeline file.
#[derive(Default)]
pub struct RunOptions {
    /// The `{ingest_date}`; the run's UTC date when `None`.
    pub ingest_date: Option<NaiveDate>,
    /// Values of the pipeline's own template variables (`[vars]`), over their defaults.
    pub vars: BTreeMap<String, String>,
    /// Environment for the object store (`AWS_*` and so on); normally `std::env::vars()`.
    pub store_env: EnvVars,
    /// Live counters, for a progress display.
    pub progress: Option<Arc<Progress>>,
    /// Continue the run this checkpoint describes instead of starting afresh.
    pub resume: Option<Checkpoint>,
    /// Stop at a checkpoint before this much time has passed (status `continue`).
    pub max_duration: Option<std::time::Duration>,
    /// Where the pipeline file was read from, recorded in checkpoints for `landline resume`.
    pub pipeline_file: Option<String>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("ingest_date", &self.ingest_date)
            .field("vars", &self.vars)
            .field("store_env", &self.store_env)
            .field("progress", &self.progress)
            .field("resume", &self.resume.as_ref().map(|c| &c.upload.upload_id))
            .field("max_duration", &self.max_duration)
            .finish()
    }
}

/// Why a run failed. The multipart upload, if one was started, has been aborted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Fetching or paging failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing the object failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Compression failed.
    #[error("compressing: {0}")]
    Compress(#[from] CompressError),
    /// The transform could not be built for this run.
    #[error("building the transform: {0}")]
    Transform(#[from] TransformBuildError),
    /// The run's template variables do not fit the pipeline (an undeclared variable, a
    /// value that makes the source URL invalid).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run was cancelled (signal, deadline).
    #[error("cancelled")]
    Cancelled,
    /// A checkpoint does not belong to this pipeline or run.
    #[error("checkpoint {location}: {reason}")]
    Checkpoint {
        /// The checkpoint's URL.
        location: String,
        /// Why it does not fit.
        reason: String,
    },
    /// A stage failed, and aborting the upload failed too.
    #[error("{cause}; aborting the upload also failed: {abort}")]
    AbortFailed {
        /// Why the run stopped.
        cause: Box<RunError>,
        /// How the abort failed.
        abort: SinkError,
    },
    /// Incremental state could not be read or written, or another run holds the lock.
    #[error(transparent)]
    Incremental(#[from] IncrementalError),
    /// A thread of the run could not be started or died.
    #[error("internal error: {0}")]
    Internal(String),
    /// A run writing a sequence of objects failed after completing some: they stay (the
    /// one being written was aborted).
    #[error(
        "{cause}; the {} object{} completed before it stay{}: {}",
        objects.len(),
        if objects.len() == 1 { "" } else { "s" },
        if objects.len() == 1 { "s" } else { "" },
        listed(objects)
    )]
    ObjectsLeft {
        /// Why the run stopped.
        cause: Box<RunError>,
        /// The objects completed, in order.
        objects: Vec<String>,
    },
}

/// The first objects of `objects`, and how many more there are.
fn listed(objects: &[String]) -> String {
    const LISTED: usize = 10;
    let mut text = objects
        .iter()
        .take(LISTED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if objects.len() > LISTED {
        text.push_str(&format!(" and {} more", objects.len() - LISTED));
    }
    text
}

/// `err`, with the objects a sequence completed before it, if any.
fn with_landed(err: RunError, landed: Vec<crate::upload::Landed>) -> RunError {
    if landed.is_empty() {
        return err;
    }
    RunError::ObjectsLeft {
        cause: Box::new(err),
        objects: landed.into_iter().map(|l| l.location).collect(),
    }
}

/// Where a run's pages stopped coming, when they stopped early.
enum Stop {
    /// They did not: the source has no more.
    No,
    /// At a checkpoint inside one object, with these counters: the upload stays open.
    AtCheckpoint(Counters),
    /// After this page, in a run of several objects: every open object is completed.
    AfterPage(u64),
}

/// What a run writes through: one compressed upload, or one per partition.
enum Writing {
    /// One stream: one object, or a sequence of them.
    One(CompressedUpload),
    /// The partitions' uploads ([`crate::partition`]).
    Partitions(Shared),
}

impl Writing {
    /// Stops the compressors and the uploads where they are (a stage failed).
    fn halt(&mut self) {
        match self {
            Writing::One(upload) => upload.halt(),
            Writing::Partitions(shared) => shared.halt(),
        }
    }

    /// Completes once a time-limited run has written a checkpoint to stop at; never
    /// otherwise (partitions write none).
    async fn stop_point(&mut self) -> Counters {
        match self {
            Writing::One(upload) => upload.stop_point().await,
            Writing::Partitions(_) => std::future::pending().await,
        }
    }

    /// Aborts every open upload after `err`: for a sequence or partitions, the error names
    /// the objects that stay.
    async fn abort(self, pipeline: &Pipeline, err: RunError) -> RunError {
        match self {
            Writing::One(upload) if pipeline.sink.numbered => {
                let (err, landed) = upload.abort_sequence(err).await;
                with_landed(err, landed)
            }
            Writing::One(upload) => upload.abort(err).await,
            Writing::Partitions(shared) => {
                let (err, landed) = shared.abort(err).await;
                with_landed(err, landed)
            }
        }
    }
}

/// Runs `pipeline` once: every page, transformed, into one compressed object.
///
/// When `cancel` completes first, the upload is aborted and [`RunError::Cancelled`] returned.
pub async fn run(
    pipeline: &Pipeline,
    options: RunOptions,
    cancel: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    let Some(spec) = &pipeline.source else {
        return Err(RunError::Config(ConfigError::Invalid {
            key: "source".into(),
            message: "this pipeline has no [source]: a library source runs it (landline::pipeline::run_source)".into(),
        }));
    };
    let mut prepared = prepare(pipeline, options, true).await?;
    let incremental = prepared.incremental.take();
    let ran = run_http(pipeline, spec, prepared, incremental.as_ref(), cancel).await;
    match incremental {
        Some(incremental) => incremental.end(pipeline, ran).await,
        None => ran,
    }
}

/// [`run`] once its values are known and, for an incremental source, its lock taken.
async fn run_http(
    pipeline: &Pipeline,
    spec: &crate::config::SourceSpec,
    mut prepared: Prepared,
    incremental: Option<&Incremental>,
    cancel: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    let config = match incremental {
        Some(incremental) => {
            prepared.report_incremental = Some(incremental.report_template());
            spec.config_since(&prepared.vars, &incremental.run.since)?
        }
        None => spec.config(&prepared.vars)?,
    };
    let source = HttpSource::new(config)?;
    let resume = prepared.resume.as_ref();
    let (mut paginator, before) = match resume {
        Some(cp) => {
            let Some(paging) = cp.position.paging() else {
                return Err(prepared.refuse(format!(
                    "it was written by {}, not by this pipeline's [source]",
                    cp.position.kind()
                )));
            };
            let paginator = source
                .resume_paginator(paging.clone())
                .map_err(|e| pagination_error(&source, e))?;
            (paginator, cp.counters)
        }
        None => (source.paginator(), Counters::default()),
    };
    // Page 1 (or the first page after the checkpoint) is fetched while the upload is created:
    // both are first requests. Dropping the task set on the way out stops every fetch.
    let mut tasks = JoinSet::new();
    let start = SourcePosition::Http(paginator.state());
    let first = first_page(&source, &mut paginator, &mut tasks, before.page + 1)?;
    let (mut upload, encoder) = open_upload(pipeline, &prepared, start).await?;
    // A run of several objects keeps page states only to stop at a time limit; one object
    // keeps them for its checkpoints after parts.
    let several = pipeline.sink.numbered || pipeline.sink.partition.is_some();
    let ledger = prepared
        .checkpoints
        .as_ref()
        .filter(|_| !several || prepared.limit.is_some())
        .map(|c| Arc::clone(c.ledger()));
    let clock = prepared
        .limit
        .filter(|_| several)
        .map(pages::PageClock::new);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let processor = Processor {
        mark_pages: ledger.is_some() && !several,
        transform: Arc::clone(&prepared.transform),
        encoder,
        paths: Paths {
            records: spec.records.clone(),
            cursor: source.config().body_pointer().cloned(),
            error: source.config().error.clone(),
        },
        source: source.clone(),
        progress: Arc::clone(&prepared.progress),
        events: events_tx,
        ledger: ledger.clone(),
    };
    let (feeds_tx, processed) = match spawn_processor(
        processor,
        before_run(pipeline, resume, before, incremental.map(|i| &i.spec)),
    ) {
        Ok(spawned) => spawned,
        Err(e) => return Err(upload.abort(pipeline, e).await),
    };

    let drive = pages::drive(
        &source,
        paginator,
        first,
        &mut tasks,
        feeds_tx,
        events_rx,
        pages::Stops {
            ledger: ledger.as_deref(),
            clock,
        },
    );
    let driven = tokio::select! {
        r = drive => r.map(|stopped| stopped.map_or(Stop::No, Stop::AfterPage)),
        () = cancel => Err(RunError::Cancelled),
        counters = upload.stop_point() => Ok(Stop::AtCheckpoint(counters)),
    };
    // Pages fetched past the end, or still going after a failure or a stop, are not wanted.
    tasks.abort_all();
    let figures = SourceFigures::of(&source);
    conclude(pipeline, prepared, upload, driven, processed, figures).await
}

/// Runs `pipeline`'s transform, sink and state with a library [`Source`] in place of its
/// `[source]`: every page into one compressed object, as [`run`] does.
///
/// With checkpoints on (`[state]`), a checkpoint after each part that ends a page holds the
/// source's [`Source::Position`] after that page; [`RunOptions::resume`] with such a
/// checkpoint moves the source there ([`Source::resume_at`]) and continues the same upload
/// and the same gzip member, and [`RunOptions::max_duration`] stops at one (`status =
/// "continue"`). When `cancel` completes first, the upload is aborted and
/// [`RunError::Cancelled`] returned.
///
/// The pages are fetched on the caller's task and written on a thread of their own, so the
/// next page is fetched while one is written: memory is two pages, plus what [`run`] holds
/// after its page processor (chunks, parts in flight).
pub async fn run_source<S: Source>(
    pipeline: &Pipeline,
    mut source: S,
    options: RunOptions,
    cancel: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    let prepared = prepare(pipeline, options, false).await?;
    let before = match prepared.resume.as_ref() {
        Some(cp) => {
            let SourcePosition::Library(value) = &cp.position else {
                return Err(prepared.refuse(format!(
                    "it was written by {}, not by a library source",
                    cp.position.kind()
                )));
            };
            let position = S::Position::deserialize(value).map_err(|e| {
                prepared.refuse(format!("its position does not fit this source: {e}"))
            })?;
            source
                .resume_at(position)
                .map_err(|e| library_error(cp.counters.page + 1, e))?;
            cp.counters
        }
        None => Counters::default(),
    };
    let start = library_position(&source)?;
    let (mut upload, encoder) = open_upload(pipeline, &prepared, start).await?;
    let several = pipeline.sink.numbered || pipeline.sink.partition.is_some();
    let ledger = prepared
        .checkpoints
        .as_ref()
        .filter(|_| !several || prepared.limit.is_some())
        .map(|c| Arc::clone(c.ledger()));
    let mut clock = prepared
        .limit
        .filter(|_| several)
        .map(pages::PageClock::new);
    let writer = pages::PageWriter {
        transform: Arc::clone(&prepared.transform),
        encoder,
        progress: Arc::clone(&prepared.progress),
        ledger: ledger.clone(),
        mark_pages: ledger.is_some() && !several,
    };
    let (pages_tx, recycled, processed) = match spawn_page_writer(
        writer,
        before_run(pipeline, prepared.resume.as_ref(), before, None),
    ) {
        Ok(spawned) => spawned,
        Err(e) => return Err(upload.abort(pipeline, e).await),
    };
    let fetch = async {
        // Dropped when fetching ends, however it ends: the writer's feed ends with it.
        let pages_tx = pages_tx;
        let mut page = Page::default();
        let mut number = before.page;
        loop {
            number += 1;
            if !source
                .fetch_next(&mut page)
                .await
                .map_err(|e| library_error(number, e))?
            {
                return Ok(None);
            }
            if let Some(ledger) = &ledger {
                ledger.position(number, library_value(&source)?);
            }
            let full = std::mem::replace(&mut page, recycled.try_recv().unwrap_or_default());
            if pages_tx.send((number, full)).await.is_err() {
                // The writer stopped: its own error says why.
                return Err(RunError::Internal("the page writer stopped".into()));
            }
            // A time-limited run of several objects stops after this page: the writer
            // writes every page sent, and the objects are completed.
            if clock.as_mut().is_some_and(pages::PageClock::due) {
                tracing::info!(page = number, "time is nearly up: stopping after this page");
                return Ok(Some(number));
            }
        }
    };
    let driven = tokio::select! {
        r = fetch => r.map(|stopped: Option<u64>| stopped.map_or(Stop::No, Stop::AfterPage)),
        () = cancel => Err(RunError::Cancelled),
        counters = upload.stop_point() => Ok(Stop::AtCheckpoint(counters)),
    };
    conclude(
        pipeline,
        prepared,
        upload,
        driven,
        processed,
        SourceFigures::default(),
    )
    .await
}

/// What a run knows before its first page: its values, where it writes, its checkpoints.
struct Prepared {
    started: Instant,
    vars: RunVars,
    transform: Arc<crate::transform::Transform>,
    destination: Destination,
    /// The object's format (`[sink] compression`, else its extension) and level.
    compression: Compression,
    level: i32,
    store_env: EnvVars,
    progress: Arc<Progress>,
    checkpoints: Option<Arc<Checkpoints>>,
    resume: Option<Checkpoint>,
    limit: Option<TimeLimit>,
    /// An incremental run's lock and query, until [`run`] takes them.
    incremental: Option<Incremental>,
    /// The incremental part of the report, but for the high-water mark and the cursor.
    report_incremental: Option<IncrementalReport>,
}

/// An incremental run: what it asks for, its lock, and where its cursor is stored.
struct Incremental {
    spec: IncrementalSpec,
    run: IncrementalRun,
    lock: RunLock,
    state: String,
    env: EnvVars,
}

impl Incremental {
    /// Takes the lock, then reads the cursor (a continued run keeps its checkpoint's query).
    async fn begin(
        pipeline: &Pipeline,
        spec: &IncrementalSpec,
        vars: &RunVars,
        object_url: &str,
        env: &EnvVars,
        resume: Option<&Checkpoint>,
    ) -> Result<Incremental, RunError> {
        let prefix = state_prefix(pipeline, object_url);
        let store = &pipeline.sink.store;
        let state = incremental::state_location(&prefix, &pipeline.name, &vars.vars);
        let lock_at = incremental::lock_location(&prefix, &pipeline.name, &vars.vars);
        let lock = RunLock::acquire(
            &lock_at,
            &pipeline.name,
            &vars.ingest_ts,
            store,
            env.clone(),
        )
        .await?;
        let run = match resume.and_then(|cp| cp.incremental.clone()) {
            Some(run) => Ok(run),
            None => incremental_query(spec, &state, store, env).await,
        };
        match run {
            Ok(run) => {
                tracing::info!(since = %run.since, state, "incremental run");
                Ok(Incremental {
                    spec: spec.clone(),
                    run,
                    lock,
                    state,
                    env: env.clone(),
                })
            }
            Err(e) => {
                lock.release().await;
                Err(e)
            }
        }
    }

    /// The report's incremental part before the run has written anything.
    fn report_template(&self) -> IncrementalReport {
        IncrementalReport {
            field: self.spec.field.clone(),
            param: self.spec.param.clone(),
            since: self.run.since.clone(),
            previous: self.run.previous.clone(),
            high_water: None,
            cursor: self.run.previous.clone(),
            records_without_value: 0,
            state: self.state.clone(),
            kind: self.spec.kind,
        }
    }

    /// After the run: a complete run stores its cursor; every run releases the lock.
    async fn end(
        self,
        pipeline: &Pipeline,
        ran: Result<RunReport, RunError>,
    ) -> Result<RunReport, RunError> {
        let stored = match &ran {
            Ok(report) if report.status == RunStatus::Complete => {
                self.store(pipeline, report).await
            }
            _ => Ok(()),
        };
        self.lock.release().await;
        stored?;
        ran
    }

    async fn store(&self, pipeline: &Pipeline, report: &RunReport) -> Result<(), RunError> {
        let Some(cursor) = report.incremental.as_ref().and_then(|i| i.cursor.clone()) else {
            // Nothing written with a value, and no cursor before: `start` stays the cursor.
            return Ok(());
        };
        let state = incremental::IncrementalState {
            format: incremental::STATE_FORMAT.to_owned(),
            pipeline: pipeline.name.clone(),
            field: self.spec.field.clone(),
            kind: self.spec.kind,
            cursor,
            updated_at: Utc::now(),
            set_by: "run".into(),
            run: Some(incremental::StateRun {
                ingest_date: report.ingest_date.clone(),
                ingest_ts: report.ingest_ts.clone(),
                since: self.run.since.clone(),
                records: report.records,
                object: report.objects.first().cloned(),
            }),
        };
        incremental::write_state(&self.state, &state, &pipeline.sink.store, self.env.clone())
            .await
            .map_err(|e| RunError::Incremental(IncrementalError::NotAdvanced(Box::new(e))))?;
        tracing::info!(cursor = %state.cursor, location = %self.state, "incremental cursor advanced");
        Ok(())
    }
}

impl Prepared {
    /// A refusal of the checkpoint being resumed.
    fn refuse(&self, reason: String) -> RunError {
        RunError::Checkpoint {
            location: self
                .checkpoints
                .as_ref()
                .map_or_else(|| "[state]".to_owned(), |c| c.location().to_owned()),
            reason,
        }
    }
}

/// The run's values (a resumed run's from its checkpoint), transform, destination and
/// checkpoints; a checkpoint that does not fit is refused here, before anything is written.
async fn prepare(
    pipeline: &Pipeline,
    options: RunOptions,
    http: bool,
) -> Result<Prepared, RunError> {
    let started = Instant::now();
    let resume = options.resume;
    let vars = match &resume {
        // A resumed run is the same run: the same values everywhere.
        Some(cp) => pipeline.run_vars(cp.ingest_date.clone(), cp.ingest_ts.clone(), &cp.vars)?,
        None => run_vars(pipeline, options.ingest_date, &options.vars)?,
    };
    let transform = Arc::new(pipeline.transform.build(&vars)?);
    let object_url = pipeline.sink.object_url(&vars, 1);
    let (compression, level) = pipeline.sink.compression_of(&object_url)?;
    let destination =
        Destination::open(&object_url, &pipeline.sink.store, options.store_env.clone())?;
    let incremental = match pipeline
        .source
        .as_ref()
        .and_then(|s| s.incremental.as_ref())
    {
        Some(spec) if http => Some(
            Incremental::begin(
                pipeline,
                spec,
                &vars,
                &object_url,
                &options.store_env,
                resume.as_ref(),
            )
            .await?,
        ),
        _ => None,
    };
    // Everything that can refuse the run after the lock was taken releases it.
    let checked = (|| {
        let checkpoints = checkpoints(
            pipeline,
            &vars,
            &object_url,
            &options.store_env,
            options.pipeline_file,
            resume.as_ref(),
            incremental.as_ref().map(|i| i.run.clone()),
        )?;
        if let (Some(cp), Some(at)) = (&resume, &checkpoints) {
            check_resumable(pipeline, cp, &object_url, at.location())?;
        }
        if pipeline.sink.numbered || pipeline.sink.partition.is_some() {
            let stops = resume.is_some() || options.max_duration.is_some();
            let refuse = |reason: &str| RunError::Checkpoint {
                location: "[sink] url".into(),
                reason: reason.to_owned(),
            };
            if stops && !pipeline.sink.numbered {
                return Err(refuse(
                    "a run stopped at a time limit goes on in new objects: number them with {part} in [sink] url",
                ));
            }
            if let Some(cp) = &resume
                && cp.objects.is_none()
            {
                return Err(refuse(
                    "the checkpoint was written by a run of one object, and this pipeline writes several",
                ));
            }
        } else if let Some(cp) = &resume
            && cp.objects.is_some()
        {
            return Err(RunError::Checkpoint {
                location: "[sink] url".into(),
                reason: "the checkpoint was written by a run of several objects, and this pipeline writes one".into(),
            });
        }
        if checkpoints.is_none() && (resume.is_some() || options.max_duration.is_some()) {
            return Err(RunError::Checkpoint {
                location: "[state]".into(),
                reason: "checkpoints are off for this pipeline, so a run can neither stop at one nor resume from one".into(),
            });
        }
        Ok(checkpoints)
    })();
    let checkpoints = match checked {
        Ok(checkpoints) => checkpoints,
        Err(e) => {
            if let Some(incremental) = incremental {
                incremental.lock.release().await;
            }
            return Err(e);
        }
    };
    Ok(Prepared {
        started,
        vars,
        transform,
        destination,
        compression,
        level,
        store_env: options.store_env,
        progress: options.progress.unwrap_or_default(),
        checkpoints,
        resume,
        limit: options.max_duration.map(|max| TimeLimit { started, max }),
        incremental,
        report_incremental: None,
    })
}

/// Opens the run's upload (the checkpoint's, or a new one with its first checkpoint at
/// `start`) and starts the compressor and the upload task around it.
async fn open_upload(
    pipeline: &Pipeline,
    prepared: &Prepared,
    start: SourcePosition,
) -> Result<(Writing, RunOutput), RunError> {
    if let Some(spec) = &pipeline.sink.partition {
        // Each partition's upload is created when its first record comes.
        let sink = &pipeline.sink;
        let shared = Shared::new(spec.max_open + sink.max_parts_in_flight);
        let config = CompressorConfig {
            queue_depth: CHUNK_QUEUE,
            part_slots: Some(shared.slots()),
            ..CompressorConfig::new(
                prepared.compression,
                prepared.level,
                sink.compression_threads,
                sink.parts,
            )
        };
        let starter = Starter {
            first: prepared.destination.clone(),
            sink: sink.clone(),
            vars: prepared.vars.clone(),
            options: object_options(pipeline, prepared.compression),
            config,
            chunk_bytes: prepared.compression.chunk_bytes(),
            progress: Some(Arc::clone(&prepared.progress)),
            runtime: tokio::runtime::Handle::current(),
        };
        let mut partitions = Partitions::new(Arc::new(spec.clone()), starter, shared.clone());
        if let Some(earlier) = earlier_objects(prepared) {
            partitions.resume(earlier);
        }
        return Ok((
            Writing::Partitions(shared),
            RunOutput::Partitions(Box::new(partitions)),
        ));
    }
    let (upload, encoder) = open_one(pipeline, prepared, start).await?;
    Ok((Writing::One(upload), RunOutput::One(encoder)))
}

/// [`open_upload`] of a run through one stream.
async fn open_one(
    pipeline: &Pipeline,
    prepared: &Prepared,
    start: SourcePosition,
) -> Result<(CompressedUpload, LineEncoder), RunError> {
    if pipeline.sink.numbered {
        // A sequence goes on from its checkpoint in a new object: no upload is open there.
        let first = earlier_objects(prepared).map_or(1, |o| o.next_part.max(1));
        let url = pipeline.sink.object_url(&prepared.vars, first);
        let options = object_options(pipeline, prepared.compression);
        let writer = ObjectWriter::create_with(
            &prepared.destination.sibling(&url)?,
            pipeline.sink.max_parts_in_flight,
            options,
        )
        .await?;
        let compressor = CompressorConfig {
            queue_depth: CHUNK_QUEUE,
            ..CompressorConfig::new(
                prepared.compression,
                prepared.level,
                pipeline.sink.compression_threads,
                pipeline.sink.parts,
            )
        };
        return CompressedUpload::start_sequence(
            writer,
            compressor,
            prepared.compression.chunk_bytes(),
            pipeline.sink.max_parts_in_flight,
            Some(Arc::clone(&prepared.progress)),
            object_sequence(pipeline, prepared, first),
        )
        .await;
    }
    let resume = prepared.resume.as_ref();
    let checkpoints = prepared.checkpoints.as_deref();
    let writer = open_writer(
        pipeline,
        resume,
        checkpoints,
        &prepared.destination,
        object_options(pipeline, prepared.compression),
        &prepared.store_env,
        &start,
    )
    .await?;
    if let (Some(checkpoints), None) = (checkpoints, resume)
        && let Err(e) = checkpoints.started(writer.state(), start).await
    {
        return Err(abort_writer(writer, e.into()).await);
    }
    let compressor = CompressorConfig {
        queue_depth: CHUNK_QUEUE,
        // A checkpoint without parts (written when the upload was created) continues
        // nothing: the member starts afresh, its header included.
        resume: resume
            .filter(|cp| !cp.upload.parts.is_empty())
            .map(|cp| cp.member.clone()),
        first_part: resume.map_or(1, |cp| cp.upload.parts.len() as u64 + 1),
        ..CompressorConfig::new(
            prepared.compression,
            prepared.level,
            pipeline.sink.compression_threads,
            pipeline.sink.parts,
        )
    };
    CompressedUpload::start(
        writer,
        compressor,
        prepared.compression.chunk_bytes(),
        pipeline.sink.max_parts_in_flight,
        prepared.checkpoints.clone(),
        prepared.limit,
        Some(Arc::clone(&prepared.progress)),
    )
    .await
}

/// The objects a resumed run of several objects completed before its checkpoint.
fn earlier_objects(prepared: &Prepared) -> Option<&crate::checkpoint::ObjectsDone> {
    prepared.resume.as_ref().and_then(|cp| cp.objects.as_ref())
}

/// The objects after the first of a run whose URL numbers them (`{part}`), the first being
/// number `from`: each opened through the run's client, with the same attributes.
fn object_sequence(pipeline: &Pipeline, prepared: &Prepared, from: u64) -> ObjectSequence {
    let first = prepared.destination.clone();
    let sink = pipeline.sink.clone();
    let vars = prepared.vars.clone();
    let options = object_options(pipeline, prepared.compression);
    ObjectSequence {
        open: Box::new(move |n| {
            let next = first.sibling(&sink.object_url(&vars, from + n - 1));
            let options = options.clone();
            let in_flight = sink.max_parts_in_flight;
            Box::pin(async move { ObjectWriter::create_with(&next?, in_flight, options).await })
        }),
        limits: pipeline.sink.limits,
    }
}

/// Ends a run once its pages stopped coming (`driven`: `Some` at a stop point): suspends
/// the upload at its checkpoint, completes it, or aborts it after a failure.
async fn conclude(
    pipeline: &Pipeline,
    prepared: Prepared,
    upload: Writing,
    driven: Result<Stop, RunError>,
    processed: oneshot::Receiver<Result<(RunOutput, Processed), RunError>>,
    figures: SourceFigures,
) -> Result<RunReport, RunError> {
    // A run of several objects that fails records the objects it leaves (those of the
    // processes before this one too); one that completes deletes those an earlier failed
    // run of its date left and it did not write again.
    let several = pipeline.sink.numbered || pipeline.sink.partition.is_some();
    let left = several
        .then(|| {
            let url = crate::checkpoint::state_url(
                &state_prefix(pipeline, prepared.destination.location.as_str()),
                "left",
                &pipeline.name,
                &prepared.vars.ingest_date,
                &prepared.vars.vars,
            );
            crate::left::Record::open(&url, &pipeline.sink.store, &prepared.store_env)
        })
        .flatten();
    let ingest_date = prepared.vars.ingest_date.clone();
    let mut earlier: Vec<String> = earlier_objects(&prepared)
        .map(|o| o.landed.iter().map(|l| l.url.clone()).collect())
        .unwrap_or_default();
    let result = conclude_run(
        pipeline,
        prepared,
        upload,
        driven,
        processed,
        figures,
        left.as_ref(),
    )
    .await;
    if let (Err(RunError::ObjectsLeft { objects, .. }), Some(left)) = (&result, &left) {
        earlier.extend(objects.iter().cloned());
        left.add(&pipeline.name, &ingest_date, &earlier).await;
    }
    result
}

/// [`conclude`], given where the objects failed runs left are recorded.
async fn conclude_run(
    pipeline: &Pipeline,
    prepared: Prepared,
    mut upload: Writing,
    driven: Result<Stop, RunError>,
    processed: oneshot::Receiver<Result<(RunOutput, Processed), RunError>>,
    figures: SourceFigures,
    left: Option<&crate::left::Record>,
) -> Result<RunReport, RunError> {
    if !matches!(driven, Ok(Stop::No | Stop::AfterPage(_))) {
        upload.halt();
    }
    let processed = processed
        .await
        .unwrap_or_else(|_| Err(RunError::Internal("the page processor died".into())));
    let stopped_after = match &driven {
        Ok(Stop::AfterPage(page)) => Some(*page),
        _ => None,
    };
    let earlier = earlier_objects(&prepared).cloned().unwrap_or_default();
    let Prepared {
        started,
        vars,
        destination,
        compression,
        checkpoints,
        store_env,
        report_incremental,
        ..
    } = prepared;
    let (output, done) = match (driven, processed) {
        (Ok(Stop::AtCheckpoint(counters)), _) => {
            let Writing::One(upload) = upload else {
                return Err(RunError::Internal(
                    "a partitioned run stopped at a checkpoint".into(),
                ));
            };
            let suspended = upload.suspend(counters).await?;
            let location = checkpoints.as_ref().map(|c| c.location().to_owned());
            let mut report = report_continue(pipeline, figures, suspended, location, started, vars);
            set_format(&mut report, compression);
            return Ok(report);
        }
        (Ok(Stop::No | Stop::AfterPage(_)), Ok(finished)) => finished,
        (Err(RunError::Cancelled), _) => {
            return Err(upload.abort(pipeline, RunError::Cancelled).await);
        }
        // The processor's own error says what went wrong; paging only saw it stop.
        (Err(_), Err(err)) if !matches!(err, RunError::Internal(_)) => {
            return Err(upload.abort(pipeline, err).await);
        }
        (Err(err), _) | (Ok(Stop::No | Stop::AfterPage(_)), Err(err)) => {
            return Err(upload.abort(pipeline, err).await);
        }
    };
    let mut next_parts = BTreeMap::new();
    let mut report = match (upload, output) {
        (Writing::Partitions(shared), RunOutput::Partitions(partitions)) => {
            let figures_of = partitions.figures();
            next_parts = partitions.next_parts();
            let finished = shared.finish(*partitions).await;
            let mut report = partitioned_report(pipeline, figures, &done, finished, started, vars)?;
            report.partitions = Some(crate::report::PartitionReport {
                field: pipeline
                    .sink
                    .partition
                    .as_ref()
                    .map(|p| p.field.clone())
                    .unwrap_or_default(),
                partitions: figures_of.partitions,
                default_records: figures_of.default_records,
                evictions: figures_of.evictions,
            });
            report
        }
        (Writing::One(upload), RunOutput::One(encoder)) => {
            one_report(
                pipeline,
                upload,
                encoder,
                &destination,
                figures,
                &done,
                started,
                vars,
            )
            .await?
        }
        _ => {
            return Err(RunError::Internal(
                "the run's output and upload differ".into(),
            ));
        }
    };
    // The objects of the processes before this one come first.
    let this_process = report.object_details.len() as u64;
    merge_earlier(&mut report, &earlier.landed);
    if let Some(page) = stopped_after {
        set_format(&mut report, compression);
        let objects = crate::checkpoint::ObjectsDone {
            landed: report.object_details.clone(),
            next_part: earlier.next_part.max(1) + this_process,
            partitions: next_parts,
            default_records: report.partitions.as_ref().map_or(0, |p| p.default_records),
            evictions: report.partitions.as_ref().map_or(0, |p| p.evictions),
        };
        return stop_after(report, checkpoints.as_deref(), page, objects).await;
    }
    if let Some(checkpoints) = checkpoints
        .as_ref()
        .filter(|_| pipeline.sink.numbered || pipeline.sink.partition.is_some())
        && let Err(e) = checkpoints.delete().await
    {
        tracing::warn!(error = %e, "the run is complete, but its checkpoint could not be deleted");
    }
    let stale = if pipeline.sink.partition.is_some() && pipeline.state.manifests {
        let url = manifest::manifest_url(
            &state_prefix(pipeline, destination.location.as_str()),
            &pipeline.name,
            &report.ingest_date,
            &report.vars,
        );
        delete_unlisted(pipeline, &destination, &report, &url, &store_env).await
    } else if pipeline.sink.numbered && !report.object_details.is_empty() {
        delete_stale(
            pipeline,
            &destination,
            &report,
            report.object_details.len() as u64,
        )
        .await
    } else {
        Vec::new()
    };
    report.stale_objects_deleted = stale;
    if let Some(left) = left {
        let deleted = delete_left(pipeline, &destination, &report, left).await;
        report.stale_objects_deleted.extend(deleted);
    }
    set_format(&mut report, compression);
    after_report(
        pipeline,
        report,
        report_incremental,
        done,
        destination,
        store_env,
    )
    .await
}

/// Puts the objects processes before this one completed (`earlier`) before this one's in
/// `report`, with their figures.
fn merge_earlier(report: &mut RunReport, earlier: &[crate::report::ObjectReport]) {
    if earlier.is_empty() {
        return;
    }
    let mut details = earlier.to_vec();
    details.append(&mut report.object_details);
    report.objects = details.iter().map(|o| o.url.clone()).collect();
    report.bytes_written = details.iter().map(|o| o.bytes).sum();
    report.parts = details.iter().map(|o| o.parts).sum();
    report.bytes_uncompressed += earlier.iter().map(|o| o.bytes_uncompressed).sum::<u64>();
    report.object_details = details;
    report.rates = Rates::of(report);
}

/// Ends a process of a run of several objects stopped after `page` (every object up to it
/// completed): writes the checkpoint the next process goes on from, and reports `continue`.
async fn stop_after(
    mut report: RunReport,
    checkpoints: Option<&Checkpoints>,
    page: u64,
    objects: crate::checkpoint::ObjectsDone,
) -> Result<RunReport, RunError> {
    let Some(checkpoints) = checkpoints else {
        return Err(RunError::Internal(
            "a run stopped at a time limit without checkpoints".into(),
        ));
    };
    let landed: Vec<String> = objects.landed.iter().map(|o| o.url.clone()).collect();
    if let Err(e) = checkpoints.objects_done(page, objects).await {
        return Err(RunError::ObjectsLeft {
            cause: Box::new(e.into()),
            objects: landed,
        });
    }
    tracing::info!(
        page,
        objects = landed.len(),
        checkpoint = checkpoints.location(),
        "stopped before the time ran out, every object so far complete"
    );
    report.status = RunStatus::Continue;
    report.checkpoint = Some(checkpoints.location().to_owned());
    Ok(report)
}

/// The report of a run through one stream (one object or a sequence), once it is complete.
#[allow(clippy::too_many_arguments)]
async fn one_report(
    pipeline: &Pipeline,
    upload: CompressedUpload,
    encoder: LineEncoder,
    destination: &Destination,
    figures: SourceFigures,
    done: &Processed,
    started: Instant,
    vars: RunVars,
) -> Result<RunReport, RunError> {
    // A resumed sequence may have nothing left to write: its open object is then dropped.
    let wrote = encoder.object_records().iter().sum::<u64>() > 0;
    Ok(if pipeline.sink.numbered {
        if !wrote {
            let (_, stats) = upload.finish(encoder, false).await?;
            return Ok(report(
                pipeline,
                figures,
                done,
                &stats,
                &destination.location,
                None,
                started,
                vars,
            ));
        }
        let records = encoder.object_records().to_vec();
        let bytes = encoder.object_bytes();
        let (landed, ended) = upload.finish_sequence(encoder).await;
        let stats = ended.map_err(|e| with_landed(e, landed.clone()))?;
        let mut report = report(
            pipeline,
            figures,
            done,
            &stats,
            &destination.location,
            None,
            started,
            vars,
        );
        set_objects(&mut report, &landed, &records, &bytes);
        report
    } else {
        // An empty source writes nothing, not an empty object.
        let (written, stats) = upload.finish(encoder, done.records > 0).await?;
        report(
            pipeline,
            figures,
            done,
            &stats,
            &destination.location,
            written,
            started,
            vars,
        )
    })
}

/// The report of a partitioned run once every partition's upload has ended: its objects
/// in key order; an error naming those that landed if any upload failed.
fn partitioned_report(
    pipeline: &Pipeline,
    figures: SourceFigures,
    done: &Processed,
    finished: Vec<crate::partition::Finished>,
    started: Instant,
    vars: RunVars,
) -> Result<RunReport, RunError> {
    let mut stats = crate::compress::CompressStats::default();
    let mut failure = None;
    let mut objects = Vec::new();
    for f in finished {
        match f.ended {
            Ok(s) => {
                stats.bytes_in += s.bytes_in;
                stats.bytes_out += s.bytes_out;
                stats.parts += s.parts;
                stats.objects += s.objects + 1;
            }
            // The first error that is a cause, not another partition seeing the uploads stop.
            Err(e) => {
                if failure.as_ref().is_none_or(crate::partition::is_downstream) {
                    failure = Some(e);
                }
            }
        }
        for (i, landed) in f.landed.into_iter().enumerate() {
            let records = f.records.get(i).copied().unwrap_or(0);
            let bytes = f.bytes.get(i).copied().unwrap_or(0);
            objects.push((landed, records, bytes));
        }
    }
    objects.sort_by(|a, b| a.0.location.cmp(&b.0.location));
    let landed: Vec<_> = objects.iter().map(|o| o.0.clone()).collect();
    if let Some(e) = failure {
        return Err(with_landed(e, landed));
    }
    let records: Vec<u64> = objects.iter().map(|o| o.1).collect();
    let bytes: Vec<u64> = objects.iter().map(|o| o.2).collect();
    let mut report = report(
        pipeline, figures, done, &stats,
        // No single destination: `written` is `None`, so it is not read.
        "", None, started, vars,
    );
    set_objects(&mut report, &landed, &records, &bytes);
    Ok(report)
}

/// The end of a complete run: its incremental cursor, its manifest, its log line.
async fn after_report(
    pipeline: &Pipeline,
    mut report: RunReport,
    report_incremental: Option<IncrementalReport>,
    done: Processed,
    destination: Destination,
    store_env: EnvVars,
) -> Result<RunReport, RunError> {
    if let Some(mut incremental) = report_incremental {
        let mark = done
            .high_water
            .as_ref()
            .map(HighWater::mark)
            .unwrap_or_default();
        incremental.cursor = incremental::later(
            incremental.kind,
            incremental.previous.clone(),
            mark.high_water.clone(),
        );
        incremental.high_water = mark.high_water;
        incremental.records_without_value = mark.records_without_value;
        if incremental.records_without_value > 0 {
            tracing::warn!(
                records = incremental.records_without_value,
                field = %incremental.field,
                "records without a value of the cursor's kind: they do not move the cursor"
            );
        }
        report.incremental = Some(incremental);
    }
    if pipeline.state.manifests {
        let object_url = destination.location.as_str();
        let url = manifest::manifest_url(
            &state_prefix(pipeline, object_url),
            &pipeline.name,
            &report.ingest_date,
            &report.vars,
        );
        publish_manifest(pipeline, &mut report, &url, done.fields, store_env).await;
    }
    tracing::info!(
        records = report.records,
        pages = report.pages,
        bytes_written = report.bytes_written,
        "run complete"
    );
    Ok(report)
}

/// Sets the objects of a sequence in `report`: their URLs, and their bytes and parts
/// summed, with each one's figures.
fn set_objects(
    report: &mut RunReport,
    landed: &[crate::upload::Landed],
    records: &[u64],
    bytes: &[u64],
) {
    report.objects = landed.iter().map(|l| l.location.clone()).collect();
    report.bytes_written = landed.iter().map(|l| l.written.bytes).sum();
    report.parts = landed.iter().map(|l| l.written.parts).sum();
    report.object_details = landed
        .iter()
        .enumerate()
        .map(|(i, l)| crate::report::ObjectReport {
            url: l.location.clone(),
            records: records.get(i).copied().unwrap_or(0),
            bytes_uncompressed: bytes.get(i).copied().unwrap_or(0),
            bytes: l.written.bytes,
            parts: l.written.parts,
            e_tag: l.written.e_tag.clone(),
            sha256: l.written.sha256.clone(),
        })
        .collect();
    report.rates = Rates::of(report);
}

/// Deletes the objects a longer earlier run of the same date left after this run's last:
/// `{part}` numbers from `landed + 1` on, while there are such objects. Only called once the
/// whole new sequence has landed, so a failed run never removes anything. A failure here is
/// a warning: the new objects are complete.
async fn delete_stale(
    pipeline: &Pipeline,
    first: &Destination,
    report: &RunReport,
    landed: u64,
) -> Vec<String> {
    use object_store::ObjectStoreExt as _;
    let vars = RunVars {
        ingest_date: report.ingest_date.clone(),
        ingest_ts: report.ingest_ts.clone(),
        vars: report.vars.clone(),
    };
    let mut deleted = Vec::new();
    for n in landed + 1.. {
        let url = pipeline.sink.object_url(&vars, n);
        let stale = match first.sibling(&url) {
            Ok(stale) => stale,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for stale objects");
                break;
            }
        };
        match stale.store.head(&stale.path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => break,
            Err(e) => {
                tracing::warn!(object = %url, error = %e, "could not look for stale objects");
                break;
            }
        }
        match stale.store.delete(&stale.path).await {
            Ok(()) => {
                tracing::info!(object = %url, "deleted an object an earlier, longer run left");
                deleted.push(url);
            }
            Err(e) => {
                tracing::warn!(object = %url, error = %e, "could not delete a stale object");
                break;
            }
        }
    }
    deleted
}

/// Deletes the objects the earlier run of the same date listed in its manifest (at
/// `manifest_url`, not yet replaced by this run's) that this run did not write again: a
/// partitioned run's set may differ from the last one's in its partitions, not only in its
/// length. Only called once every object of this run has landed; a failure is a warning.
async fn delete_unlisted(
    pipeline: &Pipeline,
    first: &Destination,
    report: &RunReport,
    manifest_url: &str,
    env: &EnvVars,
) -> Vec<String> {
    let earlier = match manifest::read(manifest_url, &pipeline.sink.store, env.clone()).await {
        Ok(Some(m)) => m,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the earlier run's manifest: objects it wrote and this run did not are left");
            return Vec::new();
        }
    };
    let urls: Vec<String> = earlier.objects.into_iter().map(|o| o.url).collect();
    delete_not_written(pipeline, first, report, &urls).await.0
}

/// Deletes the objects failed runs of this date left (recorded in `left`) that this run did
/// not write again, then the record, once every one of them is gone.
async fn delete_left(
    pipeline: &Pipeline,
    first: &Destination,
    report: &RunReport,
    left: &crate::left::Record,
) -> Vec<String> {
    let urls = match left.objects().await {
        Ok(urls) if urls.is_empty() => return Vec::new(),
        Ok(urls) => urls,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the objects failed runs left: they stay");
            return Vec::new();
        }
    };
    let (deleted, all_gone) = delete_not_written(pipeline, first, report, &urls).await;
    if all_gone {
        left.clear().await;
    }
    deleted
}

/// Deletes each of `urls` that `report`'s run did not write, of this pipeline's objects only
/// (an earlier run's list may predate a change of its URL). Returns those deleted, and
/// whether every one is gone (a failure is a warning).
async fn delete_not_written(
    pipeline: &Pipeline,
    first: &Destination,
    report: &RunReport,
    urls: &[String],
) -> (Vec<String>, bool) {
    use object_store::ObjectStoreExt as _;
    let written: std::collections::HashSet<&str> =
        report.objects.iter().map(String::as_str).collect();
    let mut deleted = Vec::new();
    let mut all_gone = true;
    for url in urls {
        if written.contains(url.as_str()) || !url.starts_with(pipeline.sink.url.literal_prefix()) {
            continue;
        }
        let stale = match first.sibling(url) {
            Ok(stale) => stale,
            Err(e) => {
                tracing::warn!(object = %url, error = %e, "could not delete a stale object");
                all_gone = false;
                continue;
            }
        };
        match stale.store.delete(&stale.path).await {
            Err(object_store::Error::NotFound { .. }) => {}
            Ok(()) => {
                tracing::info!(object = %url, "deleted an object an earlier run of this date wrote and this one did not");
                deleted.push(url.clone());
            }
            Err(e) => {
                tracing::warn!(object = %url, error = %e, "could not delete a stale object");
                all_gone = false;
            }
        }
    }
    (deleted, all_gone)
}

/// Sets the run's own format in `report`, and the chunk size and memory budget that go
/// with it (the pipeline's example destination may have named another).
fn set_format(report: &mut RunReport, compression: Compression) {
    report.compression = compression;
    report.memory.chunk_bytes = compression.chunk_bytes() as u64;
    report.memory.budget_bytes = report.memory.budget();
}

/// Compares the run with the previous run's manifest (the drift alarm), then writes its
/// own; sets the report's `drift` and `manifest`. The object has landed by now, so a
/// manifest that cannot be read or written is a warning, not a failed run.
async fn publish_manifest(
    pipeline: &Pipeline,
    report: &mut RunReport,
    url: &str,
    fields: Option<crate::transform::FieldInventory>,
    env: EnvVars,
) {
    let options = &pipeline.sink.store;
    if pipeline.drift.enabled {
        match manifest::previous(url, &report.ingest_date, options, env.clone()).await {
            Ok(Some((at, previous))) => {
                let figures = |m: &manifest::Manifest| {
                    let size = match &m.object {
                        Some(o) => o.size,
                        None => m.objects.iter().map(|o| o.size).sum(),
                    };
                    (m.records, m.average_record_bytes, size)
                };
                let (records, width, size) = figures(&previous);
                let changes = crate::drift::compare(
                    &crate::drift::Figures {
                        records,
                        average_record_bytes: width,
                        compressed_bytes: size,
                        fields: previous.fields.as_ref(),
                    },
                    &crate::drift::Figures {
                        records: report.records,
                        average_record_bytes: report.rates.average_record_bytes,
                        compressed_bytes: report.bytes_written,
                        fields: fields.as_ref(),
                    },
                    &pipeline.drift,
                );
                for change in &changes {
                    tracing::warn!(previous = %previous.ingest_date, "drift: {change}");
                }
                let not_compared = |f: &Option<crate::transform::FieldInventory>| {
                    f.as_ref().is_none_or(|f| f.other_values() > 0)
                };
                report.drift = Some(crate::drift::DriftReport {
                    compared_with: at,
                    previous_ingest_date: previous.ingest_date,
                    changes,
                    fields_not_compared: not_compared(&previous.fields) || not_compared(&fields),
                });
            }
            Ok(None) => tracing::debug!("no earlier manifest of this pipeline to compare with"),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the previous run's manifest: no drift check")
            }
        }
    }
    let objects = report
        .object_details
        .iter()
        .map(|o| manifest::ObjectFacts {
            url: o.url.clone(),
            size: o.bytes,
            e_tag: o.e_tag.clone(),
            sha256: o.sha256.clone(),
            parts: o.parts,
            compression: report.compression,
            gzip_members: u64::from(report.compression == Compression::Gzip),
            records: Some(o.records),
            bytes_uncompressed: Some(o.bytes_uncompressed),
        })
        .collect();
    let single = report.object_details.is_empty();
    let object = report
        .objects
        .first()
        .filter(|_| single)
        .map(|url| manifest::ObjectFacts {
            url: url.clone(),
            size: report.bytes_written,
            e_tag: report.e_tag.clone(),
            sha256: report.sha256.clone(),
            parts: report.parts,
            compression: report.compression,
            gzip_members: u64::from(report.compression == Compression::Gzip),
            records: None,
            bytes_uncompressed: None,
        });
    report.manifest = Some(url.to_owned());
    let mut written = manifest::Manifest {
        format: manifest::FORMAT.to_owned(),
        pipeline: pipeline.name.clone(),
        ingest_date: report.ingest_date.clone(),
        ingest_ts: report.ingest_ts.clone(),
        vars: report.vars.clone(),
        landline_version: env!("CARGO_PKG_VERSION").to_owned(),
        object,
        objects,
        records: report.records,
        bytes_uncompressed: report.bytes_uncompressed,
        average_record_bytes: report.rates.average_record_bytes,
        largest_record_bytes: report.largest_record_bytes,
        fields,
        drift: report.drift.clone(),
        report: serde_json::Value::Null,
        written_at: Utc::now(),
    };
    written.report = serde_json::to_value(&*report).unwrap_or_default();
    if let Err(e) = manifest::write(url, &written, options, env).await {
        tracing::warn!(error = %e, "could not write the run's manifest");
        report.manifest = None;
    }
}

/// A library source's error at page `page`: a [`SourceError`] as it is.
fn library_error<E: std::error::Error + Send + Sync + 'static>(page: u64, e: E) -> RunError {
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    match boxed.downcast::<SourceError>() {
        Ok(e) => RunError::Source(*e),
        Err(source) => RunError::Source(SourceError::Library { page, source }),
    }
}

fn library_value<S: Source>(source: &S) -> Result<serde_json::Value, RunError> {
    serde_json::to_value(source.position()).map_err(|e| {
        RunError::Internal(format!(
            "the source's position does not serialise as JSON: {e}"
        ))
    })
}

fn library_position<S: Source>(source: &S) -> Result<SourcePosition, RunError> {
    library_value(source).map(SourcePosition::Library)
}

/// The URL of `pipeline`'s checkpoint for `ingest_date` (today in UTC by default) with
/// template variables `vars` (over the pipeline's defaults).
pub fn checkpoint_location(
    pipeline: &Pipeline,
    ingest_date: Option<NaiveDate>,
    vars: &BTreeMap<String, String>,
) -> Result<String, ConfigError> {
    state_location(pipeline, "checkpoints", ingest_date, vars)
}

/// The URL of `pipeline`'s manifest for `ingest_date` (today in UTC by default) with
/// template variables `vars` (over the pipeline's defaults): where its run wrote it.
pub fn manifest_location(
    pipeline: &Pipeline,
    ingest_date: Option<NaiveDate>,
    vars: &BTreeMap<String, String>,
) -> Result<String, ConfigError> {
    state_location(pipeline, "manifests", ingest_date, vars)
}

fn state_location(
    pipeline: &Pipeline,
    kind: &str,
    ingest_date: Option<NaiveDate>,
    vars: &BTreeMap<String, String>,
) -> Result<String, ConfigError> {
    let vars = run_vars(pipeline, ingest_date, vars)?;
    let prefix = state_prefix(pipeline, &pipeline.sink.object_url(&vars, 1));
    Ok(crate::checkpoint::state_url(
        &prefix,
        kind,
        &pipeline.name,
        &vars.ingest_date,
        &vars.vars,
    ))
}

/// An incremental source's stored cursor at `state` (or `start`) and the value a run sends.
pub(crate) async fn incremental_query(
    spec: &IncrementalSpec,
    state: &str,
    store: &crate::sink::StoreOptions,
    env: &EnvVars,
) -> Result<IncrementalRun, RunError> {
    let stored = incremental::read_state(state, store, env.clone()).await?;
    let previous = match stored {
        Some(stored) if stored.kind != spec.kind => {
            return Err(IncrementalError::State {
                location: state.to_owned(),
                reason: format!(
                    "the stored cursor {} is {:?}, but this pipeline's start makes its cursor {:?}: \
                     `landline state set` or `landline state reset` it",
                    stored.cursor, stored.kind, spec.kind
                ),
            }
            .into());
        }
        Some(stored) => Some(stored.cursor),
        None => None,
    };
    let cursor = previous.clone().unwrap_or_else(|| spec.start.clone());
    let since = spec.since(&cursor).map_err(|e| match e {
        IncrementalError::State { reason, .. } => IncrementalError::State {
            location: state.to_owned(),
            reason,
        },
        other => other,
    })?;
    Ok(IncrementalRun { previous, since })
}

/// Where `pipeline`'s incremental cursor and lock are for template variables `vars` (over
/// the pipeline's defaults): `(cursor, lock)`.
pub fn incremental_locations(
    pipeline: &Pipeline,
    vars: &BTreeMap<String, String>,
) -> Result<(String, String), ConfigError> {
    let vars = run_vars(pipeline, None, vars)?;
    let prefix = state_prefix(pipeline, &pipeline.sink.object_url(&vars, 1));
    Ok((
        incremental::state_location(&prefix, &pipeline.name, &vars.vars),
        incremental::lock_location(&prefix, &pipeline.name, &vars.vars),
    ))
}

/// The state prefix of `pipeline` writing `object_url`: `[state] url`, or the default beside
/// the destination.
pub(crate) fn state_prefix(pipeline: &Pipeline, object_url: &str) -> String {
    match &pipeline.state.url {
        Some(prefix) => prefix.clone(),
        None => default_state_prefix(pipeline.sink.url.literal_prefix(), object_url),
    }
}

/// Reads the checkpoint at `url`, if there is one; its store is configured from `env` with
/// `options`.
pub async fn read_checkpoint(
    url: &str,
    options: &crate::sink::StoreOptions,
    env: Vec<(String, String)>,
) -> Result<Option<Checkpoint>, RunError> {
    let at = Destination::open(url, options, env)?;
    Ok(Checkpoints::load(&at).await?)
}

/// Ends the run checkpoint `cp` (at `url`) describes, so that a run can start afresh: aborts
/// its upload, deletes the objects it completed (a run of several objects stopped at a time
/// limit; the fresh run writes their records again, and they would otherwise stay beside its
/// own objects wherever its keys differ), then the checkpoint. Returns the objects deleted;
/// the checkpoint stays if one could not be.
pub async fn discard_checkpoint(
    pipeline: &Pipeline,
    url: &str,
    cp: &Checkpoint,
    env: Vec<(String, String)>,
) -> Result<Vec<String>, RunError> {
    if cp.upload.upload_id.is_empty() {
        // Stopped before it named its upload: any upload of the key not open before it.
        if let Some(before) = &cp.uploads_before {
            abort_strays(pipeline, &cp.destination, &env.clone().into(), before, None).await;
        }
    } else {
        let destination = Destination::open(&cp.destination, &pipeline.sink.store, env.clone())?;
        let writer = ObjectWriter::resume(&destination, cp.upload.clone(), 1)?;
        writer.abort().await?;
    }
    let deleted = delete_abandoned(pipeline, cp, &env).await?;
    let at = Destination::open(url, &pipeline.sink.store, env)?;
    let template = cp.clone();
    Checkpoints::new(at, Arc::new(Ledger::default()), template)
        .delete()
        .await?;
    Ok(deleted)
}

/// Deletes the objects the stopped run `cp` describes completed (only this pipeline's:
/// under its URL's literal prefix).
async fn delete_abandoned(
    pipeline: &Pipeline,
    cp: &Checkpoint,
    env: &[(String, String)],
) -> Result<Vec<String>, RunError> {
    use object_store::ObjectStoreExt as _;
    let Some(done) = cp.objects.as_ref().filter(|d| !d.landed.is_empty()) else {
        return Ok(Vec::new());
    };
    let first = Destination::open(&cp.destination, &pipeline.sink.store, env.to_vec())?;
    let mut deleted = Vec::new();
    for url in done.landed.iter().map(|o| &o.url) {
        if !url.starts_with(pipeline.sink.url.literal_prefix()) {
            continue;
        }
        let object = first.sibling(url)?;
        match object.store.delete(&object.path).await {
            Ok(()) => {
                tracing::info!(object = %url, "deleted an object of the unfinished run being discarded");
                deleted.push(url.clone());
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(SinkError::Delete {
                    location: url.clone(),
                    source,
                }
                .into());
            }
        }
    }
    Ok(deleted)
}

/// The attributes of the objects a run creates: their `Content-Type`, and their
/// `Content-Encoding` with `[sink] content_encoding`.
fn object_options(pipeline: &Pipeline, compression: Compression) -> PutMultipartOptions {
    let mut attributes = Attributes::new();
    match compression.content_encoding() {
        Some(encoding) if pipeline.sink.content_encoding => {
            attributes.insert(Attribute::ContentType, "application/x-ndjson".into());
            attributes.insert(Attribute::ContentEncoding, encoding.into());
        }
        _ => {
            attributes.insert(Attribute::ContentType, compression.content_type().into());
        }
    }
    PutMultipartOptions {
        attributes,
        ..PutMultipartOptions::default()
    }
}

/// The upload this run writes to: the checkpoint's, continued, or a new one. A resumed
/// checkpoint whose upload is gone (or was never named) is deleted and the run refused with
/// [`SinkError::UploadGone`], so that `--resume auto` starts afresh.
async fn open_writer(
    pipeline: &Pipeline,
    resume: Option<&Checkpoint>,
    checkpoints: Option<&Checkpoints>,
    destination: &Destination,
    options: PutMultipartOptions,
    env: &EnvVars,
    start_position: &SourcePosition,
) -> Result<ObjectWriter, RunError> {
    let object_url = destination.location.as_str();
    let in_flight = pipeline.sink.max_parts_in_flight;
    let Some(cp) = resume else {
        // The uploads of the key open before this run creates its own: any other found
        // later is this run's, and nothing else knows about it.
        let before = open_uploads(pipeline, object_url, env).await;
        // Only a safety net: the checkpoint that names the upload is the one a run cannot go
        // without, and the upload's own errors say more (access, bucket).
        if let Some(checkpoints) = checkpoints
            && let Err(e) = checkpoints
                .pending(start_position.clone(), before.clone())
                .await
        {
            tracing::warn!(error = %e, "could not write the checkpoint before the upload");
        }
        let created = ObjectWriter::create_with(destination, in_flight, options).await;
        // A lost or cut answer to CreateMultipartUpload can leave an upload of this key that
        // no one will hear of (the client retries the request): it goes now.
        if let Some(before) = &before {
            let keep = created.as_ref().ok().map(|w| w.state().upload_id.clone());
            abort_strays(pipeline, object_url, env, before, keep.as_deref()).await;
        }
        if created.is_err()
            && let Some(checkpoints) = checkpoints
        {
            let _ = checkpoints.delete().await;
        }
        return Ok(created?);
    };
    let gone = if cp.upload.upload_id.is_empty() {
        // Killed between creating its upload and naming it: whatever it created goes, and
        // the run starts afresh.
        if let Some(before) = &cp.uploads_before {
            abort_strays(pipeline, object_url, env, before, None).await;
        }
        Some("(none: the run stopped before naming it)".to_owned())
    } else {
        // Where the store lists uploads (S3); elsewhere the first part will find out.
        open_uploads(pipeline, &cp.destination, env)
            .await
            .filter(|open| !open.contains(&cp.upload.upload_id))
            .map(|_| cp.upload.upload_id.clone())
    };
    if let Some(upload_id) = gone {
        if let Some(checkpoints) = checkpoints {
            let _ = checkpoints.delete().await;
        }
        return Err(RunError::Sink(SinkError::UploadGone {
            location: cp.destination.clone(),
            upload_id,
            part: cp.upload.parts.len() as u64 + 1,
        }));
    }
    Ok(ObjectWriter::resume(
        destination,
        cp.upload.clone(),
        in_flight,
    )?)
}

/// The incomplete uploads of `object_url`'s key, where the store lists them (S3; not
/// s3s-fs, nor local files).
async fn open_uploads(pipeline: &Pipeline, object_url: &str, env: &EnvVars) -> Option<Vec<String>> {
    let ids = listing(pipeline, object_url, env)?.of_key().await;
    ids.map_err(
        |e| tracing::debug!(error = %e, "could not list the open uploads of the destination"),
    )
    .ok()
}

/// Aborts the incomplete uploads of `object_url`'s key not in `known`, except `keep` (see
/// `IncompleteUploads::abort_strays`); failures are only logged, since the lifecycle rule
/// and `landline cleanup` are there for what is left.
async fn abort_strays(
    pipeline: &Pipeline,
    object_url: &str,
    env: &EnvVars,
    known: &[String],
    keep: Option<&str>,
) {
    let Some(uploads) = listing(pipeline, object_url, env) else {
        return;
    };
    match uploads.abort_strays(known, keep).await {
        Ok(ids) if !ids.is_empty() => {
            tracing::warn!(uploads = ?ids, object = object_url, "aborted uploads of this run that nothing knew about");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %e, "could not look for uploads of this run that nothing knows about")
        }
    }
}

/// The open uploads of `object_url`, for S3 destinations (the only ones with uploads to list).
fn listing(
    pipeline: &Pipeline,
    object_url: &str,
    env: &EnvVars,
) -> Option<crate::sink::cleanup::IncompleteUploads> {
    if !object_url.starts_with("s3://") && !object_url.starts_with("s3a://") {
        return None;
    }
    crate::sink::cleanup::IncompleteUploads::open(object_url, &pipeline.sink.store, env.clone())
        .map_err(|e| tracing::debug!(error = %e, "cannot list the open uploads of the destination"))
        .ok()
}

/// Whether checkpoint `cp` (read from `location`) can be continued by `pipeline`.
fn check_resumable(
    pipeline: &Pipeline,
    cp: &Checkpoint,
    object_url: &str,
    location: &str,
) -> Result<(), RunError> {
    let refuse = |reason: String| RunError::Checkpoint {
        location: location.to_owned(),
        reason,
    };
    if cp.pipeline != pipeline.name {
        return Err(refuse(format!(
            "it belongs to pipeline {:?}, not {:?}",
            cp.pipeline, pipeline.name
        )));
    }
    if cp.pipeline_identity != pipeline.identity {
        return Err(refuse(
            "the pipeline file has changed since the checkpoint was written; start the run afresh"
                .into(),
        ));
    }
    if cp.destination != object_url {
        return Err(refuse(format!(
            "it writes {}, not {object_url}",
            cp.destination
        )));
    }
    Ok(())
}

fn pagination_error(source: &HttpSource, e: crate::source::PaginationError) -> RunError {
    RunError::Source(SourceError::Pagination {
        page: 0,
        url: source.config().redactor.url(&source.config().url),
        source: e,
    })
}

/// The run's `{ingest_date}` (today in UTC unless given), `{ingest_ts}` (now) and
/// `[vars]` (`overrides` over the defaults).
pub(crate) fn run_vars(
    pipeline: &Pipeline,
    ingest_date: Option<NaiveDate>,
    overrides: &BTreeMap<String, String>,
) -> Result<RunVars, ConfigError> {
    let now = Utc::now();
    pipeline.run_vars(
        ingest_date
            .unwrap_or_else(|| now.date_naive())
            .format("%Y-%m-%d")
            .to_string(),
        now.to_rfc3339_opts(SecondsFormat::Millis, true),
        overrides,
    )
}

/// Starts the first page of this process (numbered `page`), if paging has one.
#[allow(clippy::type_complexity)]
fn first_page(
    source: &HttpSource,
    paginator: &mut crate::source::Paginator,
    tasks: &mut JoinSet<()>,
    page: u64,
) -> Result<Option<(u64, url::Url, mpsc::Receiver<crate::source::BodyEvent>)>, RunError> {
    let first = paginator
        .next_url()
        .map_err(|e| pagination_error(source, e))?;
    Ok(first.map(|url| (page, url.clone(), source.spawn_page(page, url, tasks))))
}

/// Where this run's checkpoints go, if the pipeline writes them.
fn checkpoints(
    pipeline: &Pipeline,
    vars: &RunVars,
    object_url: &str,
    env: &EnvVars,
    pipeline_file: Option<String>,
    resume: Option<&Checkpoint>,
    incremental: Option<IncrementalRun>,
) -> Result<Option<Arc<Checkpoints>>, RunError> {
    if !pipeline.state.checkpoints {
        return Ok(None);
    }
    let url = checkpoint_url(
        &state_prefix(pipeline, object_url),
        &pipeline.name,
        &vars.ingest_date,
        &vars.vars,
    );
    let at = Destination::open(&url, &pipeline.sink.store, env.clone())?;
    let template = Checkpoint {
        format: crate::checkpoint::FORMAT.to_owned(),
        pipeline: pipeline.name.clone(),
        pipeline_identity: pipeline.identity.clone(),
        pipeline_file,
        destination: object_url.to_owned(),
        ingest_date: vars.ingest_date.clone(),
        ingest_ts: vars.ingest_ts.clone(),
        vars: vars.vars.clone(),
        upload: UploadState {
            upload_id: String::new(),
            created: Utc::now(),
            parts: Vec::new(),
            sha256: None,
        },
        uploads_before: None,
        member: MemberState::empty(),
        // Each checkpoint sets its own.
        position: SourcePosition::Library(serde_json::Value::Null),
        counters: Counters::default(),
        fields: None,
        incremental,
        high_water: None,
        objects: None,
        written_at: Utc::now(),
    };
    let seen = resume
        .and_then(|cp| cp.position.paging())
        .map(|paging| paging.seen.clone())
        .unwrap_or_default();
    Ok(Some(Arc::new(Checkpoints::new(
        at,
        Arc::new(Ledger::with_seen(seen)),
        template,
    ))))
}

/// What the pages of this process start from: the checkpoint's counters (`before`) and
/// fields (counted when the run writes a manifest).
fn before_run(
    pipeline: &Pipeline,
    resume: Option<&Checkpoint>,
    before: Counters,
    incremental: Option<&IncrementalSpec>,
) -> Processed {
    let fields = match resume {
        _ if !pipeline.state.manifests => None,
        Some(cp) if cp.counters.records > 0 => cp.fields.clone(),
        _ => Some(Default::default()),
    };
    let high_water = incremental.map(|spec| {
        let mark = resume
            .filter(|cp| cp.counters.records > 0)
            .and_then(|cp| cp.high_water.as_ref());
        HighWater::new(spec, mark)
    });
    Processed::after(before, fields, high_water)
}

/// Starts the page processor thread; returns its feed and its outcome.
#[allow(clippy::type_complexity)]
fn spawn_processor(
    processor: Processor<RunOutput>,
    before: Processed,
) -> Result<
    (
        mpsc::Sender<pages::Feed>,
        oneshot::Receiver<Result<(RunOutput, Processed), RunError>>,
    ),
    RunError,
> {
    let (feeds_tx, feeds_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("landline-pages".into())
        .spawn(move || {
            let _ = done_tx.send(pages::process(processor, feeds_rx, before));
        })
        .map_err(|e| RunError::Internal(format!("starting the page processor: {e}")))?;
    Ok((feeds_tx, done_rx))
}

/// Starts the page writer thread of a library source; returns its feed, the emptied pages it
/// gives back, and its outcome.
#[allow(clippy::type_complexity)]
fn spawn_page_writer(
    writer: pages::PageWriter,
    before: Processed,
) -> Result<
    (
        mpsc::Sender<(u64, Page)>,
        std::sync::mpsc::Receiver<Page>,
        oneshot::Receiver<Result<(RunOutput, Processed), RunError>>,
    ),
    RunError,
> {
    let (pages_tx, pages_rx) = mpsc::channel(1);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("landline-pages".into())
        .spawn(move || {
            let _ = done_tx.send(pages::write_pages(writer, pages_rx, recycle_tx, before));
        })
        .map_err(|e| RunError::Internal(format!("starting the page writer: {e}")))?;
    Ok((pages_tx, recycle_rx, done_rx))
}

/// Aborts a writer no compressed upload owns yet, after `cause`.
async fn abort_writer(writer: ObjectWriter, cause: RunError) -> RunError {
    tracing::warn!(error = %cause, "aborting the upload");
    match writer.abort().await {
        Ok(()) => cause,
        Err(abort) => RunError::AbortFailed {
            cause: Box::new(cause),
            abort,
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    pipeline: &Pipeline,
    source: SourceFigures,
    done: &Processed,
    stats: &crate::compress::CompressStats,
    location: &str,
    written: Option<Written>,
    started: Instant,
    vars: RunVars,
) -> RunReport {
    let mut report = base_report(pipeline, source, started, vars);
    report.records = done.records;
    report.pages = done.pages;
    report.bytes_in = done.bytes_decoded;
    report.bytes_uncompressed = stats.bytes_in;
    report.memory.largest_page_bytes = done.largest_page;
    report.largest_record_bytes = done.largest_record;
    if let Some(written) = written {
        report.objects = vec![location.to_owned()];
        report.bytes_written = written.bytes;
        report.parts = written.parts;
        report.e_tag = written.e_tag;
        report.sha256 = written.sha256;
    }
    report.rates = Rates::of(&report);
    report
}

/// The report of a run stopped at a checkpoint: the counters that checkpoint holds.
fn report_continue(
    pipeline: &Pipeline,
    source: SourceFigures,
    suspended: Suspended,
    checkpoint: Option<String>,
    started: Instant,
    vars: RunVars,
) -> RunReport {
    let mut report = base_report(pipeline, source, started, vars);
    let c = suspended.counters;
    report.status = RunStatus::Continue;
    report.checkpoint = checkpoint;
    report.records = c.records;
    report.pages = c.pages;
    report.bytes_in = c.bytes_in;
    report.memory.largest_page_bytes = c.largest_page;
    report.largest_record_bytes = c.largest_record;
    report.rates = Rates::of(&report);
    tracing::info!(
        records = report.records,
        pages = report.pages,
        checkpoint = report.checkpoint.as_deref().unwrap_or_default(),
        "run stopped at a checkpoint, to be resumed"
    );
    report
}

/// What the source did in this process, for the report: the HTTP source's counters and
/// settings, or nothing for a library source.
#[derive(Debug, Default)]
struct SourceFigures {
    retries: u64,
    bytes_wire: u64,
    retry_wait_seconds: f64,
    rate_limit_waits: u64,
    rate_limit_wait_seconds: f64,
    max_page_bytes: u64,
    concurrency: u64,
    page_buffer_bytes: u64,
}

impl SourceFigures {
    fn of(source: &HttpSource) -> Self {
        let rate = source.rate_stats();
        let config = source.config();
        SourceFigures {
            retries: source.retries(),
            bytes_wire: source
                .stats()
                .wire_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            retry_wait_seconds: source.retry_wait().as_secs_f64(),
            rate_limit_waits: rate.waits,
            rate_limit_wait_seconds: rate.waited.as_secs_f64(),
            max_page_bytes: u64::try_from(config.max_page_bytes).unwrap_or(u64::MAX),
            concurrency: config.concurrency as u64,
            page_buffer_bytes: config.page_buffer_bytes as u64,
        }
    }
}

/// A report with this process's network and memory figures and nothing written yet.
fn base_report(
    pipeline: &Pipeline,
    source: SourceFigures,
    started: Instant,
    vars: RunVars,
) -> RunReport {
    let mut report = RunReport {
        status: RunStatus::Complete,
        checkpoint: None,
        records: 0,
        pages: 0,
        retries: source.retries,
        bytes_in: 0,
        bytes_uncompressed: 0,
        bytes_written: 0,
        compression: pipeline.sink.compression,
        parts: 0,
        objects: Vec::new(),
        object_details: Vec::new(),
        stale_objects_deleted: Vec::new(),
        partitions: None,
        e_tag: None,
        sha256: None,
        manifest: None,
        drift: None,
        incremental: None,
        peak_rss_bytes: peak_rss_bytes(),
        wall_seconds: started.elapsed().as_secs_f64(),
        largest_record_bytes: 0,
        cpu: CpuTimes::of_this_process(),
        rates: Rates::default(),
        ingest_date: vars.ingest_date,
        ingest_ts: vars.ingest_ts,
        vars: vars.vars,
        network: NetworkReport {
            bytes_wire: source.bytes_wire,
            retry_wait_seconds: source.retry_wait_seconds,
            rate_limit_waits: source.rate_limit_waits,
            rate_limit_wait_seconds: source.rate_limit_wait_seconds,
        },
        memory: MemorySettings {
            max_page_bytes: source.max_page_bytes,
            concurrency: source.concurrency,
            page_buffer_bytes: source.page_buffer_bytes,
            ..memory_settings(pipeline)
        },
    };
    report.memory.budget_bytes = report.memory.budget();
    report
}

/// The pipeline's settings that bound memory, without the source's (pages in flight and
/// their buffers, which the caller fills in) and without the budget.
pub(crate) fn memory_settings(pipeline: &Pipeline) -> MemorySettings {
    MemorySettings {
        part_size_bytes: pipeline.sink.part_size_bytes as u64,
        max_parts_in_flight: pipeline.sink.max_parts_in_flight as u64,
        chunk_bytes: pipeline.sink.compression.chunk_bytes() as u64,
        chunk_queue: CHUNK_QUEUE as u64,
        compression_threads: pipeline.sink.compression_threads as u64,
        max_page_bytes: u64::MAX,
        largest_page_bytes: 0,
        concurrency: 0,
        page_buffer_bytes: 0,
        max_record_bytes: pipeline.transform.max_record_bytes() as u64,
        // Partitions: those open, and as many being completed.
        open_streams: pipeline
            .sink
            .partition
            .as_ref()
            .map_or(1, |p| 2 * p.max_open as u64),
        budget_bytes: 0,
    }
}
