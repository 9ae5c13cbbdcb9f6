//! The streaming object writer: one multipart upload, bounded parts in flight, complete or abort.
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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::task::JoinSet;

use super::SinkError;

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

/// Writes one object through a multipart upload.
pub struct ObjectWriter {
    location: String,
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// When the upload was created, by this machine's clock.
    created: chrono::DateTime<chrono::Utc>,
    upload: Box<dyn MultipartUpload>,
    in_flight: JoinSet<Result<(), (u64, object_store::Error)>>,
    max_in_flight: usize,
    parts: u64,
    bytes: u64,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("location", &self.location)
            .field("parts", &self.parts)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl ObjectWriter {
    /// Starts a multipart upload to `path`; `location` is how errors name the object.
    pub async fn create(
        store: Arc<dyn ObjectStore>,
        path: &Path,
        location: String,
        max_in_flight: usize,
    ) -> Result<Self, SinkError> {
        let created = chrono::Utc::now();
        let upload = store
            .put_multipart(path)
            .await
            .map_err(|source| SinkError::Create {
                location: location.clone(),
                source,
            })?;
        Ok(ObjectWriter {
            location,
            store,
            path: path.clone(),
            created,
            upload,
            in_flight: JoinSet::new(),
            max_in_flight: max_in_flight.max(1),
            parts: 0,
            bytes: 0,
        })
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
                location: self.location.clone(),
            });
        }
        self.parts += 1;
        self.bytes += part.len() as u64;
        let number = self.parts;
        let upload = self.upload.put_part(PutPayload::from(part));
        self.in_flight.spawn(async move {
            let result = upload.await.map_err(|e| (number, e));
            drop(guard);
            result
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), SinkError> {
        match self.in_flight.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err((part, source)))) => Err(SinkError::Part {
                location: self.location.clone(),
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
            self.upload
                .complete()
                .await
                .map_err(|source| SinkError::Complete {
                    location: self.location.clone(),
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
                self.path.clone(),
                self.created,
                self.parts,
                self.bytes,
            )
            .await
            {
                Some(e_tag) => {
                    tracing::warn!(
                        location = %self.location,
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
        let mut last = None;
        for attempt in 0..ABORT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match self.upload.abort().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(SinkError::Abort {
            location: self.location.clone(),
            attempts: ABORT_ATTEMPTS,
            source: last.map(Box::new),
        })
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
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("a/b.gz");
        let mut w = ObjectWriter::create(store.clone(), &path, "mem://a/b.gz".into(), 2)
            .await
            .unwrap();
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
    async fn abort_leaves_no_object() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("x.gz");
        let mut w = ObjectWriter::create(store.clone(), &path, "mem://x.gz".into(), 2)
            .await
            .unwrap();
        w.put_part(Bytes::from_static(b"part")).await.unwrap();
        w.abort().await.unwrap();
        assert!(store.head(&path).await.is_err());
    }
}
