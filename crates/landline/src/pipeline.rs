//! `run`: wires the stages of one pipeline run; the data path reads top to bottom here.
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

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, SecondsFormat, Utc};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::compress::{CompressError, Compressor, CompressorConfig, Part};
use crate::config::Pipeline;
use crate::encode::LineEncoder;
use crate::pages::{self, Processed, Processor};
use crate::report::{MemorySettings, NetworkReport, Progress, RunReport, peak_rss_bytes};
use crate::sink::{Destination, ObjectWriter, SinkError};
use crate::source::page::Paths;
use crate::source::{HttpSource, SourceError};
use crate::template::RunVars;
use crate::transform::TransformBuildError;

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
    /// Environment for the object store (`AWS_*` and so on); normally `std::env::vars()`.
    pub store_env: Vec<(String, String)>,
    /// Live counters, for a progress display.
    pub progress: Option<Arc<Progress>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store environment holds secrets: only its names are shown.
        let names: Vec<&str> = self.store_env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("RunOptions")
            .field("ingest_date", &self.ingest_date)
            .field("store_env", &names)
            .field("progress", &self.progress)
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
    /// The run was cancelled (signal, deadline).
    #[error("cancelled")]
    Cancelled,
    /// A stage failed, and aborting the upload failed too.
    #[error("{cause}; aborting the upload also failed: {abort}")]
    AbortFailed {
        /// Why the run stopped.
        cause: Box<RunError>,
        /// How the abort failed.
        abort: SinkError,
    },
    /// A thread of the run could not be started or died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Runs `pipeline` once: every page, transformed, into one compressed object.
///
/// When `cancel` completes first, the upload is aborted and [`RunError::Cancelled`] returned.
pub async fn run(
    pipeline: &Pipeline,
    options: RunOptions,
    cancel: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let now = Utc::now();
    let ingest_date = options.ingest_date.unwrap_or_else(|| now.date_naive());
    let vars = RunVars {
        ingest_date: ingest_date.format("%Y-%m-%d").to_string(),
        ingest_ts: now.to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    let transform = Arc::new(pipeline.transform.build(&vars)?);
    let destination = Destination::open(
        &pipeline.sink.url.render(&vars),
        &pipeline.sink.store,
        options.store_env,
    )?;
    let source = HttpSource::new(pipeline.source.clone())?;
    let progress = options.progress.unwrap_or_default();

    // Page 1 is fetched while the upload is created: both are first requests. Dropping the
    // task set on the way out stops every fetch still going.
    let mut tasks = JoinSet::new();
    let mut paginator = source.paginator();
    let first = paginator
        .next_url()
        .map_err(|e| {
            RunError::Source(SourceError::Pagination {
                page: 0,
                url: source.config().redactor.url(&source.config().url),
                source: e,
            })
        })?
        .map(|url| (url.clone(), source.spawn_page(1, url, &mut tasks)));
    let writer = ObjectWriter::create(&destination, pipeline.sink.max_parts_in_flight).await?;

    // One slot per part alive at once: the one being filled, plus those queued or uploading.
    let part_slots = Arc::new(Semaphore::new(pipeline.sink.max_parts_in_flight + 1));
    let (parts_tx, parts_rx) = mpsc::channel::<Part>(1);
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut stop_tx = Some(stop_tx);
    let uploader = tokio::spawn(upload_parts(
        writer,
        parts_rx,
        stop_rx,
        Arc::clone(&part_slots),
    ));
    let stages = Compressor::spawn(
        CompressorConfig {
            queue_depth: CHUNK_QUEUE,
            part_slots: Some(Arc::clone(&part_slots)),
            ..CompressorConfig::new(
                pipeline.sink.compression_level,
                pipeline.sink.compression_threads,
                pipeline.sink.parts,
            )
        },
        parts_tx,
    )
    .map_err(|e| RunError::Internal(format!("starting the compressor: {e}")))
    .and_then(|compressor| {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let processor = Processor {
            transform,
            encoder: LineEncoder::new(compressor, CHUNK_BYTES),
            paths: Paths {
                records: pipeline.records.clone(),
                cursor: pipeline.source.body_pointer().cloned(),
                error: pipeline.source.error.clone(),
            },
            source: source.clone(),
            progress: Arc::clone(&progress),
            events: events_tx,
        };
        let (feeds_tx, feeds_rx) = mpsc::channel(1);
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("landline-pages".into())
            .spawn(move || {
                let _ = done_tx.send(pages::process(processor, feeds_rx));
            })
            .map_err(|e| RunError::Internal(format!("starting the page processor: {e}")))?;
        Ok((feeds_tx, events_rx, done_rx))
    });
    let (feeds_tx, events_rx, processed) = match stages {
        Ok(stages) => stages,
        Err(err) => {
            halt(&part_slots, &mut stop_tx);
            let (writer, _) = join_uploader(uploader).await?;
            return Err(abort(writer, err).await);
        }
    };

    let driven = tokio::select! {
        r = pages::drive(&source, paginator, first, &mut tasks, feeds_tx, events_rx) => r,
        () = cancel => Err(RunError::Cancelled),
    };
    // Pages fetched past the end, or still going after a failure, are not wanted.
    tasks.abort_all();
    if driven.is_err() {
        halt(&part_slots, &mut stop_tx);
    }
    let processed = processed
        .await
        .unwrap_or_else(|_| Err(RunError::Internal("the page processor died".into())));
    // On success the encoder comes back: finishing it sends the last part.
    let finished = match (driven, processed) {
        (Ok(()), Ok((encoder, done))) => tokio::task::spawn_blocking(move || encoder.finish())
            .await
            .map_err(|e| RunError::Internal(e.to_string()))
            .and_then(|r| r.map_err(RunError::from))
            .map(|stats| (stats, done)),
        (Err(RunError::Cancelled), _) => Err(RunError::Cancelled),
        // The processor's own error says what went wrong; paging only saw it stop.
        (Err(_), Err(err)) if !matches!(err, RunError::Internal(_)) => Err(err),
        (Err(err), _) | (Ok(()), Err(err)) => Err(err),
    };
    let (stats, done) = match finished {
        Ok(finished) => finished,
        Err(err) => {
            halt(&part_slots, &mut stop_tx);
            let (writer, upload) = join_uploader(uploader).await?;
            // When the compressor stopped because the upload failed, the upload's error is
            // the cause worth reporting.
            let cause = match (upload, is_downstream_closed(&err)) {
                (Err(up), true) => up.into(),
                _ => err,
            };
            return Err(abort(writer, cause).await);
        }
    };
    let (writer, upload) = join_uploader(uploader).await?;
    drop(stop_tx);
    if let Err(e) = upload {
        return Err(abort(writer, e.into()).await);
    }
    let (objects, e_tag, parts) = if done.records == 0 {
        // An empty source writes nothing, not an empty object.
        writer.abort().await?;
        (Vec::new(), None, 0)
    } else {
        let written = writer.finish().await?;
        (
            vec![destination.location.clone()],
            written.e_tag,
            written.parts,
        )
    };
    let report = report(
        pipeline, &source, &done, &stats, objects, e_tag, parts, started, vars,
    );
    tracing::info!(
        records = report.records,
        pages = report.pages,
        bytes_written = report.bytes_written,
        "run complete"
    );
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn report(
    pipeline: &Pipeline,
    source: &HttpSource,
    done: &Processed,
    stats: &crate::compress::CompressStats,
    objects: Vec<String>,
    e_tag: Option<String>,
    parts: u64,
    started: Instant,
    vars: RunVars,
) -> RunReport {
    let rate = source.rate_stats();
    RunReport {
        records: done.records,
        pages: done.pages,
        retries: source.retries(),
        bytes_in: done.bytes_decoded,
        bytes_uncompressed: stats.bytes_in,
        bytes_written: if objects.is_empty() {
            0
        } else {
            stats.bytes_out
        },
        parts,
        objects,
        e_tag,
        peak_rss_bytes: peak_rss_bytes(),
        wall_seconds: started.elapsed().as_secs_f64(),
        ingest_date: vars.ingest_date,
        ingest_ts: vars.ingest_ts,
        network: NetworkReport {
            bytes_wire: source
                .stats()
                .wire_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            retry_wait_seconds: source.retry_wait().as_secs_f64(),
            rate_limit_waits: rate.waits,
            rate_limit_wait_seconds: rate.waited.as_secs_f64(),
        },
        memory: MemorySettings {
            part_size_bytes: pipeline.sink.part_size_bytes as u64,
            max_parts_in_flight: pipeline.sink.max_parts_in_flight as u64,
            chunk_bytes: CHUNK_BYTES as u64,
            chunk_queue: CHUNK_QUEUE as u64,
            compression_threads: pipeline.sink.compression_threads as u64,
            max_page_bytes: u64::try_from(pipeline.source.max_page_bytes).unwrap_or(u64::MAX),
            largest_page_bytes: done.largest_page,
            concurrency: pipeline.source.concurrency as u64,
            page_buffer_bytes: pipeline.source.page_buffer_bytes as u64,
        },
    }
}

/// Wakes the compressor if it waits for a slot, and stops the upload task taking parts.
fn halt(part_slots: &Semaphore, stop: &mut Option<oneshot::Sender<()>>) {
    part_slots.close();
    if let Some(stop) = stop.take() {
        let _ = stop.send(());
    }
}

/// Whether `err` only says that the stage after the compressor went away.
fn is_downstream_closed(err: &RunError) -> bool {
    matches!(
        err,
        RunError::Compress(CompressError::OutputClosed | CompressError::ThreadGone)
    )
}

/// Takes parts from the compressor and uploads them, a part leaving the channel only when an
/// upload slot is free. Returns the writer, so the caller can complete or abort it.
async fn upload_parts(
    mut writer: ObjectWriter,
    mut parts: mpsc::Receiver<Part>,
    mut stop: oneshot::Receiver<()>,
    part_slots: Arc<Semaphore>,
) -> (ObjectWriter, Result<(), SinkError>) {
    loop {
        let step = async {
            writer.wait_for_capacity().await?;
            match parts.recv().await {
                Some(part) => writer
                    .put_part_holding(part.data, part.slot)
                    .await
                    .map(|()| true),
                None => Ok(false),
            }
        };
        let result = tokio::select! {
            biased;
            _ = &mut stop => return (writer, Ok(())),
            r = step => r,
        };
        match result {
            Ok(true) => {}
            Ok(false) => return (writer, Ok(())),
            Err(e) => {
                // The compressor may be waiting for a slot: let it see that nobody will upload.
                part_slots.close();
                return (writer, Err(e));
            }
        }
    }
}

async fn join_uploader(
    uploader: tokio::task::JoinHandle<(ObjectWriter, Result<(), SinkError>)>,
) -> Result<(ObjectWriter, Result<(), SinkError>), RunError> {
    uploader
        .await
        .map_err(|e| RunError::Internal(format!("upload task: {e}")))
}

/// Aborts the upload after `cause`; a failed abort is reported with the cause.
async fn abort(writer: ObjectWriter, cause: RunError) -> RunError {
    tracing::warn!(error = %cause, "aborting the upload");
    match writer.abort().await {
        Ok(()) => cause,
        Err(abort) => RunError::AbortFailed {
            cause: Box::new(cause),
            abort,
        },
    }
}
