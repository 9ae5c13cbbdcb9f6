//! `run`: wires the stages of one pipeline run; the data path reads top to bottom here.
//!
//! ```text
//! fetch page N+1 (async)  ─┐
//!                          ├─ overlap ─ page N: split + transform + encode (blocking thread)
//! compress chunks (thread) ┘                     │ chunks (bounded queue)
//!                                                ▼
//!                          gzip thread ── parts (bounded channel) ──▶ upload task ──▶ store
//! ```
//!
//! Each arrow is bounded, so a slow stage makes the ones before it wait: the upload task takes
//! a part only when a slot is free, the gzip thread blocks on the part channel, the encoder on
//! the chunk queue, and the next page is fetched only after the current one was split.
//!
//! Every error path aborts the multipart upload before returning; the upload is created
//! before the first page is read, so wrong credentials fail at the first request.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, SecondsFormat, Utc};
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::compress::{CompressError, Compressor, CompressorConfig, Part};
use crate::config::Pipeline;
use crate::encode::LineEncoder;
use crate::report::{MemorySettings, Progress, RunReport, peak_rss_bytes};
use crate::sink::{Destination, ObjectWriter, SinkError};
use crate::source::page::{PageError, scan_page};
use crate::source::{Fetched, HttpSource, PageOutcome, SourceError};
use crate::template::RunVars;
use crate::transform::{RecordWriter, TransformBuildError};

/// JSON Lines are handed to the compressor in chunks of this size.
pub const CHUNK_BYTES: usize = 512 * 1024;
/// Chunks that may wait for the compressor's coordinator.
pub const CHUNK_QUEUE: usize = 1;

/// Per-run choices that are not part of the pipeline file.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// The `{ingest_date}`; the run's UTC date when `None`.
    pub ingest_date: Option<NaiveDate>,
    /// Environment for the object store (`AWS_*` and so on); normally `std::env::vars()`.
    pub store_env: Vec<(String, String)>,
    /// Live counters, for a progress display.
    pub progress: Option<Arc<Progress>>,
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
    let mut source = HttpSource::new(pipeline.source.clone())?;
    let progress = options.progress.unwrap_or_default();

    // Start the upload and fetch the first page at the same time: both are first requests.
    let mut body = Vec::new();
    let (writer, first) = tokio::join!(
        ObjectWriter::create(
            destination.store.clone(),
            &destination.path,
            destination.location.clone(),
            pipeline.sink.max_parts_in_flight,
        ),
        source.fetch_next(&mut body)
    );
    let writer = writer?;
    let first = match first {
        Ok(first) => first,
        Err(e) => return Err(abort(writer, e.into()).await),
    };

    // One slot per part alive at once: the one being filled, plus those queued or uploading.
    let part_slots = Arc::new(Semaphore::new(pipeline.sink.max_parts_in_flight + 1));
    let (parts_tx, parts_rx) = mpsc::channel::<Part>(1);
    let (stop_tx, stop_rx) = oneshot::channel();
    let uploader = tokio::spawn(upload_parts(
        writer,
        parts_rx,
        stop_rx,
        Arc::clone(&part_slots),
    ));
    let compressor = match Compressor::spawn(
        CompressorConfig {
            level: pipeline.sink.compression_level,
            workers: pipeline.sink.compression_threads,
            queue_depth: CHUNK_QUEUE,
            parts: pipeline.sink.parts,
            part_slots: Some(Arc::clone(&part_slots)),
        },
        parts_tx,
    ) {
        Ok(c) => c,
        Err(e) => {
            part_slots.close();
            let _ = stop_tx.send(());
            let writer = join_uploader(uploader).await?.0;
            return Err(abort(
                writer,
                RunError::Internal(format!("starting the compressor: {e}")),
            )
            .await);
        }
    };
    let mut state = Pages {
        encoder: Some(LineEncoder::new(compressor, CHUNK_BYTES)),
        body,
        records: 0,
        pages: 0,
        retries: 0,
        bytes_in: 0,
        largest_page: 0,
    };

    let fetched = tokio::select! {
        r = state.run(pipeline, &transform, &mut source, first, &progress) => r,
        () = cancel => Err(RunError::Cancelled),
    };
    // On success the encoder is still there: finishing it sends the last part.
    let finished = match (fetched, state.encoder.take()) {
        (Ok(()), Some(encoder)) => tokio::task::spawn_blocking(move || encoder.finish())
            .await
            .map_err(|e| RunError::Internal(e.to_string()))
            .and_then(|r| r.map_err(RunError::from)),
        (Ok(()), None) => Err(RunError::Internal("the encoder was lost".into())),
        (Err(e), _) => Err(e),
    };
    let stats = match finished {
        Ok(stats) => stats,
        Err(err) => {
            // Wake the compressor if it waits for a slot, and stop taking parts.
            part_slots.close();
            let _ = stop_tx.send(());
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
    let (objects, e_tag, parts) = if state.records == 0 {
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
    let report = RunReport {
        records: state.records,
        pages: state.pages,
        retries: state.retries,
        bytes_in: state.bytes_in,
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
        memory: MemorySettings {
            part_size_bytes: pipeline.sink.part_size_bytes as u64,
            max_parts_in_flight: pipeline.sink.max_parts_in_flight as u64,
            chunk_bytes: CHUNK_BYTES as u64,
            chunk_queue: CHUNK_QUEUE as u64,
            compression_threads: pipeline.sink.compression_threads as u64,
            max_page_bytes: pipeline.source.max_page_bytes as u64,
            largest_page_bytes: state.largest_page,
        },
    };
    tracing::info!(
        records = report.records,
        pages = report.pages,
        bytes_written = report.bytes_written,
        "run complete"
    );
    Ok(report)
}

/// The page loop's state, kept outside the loop's future so a cancelled loop leaves it intact.
struct Pages {
    /// Moved into the blocking thread for each page and back; `None` only while it is there.
    encoder: Option<LineEncoder>,
    body: Vec<u8>,
    records: u64,
    pages: u64,
    retries: u64,
    bytes_in: u64,
    largest_page: u64,
}

impl Pages {
    async fn run(
        &mut self,
        pipeline: &Pipeline,
        transform: &Arc<crate::transform::Transform>,
        source: &mut HttpSource,
        first: Option<Fetched>,
        progress: &Progress,
    ) -> Result<(), RunError> {
        // Shared with each page's worker without copying the pointers' tokens every page.
        let records_ptr = Arc::new(pipeline.records.clone());
        let cursor_ptr = Arc::new(source.cursor_pointer().cloned());
        let mut fetched = first;
        while let Some(page) = fetched {
            let body_len = self.body.len() as u64;
            self.bytes_in += body_len;
            self.largest_page = self.largest_page.max(body_len);
            self.retries += u64::from(page.attempts - 1);
            let Some(mut encoder) = self.encoder.take() else {
                return Err(RunError::Internal("the encoder was lost".into()));
            };
            let body = std::mem::take(&mut self.body);
            let transform = Arc::clone(transform);
            let records_ptr = Arc::clone(&records_ptr);
            let cursor_ptr = Arc::clone(&cursor_ptr);
            // Splitting, transforming and encoding is CPU work: keep it off the async workers.
            let (body, encoder, scanned) = tokio::task::spawn_blocking(move || {
                let mut writer = RecordWriter::new(&transform, &mut encoder);
                let scanned = scan_page(
                    &body,
                    &records_ptr,
                    cursor_ptr.as_ref().as_ref(),
                    &mut writer,
                )
                .map(|scan| (scan.records, scan.next.map(RawValue::to_owned)));
                (body, encoder, scanned)
            })
            .await
            .map_err(|e| RunError::Internal(format!("page worker: {e}")))?;
            self.body = body;
            self.encoder = Some(encoder);
            let (records, next) = scanned.map_err(|source_err| match source_err {
                PageError::Output(e) => RunError::Compress(e),
                other => RunError::Source(SourceError::Page {
                    page: page.page,
                    url: source.config().redactor.url(&page.url),
                    source: other,
                }),
            })?;
            self.records += records;
            self.pages += 1;
            let lines = self.encoder.as_ref().map_or(0, LineEncoder::bytes);
            progress.page(records, body_len, lines);
            source.advance(
                &page,
                PageOutcome {
                    records,
                    body_next: next.as_deref(),
                    link_next: page.link_next.as_deref(),
                },
            )?;
            fetched = source.fetch_next(&mut self.body).await?;
        }
        Ok(())
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
