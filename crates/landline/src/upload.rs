//! The compressed upload: JSON Lines in, one object out. It owns the compressor threads, the
//! task that uploads their parts, the part slots that bound memory, and checkpoints; its
//! cleanup (stop the compressor, stop the uploads, abort the upload, delete the checkpoint)
//! is written once, here.
//!
//! ```text
//! LineEncoder ─ chunks ─▶ gzip threads ─ parts (channel of 1) ─▶ upload task ─▶ ObjectWriter
//!                                                                    └─▶ checkpoint after a
//!                                                                        part that ends a page
//! ```
//!
//! Memory: `max_parts_in_flight + 1` parts alive (one being filled, the others queued or
//! uploading), each of its part size (up to twice it when parts are cut at page ends).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::checkpoint::{Checkpoints, Counters};
use crate::compress::{CompressError, CompressStats, Compressor, CompressorConfig, Part, PartEnd};
use crate::encode::{LineEncoder, ObjectLimits};
use crate::pipeline::RunError;
use crate::report::Progress;
use crate::sink::{ObjectWriter, SinkError, UploadHandle, UploadState, Written};

/// The upload task: its writer at the end (`None` when the first object could not be
/// created), and how the uploads went.
type UploadTask = JoinHandle<(Option<ObjectWriter>, Result<(), SinkError>)>;

/// Creates the first object of an upload that starts before its object exists.
pub type OpenFirst = futures::future::BoxFuture<'static, Result<ObjectWriter, SinkError>>;

/// The first object of an upload: created already, or created by the upload task while the
/// compressor starts.
enum First {
    Writer(Box<ObjectWriter>),
    Open(OpenFirst),
}

/// Opens object `n` (from 2) of a sequence: its writer, its upload created.
pub type OpenObject = Box<
    dyn FnMut(u64) -> futures::future::BoxFuture<'static, Result<ObjectWriter, SinkError>> + Send,
>;

/// A sequence of objects instead of one: the encoder ends each at `limits`, and the upload
/// task completes it and goes on with the next, which `open` creates.
pub struct ObjectSequence {
    /// Opens the next object.
    pub open: OpenObject,
    /// Where objects end.
    pub limits: ObjectLimits,
}

impl std::fmt::Debug for ObjectSequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSequence")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// An object of a sequence that has landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    /// Where it is.
    pub location: String,
    /// How its upload ended.
    pub written: Written,
}

/// The newest checkpoint to write: the upload so far and the page end its last part holds.
type Latest = Option<(UploadState, PartEnd)>;

/// A multipart upload fed by the compressor. Finish it with [`CompressedUpload::finish`] or
/// end it with [`CompressedUpload::abort`]; both wait for the upload task.
///
/// [`start`](Self::start) takes an [`ObjectWriter`] (new or resumed) and returns the
/// [`LineEncoder`] to write JSON Lines into; the compressor threads deflate them into one
/// gzip member, cut it into parts, and the upload task puts the parts through the writer.
///
/// # Contract
///
/// - **Part sizes** come from the [`CompressorConfig`]'s [`PartSizer`](crate::sink::PartSizer):
///   every part but the last is exactly its size, or between one and two sizes when
///   checkpoints cut parts at page ends. Nothing here checks that the sizer's base is at
///   least [`MIN_PART_SIZE`](crate::sink::MIN_PART_SIZE), as S3 needs: a pipeline's
///   `[sink] part_size_bytes` is validated to be; a hand-built config must see to it, or S3
///   refuses the upload at [`finish`](Self::finish) (which then aborts it).
/// - **Numbering.** The compressor numbers its parts from
///   [`CompressorConfig::first_part`], the writer from its own count: with a resumed writer,
///   `first_part` must be the writer's next part (`writer.parts() + 1`), and
///   [`CompressorConfig::resume`] the gzip member state its checkpoint saved, so that the
///   object stays one gzip member.
/// - **At most [`MAX_PARTS`](crate::sink::MAX_PARTS) parts**: the part after the 10,000th is
///   refused ([`SinkError::TooManyParts`]), the run fails and the upload is aborted.
/// - **Memory**: `max_parts_in_flight + 1` part slots, so at most that many parts are alive
///   (one being filled, the others queued or uploading); a compressor without a free slot
///   waits, and with it the encoder and the source.
/// - **[`finish`](Self::finish) is atomic**: it ends the gzip stream, waits for every part and
///   completes the upload ([`ObjectWriter::finish`]); the object appears then, whole, or not
///   at all. Every failure in between (compressor, part, completion, a lost upload task)
///   aborts the upload, and the error says whether the abort failed too
///   ([`RunError::AbortFailed`]).
/// - **No abort on `Drop`.** Dropping a `CompressedUpload` stops its upload task, which
///   cancels the parts uploading; nothing completes the upload, so no object appears, but
///   nothing aborts it either: it stays open in the store with its acknowledged parts, and
///   its checkpoint, if any, stays in place. Call [`finish`](Self::finish),
///   [`abort`](Self::abort) or [`suspend`](Self::suspend) on every path. The writer's
///   [`UploadHandle`] is kept here, so that [`abort`](Self::abort) works even when the
///   upload task that owns the writer panicked.
/// - **Continuing in another process.** With `checkpoints`, a checkpoint is written after
///   each part that ends a page once every part before it is acknowledged: the upload's
///   [`UploadState`] (from [`ObjectWriter::state`]) with the gzip member and paging state at
///   that page. A later process builds its writer with [`ObjectWriter::resume`] and its
///   compressor from that checkpoint; with a time limit, [`stop_point`](Self::stop_point) and
///   [`suspend`](Self::suspend) stop at such a checkpoint and leave the upload open for it.
#[derive(Debug)]
pub struct CompressedUpload {
    /// To abort the upload even if the task that owns the writer is lost (the current
    /// object's, in a sequence).
    handle: Arc<std::sync::Mutex<Option<UploadHandle>>>,
    /// The objects of a sequence completed so far, the current one not included.
    landed: Arc<std::sync::Mutex<Vec<Landed>>>,
    /// One slot per part alive; closed to wake a compressor waiting for one.
    slots: Arc<Semaphore>,
    /// Tells the upload task to stop taking parts.
    stop: Option<oneshot::Sender<()>>,
    task: UploadTask,
    checkpoints: Option<Arc<Checkpoints>>,
    /// Writes checkpoints off the upload task, the newest only, one at a time.
    checkpoint_writer: Option<JoinHandle<()>>,
    /// Set once a checkpoint was written late enough in a time-limited run to stop at.
    stop_point: Option<oneshot::Receiver<Counters>>,
}

/// A time limit: stop at a checkpoint while there is still time for one more part.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimit {
    /// When the process started.
    pub started: Instant,
    /// How long it may run.
    pub max: Duration,
}

/// Where a stopped run stands: what its last checkpoint holds.
#[derive(Debug, Clone, Copy)]
pub struct Suspended {
    /// The counters at the checkpoint's page.
    pub counters: Counters,
}

impl CompressedUpload {
    /// Starts the compressor (with `config`; its part slots, when it has them, are shared
    /// with other uploads, otherwise this sets `max_parts_in_flight + 1`) and the upload task
    /// around `writer`; returns the encoder to write JSON Lines into, with chunks of
    /// `chunk_bytes`. With `checkpoints`, a checkpoint is written after every part that ends
    /// a page; the caller writes the first one. With `progress`, the bytes of each part are
    /// added to its `bytes_written` as the part is handed to the store. On failure the
    /// upload is aborted.
    pub async fn start(
        writer: ObjectWriter,
        config: CompressorConfig,
        chunk_bytes: usize,
        max_parts_in_flight: usize,
        checkpoints: Option<Arc<Checkpoints>>,
        limit: Option<TimeLimit>,
        progress: Option<Arc<Progress>>,
    ) -> Result<(Self, LineEncoder), RunError> {
        Self::start_with(
            First::Writer(Box::new(writer)),
            config,
            chunk_bytes,
            max_parts_in_flight,
            checkpoints,
            limit,
            progress,
            None,
        )
        .await
    }

    /// As [`start`](Self::start), writing a sequence of objects: `writer` is the first, and
    /// each time the encoder ends one at `sequence.limits`, the upload task opens the next
    /// with `sequence.open`, puts the parts after it there, and completes the one before it
    /// (listed by [`landed`](Self::landed)). [`finish`](Self::finish) completes the last;
    /// a failure aborts the object being written and leaves those completed. No
    /// checkpoints: a sequence is written in one process.
    pub async fn start_sequence(
        writer: ObjectWriter,
        config: CompressorConfig,
        chunk_bytes: usize,
        max_parts_in_flight: usize,
        progress: Option<Arc<Progress>>,
        sequence: ObjectSequence,
    ) -> Result<(Self, LineEncoder), RunError> {
        Self::start_with(
            First::Writer(Box::new(writer)),
            config,
            chunk_bytes,
            max_parts_in_flight,
            None,
            None,
            progress,
            Some(sequence),
        )
        .await
    }

    /// As [`start_sequence`](Self::start_sequence), its first object created by `open` on
    /// the upload task: the encoder is returned at once, and its chunks wait (bounded, as
    /// ever) while the store answers. An object that cannot be created fails the upload.
    pub async fn start_sequence_opening(
        open: OpenFirst,
        config: CompressorConfig,
        chunk_bytes: usize,
        max_parts_in_flight: usize,
        progress: Option<Arc<Progress>>,
        sequence: ObjectSequence,
    ) -> Result<(Self, LineEncoder), RunError> {
        Self::start_with(
            First::Open(open),
            config,
            chunk_bytes,
            max_parts_in_flight,
            None,
            None,
            progress,
            Some(sequence),
        )
        .await
    }

    /// The objects of a sequence completed so far (not the one being written).
    pub fn landed(&self) -> Vec<Landed> {
        self.landed.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// [`finish`](Self::finish) for a sequence: every object it landed, in order (the last
    /// one included when it could be completed; those before it stay even when the run
    /// failed), and how it ended.
    pub async fn finish_sequence(
        self,
        encoder: LineEncoder,
    ) -> (Vec<Landed>, Result<CompressStats, RunError>) {
        let landed = Arc::clone(&self.landed);
        let current = Arc::clone(&self.handle);
        let finished = self.finish(encoder, true).await;
        let mut all = landed.lock().map(|l| l.clone()).unwrap_or_default();
        match finished {
            Ok((written, stats)) => {
                let location = current
                    .lock()
                    .ok()
                    .and_then(|h| h.as_ref().map(|h| h.location().to_owned()));
                if let (Some(written), Some(location)) = (written, location) {
                    all.push(Landed { location, written });
                }
                (all, Ok(stats))
            }
            Err(e) => (all, Err(e)),
        }
    }

    /// [`abort`](Self::abort) for a sequence: the error, and the objects that landed before
    /// it (which stay).
    pub async fn abort_sequence(self, cause: RunError) -> (RunError, Vec<Landed>) {
        let landed = Arc::clone(&self.landed);
        let err = self.abort(cause).await;
        let landed = landed.lock().map(|l| l.clone()).unwrap_or_default();
        (err, landed)
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_with(
        first: First,
        mut config: CompressorConfig,
        chunk_bytes: usize,
        max_parts_in_flight: usize,
        checkpoints: Option<Arc<Checkpoints>>,
        limit: Option<TimeLimit>,
        progress: Option<Arc<Progress>>,
        sequence: Option<ObjectSequence>,
    ) -> Result<(Self, LineEncoder), RunError> {
        // A config with slots shares them with other uploads (partitions); otherwise this
        // upload has its own.
        let slots = config
            .part_slots
            .clone()
            .unwrap_or_else(|| Arc::new(Semaphore::new(max_parts_in_flight + 1)));
        config.part_slots = Some(Arc::clone(&slots));
        config.cut_at_boundaries = checkpoints.is_some();
        let (parts_tx, parts_rx) = mpsc::channel::<Part>(1);
        let (halt_tx, halt_rx) = oneshot::channel();
        let handle = Arc::new(std::sync::Mutex::new(match &first {
            First::Writer(writer) => Some(writer.handle().clone()),
            First::Open(_) => None,
        }));
        let landed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (open, limits) = match sequence {
            Some(s) => (Some(s.open), s.limits),
            None => (None, ObjectLimits::default()),
        };
        let (stop_tx, stop_point) = match limit {
            Some(_) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let (latest_tx, checkpoint_writer) = match &checkpoints {
            Some(checkpoints) => {
                let (tx, rx) = watch::channel(None);
                let writer = write_checkpoints(Arc::clone(checkpoints), rx, limit.zip(stop_tx));
                (Some(tx), Some(tokio::spawn(writer)))
            }
            None => (None, None),
        };
        let task = tokio::spawn(upload_parts(
            first,
            parts_rx,
            halt_rx,
            Arc::clone(&slots),
            latest_tx,
            progress,
            Sequence {
                open,
                handle: Arc::clone(&handle),
                landed: Arc::clone(&landed),
            },
        ));
        let upload = CompressedUpload {
            handle,
            landed,
            slots,
            stop: Some(halt_tx),
            task,
            checkpoints,
            checkpoint_writer,
            stop_point,
        };
        let min_boundary = config.compression.min_boundary_bytes();
        match Compressor::spawn(config, parts_tx) {
            Ok(compressor) => Ok((
                upload,
                LineEncoder::new(compressor, chunk_bytes)
                    .with_min_boundary(min_boundary)
                    .with_limits(limits),
            )),
            Err(e) => {
                let cause = RunError::Internal(format!("starting the compressor: {e}"));
                Err(upload.abort(cause).await)
            }
        }
    }

    /// Completes once a time-limited run has written a checkpoint to stop at; never
    /// otherwise.
    pub async fn stop_point(&mut self) -> Counters {
        match self.stop_point.as_mut() {
            Some(rx) => match rx.await {
                Ok(counters) => counters,
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Leaves the upload open and its checkpoint in place, after
    /// [`stop_point`](Self::stop_point): stops the compressor and the uploads (parts after the checkpoint
    /// are put again by the resumed run).
    pub async fn suspend(mut self, counters: Counters) -> Result<Suspended, RunError> {
        self.halt();
        if let Some(writer) = self.checkpoint_writer.take() {
            let _ = writer.await;
        }
        match (&mut self.task).await {
            Ok((writer, _)) => {
                // Parts after the checkpoint may still be uploading: let them end (or give
                // up) rather than cut their connections.
                if let Some(writer) = writer {
                    let _ = tokio::time::timeout(
                        crate::sink::multipart::SETTLE_IN_FLIGHT,
                        writer.settle(),
                    )
                    .await;
                }
                Ok(Suspended { counters })
            }
            Err(e) => Err(RunError::Internal(format!("upload task: {e}"))),
        }
    }

    /// Stops the compressor and the uploads where they are (a stage failed): a compressor
    /// waiting for a part slot wakes and stops, and the upload task takes no more parts.
    pub fn halt(&mut self) {
        self.slots.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Ends the compressed stream (the encoder sends the last part), waits for every part
    /// and completes the upload, or, when `keep` is false (nothing was written), aborts it.
    /// Then deletes the checkpoint.
    pub async fn finish(
        mut self,
        encoder: LineEncoder,
        keep: bool,
    ) -> Result<(Option<Written>, CompressStats), RunError> {
        let stats = match tokio::task::spawn_blocking(move || encoder.finish()).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => return Err(self.abort(e.into()).await),
            Err(e) => return Err(self.abort(RunError::Internal(e.to_string())).await),
        };
        // The compressor has sent its last part: the task ends when it has taken it.
        let (writer, uploaded) = match (&mut self.task).await {
            Ok(joined) => joined,
            Err(e) => {
                self.stop_checkpoint_writer().await;
                let cause = RunError::Internal(format!("upload task: {e}"));
                return Err(self.abort_lost(cause).await);
            }
        };
        drop(self.stop.take());
        let writer = match (writer, uploaded) {
            (Some(writer), Ok(())) => writer,
            (writer, Err(e)) => {
                self.stop_checkpoint_writer().await;
                return Err(finish_abort(writer, e.into(), &self.checkpoints).await);
            }
            (None, Ok(())) => {
                return Err(RunError::Internal(
                    "the upload task ended without its object".into(),
                ));
            }
        };
        // The upload task has ended, so the newest checkpoint is queued: let it be written
        // (it waits for nothing the finished pages have not given) before anything deletes it.
        if let Some(writer) = self.checkpoint_writer.take() {
            let _ = writer.await;
        }
        let written = if keep {
            Some(writer.finish().await?)
        } else {
            writer.abort().await?;
            None
        };
        // The object has landed: a checkpoint that cannot be deleted is left for the next run
        // of the same date to clear (it finds its upload gone), not a failed run.
        if let Some(checkpoints) = &self.checkpoints
            && let Err(e) = checkpoints.delete().await
        {
            tracing::warn!(error = %e, "the run is complete, but its checkpoint could not be deleted");
        }
        Ok((written, stats))
    }

    /// Ends everything after `cause` and aborts the upload; returns the error to report: the
    /// upload's own error when the compressor only stopped because the uploads did, and the
    /// abort's failure, if any, beside the cause.
    pub async fn abort(mut self, cause: RunError) -> RunError {
        self.halt();
        self.stop_checkpoint_writer().await;
        match (&mut self.task).await {
            Ok((writer, uploaded)) => {
                let cause = match (uploaded, is_downstream_closed(&cause)) {
                    (Err(up), true) => up.into(),
                    _ => cause,
                };
                finish_abort(writer, cause, &self.checkpoints).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "the upload task was lost");
                self.abort_lost(cause).await
            }
        }
    }

    /// Stops writing checkpoints: one may wait for a page that will never be done, and none
    /// is wanted once the upload is being aborted.
    async fn stop_checkpoint_writer(&mut self) {
        if let Some(writer) = self.checkpoint_writer.take() {
            writer.abort();
            let _ = writer.await;
        }
    }

    /// Aborts through the handle: the task that owned the writer panicked or was cancelled.
    async fn abort_lost(&self, cause: RunError) -> RunError {
        tracing::warn!(error = %cause, "aborting the upload");
        // The guard goes before the await: only the handle is kept.
        let handle = self.handle.lock().ok().and_then(|h| h.clone());
        let aborted = match handle {
            Some(handle) => handle.abort().await,
            None => Ok(()),
        };
        let cause = with_abort(cause, aborted);
        delete_checkpoint(cause, &self.checkpoints).await
    }
}

/// Aborts `writer`'s upload after `cause` (there is none when its object could not be
/// created), then deletes the checkpoint.
async fn finish_abort(
    writer: Option<ObjectWriter>,
    cause: RunError,
    checkpoints: &Option<Arc<Checkpoints>>,
) -> RunError {
    let cause = match writer {
        Some(writer) => {
            tracing::warn!(error = %cause, "aborting the upload");
            with_abort(cause, writer.abort().await)
        }
        None => cause,
    };
    delete_checkpoint(cause, checkpoints).await
}

fn with_abort(cause: RunError, aborted: Result<(), SinkError>) -> RunError {
    match aborted {
        Ok(()) => cause,
        Err(abort) => RunError::AbortFailed {
            cause: Box::new(cause),
            abort,
        },
    }
}

/// After an abort the checkpoint describes nothing: it goes too (a failure to delete it is
/// only logged, the cause is what the run reports).
async fn delete_checkpoint(cause: RunError, checkpoints: &Option<Arc<Checkpoints>>) -> RunError {
    if let Some(checkpoints) = checkpoints
        && let Err(e) = checkpoints.delete().await
    {
        tracing::warn!(error = %e, "the checkpoint of the aborted upload could not be deleted");
    }
    cause
}

/// Whether `err` only says that the stage after the compressor went away.
fn is_downstream_closed(err: &RunError) -> bool {
    matches!(
        err,
        RunError::Compress(CompressError::OutputClosed | CompressError::ThreadGone)
    )
}

/// Writes the newest checkpoint each time there is one, until the upload task is done. A
/// checkpoint that cannot be written is a warning: the one before it still describes a
/// state the upload can be continued from (a resumed run puts the later parts again).
///
/// With a time limit, it stops at the first checkpoint written (with at least one part more
/// than the run began with) once the time left is less than twice the longest time between
/// two checkpoints so far (filling and uploading one part), and says so on `stop`.
async fn write_checkpoints(
    checkpoints: Arc<Checkpoints>,
    mut latest: watch::Receiver<Latest>,
    mut stop: Option<(TimeLimit, oneshot::Sender<Counters>)>,
) {
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    while latest.changed().await.is_ok() {
        let next = latest.borrow_and_update().clone();
        let Some((upload, end)) = next else { continue };
        match checkpoints.part_done(upload, &end).await {
            Ok(counters) => {
                let now = Instant::now();
                longest = longest.max(now - last);
                last = now;
                if let Some((limit, _)) = &stop
                    && limit.started.elapsed() + 2 * longest >= limit.max
                    && let Some((_, tx)) = stop.take()
                {
                    tracing::info!(
                        page = counters.page,
                        records = counters.records,
                        "time is nearly up: stopping at this checkpoint"
                    );
                    let _ = tx.send(counters);
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "a checkpoint could not be written; the previous one stands");
            }
        }
    }
}

/// What the upload task does after a step.
enum Step {
    /// Goes on.
    More,
    /// Ends: the compressor sent its last part.
    End,
    /// Goes on with object `n` of a sequence: the one before it has its last part.
    Object(u64),
}

/// The upload task's side of an object sequence.
struct Sequence {
    open: Option<OpenObject>,
    /// The current object's upload, for [`CompressedUpload::abort_lost`].
    handle: Arc<std::sync::Mutex<Option<UploadHandle>>>,
    landed: Arc<std::sync::Mutex<Vec<Landed>>>,
}

impl Sequence {
    /// Opens object `next` in place of `writer`'s, then completes `writer`'s. On failure the
    /// writer left in `writer` is the one to abort: the old one when the next could not be
    /// opened, the new one when the old one's completion failed (it aborted itself then).
    async fn next(&mut self, writer: &mut ObjectWriter, next: u64) -> Result<(), SinkError> {
        let Some(open) = self.open.as_mut() else {
            return Err(SinkError::Destination {
                url: writer.handle().location().to_owned(),
                reason: "the compressor ended an object, but nothing opens the next".into(),
            });
        };
        let opened = open(next).await?;
        let done = std::mem::replace(writer, opened);
        if let Ok(mut handle) = self.handle.lock() {
            *handle = Some(writer.handle().clone());
        }
        let location = done.handle().location().to_owned();
        let written = done.finish().await?;
        tracing::info!(object = %location, bytes = written.bytes, "object complete");
        if let Ok(mut landed) = self.landed.lock() {
            landed.push(Landed { location, written });
        }
        Ok(())
    }
}

/// Takes parts from the compressor and uploads them, a part leaving the channel only when an
/// upload slot is free; after each acknowledged part that ends a page (with every part
/// before it acknowledged), writes a checkpoint. Returns the writer, so the caller can
/// complete or abort it.
#[allow(clippy::too_many_arguments)]
async fn upload_parts(
    first: First,
    mut parts: mpsc::Receiver<Part>,
    mut stop: oneshot::Receiver<()>,
    slots: Arc<Semaphore>,
    latest: Option<watch::Sender<Latest>>,
    progress: Option<Arc<Progress>>,
    mut sequence: Sequence,
) -> (Option<ObjectWriter>, Result<(), SinkError>) {
    // Creating the first object is not cut short by a stop, as going from one object to
    // the next is not (below).
    let mut writer = match first {
        First::Writer(writer) => *writer,
        First::Open(open) => match open.await {
            Ok(writer) => {
                if let Ok(mut handle) = sequence.handle.lock() {
                    *handle = Some(writer.handle().clone());
                }
                writer
            }
            Err(e) => {
                slots.close();
                return (None, Err(e));
            }
        },
    };
    // Page ends of parts not yet covered by a checkpoint, by part number.
    let mut ends: BTreeMap<u64, PartEnd> = BTreeMap::new();
    loop {
        let step = async {
            tokio::select! {
                acked = writer.next_acknowledged(), if writer.in_flight() > 0 => {
                    acked?;
                    if let Some(latest) = &latest {
                        let through = writer.acknowledged_through();
                        let rest = ends.split_off(&(through + 1));
                        let passed = std::mem::replace(&mut ends, rest);
                        if let Some((_, end)) = passed.into_iter().next_back() {
                            // Replaces a checkpoint not written yet: only the newest matters.
                            latest.send_replace(Some((writer.state(), end)));
                        }
                    }
                    Ok(Step::More)
                }
                part = parts.recv(), if writer.has_capacity() => match part {
                    Some(part) => {
                        if let Some(end) = part.end {
                            ends.insert(part.number, end);
                        }
                        let bytes = part.data.len() as u64;
                        let next = (part.object_end && !part.last).then_some(part.object + 1);
                        writer.put_part_holding(part.data, part.slot).await?;
                        if let Some(progress) = &progress {
                            progress.part(bytes);
                        }
                        Ok(next.map_or(Step::More, Step::Object))
                    }
                    None => Ok(Step::End),
                },
            }
        };
        let result = tokio::select! {
            biased;
            _ = &mut stop => return (Some(writer), Ok(())),
            r = step => r,
        };
        // Going from one object to the next is not cut short by a stop: a creation or a
        // completion cut off halfway would leave an upload, or an object, nothing knows of.
        let result = match result {
            Ok(Step::Object(next)) => sequence.next(&mut writer, next).await.map(|()| Step::More),
            other => other,
        };
        match result {
            Ok(Step::More) | Ok(Step::Object(_)) => {}
            Ok(Step::End) => return (Some(writer), Ok(())),
            Err(e) => {
                // The compressor may be waiting for a slot: let it see that nobody will upload.
                slots.close();
                return (Some(writer), Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::encode::LineOutput as _;
    use crate::sink::{Destination, PartSizer};
    use object_store::path::Path;
    use object_store::{ObjectStore as _, ObjectStoreExt as _};

    /// Object `n` of the sequence `name` in `store`.
    fn object(store: &Arc<object_store::memory::InMemory>, name: &str, n: u64) -> Destination {
        let path = format!("{name}/part-{n:05}.jsonl");
        Destination {
            store: Arc::clone(store) as _,
            multipart: Arc::clone(store) as _,
            path: Path::from(path.as_str()),
            location: format!("memory:///{path}"),
            s3_rules: false,
        }
    }

    fn opener(
        store: &Arc<object_store::memory::InMemory>,
        name: &'static str,
        fail_at: Option<u64>,
    ) -> OpenObject {
        let store = Arc::clone(store);
        Box::new(move |n| {
            let dest = object(&store, name, n);
            Box::pin(async move {
                if Some(n) == fail_at {
                    return Err(SinkError::Destination {
                        url: dest.location.clone(),
                        reason: "refused by the test".into(),
                    });
                }
                ObjectWriter::create(&dest, 2).await
            })
        })
    }

    fn line(i: u64) -> String {
        format!(
            "{{\"id\":{i},\"text\":\"record {} of the sequence\"}}\n",
            i * 7919 % 1013
        )
    }

    /// Writes `records` lines through a sequence of `compression` objects cut at `limits`;
    /// returns how it ended, the objects that landed and the records of each.
    async fn write(
        name: &'static str,
        compression: Compression,
        records: u64,
        limits: ObjectLimits,
        fail_at: Option<u64>,
    ) -> (
        Arc<object_store::memory::InMemory>,
        Result<(), RunError>,
        Vec<Landed>,
        Vec<u64>,
    ) {
        let store = Arc::new(object_store::memory::InMemory::new());
        let first = ObjectWriter::create(&object(&store, name, 1), 2)
            .await
            .unwrap();
        let config = CompressorConfig::new(compression, 1, 2, PartSizer::new(64 * 1024, false));
        let sequence = ObjectSequence {
            open: opener(&store, name, fail_at),
            limits,
        };
        let (upload, encoder) =
            CompressedUpload::start_sequence(first, config, 16 * 1024, 2, None, sequence)
                .await
                .unwrap();
        let written = tokio::task::spawn_blocking(move || {
            let mut encoder = encoder;
            for i in 0..records {
                encoder.buf().extend_from_slice(line(i).as_bytes());
                encoder.end_line()?;
            }
            Ok::<_, CompressError>(encoder)
        })
        .await
        .unwrap();
        match written {
            Ok(encoder) => {
                let counts = encoder.object_records().to_vec();
                let (landed, ended) = upload.finish_sequence(encoder).await;
                (store, ended.map(drop), landed, counts)
            }
            Err(e) => {
                let (err, landed) = upload.abort_sequence(e.into()).await;
                (store, Err(err), landed, Vec::new())
            }
        }
    }

    async fn read(store: &Arc<object_store::memory::InMemory>, landed: &Landed) -> Vec<u8> {
        let path = landed.location.trim_start_matches("memory:///");
        store
            .get(&Path::from(path))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    fn decode(compression: Compression, bytes: &[u8]) -> Vec<u8> {
        use std::io::Read as _;
        match compression {
            Compression::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            Compression::Zstd => zstd::stream::decode_all(bytes).unwrap(),
            Compression::None => bytes.to_vec(),
        }
    }

    /// Each landed object is a whole, readable stream of its own, holding its count of
    /// lines, and together they are lines `0..lines` in order.
    async fn check_union(
        store: &Arc<object_store::memory::InMemory>,
        compression: Compression,
        landed: &[Landed],
        counts: &[u64],
        lines: u64,
    ) {
        let mut all = Vec::new();
        for (i, object) in landed.iter().enumerate() {
            let bytes = read(store, object).await;
            assert_eq!(bytes.len() as u64, object.written.bytes);
            let jsonl = decode(compression, &bytes);
            assert_eq!(
                jsonl.iter().filter(|&&b| b == b'\n').count() as u64,
                counts[i],
                "{compression}: object {i}"
            );
            all.extend(jsonl);
        }
        let expected: Vec<u8> = (0..lines).flat_map(|i| line(i).into_bytes()).collect();
        assert!(all == expected, "{compression}: the union differs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sequence_cut_by_records_holds_every_line_once_in_order() {
        let limits = ObjectLimits {
            records: Some(1000),
            bytes: None,
        };
        for compression in Compression::ALL {
            let (store, ended, landed, counts) =
                write("by-records", compression, 3500, limits, None).await;
            ended.unwrap();
            assert_eq!(counts, [1000, 1000, 1000, 500], "{compression}");
            assert_eq!(landed.len(), 4, "{compression}");
            for (i, object) in landed.iter().enumerate() {
                assert!(
                    object
                        .location
                        .ends_with(&format!("part-{:05}.jsonl", i + 1))
                );
            }
            check_union(&store, compression, &landed, &counts, 3500).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sequence_cut_by_size_never_exceeds_it() {
        let max = 400_000;
        // What the compressor may not have compressed yet when an object is cut: the chunk
        // being filled, one queued, and three with the two workers, counted incompressible.
        let slack = {
            let n = 6 * 16 * 1024;
            n + n / 64 + 1024
        };
        let limits = ObjectLimits {
            records: None,
            bytes: Some(max),
        };
        for compression in Compression::ALL {
            let (store, ended, landed, counts) =
                write("by-size", compression, 200_000, limits, None).await;
            ended.unwrap();
            assert!(landed.len() >= 3, "{compression}: {} objects", landed.len());
            for (i, object) in landed.iter().enumerate() {
                assert!(
                    object.written.bytes <= max,
                    "{compression}: object {i} too large"
                );
                if i + 1 < landed.len() {
                    // Cut within a few chunks (16 KiB here) of the limit.
                    assert!(
                        object.written.bytes > max - slack,
                        "{compression}: object {i} cut at {}",
                        object.written.bytes
                    );
                }
            }
            check_union(&store, compression, &landed, &counts, 200_000).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_aborts_the_open_object_and_keeps_those_completed() {
        let limits = ObjectLimits {
            records: Some(1000),
            bytes: None,
        };
        let (store, ended, landed, _) =
            write("failing", Compression::Gzip, 3500, limits, Some(3)).await;
        let err = ended.unwrap_err().to_string();
        assert!(err.contains("refused by the test"), "{err}");
        // Object 1 landed whole when 2 began; 3 could not be opened, so 2 was aborted.
        let keys: Vec<String> = {
            use futures::TryStreamExt as _;
            let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
            listed.into_iter().map(|m| m.location.to_string()).collect()
        };
        assert_eq!(landed.len(), 1, "{landed:?}");
        assert_eq!(keys, ["failing/part-00001.jsonl"], "{keys:?}");
        let jsonl = decode(Compression::Gzip, &read(&store, &landed[0]).await);
        assert_eq!(jsonl.iter().filter(|&&b| b == b'\n').count(), 1000);
    }
}
