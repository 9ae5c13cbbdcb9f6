//! The streaming object writer: one multipart upload, bounded parts in flight, complete or abort.
//!
//! The upload is driven through object_store's [`MultipartStore`], where the upload id and
//! each part's id are plain values: [`ObjectWriter::state`] writes them down
//! ([`UploadState`]) and [`ObjectWriter::resume`] continues the same upload in another
//! process.
//!
//! [`ObjectWriter::create`] starts the upload before the first record is fetched, so wrong
//! credentials or a missing bucket fail the run at its first request. Parts are uploaded in
//! background tasks, at most `max_in_flight` at a time; [`ObjectWriter::put_part`] waits for a
//! slot, which is the backpressure that reaches back through the compressor to the source.
//! The object becomes visible only when [`ObjectWriter::finish`] completes the upload. Every
//! error path ends in [`ObjectWriter::abort`], which is awaited and retried: object_store does
//! not abort on drop, and S3 keeps (and bills) the parts of an upload nobody aborts.
//!
//! Memory: at most `max_in_flight` parts, each the size the [`PartSizer`] gives it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::task::JoinSet;

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
}

impl UploadState {
    /// Bytes in the acknowledged parts.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }
}

/// Where an upload is: enough to abort it without its writer (after the task that owned the
/// writer panicked, say). Cheap to clone.
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

    /// Asks the store to drop the upload and its parts, retrying a few times. An upload the
    /// store no longer has counts as aborted.
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
/// Contract: every part but the last must be at least [`MIN_PART_SIZE`] for S3 (not checked
/// here: the compressor's [`PartSizer`] cuts them). Dropping a writer does not abort its
/// upload: call [`ObjectWriter::finish`] or [`ObjectWriter::abort`] (or
/// [`UploadHandle::abort`]).
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
    /// Starts a multipart upload to the destination's object.
    pub async fn create(
        destination: &Destination,
        max_in_flight: usize,
    ) -> Result<Self, SinkError> {
        let created = chrono::Utc::now();
        let id = destination
            .multipart
            .create_multipart(&destination.path)
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
            },
            max_in_flight,
        ))
    }

    /// Continues the upload `state` describes, at its next part. No request is made: an
    /// upload the store no longer has fails at the first part ([`SinkError::UploadGone`]).
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
        ObjectWriter {
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

    /// The upload's handle, to abort it from elsewhere.
    pub fn handle(&self) -> &UploadHandle {
        &self.handle
    }

    /// The acknowledged parts from part 1 up to the first gap: what a checkpoint may record.
    pub fn state(&self) -> UploadState {
        UploadState {
            upload_id: self.handle.id.clone(),
            created: self.created,
            parts: self
                .acknowledged
                .values()
                .enumerate()
                .take_while(|(i, p)| p.number == *i as u64 + 1)
                .map(|(_, p)| p.clone())
                .collect(),
        }
    }

    /// Waits until fewer than `max_in_flight` parts are uploading.
    ///
    /// Callers that take parts from a queue call this first, so a part leaves the queue only
    /// when it can start uploading: parts held in memory stay at `max_in_flight` + the queue.
    pub async fn wait_for_capacity(&mut self) -> Result<(), SinkError> {
        while self.in_flight.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Uploads the next part in the background, first waiting for a free slot.
    ///
    /// A failed earlier part is reported here (then call [`ObjectWriter::abort`]).
    pub async fn put_part(&mut self, part: Bytes) -> Result<(), SinkError> {
        self.put_part_holding(part, ()).await
    }

    /// Like [`ObjectWriter::put_part`], keeping `guard` alive until the part's upload ends
    /// (a memory slot, say).
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

    /// Waits for the next part to end; `Ok(None)` when none is uploading.
    pub async fn next_acknowledged(&mut self) -> Result<Option<u64>, SinkError> {
        if self.in_flight.is_empty() {
            return Ok(None);
        }
        self.join_one().await.map(Some)
    }

    /// Parts being uploaded.
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

    /// Waits for every part, then completes the upload: the object appears atomically.
    ///
    /// On failure the upload is aborted, and the error says whether the abort worked.
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
        match result {
            Ok(put) => Ok(Written {
                parts: self.parts,
                bytes: self.bytes,
                e_tag: put.e_tag,
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
                    })
                }
                None => Err(self.abort_after(err).await),
            },
            Err(err) => Err(self.abort_after(err).await),
        }
    }

    /// Waits for the parts still uploading, whatever their outcome (the upload is being left
    /// for another process to continue).
    pub async fn settle(mut self) {
        while self.in_flight.join_next().await.is_some() {}
    }

    /// Aborts the upload: stops parts in flight and asks the store to drop what it has.
    ///
    /// Parts still uploading are given [`SETTLE_IN_FLIGHT`] to end first: a part request the
    /// store has already received may still succeed after an abort and leave its bytes behind
    /// (S3 documents this), so the abort waits for them rather than dropping their connections.
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

    /// Aborts after `cause`, returning `cause` with the abort's outcome attached.
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
