//! The streaming object writer: one multipart upload, bounded parts in flight, complete or abort.
//!
//! The upload is driven through object_store's [`MultipartStore`], where the upload id and
//! each part's id are plain values: [`ObjectWriter::state`] writes them down
//! ([`UploadState`]) and [`ObjectWriter::resume`] continues the same upload in another
//! process. [`UploadHandle`] aborts an upload without its writer. The contract (part sizes,
//! numbering, limits, atomicity, what a dropped writer leaves behind) is on [`ObjectWriter`].
//!
//! Not done here: cutting parts to size (the compressor does it, by [`PartSizer`]), and
//! compression ([`crate::upload::CompressedUpload`] puts the two together).
//!
//! Memory: at most `max_in_flight` parts, each the size the caller cut it to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutPayload};
use tokio::task::JoinSet;

use super::digest::StreamDigest;
use super::{Destination, SinkError};

/// S3's smallest part, except the last: 5 MiB (5,242,880 bytes, not 5,000,000).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest part: 5 GiB.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// S3's largest number of parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Parts per step of the growth schedule: the part size doubles after each step.
pub const PARTS_PER_SIZE_STEP: u64 = 1_000;

/// How long an abort waits for the parts still uploading before it cancels them.
pub const SETTLE_IN_FLIGHT: Duration = Duration::from_secs(10);

/// Attempts at aborting an upload before giving up and reporting it.
const ABORT_ATTEMPTS: u32 = 3;

/// Part sizes by part number: `base` for parts 1–1000, twice that for 1001–2000, and so on,
/// capped at [`MAX_PART_SIZE`].
///
/// With a 5 MiB base, 10,000 parts hold 5 MiB × 1000 × (2¹⁰ − 1) ≈ 4.9 TiB, about S3's
/// 5 TiB object limit, while the first 5 GiB of compressed output (≈ 100 GB of JSON Lines)
/// use base-sized parts, so memory stays at its configured size for any ordinary run.
/// `fixed` keeps every part at `base` (Cloudflare R2 wants equal parts), which caps the
/// object at 10,000 × base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSizer {
    base: usize,
    fixed: bool,
}

impl PartSizer {
    /// A schedule starting at `base` bytes (callers validate `base` ≥ [`MIN_PART_SIZE`] for S3).
    pub fn new(base: usize, fixed: bool) -> Self {
        PartSizer {
            base: base.clamp(1, MAX_PART_SIZE),
            fixed,
        }
    }

    /// The size to cut part `number` (1-based) at.
    pub fn size_of(&self, number: u64) -> usize {
        if self.fixed {
            return self.base;
        }
        let step = (number.saturating_sub(1) / PARTS_PER_SIZE_STEP).min(20) as u32;
        self.base.saturating_mul(1usize << step).min(MAX_PART_SIZE)
    }

    /// The most compressed bytes 10,000 parts can hold.
    pub fn capacity(&self) -> u64 {
        (1..=MAX_PARTS).map(|n| self.size_of(n) as u64).sum()
    }
}

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Parts uploaded.
    pub parts: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// The object's ETag, if the store gave one.
    pub e_tag: Option<String>,
    /// The SHA-256 of the object's bytes (hex), computed as they were handed in; `None`
    /// when the upload was resumed from a state that did not carry the hash.
    pub sha256: Option<String>,
}

/// A part the store has acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadedPart {
    /// The part's number, from 1.
    pub number: u64,
    /// What the store answered for it (S3's ETag), needed to complete the upload.
    pub e_tag: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A multipart upload as plain data: with it, another process can add parts to the same
/// upload and complete it ([`ObjectWriter::resume`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadState {
    /// The store's id of the upload.
    pub upload_id: String,
    /// When the upload was created, by the creating machine's clock.
    pub created: chrono::DateTime<chrono::Utc>,
    /// The parts acknowledged, numbered 1, 2, … without gaps.
    pub parts: Vec<UploadedPart>,
    /// The SHA-256 state after those parts ([`StreamDigest::save`]), so that a resumed
    /// upload's hash covers the whole object; absent in states written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl UploadState {
    /// Bytes in the acknowledged parts.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }
}

/// Where an upload is: enough to abort it without its writer (after the task that owned the
/// writer panicked, say). Cheap to clone ([`ObjectWriter::handle`] gives one).
///
/// It cannot put parts or complete the upload; it only names it and aborts it. It holds no
/// secret: its `Debug` shows the location and the upload id.
#[derive(Clone)]
pub struct UploadHandle {
    multipart: Arc<dyn MultipartStore>,
    path: Path,
    id: MultipartId,
    location: String,
}

impl std::fmt::Debug for UploadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadHandle")
            .field("location", &self.location)
            .field("upload_id", &self.id)
            .finish()
    }
}

impl UploadHandle {
    /// The store's id of the upload.
    pub fn upload_id(&self) -> &str {
        &self.id
    }

    /// The object's location, as errors name it.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Asks the store to drop the upload and its parts: 3 attempts, 0.4 s and 0.8 s apart
    /// (on top of the store client's own retries). An upload the store no longer has counts
    /// as aborted.
    ///
    /// Unlike [`ObjectWriter::abort`] it does not wait for the writer's parts in flight; a
    /// part request the store had already received may still land after the abort and leave
    /// its bytes behind (S3 documents this), so prefer the writer's abort when the writer is
    /// at hand. After an abort the upload id is dead: nothing can resume it.
    pub async fn abort(&self) -> Result<(), SinkError> {
        let mut last = None;
        for attempt in 0..ABORT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match self.multipart.abort_multipart(&self.path, &self.id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(SinkError::Abort {
            location: self.location.clone(),
            attempts: ABORT_ATTEMPTS,
            source: last.map(Box::new),
        })
    }
}

type PartResult = Result<UploadedPart, (u64, object_store::Error)>;

/// Writes one object through a multipart upload whose state is plain data
/// ([`UploadState`]): parts are numbered by the writer, and each acknowledged part's ETag is
/// kept, so the upload can be written down and continued by another process.
///
/// # Contract
///
/// - **Part sizes are the caller's job and are not checked.** On S3 (and on GCS and R2, which
///   follow its rules) every part but the last must be at least [`MIN_PART_SIZE`] (5 MiB,
///   5,242,880 bytes) and none may exceed [`MAX_PART_SIZE`] (5 GiB); Cloudflare R2 also wants
///   every part but the last to be the same size. The writer uploads whatever it is given. A
///   part that is too large is refused by the store when it is uploaded
///   ([`SinkError::Part`]); a part that is too small is accepted, and the store refuses the
///   whole upload only at [`finish`](Self::finish) (S3's `EntityTooSmall`, as
///   [`SinkError::Complete`]), which then aborts it. Local files and the in-memory store take
///   any sizes. Within landline the compressor cuts parts by [`PartSizer`], and
///   `[sink] part_size_bytes` is validated to be at least [`MIN_PART_SIZE`].
/// - **Numbering.** Each [`put_part`](Self::put_part) takes the next part number: 1, 2, …
///   for a new upload, and after [`resume`](Self::resume) the one after the saved parts.
///   Parts may be acknowledged in any order; the object is the parts in number order.
/// - **At most [`MAX_PARTS`] (10,000) parts.** The 10,001st [`put_part`](Self::put_part) is
///   refused with [`SinkError::TooManyParts`] before any request; the upload is then still
///   open, to be aborted. [`PartSizer`] grows parts so that 10,000 of them hold about S3's
///   5 TiB object limit.
/// - **Parts in flight.** At most `max_in_flight` parts (at least 1) upload at once, each in
///   its own tokio task; [`put_part`](Self::put_part) waits for one of them to end before it
///   starts another, so the writer holds at most `max_in_flight` parts in memory. A part
///   that failed is reported by the next call that waits for parts
///   ([`put_part`](Self::put_part), [`wait_for_capacity`](Self::wait_for_capacity),
///   [`next_acknowledged`](Self::next_acknowledged) or [`finish`](Self::finish)).
/// - **[`finish`](Self::finish) is atomic.** The object appears at its key (replacing any
///   object there) only when the store completes the upload, whole; until then readers see
///   the old object or none. If a part or the completion fails, `finish` aborts the upload
///   itself and returns the error, with the abort's failure attached if that failed too
///   ([`SinkError::AbortFailed`]).
/// - **No abort on `Drop`.** Dropping a writer cancels the part uploads still running, but
///   the upload stays open in the store, with every part it acknowledged, which S3 keeps and
///   bills until someone aborts the upload. On every path that does not end in
///   [`finish`](Self::finish), the caller must call [`abort`](Self::abort) (or
///   [`abort_after`](Self::abort_after), to keep the error that made it stop). If the writer
///   may be lost (a task that owns it panics), keep a clone of its [`handle`](Self::handle)
///   and call [`UploadHandle::abort`]. As a backstop, give S3 buckets an
///   `AbortIncompleteMultipartUpload` lifecycle rule, or run `landline cleanup`
///   ([`crate::sink::cleanup`]).
/// - **Continuing elsewhere.** [`state`](Self::state) gives the upload id and the parts
///   acknowledged in an unbroken run from part 1, as serialisable data; another process
///   passes it to [`resume`](Self::resume) and goes on at the next part, or aborts the upload.
///   The last saved part becomes a middle part then, so it too must be at least
///   [`MIN_PART_SIZE`]. Parts uploaded after the saved ones are put again under the same
///   numbers (S3 keeps the latest of a part put twice), and only the parts the writer lists
///   at [`finish`](Self::finish) make up the object. To leave an upload for another process,
///   call [`settle`](Self::settle) rather than dropping the writer while parts upload.
///
/// # Example
///
/// Uploads a gzip file as one object in parts of [`MIN_PART_SIZE`], aborting on error:
///
/// ```no_run
/// use bytes::Bytes;
/// use landline::sink::{Destination, MIN_PART_SIZE, ObjectWriter, StoreOptions};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let gz = Bytes::from(std::fs::read("items.jsonl.gz")?);
/// let destination = Destination::open(
///     "s3://my-bucket/exports/items.jsonl.gz",
///     &StoreOptions::default(),
///     std::env::vars(),
/// )?;
/// // Starts the upload: wrong credentials or a missing bucket fail here. 4 parts in flight.
/// let mut writer = ObjectWriter::create(&destination, 4).await?;
/// for start in (0..gz.len()).step_by(MIN_PART_SIZE) {
///     // Parts 1, 2, …: all but the last exactly MIN_PART_SIZE.
///     let part = gz.slice(start..gz.len().min(start + MIN_PART_SIZE));
///     if let Err(e) = writer.put_part(part).await {
///         // Dropping the writer would leave the upload and its parts in the bucket.
///         return Err(writer.abort_after(e).await.into());
///     }
/// }
/// // The object appears now, whole; on failure `finish` has aborted the upload.
/// let written = writer.finish().await?;
/// println!("{} parts, {} bytes", written.parts, written.bytes);
/// # Ok(())
/// # }
/// ```
pub struct ObjectWriter {
    handle: UploadHandle,
    store: Arc<dyn ObjectStore>,
    created: chrono::DateTime<chrono::Utc>,
    in_flight: JoinSet<PartResult>,
    max_in_flight: usize,
    /// Acknowledged parts by number.
    acknowledged: BTreeMap<u64, UploadedPart>,
    /// Parts handed to the writer so far (acknowledged or not).
    parts: u64,
    bytes: u64,
    /// The hash of every part handed in; `None` once it cannot be known.
    digest: Option<StreamDigest>,
    /// The hash state after part n, from the last part acknowledged in order on (for
    /// [`state`](Self::state)); n = 0 (or the resumed part count) is the state at the start.
    digests: BTreeMap<u64, StreamDigest>,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("location", &self.handle.location)
            .field("upload_id", &self.handle.id)
            .field("parts", &self.parts)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl ObjectWriter {
    /// Starts a multipart upload to the destination's object, with at most `max_in_flight`
    /// parts uploading at once (0 counts as 1).
    ///
    /// This is one request (S3's `CreateMultipartUpload`): wrong credentials, a missing bucket
    /// or a refused key fail here ([`SinkError::Create`]), before any data is produced. From
    /// here on the upload exists in the store until [`finish`](Self::finish) or
    /// [`abort`](Self::abort); see the [contract](Self#contract).
    pub async fn create(
        destination: &Destination,
        max_in_flight: usize,
    ) -> Result<Self, SinkError> {
        Self::create_with(destination, max_in_flight, PutMultipartOptions::default()).await
    }

    /// As [`create`](Self::create), with the object's attributes (`Content-Type`,
    /// `Content-Encoding`…) and tags in `options`, where the store keeps them (S3 and GCS;
    /// Azure block blobs and local files go without them).
    pub async fn create_with(
        destination: &Destination,
        max_in_flight: usize,
        options: PutMultipartOptions,
    ) -> Result<Self, SinkError> {
        let created = chrono::Utc::now();
        let id = destination
            .multipart
            .create_multipart_opts(&destination.path, options)
            .await
            .map_err(|source| SinkError::Create {
                location: destination.location.clone(),
                source,
            })?;
        Ok(Self::with_state(
            destination,
            UploadState {
                upload_id: id,
                created,
                parts: Vec::new(),
                sha256: Some(StreamDigest::default().save()),
            },
            max_in_flight,
        ))
    }

    /// Continues the upload `state` describes (from [`state`](Self::state), maybe in another
    /// process), at part `state.parts.len() + 1`, with at most `max_in_flight` parts
    /// uploading at once.
    ///
    /// No request is made: an upload the store no longer has (aborted, or expired by a
    /// lifecycle rule) fails at the first part ([`SinkError::UploadGone`]). Saved parts that
    /// are not numbered 1, 2, … without gaps are refused ([`SinkError::Destination`]). The
    /// destination must be the one the upload was created for.
    pub fn resume(
        destination: &Destination,
        state: UploadState,
        max_in_flight: usize,
    ) -> Result<Self, SinkError> {
        let numbered = state
            .parts
            .iter()
            .enumerate()
            .all(|(i, p)| p.number == i as u64 + 1);
        if !numbered {
            return Err(SinkError::Destination {
                url: destination.location.clone(),
                reason: "the saved upload's parts are not numbered 1, 2, … without gaps".into(),
            });
        }
        Ok(Self::with_state(destination, state, max_in_flight))
    }

    fn with_state(destination: &Destination, state: UploadState, max_in_flight: usize) -> Self {
        let bytes = state.bytes();
        let parts = state.parts.len() as u64;
        let digest = state.sha256.as_deref().and_then(StreamDigest::restore);
        if digest.is_none() {
            tracing::debug!(
                "the upload's state has no SHA-256 state: the object's is not computed"
            );
        }
        let digests = digest.iter().map(|d| (parts, d.clone())).collect();
        ObjectWriter {
            digest,
            digests,
            handle: UploadHandle {
                multipart: Arc::clone(&destination.multipart),
                path: destination.path.clone(),
                id: state.upload_id,
                location: destination.location.clone(),
            },
            store: Arc::clone(&destination.store),
            created: state.created,
            in_flight: JoinSet::new(),
            max_in_flight: max_in_flight.max(1),
            acknowledged: state.parts.into_iter().map(|p| (p.number, p)).collect(),
            parts,
            bytes,
        }
    }

    /// The upload's handle, to abort it from elsewhere (clone it before handing the writer
    /// to a task that might panic).
    pub fn handle(&self) -> &UploadHandle {
        &self.handle
    }

    /// The upload as plain data, for [`resume`](Self::resume): its id, creation time, and the
    /// acknowledged parts from part 1 up to the first gap (a part still uploading, or one
    /// that failed, ends the run of parts). This is what a checkpoint may record; no request
    /// is made.
    pub fn state(&self) -> UploadState {
        let parts: Vec<UploadedPart> = self
            .acknowledged
            .values()
            .enumerate()
            .take_while(|(i, p)| p.number == *i as u64 + 1)
            .map(|(_, p)| p.clone())
            .collect();
        let sha256 = self
            .digests
            .get(&(parts.len() as u64))
            .map(StreamDigest::save);
        UploadState {
            upload_id: self.handle.id.clone(),
            created: self.created,
            parts,
            sha256,
        }
    }

    /// Waits until fewer than `max_in_flight` parts are uploading.
    ///
    /// Callers that take parts from a queue call this first, so a part leaves the queue only
    /// when it can start uploading: parts held in memory stay at `max_in_flight` + the queue.
    /// A part that failed while waiting is the error (then abort the upload).
    pub async fn wait_for_capacity(&mut self) -> Result<(), SinkError> {
        while self.in_flight.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Uploads `part` as the next part number in the background, first waiting for a free
    /// slot (fewer than `max_in_flight` parts uploading). It returns once the upload has
    /// started, not when it is acknowledged.
    ///
    /// Its size is not checked: every part but the last must be at least [`MIN_PART_SIZE`]
    /// on S3 (see the [contract](Self#contract)).
    ///
    /// # Errors
    ///
    /// A failed earlier part ([`SinkError::Part`], or [`SinkError::UploadGone`] when the store
    /// no longer has the upload), found while waiting for a slot, and
    /// [`SinkError::TooManyParts`] past [`MAX_PARTS`]. `part` is not uploaded then, and the
    /// upload is still open: call [`abort`](Self::abort) or [`abort_after`](Self::abort_after).
    pub async fn put_part(&mut self, part: Bytes) -> Result<(), SinkError> {
        self.put_part_holding(part, ()).await
    }

    /// Like [`put_part`](Self::put_part), keeping `guard` alive until the part's upload ends,
    /// successfully or not (a semaphore permit that bounds the parts in memory, say).
    pub async fn put_part_holding<G: Send + 'static>(
        &mut self,
        part: Bytes,
        guard: G,
    ) -> Result<(), SinkError> {
        self.wait_for_capacity().await?;
        if self.parts >= MAX_PARTS {
            return Err(SinkError::TooManyParts {
                location: self.handle.location.clone(),
            });
        }
        self.parts += 1;
        self.bytes += part.len() as u64;
        let number = self.parts;
        if let Some(digest) = &mut self.digest {
            digest.update(&part);
            self.digests.insert(number, digest.clone());
        }
        let size = part.len() as u64;
        let handle = self.handle.clone();
        self.in_flight.spawn(async move {
            // Part numbers are 1-based; object_store's part index is 0-based.
            let index = (number - 1) as usize;
            let result = handle
                .multipart
                .put_part(&handle.path, &handle.id, index, PutPayload::from(part))
                .await;
            drop(guard);
            match result {
                Ok(id) => Ok(UploadedPart {
                    number,
                    e_tag: id.content_id,
                    size,
                }),
                Err(e) => Err((number, e)),
            }
        });
        Ok(())
    }

    /// Waits for the next part to end and returns its number; `Ok(None)` when none is
    /// uploading. A failed part is its error (then abort the upload).
    pub async fn next_acknowledged(&mut self) -> Result<Option<u64>, SinkError> {
        if self.in_flight.is_empty() {
            return Ok(None);
        }
        self.join_one().await.map(Some)
    }

    /// Parts being uploaded (at most `max_in_flight`).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether another part may start uploading now.
    pub fn has_capacity(&self) -> bool {
        self.in_flight.len() < self.max_in_flight
    }

    /// The highest part number with every part up to it acknowledged (0 for none).
    pub fn acknowledged_through(&self) -> u64 {
        self.acknowledged
            .keys()
            .zip(1..)
            .take_while(|&(&number, expected)| number == expected)
            .count() as u64
    }

    /// Waits for one part; returns its number.
    async fn join_one(&mut self) -> Result<u64, SinkError> {
        match self.in_flight.join_next().await {
            None => Ok(0),
            Some(Ok(Ok(part))) => {
                let number = part.number;
                self.acknowledged.insert(number, part);
                // Only the state after the last part acknowledged in order can be saved.
                let through = self.acknowledged_through();
                self.digests.retain(|&n, _| n >= through);
                Ok(number)
            }
            Some(Ok(Err((part, object_store::Error::NotFound { .. })))) => {
                Err(SinkError::UploadGone {
                    location: self.handle.location.clone(),
                    upload_id: self.handle.id.clone(),
                    part,
                })
            }
            Some(Ok(Err((part, source)))) => Err(SinkError::Part {
                location: self.handle.location.clone(),
                part,
                source,
            }),
            Some(Err(join)) => Err(SinkError::Task(join.to_string())),
        }
    }

    /// Parts handed to [`ObjectWriter::put_part`] so far.
    pub fn parts(&self) -> u64 {
        self.parts
    }

    /// Waits for every part, then completes the upload (S3's `CompleteMultipartUpload`): the
    /// object appears at its key now, whole, and not before. With no parts at all the object
    /// is empty.
    ///
    /// On S3 this is where parts below [`MIN_PART_SIZE`] (other than the last) are refused.
    /// When the store's answer to completing is lost but the object at the key is this
    /// upload's (its size, its part count, written since the upload began), that counts as
    /// completed.
    ///
    /// # Errors
    ///
    /// A failed part, or [`SinkError::Complete`]. The upload has then been aborted: there is
    /// nothing left to clean up, unless the abort failed too, which the error says
    /// ([`SinkError::AbortFailed`]).
    pub async fn finish(mut self) -> Result<Written, SinkError> {
        let result = async {
            while !self.in_flight.is_empty() {
                self.join_one().await?;
            }
            let state = self.state();
            if state.parts.len() as u64 != self.parts {
                return Err(SinkError::Task(format!(
                    "{} parts were handed in, {} acknowledged in order",
                    self.parts,
                    state.parts.len()
                )));
            }
            let ids = state
                .parts
                .into_iter()
                .map(|p| PartId {
                    content_id: p.e_tag,
                })
                .collect();
            self.handle
                .multipart
                .complete_multipart(&self.handle.path, &self.handle.id, ids)
                .await
                .map_err(|source| SinkError::Complete {
                    location: self.handle.location.clone(),
                    source,
                })
        }
        .await;
        let sha256 = self.digest.take().map(StreamDigest::hex);
        match result {
            Ok(put) => Ok(Written {
                parts: self.parts,
                bytes: self.bytes,
                e_tag: put.e_tag,
                sha256,
            }),
            Err(err @ SinkError::Complete { .. }) => match completed_anyway(
                Arc::clone(&self.store),
                self.handle.path.clone(),
                self.created,
                self.parts,
                self.bytes,
            )
            .await
            {
                Some(e_tag) => {
                    tracing::warn!(
                        location = %self.handle.location,
                        error = %err,
                        "the answer to completing the upload was lost, but the object is this \
                         upload's (same size and part count, written after it started)"
                    );
                    Ok(Written {
                        parts: self.parts,
                        bytes: self.bytes,
                        e_tag,
                        sha256,
                    })
                }
                None => Err(self.abort_after(err).await),
            },
            Err(err) => Err(self.abort_after(err).await),
        }
    }

    /// Waits for the parts still uploading, whatever their outcome, and leaves the upload
    /// open: for another process to [`resume`](Self::resume) from a [`state`](Self::state)
    /// taken earlier. Nothing aborts the upload after this but that process, a lifecycle rule
    /// or `landline cleanup`.
    pub async fn settle(mut self) {
        while self.in_flight.join_next().await.is_some() {}
    }

    /// Aborts the upload: stops parts in flight and asks the store to drop what it has; no
    /// object appears. Call it on every error path that does not go through
    /// [`finish`](Self::finish).
    ///
    /// Parts still uploading are given [`SETTLE_IN_FLIGHT`] to end first: a part request the
    /// store has already received may still succeed after an abort and leave its bytes behind
    /// (S3 documents this), so the abort waits for them rather than dropping their connections.
    /// Then [`UploadHandle::abort`] asks the store, with retries.
    ///
    /// # Errors
    ///
    /// [`SinkError::Abort`] when the store could not be made to drop the upload: an
    /// incomplete upload may remain (see the lifecycle rule in the
    /// [contract](Self#contract)).
    pub async fn abort(mut self) -> Result<(), SinkError> {
        let settle = async { while self.in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(SETTLE_IN_FLIGHT, settle)
            .await
            .is_err()
        {
            self.in_flight.abort_all();
            while self.in_flight.join_next().await.is_some() {}
        }
        self.handle.abort().await
    }

    /// Aborts after `cause` (see [`abort`](Self::abort)) and returns the error to report:
    /// `cause` itself when the abort worked, else [`SinkError::AbortFailed`] with both.
    pub async fn abort_after(self, cause: SinkError) -> SinkError {
        match self.abort().await {
            Ok(()) => cause,
            Err(abort) => SinkError::AbortFailed {
                cause: Box::new(cause),
                abort: Box::new(abort),
            },
        }
    }
}

/// After a failed Complete: whether the store completed the upload all the same (its
/// answer lost, then a retry refused because the upload is gone). The object at the key
/// must have this upload's size, have been written since the upload started (with a
/// minute for clock skew), and, if its ETag is a multipart one (`…-N`), this part count.
/// Then its ETag (`Some(None)` when the store gives none).
async fn completed_anyway(
    store: Arc<dyn ObjectStore>,
    path: Path,
    created: chrono::DateTime<chrono::Utc>,
    parts: u64,
    bytes: u64,
) -> Option<Option<String>> {
    let meta = store.head(&path).await.ok()?;
    let since = created - chrono::Duration::seconds(60);
    let parts_match = match meta
        .e_tag
        .as_deref()
        .map(|t| t.trim_matches('"'))
        .and_then(|t| t.rsplit_once('-'))
    {
        Some((_, n)) => n.parse::<u64>().ok() == Some(parts),
        None => true,
    };
    (meta.size == bytes && meta.last_modified >= since && parts_match).then_some(meta.e_tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_grow_so_ten_thousand_parts_reach_s3s_object_limit() {
        let s = PartSizer::new(MIN_PART_SIZE, false);
        assert_eq!(s.size_of(1), MIN_PART_SIZE);
        assert_eq!(s.size_of(1000), MIN_PART_SIZE);
        assert_eq!(s.size_of(1001), 2 * MIN_PART_SIZE);
        assert_eq!(s.size_of(2001), 4 * MIN_PART_SIZE);
        assert_eq!(s.size_of(10_000), 512 * MIN_PART_SIZE);
        // Past the last part the schedule still answers (the writer refuses part 10,001).
        assert_eq!(s.size_of(10_001), 1024 * MIN_PART_SIZE);
        // 10,000 parts hold about S3's 5 TiB object limit.
        assert!(
            s.capacity() >= 4_900 * 1024 * 1024 * 1024_u64,
            "{}",
            s.capacity()
        );
        // A larger base reaches the 5 GiB cap instead of overflowing.
        let big = PartSizer::new(64 * 1024 * 1024, false);
        assert_eq!(big.size_of(10_000), MAX_PART_SIZE);
        for n in 1..=MAX_PARTS {
            assert!(big.size_of(n) <= MAX_PART_SIZE);
            assert!(big.size_of(n) >= big.size_of(n.max(2) - 1));
        }
    }

    #[test]
    fn fixed_parts_stay_fixed() {
        let s = PartSizer::new(8 * 1024 * 1024, true);
        assert_eq!(s.size_of(1), s.size_of(9_999));
        assert_eq!(s.capacity(), 10_000 * 8 * 1024 * 1024);
    }

    #[tokio::test]
    async fn writes_parts_in_order_and_completes() {
        let dest = Destination::in_memory("a/b.gz");
        let (store, path) = (dest.store.clone(), dest.path.clone());
        let mut w = ObjectWriter::create(&dest, 2).await.unwrap();
        for i in 0..7u8 {
            w.put_part(Bytes::from(vec![i; 1000 + i as usize]))
                .await
                .unwrap();
        }
        let written = w.finish().await.unwrap();
        assert_eq!(written.parts, 7);
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        let want: Vec<u8> = (0..7u8).flat_map(|i| vec![i; 1000 + i as usize]).collect();
        assert_eq!(got.as_ref(), &want[..]);
    }

    #[tokio::test]
    async fn an_upload_written_down_is_continued_by_another_writer() {
        let dest = Destination::in_memory("c/d.gz");
        let mut first = ObjectWriter::create(&dest, 2).await.unwrap();
        for i in 0..3u8 {
            first.put_part(Bytes::from(vec![i; 100])).await.unwrap();
        }
        while first.next_acknowledged().await.unwrap().is_some() {}
        let state = first.state();
        assert_eq!(state.parts.len(), 3);
        assert_eq!(state.bytes(), 300);
        // Through JSON, as a checkpoint keeps it; the first writer is simply dropped.
        let json = serde_json::to_string(&state).unwrap();
        drop(first);
        let state: UploadState = serde_json::from_str(&json).unwrap();
        let mut second = ObjectWriter::resume(&dest, state, 2).unwrap();
        second.put_part(Bytes::from(vec![9; 50])).await.unwrap();
        let written = second.finish().await.unwrap();
        assert_eq!((written.parts, written.bytes), (4, 350));
        let got = dest
            .store
            .get(&dest.path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut want: Vec<u8> = (0..3u8).flat_map(|i| vec![i; 100]).collect();
        want.extend([9; 50]);
        assert_eq!(got.as_ref(), &want[..]);
    }

    #[tokio::test]
    async fn a_saved_upload_with_a_gap_is_refused() {
        let dest = Destination::in_memory("e.gz");
        let w = ObjectWriter::create(&dest, 2).await.unwrap();
        let mut state = w.state();
        state.parts.push(UploadedPart {
            number: 2,
            e_tag: "x".into(),
            size: 1,
        });
        let err = ObjectWriter::resume(&dest, state, 2).unwrap_err();
        assert!(err.to_string().contains("without gaps"), "{err}");
        w.abort().await.unwrap();
    }

    #[tokio::test]
    async fn abort_leaves_no_object() {
        let dest = Destination::in_memory("x.gz");
        let (store, path) = (dest.store.clone(), dest.path.clone());
        let mut w = ObjectWriter::create(&dest, 2).await.unwrap();
        w.put_part(Bytes::from_static(b"part")).await.unwrap();
        w.abort().await.unwrap();
        assert!(store.head(&path).await.is_err());
    }
}
