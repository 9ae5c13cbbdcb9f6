//! Partitions from the records: `{record:/pointer}` or `{record:/pointer:date}` in
//! `[sink] url` lands each record in the object of its own partition, e.g.
//! `s3://b/events/date={record:/created_at:date}/part-{part}.jsonl.gz`.
//!
//! ```text
//!                       ┌─▶ LineEncoder ─▶ compressor ─▶ upload task ─▶ date=2026-12-05/…
//! page thread ─ line ─▶ Partitions ─▶ LineEncoder ─▶ compressor ─▶ upload task ─▶ date=2026-12-06/…
//!                       └─▶ …  at most max_open_partitions open at once
//! ```
//!
//! The page thread writes each record's line into a staging buffer, reads the partition's
//! value from the line's top-level entries (the spans the transform records anyway, so no
//! second parse), and moves the line to that partition's encoder. Each partition is a
//! sequence of objects of its own ([`CompressedUpload::start_sequence`]), cut by `[sink]
//! max_object_bytes` / `max_object_records` like any sequence.
//!
//! Memory: at most [`PartitionSpec::max_open`] partitions are open. Opening one more
//! completes the least recently used one, in the background (with at most `max_open` being
//! completed at once: the page thread waits for the oldest beyond that); a later record of
//! it starts its next object (`{part}` numbers them; without `{part}` in the URL that is an error, as
//! the object would be overwritten). Every partition's parts take their slots from one pool
//! of `max_open + max_parts_in_flight`, so the parts alive never exceed it, and no
//! partition can wait for a slot that only a record of another partition would free.
//!
//! Failure: every open upload is aborted; objects completed before (evicted partitions,
//! earlier objects of a sequence) stay, and the error lists them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::compress::{CompressError, CompressStats, CompressorConfig};
use crate::encode::{LineEncoder, LineError, LineOutput, Span};
use crate::pipeline::RunError;
use crate::pointer::JsonPointer;
use object_store::PutMultipartOptions;

use crate::sink::{Destination, ObjectWriter};
use crate::template::RunVars;
use crate::transform::RecordError;
use crate::upload::{CompressedUpload, Landed, ObjectSequence};

/// The template variable `{record:...}` becomes once parsed: a name no `[vars]` entry can
/// have.
pub(crate) const RECORD_VAR: &str = "record:";

/// The longest partition value, escaped: keys stay well under S3's 1,024 bytes.
pub const MAX_PARTITION_BYTES: usize = 200;

/// The default of `[sink] max_open_partitions`.
pub const DEFAULT_MAX_OPEN_PARTITIONS: usize = 16;

/// The most `[sink] max_open_partitions`.
pub const MAX_OPEN_PARTITIONS: usize = 1024;

/// Where a record's partition comes from: `{record:FIELD}` or `{record:FIELD:date}` in
/// `[sink] url`, with `[sink] default_partition` and `max_open_partitions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// The field, as written: a JSON pointer (`/created_at`, `/meta/region`) or a top-level
    /// key (`region`).
    pub field: String,
    /// The top-level key, as JSON text (quoted and escaped as the line writes it).
    top: Vec<u8>,
    /// The keys below it.
    rest: Vec<String>,
    /// `:date`: the partition is the field's calendar date (`YYYY-MM-DD`, in UTC for instants).
    pub date: bool,
    /// Where records without a usable value go (escaped); `None`: such a record fails the run.
    pub default: Option<String>,
    /// Partitions open at once.
    pub max_open: usize,
}

impl PartitionSpec {
    /// The partition of `field` (`date`: its calendar date), records without one going to
    /// `default`, at most `max_open` open at once.
    pub fn new(
        field: &str,
        date: bool,
        default: Option<&str>,
        max_open: usize,
    ) -> Result<PartitionSpec, String> {
        let tokens: Vec<String> = if field.starts_with('/') {
            JsonPointer::parse(field)
                .map_err(|e| e.to_string())?
                .tokens()
                .to_vec()
        } else if field.is_empty() {
            return Err(
                "{record:} names no field: write {record:/field} or {record:/field:date}".into(),
            );
        } else {
            vec![field.to_owned()]
        };
        let Some((top, rest)) = tokens.split_first() else {
            return Err(format!(
                "{{record:{field}}} names the whole record, not a field"
            ));
        };
        let default = match default {
            None => None,
            Some(value) => {
                let mut out = String::new();
                escape(value, &mut out);
                if value.is_empty() || out.len() > MAX_PARTITION_BYTES {
                    return Err(format!(
                        "default_partition must be between 1 and {MAX_PARTITION_BYTES} bytes once escaped"
                    ));
                }
                Some(out)
            }
        };
        if !(1..=MAX_OPEN_PARTITIONS).contains(&max_open) {
            return Err(format!(
                "max_open_partitions must be between 1 and {MAX_OPEN_PARTITIONS}"
            ));
        }
        Ok(PartitionSpec {
            field: field.to_owned(),
            top: serde_json::to_vec(top).unwrap_or_default(),
            rest: rest.to_vec(),
            date,
            default,
            max_open,
        })
    }

    /// Writes the partition of the record `line` (whose top-level entries are `spans`) into
    /// `out`, escaped for a key; whether it is the default partition. A record without a
    /// usable value goes to the default partition, or is refused.
    pub(crate) fn key_of(
        &self,
        line: &[u8],
        spans: &[Span],
        scratch: &mut Vec<u8>,
        out: &mut String,
    ) -> Result<bool, RecordError> {
        out.clear();
        let reason = match self.value(line, spans, scratch, out) {
            Ok(()) if out.len() <= MAX_PARTITION_BYTES => return Ok(false),
            Ok(()) => format!("is longer than {MAX_PARTITION_BYTES} bytes once escaped for a key"),
            Err(reason) => reason,
        };
        match &self.default {
            Some(default) => {
                out.clear();
                out.push_str(default);
                Ok(true)
            }
            None => Err(RecordError::NoPartition {
                field: self.field.clone(),
                reason: format!("{reason} (set [sink] default_partition to land such records)"),
            }),
        }
    }

    /// The field's value, escaped, into `out`; otherwise why there is none.
    fn value(
        &self,
        line: &[u8],
        spans: &[Span],
        scratch: &mut Vec<u8>,
        out: &mut String,
    ) -> Result<(), String> {
        let raw = spans
            .iter()
            .find(|&&(s, e, _)| line.get(s..e) == Some(&self.top[..]))
            .and_then(|&(_, e, end)| line.get(e + 1..end))
            .and_then(|top| crate::incremental::nested(top, &self.rest))
            .ok_or("is missing")?;
        let text = std::str::from_utf8(raw)
            .map_err(|_| "is not UTF-8")?
            .trim_matches([' ', '\t', '\n', '\r']);
        if text == "null" {
            return Err("is null".into());
        }
        if self.date {
            scratch.clear();
            crate::transform::timestamp::normalise_date(
                text,
                &crate::transform::timestamp::TimeZone::Utc,
                scratch,
            )
            .map_err(|e| format!("is not a date or a timestamp ({e})"))?;
            let date = scratch
                .get(1..scratch.len().saturating_sub(1))
                .and_then(|d| std::str::from_utf8(d).ok())
                .ok_or("is not a date or a timestamp")?;
            out.push_str(date);
            return Ok(());
        }
        match text.as_bytes().first() {
            Some(b'"') => {
                let value: std::borrow::Cow<'_, str> =
                    serde_json::from_str(text).map_err(|_| "is not a valid JSON string")?;
                if value.is_empty() {
                    return Err("is an empty string".into());
                }
                escape(&value, out);
            }
            Some(b'{' | b'[') => return Err("is an object or an array, not a value".into()),
            Some(_) => escape(text, out),
            None => return Err("is missing".into()),
        }
        Ok(())
    }
}

/// Appends `value` to `out` as one segment of a key: ASCII letters, digits and `-_.~=+`
/// as they are, every other byte as `%XX`; `.` and `..` (which paths refuse) escaped whole.
pub fn escape(value: &str, out: &mut String) {
    if value == "." || value == ".." {
        for _ in 0..value.len() {
            out.push_str("%2E");
        }
        return;
    }
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'=' | b'+') {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Splits `{record:FIELD}` or `{record:FIELD:date}` out of a `[sink] url` template: the
/// template with `{record:}` in its place, and the field and whether it is `:date`.
pub(crate) fn split_template(url: &str) -> Result<(String, Option<(String, bool)>), String> {
    let mut out = String::with_capacity(url.len());
    let mut found = None;
    let mut rest = url;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push_str("{{");
            rest = after;
            continue;
        }
        let Some(inner) = tail.strip_prefix("{record:") else {
            out.push('{');
            rest = &tail[1..];
            continue;
        };
        let end = inner.find('}').ok_or("{record:... has no closing brace")?;
        if found.is_some() {
            return Err("{record:...} may appear once".into());
        }
        let spec = &inner[..end];
        let (field, date) = match spec.strip_suffix(":date") {
            Some(field) => (field, true),
            None => (spec, false),
        };
        found = Some((field.to_owned(), date));
        out.push('{');
        out.push_str(RECORD_VAR);
        out.push('}');
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    Ok((out, found))
}

/// How a partition's uploads are started: everything about them but the partition.
pub(crate) struct Starter {
    /// The run's first destination (its store and client).
    pub(crate) first: Destination,
    pub(crate) sink: crate::config::SinkSpec,
    pub(crate) vars: RunVars,
    pub(crate) options: PutMultipartOptions,
    /// The compressor's settings, its part slots the shared pool.
    pub(crate) config: CompressorConfig,
    pub(crate) chunk_bytes: usize,
    pub(crate) progress: Option<Arc<crate::report::Progress>>,
    pub(crate) runtime: Handle,
}

impl Starter {
    /// The URL of object `n` of `partition`.
    fn url(&self, partition: &str, n: u64) -> String {
        self.sink.object_url_in(&self.vars, Some(partition), n)
    }

    /// Starts `partition`'s upload, its first object numbered `first`: the compressor and
    /// the upload task, which creates the object while the first lines are compressed (the
    /// page thread does not wait for the store).
    fn start(
        &self,
        partition: &str,
        first: u64,
    ) -> Result<(CompressedUpload, LineEncoder), RunError> {
        let dest = self.first.sibling(&self.url(partition, first))?;
        let in_flight = self.sink.max_parts_in_flight;
        let options = self.options.clone();
        let open: crate::upload::OpenFirst =
            Box::pin(async move { ObjectWriter::create_with(&dest, in_flight, options).await });
        let sequence = self.sequence(partition, first);
        let config = self.config.clone();
        let (chunk_bytes, progress) = (self.chunk_bytes, self.progress.clone());
        // Only spawns: nothing here waits for the network.
        self.runtime
            .block_on(CompressedUpload::start_sequence_opening(
                open,
                config,
                chunk_bytes,
                in_flight,
                progress,
                sequence,
            ))
    }

    /// The objects after the first of `partition`'s upload (object `k` of the stream is
    /// number `first + k - 1`).
    fn sequence(&self, partition: &str, first: u64) -> ObjectSequence {
        let base = self.first.clone();
        let sink = self.sink.clone();
        let vars = self.vars.clone();
        let options = self.options.clone();
        let partition = partition.to_owned();
        ObjectSequence {
            open: Box::new(move |k| {
                let url = sink.object_url_in(&vars, Some(&partition), first + k - 1);
                let next = base.sibling(&url);
                let options = options.clone();
                let in_flight = sink.max_parts_in_flight;
                Box::pin(async move { ObjectWriter::create_with(&next?, in_flight, options).await })
            }),
            limits: self.sink.limits,
        }
    }
}

/// A partition being written: its encoder (its upload is in [`Shared`]).
struct Open {
    encoder: LineEncoder,
    /// The number of its first object in this upload.
    first: u64,
    /// When a record last went to it.
    used: u64,
}

/// A partition's upload once ended: its objects and their figures.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The records and JSON Lines bytes of each object, in order.
    pub(crate) records: Vec<u64>,
    pub(crate) bytes: Vec<u64>,
    /// The objects that landed, in order.
    pub(crate) landed: Vec<Landed>,
    /// How the upload ended.
    pub(crate) ended: Result<CompressStats, RunError>,
}

/// What the page thread and the run's end share: the uploads (so that a failure anywhere
/// aborts every one of them) and the partitions being completed.
#[derive(Default)]
struct SharedState {
    uploads: HashMap<String, CompressedUpload>,
    finishing: std::collections::VecDeque<JoinHandle<Finished>>,
    /// Partitions completed while the run went on.
    done: Vec<Finished>,
    /// Why a partition could not be opened: the run's error, which the page thread can
    /// only report as its output having stopped.
    failure: Option<RunError>,
}

/// The partitions' uploads, for the run's end.
#[derive(Clone)]
pub(crate) struct Shared {
    slots: Arc<Semaphore>,
    state: Arc<Mutex<SharedState>>,
}

impl Shared {
    /// A pool of `slots` part slots for every partition.
    pub(crate) fn new(slots: usize) -> Self {
        Shared {
            slots: Arc::new(Semaphore::new(slots)),
            state: Arc::default(),
        }
    }

    /// The part slots, to put in the compressors' config.
    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.slots)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops every compressor and upload where it is (a stage failed).
    pub(crate) fn halt(&self) {
        self.slots.close();
        for upload in self.lock().uploads.values_mut() {
            upload.halt();
        }
    }

    /// Completes every partition still open (with its encoder, from `output`) and waits
    /// for those being completed: every upload's end, in no particular order.
    pub(crate) async fn finish(&self, output: Partitions) -> Vec<Finished> {
        for (key, open) in output.open {
            self.complete(&output.starter.runtime, key, open);
        }
        self.wait().await
    }

    /// Aborts every open upload after `cause` and waits for those being completed; the
    /// error names the objects that landed (which stay).
    pub(crate) async fn abort(&self, cause: RunError) -> (RunError, Vec<Landed>) {
        self.halt();
        let uploads: Vec<(String, CompressedUpload)> = self.lock().uploads.drain().collect();
        let mut own = None;
        let mut landed = Vec::new();
        for (_, upload) in uploads {
            // The cause given is the run's; each upload answers with its own error when it
            // had one (the compressor then only saw the uploads stop).
            let (err, done) = upload
                .abort_sequence(RunError::Compress(CompressError::OutputClosed))
                .await;
            landed.extend(done);
            if own.is_none() && !is_downstream(&err) {
                own = Some(err);
            }
        }
        for finished in self.wait().await {
            landed.extend(finished.landed);
            // A partition completed early may be the one whose upload failed.
            if let Err(err) = finished.ended
                && own.is_none()
                && !is_downstream(&err)
            {
                own = Some(err);
            }
        }
        let own = self.lock().failure.take().or(own);
        let cause = match (cause, own) {
            (cause, Some(own)) if is_downstream(&cause) => own,
            (cause, _) => cause,
        };
        landed.sort_by(|a, b| a.location.cmp(&b.location));
        (cause, landed)
    }

    /// Completes `key`'s upload in the background.
    fn complete(&self, runtime: &Handle, key: String, open: Open) {
        let mut state = self.lock();
        let Some(upload) = state.uploads.remove(&key) else {
            return;
        };
        let records = open.encoder.object_records().to_vec();
        let bytes = open.encoder.object_bytes();
        let encoder = open.encoder;
        let task = runtime.spawn(async move {
            let (landed, ended) = upload.finish_sequence(encoder).await;
            Finished {
                records,
                bytes,
                landed,
                ended,
            }
        });
        state.finishing.push_back(task);
    }

    /// Waits, on the page thread, until at most `max` partitions are being completed: each
    /// holds its compressor's buffers until its last part is uploaded, so their number is
    /// bounded like the open ones'.
    fn bound_finishing(&self, runtime: &Handle, max: usize) {
        loop {
            let oldest = {
                let mut state = self.lock();
                if state.finishing.len() <= max {
                    return;
                }
                state.finishing.pop_front()
            };
            let Some(oldest) = oldest else { return };
            let finished = runtime.block_on(joined(oldest));
            self.lock().done.push(finished);
        }
    }

    /// Waits for every partition being completed; returns them with those completed before.
    async fn wait(&self) -> Vec<Finished> {
        let (tasks, mut finished) = {
            let mut state = self.lock();
            (
                std::mem::take(&mut state.finishing),
                std::mem::take(&mut state.done),
            )
        };
        for task in tasks {
            finished.push(joined(task).await);
        }
        finished
    }
}

/// Whether `err` only says that the uploads stopped (another error is the cause).
pub(crate) fn is_downstream(err: &RunError) -> bool {
    matches!(
        err,
        RunError::Compress(CompressError::OutputClosed | CompressError::ThreadGone)
    )
}

/// How a partition's completion ended, its task lost or not.
async fn joined(task: JoinHandle<Finished>) -> Finished {
    match task.await {
        Ok(f) => f,
        Err(e) => Finished {
            records: Vec::new(),
            bytes: Vec::new(),
            landed: Vec::new(),
            ended: Err(RunError::Internal(format!("completing a partition: {e}"))),
        },
    }
}

/// Figures of a partitioned run, for the report.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PartitionFigures {
    /// Partitions written.
    pub(crate) partitions: u64,
    /// Records that went to the default partition.
    pub(crate) default_records: u64,
    /// Partitions completed early to make room for another.
    pub(crate) evictions: u64,
}

/// The page thread's output when the URL takes partitions from the records: each line to
/// its partition's encoder (see the module doc).
pub(crate) struct Partitions {
    spec: Arc<PartitionSpec>,
    starter: Starter,
    shared: Shared,
    /// The line being written.
    staging: Vec<u8>,
    /// The current line's partition, and scratch for its date.
    key: String,
    scratch: Vec<u8>,
    open: HashMap<String, Open>,
    /// The next object of partitions completed early, to start from when they come back.
    next: HashMap<String, u64>,
    tick: u64,
    bytes: u64,
    figures: PartitionFigures,
}

impl Partitions {
    /// Lines to partitions by `spec`, their uploads started by `starter` and kept in
    /// `shared`.
    pub(crate) fn new(spec: Arc<PartitionSpec>, starter: Starter, shared: Shared) -> Self {
        Partitions {
            spec,
            starter,
            shared,
            staging: Vec::with_capacity(64 * 1024),
            key: String::new(),
            scratch: Vec::new(),
            open: HashMap::new(),
            next: HashMap::new(),
            tick: 0,
            bytes: 0,
            figures: PartitionFigures::default(),
        }
    }

    /// Goes on from a checkpoint: each partition's next object, and the figures so far.
    pub(crate) fn resume(&mut self, earlier: &crate::checkpoint::ObjectsDone) {
        self.next = earlier
            .partitions
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        self.figures.default_records = earlier.default_records;
        self.figures.evictions = earlier.evictions;
    }

    /// The `{part}` each partition goes on with once every open one is completed.
    pub(crate) fn next_parts(&self) -> std::collections::BTreeMap<String, u64> {
        let mut next: std::collections::BTreeMap<String, u64> =
            self.next.iter().map(|(k, n)| (k.clone(), *n)).collect();
        for (key, open) in &self.open {
            let objects = open.encoder.object_records().len() as u64;
            next.insert(key.clone(), open.first + objects);
        }
        next
    }

    /// The figures so far.
    pub(crate) fn figures(&self) -> PartitionFigures {
        PartitionFigures {
            partitions: (self.next.len()
                + self
                    .open
                    .keys()
                    .filter(|k| !self.next.contains_key(*k))
                    .count()) as u64,
            ..self.figures
        }
    }

    /// Uncompressed bytes written so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The encoder of the current line's partition, opened (and another completed to make
    /// room) if need be.
    fn encoder(&mut self) -> Result<&mut LineEncoder, LineError> {
        self.tick += 1;
        if !self.open.contains_key(self.key.as_str()) {
            self.open_partition()?;
        }
        let open = self
            .open
            .get_mut(self.key.as_str())
            .ok_or(LineError::Output(CompressError::OutputClosed))?;
        open.used = self.tick;
        Ok(&mut open.encoder)
    }

    fn open_partition(&mut self) -> Result<(), LineError> {
        let key = self.key.clone();
        let first = self.next.get(&key).copied().unwrap_or(1);
        if first > 1 && !self.starter.sink.numbered {
            return Err(LineError::Record(RecordError::PartitionClosed {
                partition: key,
                max_open: self.spec.max_open,
            }));
        }
        if self.open.len() >= self.spec.max_open {
            self.evict();
        }
        let (upload, encoder) = match self.starter.start(&key, first) {
            Ok(started) => started,
            Err(e) => {
                self.shared.lock().failure = Some(e);
                return Err(LineError::Output(CompressError::OutputClosed));
            }
        };
        self.shared.lock().uploads.insert(key.clone(), upload);
        tracing::debug!(partition = %key, first, "partition opened");
        self.open.insert(
            key,
            Open {
                encoder,
                first,
                used: self.tick,
            },
        );
        Ok(())
    }

    /// Completes the least recently used partition in the background.
    fn evict(&mut self) {
        let Some(key) = self
            .open
            .iter()
            .min_by_key(|(_, o)| o.used)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let Some(open) = self.open.remove(&key) else {
            return;
        };
        let objects = open.encoder.object_records().len() as u64;
        self.next.insert(key.clone(), open.first + objects);
        self.figures.evictions += 1;
        tracing::debug!(partition = %key, "partition completed to make room for another");
        self.shared.complete(&self.starter.runtime, key, open);
        self.shared
            .bound_finishing(&self.starter.runtime, self.spec.max_open);
    }
}

impl LineOutput for Partitions {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.staging.clear();
        &mut self.staging
    }

    fn end_line(&mut self) -> Result<(), CompressError> {
        // Records come through `end_record`, which knows their entries. A line without
        // them names no partition: it goes to the default one, or stops the output.
        match self.end_record(&[]) {
            Ok(()) => Ok(()),
            Err(LineError::Output(e)) => Err(e),
            Err(LineError::Record(_)) => Err(CompressError::OutputClosed),
        }
    }

    fn end_record(&mut self, spans: &[Span]) -> Result<(), LineError> {
        let defaulted = self
            .spec
            .key_of(&self.staging, spans, &mut self.scratch, &mut self.key)
            .map_err(LineError::Record)?;
        if defaulted {
            self.figures.default_records += 1;
        }
        let line = std::mem::take(&mut self.staging);
        let result = self.encoder().and_then(|encoder| {
            encoder.buf().extend_from_slice(&line);
            encoder.end_line().map_err(LineError::Output)
        });
        self.bytes += line.len() as u64;
        self.staging = line;
        result
    }
}

/// Where the page thread's lines go: the run's one encoder, or its partitions.
// The encoder stays inline: it is on every record's path; there is one per run.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RunOutput {
    /// One stream (one object, or a sequence of them).
    One(LineEncoder),
    /// A stream per partition.
    Partitions(Box<Partitions>),
}

impl LineOutput for RunOutput {
    fn buf(&mut self) -> &mut Vec<u8> {
        match self {
            RunOutput::One(encoder) => encoder.buf(),
            RunOutput::Partitions(partitions) => partitions.buf(),
        }
    }

    fn end_line(&mut self) -> Result<(), CompressError> {
        match self {
            RunOutput::One(encoder) => encoder.end_line(),
            RunOutput::Partitions(partitions) => partitions.end_line(),
        }
    }

    fn end_record(&mut self, spans: &[Span]) -> Result<(), LineError> {
        match self {
            RunOutput::One(encoder) => encoder.end_line().map_err(LineError::Output),
            RunOutput::Partitions(partitions) => partitions.end_record(spans),
        }
    }
}

impl crate::pages::PageOutput for RunOutput {
    fn end_page(&mut self, page: u64, mark: bool) -> Result<(), CompressError> {
        match self {
            RunOutput::One(encoder) => encoder.end_page(page, mark),
            // Partitions write no checkpoints: there are no page ends to mark.
            RunOutput::Partitions(_) => Ok(()),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            RunOutput::One(encoder) => encoder.bytes(),
            RunOutput::Partitions(partitions) => partitions.bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans_of(line: &[u8]) -> Vec<Span> {
        // Top-level entries of a flat test object: "key":value pairs.
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(line).unwrap();
        let text = std::str::from_utf8(line).unwrap();
        value
            .iter()
            .map(|(k, v)| {
                let key = serde_json::to_string(k).unwrap();
                let start = text.find(&format!("{key}:")).unwrap();
                let end = start + key.len();
                let value_end = end + 1 + serde_json::to_string(v).unwrap().len();
                (start, end, value_end)
            })
            .collect()
    }

    fn key(spec: &PartitionSpec, line: &str) -> Result<(String, bool), RecordError> {
        let mut out = String::new();
        let defaulted = spec.key_of(
            line.as_bytes(),
            &spans_of(line.as_bytes()),
            &mut Vec::new(),
            &mut out,
        )?;
        Ok((out, defaulted))
    }

    #[test]
    fn a_date_partition_is_the_calendar_day_in_utc() {
        let spec = PartitionSpec::new("/created_at", true, None, 4).unwrap();
        for (line, want) in [
            (
                r#"{"id":1,"created_at":"2026-12-05T23:59:59Z"}"#,
                "2026-12-05",
            ),
            (
                r#"{"created_at":"2026-12-05T23:30:00-01:00"}"#,
                "2026-12-06",
            ),
            (r#"{"created_at":"2026-12-05"}"#, "2026-12-05"),
            (r#"{"created_at":1765065600}"#, "2025-12-07"),
        ] {
            assert_eq!(
                key(&spec, line).unwrap(),
                (want.to_owned(), false),
                "{line}"
            );
        }
        let err = key(&spec, r#"{"created_at":"yesterday"}"#).unwrap_err();
        assert!(err.to_string().contains("not a date"), "{err}");
    }

    #[test]
    fn a_value_partition_is_escaped_for_a_key() {
        let spec = PartitionSpec::new("region", false, None, 4).unwrap();
        for (line, want) in [
            (r#"{"region":"eu-west-1"}"#, "eu-west-1"),
            (r#"{"region":"a/b c"}"#, "a%2Fb%20c"),
            (r#"{"region":".."}"#, "%2E%2E"),
            (r#"{"region":"é"}"#, "%C3%A9"),
            (r#"{"region":42}"#, "42"),
            (r#"{"region":true}"#, "true"),
        ] {
            assert_eq!(key(&spec, line).unwrap().0, want, "{line}");
        }
    }

    #[test]
    fn records_without_a_value_go_to_the_default_or_are_refused() {
        let strict = PartitionSpec::new("/region", false, None, 4).unwrap();
        let lenient = PartitionSpec::new("/region", false, Some("unknown"), 4).unwrap();
        for (line, reason) in [
            (r#"{"id":1}"#, "is missing"),
            (r#"{"region":null}"#, "is null"),
            (r#"{"region":""}"#, "empty"),
            (r#"{"region":{"a":1}}"#, "object or an array"),
        ] {
            let err = key(&strict, line).unwrap_err().to_string();
            assert!(
                err.contains(reason) && err.contains("default_partition"),
                "{err}"
            );
            assert_eq!(key(&lenient, line).unwrap(), ("unknown".to_owned(), true));
        }
        let long = format!(r#"{{"region":"{}"}}"#, "x".repeat(MAX_PARTITION_BYTES + 1));
        assert!(
            key(&strict, &long)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
    }

    #[test]
    fn a_nested_field_is_found_below_its_top_level_entry() {
        let spec = PartitionSpec::new("/meta/region", false, None, 4).unwrap();
        let line = r#"{"id":1,"meta":{"region":"us"}}"#;
        assert_eq!(key(&spec, line).unwrap().0, "us");
    }

    #[test]
    fn the_template_gives_its_field_once() {
        let (url, found) =
            split_template("s3://b/e/date={record:/created_at:date}/p-{part}.gz").unwrap();
        assert_eq!(url, "s3://b/e/date={record:}/p-{part}.gz");
        assert_eq!(found, Some(("/created_at".to_owned(), true)));
        let (url, found) = split_template("s3://b/{{record:x}}/{record:region}.gz").unwrap();
        assert_eq!(url, "s3://b/{{record:x}}/{record:}.gz");
        assert_eq!(found, Some(("region".to_owned(), false)));
        assert!(split_template("s3://b/{record:/a}/{record:/b}.gz").is_err());
        assert_eq!(split_template("s3://b/x.gz").unwrap().1, None);
        assert!(PartitionSpec::new("", false, None, 4).is_err());
        assert!(PartitionSpec::new("/a", false, None, 0).is_err());
    }
}
