//! The compressor stage: JSON Lines chunks in, one compressed stream out, cut into upload
//! parts.
//!
//! Chunks arrive from the encoder through a bounded queue. A coordinator thread hands each
//! chunk (with the last 32 KiB of the chunk before it, for formats that need a window) to a
//! pool of workers (one per core by default) and collects their outputs strictly in order,
//! so the stream is the same whatever finishes first. What the bytes are is the format's
//! business (the crate-private `BlockFormat` seam): gzip (`block.rs`, one member of primed
//! deflate blocks), zstd (`zstd.rs`, a frame per block) or plain JSON Lines; see
//! [`Compression`]. Outputs are
//! appended to the part being filled, so parts are sized on compressed bytes; a full part
//! goes to the upload stage, whose bounded channel makes the coordinator wait, which in turn
//! makes the encoder wait. Emptied chunk buffers go back to the encoder.
//!
//! Memory: `queue_depth` chunks waiting, `workers + 1` chunks being compressed or waiting to
//! be collected, and the parts alive. A part is started only with a slot from
//! [`CompressorConfig::part_slots`], and the slot travels with the part until its upload ends,
//! so the parts alive at once (filling, queued and uploading) never exceed the slots. Every
//! part but the last holds exactly its part size, unless parts are cut at boundaries (below).
//! Parts live in anonymous memory maps, not on the heap, so their memory goes back to the
//! kernel as soon as their upload ends.
//!
//! Boundaries, for checkpoints: a chunk may be marked as the end of a unit of the caller's
//! (a page), see [`Compressor::send_marked`]. With [`CompressorConfig::cut_at_boundaries`], a
//! part is shipped at the first boundary after it reaches its part size, carrying the
//! [`MemberState`] there, so that a later process can continue the same stream from that
//! part's end ([`CompressorConfig::resume`]): the same gzip member, or the next zstd frame.
//! A part that reaches twice its size without a boundary (a page larger than a part) is
//! shipped without one. Parts then hold between one and two part sizes; the memory maps are
//! reserved at twice the size, and only what is written is resident.

// Crate-private; its `pub` items are for `crate::__internals` (feature `internals`), which
// would otherwise be unreachable.
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub))]
pub(crate) mod block;
mod format;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub))]
pub(crate) mod zstd;

pub use format::Compression;
pub(crate) use format::{BlockFormat, Plain};

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sink::PartSizer;
use crate::sink::multipart::MAX_PART_SIZE;
use block::DICTIONARY_BYTES;

/// Where a compressed stream stands at a block boundary: what a later process needs to
/// continue it, so that a resumed gzip object is still one member (zstd and plain JSON Lines
/// need only the byte count: every block end is a frame end).
///
/// Serialised into checkpoints; the dictionary is base64 in JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberState {
    /// CRC-32 of the uncompressed bytes so far (gzip; 0 for the other formats).
    pub crc32: u32,
    /// Uncompressed bytes so far.
    pub bytes_in: u64,
    /// The last (up to) 32 KiB of those bytes: the next block's preset dictionary (gzip;
    /// empty for the other formats).
    #[serde(with = "base64_bytes")]
    pub dictionary: Vec<u8>,
}

impl MemberState {
    /// The state of a member nothing has been written to (its header included).
    pub fn empty() -> Self {
        MemberState {
            crc32: 0,
            bytes_in: 0,
            dictionary: Vec::new(),
        }
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The end of a part that ends at a boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEnd {
    /// The caller's mark of the boundary (a page number).
    pub mark: u64,
    /// The member's state after the part.
    pub member: MemberState,
}

/// Why compression stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// zlib reported an error (not expected for valid input).
    #[error("deflate failed: {0}")]
    Deflate(#[from] flate2::CompressError),
    /// libzstd reported an error (not expected for valid input and levels).
    #[error("zstd failed: {0}")]
    Zstd(#[source] std::io::Error),
    /// The upload stage stopped taking parts (it failed; its error is the cause).
    #[error("the upload stage stopped taking parts")]
    OutputClosed,
    /// A part buffer could not be mapped, or a thread could not be started.
    #[error("allocating a part buffer: {0}")]
    Memory(#[source] std::io::Error),
    /// A compressor thread stopped (it failed or panicked).
    #[error("the compressor thread stopped")]
    ThreadGone,
}

/// Figures from one compressed stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressStats {
    /// Uncompressed bytes in the member (a resumed member's earlier bytes included).
    pub bytes_in: u64,
    /// Compressed bytes out, the format's header and trailer included.
    pub bytes_out: u64,
    /// Parts emitted.
    pub parts: u64,
    /// Objects ended before the last one ([`Compressor::send_ending_object`]): the stream
    /// held `objects + 1` objects.
    pub objects: u64,
}

/// A part's buffer: an anonymous memory map of fixed size, not a heap allocation.
///
/// Why: the allocator keeps freed multi-MiB heap blocks (glibc raises its mmap threshold
/// after the first large free, then serves and retains them from the heap), so parts
/// allocated and freed one after another made resident memory creep up with the run's
/// length. A map is returned to the kernel the moment its last reference, held by the upload,
/// is dropped, so resident memory follows the parts alive, and nothing else.
pub(crate) struct PartBuffer {
    map: memmap2::MmapMut,
    len: usize,
}

impl PartBuffer {
    /// A buffer that holds `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> std::io::Result<Self> {
        Ok(PartBuffer {
            map: memmap2::MmapMut::map_anon(capacity.max(1))?,
            len: 0,
        })
    }

    /// Bytes written.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies as much of `bytes` as fits; returns how much did.
    pub(crate) fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.map.len() - self.len);
        self.map[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Whether the buffer is full.
    pub(crate) fn is_full(&self) -> bool {
        self.len == self.map.len()
    }

    /// The written bytes as [`Bytes`], without a copy; the map lives as long as they do.
    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PartBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

/// Settings of the compressor stage.
#[derive(Debug, Clone)]
pub struct CompressorConfig {
    /// The format written.
    pub compression: Compression,
    /// The format's level (gzip 0–9, zstd 1–19; see [`Compression::levels`]).
    pub level: i32,
    /// Worker threads (plain JSON Lines uses one: it only copies).
    pub workers: usize,
    /// Chunks waiting for the coordinator before the encoder has to wait.
    pub queue_depth: usize,
    /// Part sizes, by part number.
    pub parts: PartSizer,
    /// One permit per part alive at once; `None` for no limit.
    pub part_slots: Option<Arc<Semaphore>>,
    /// Cut parts at marked boundaries (see the module doc), for checkpoints.
    pub cut_at_boundaries: bool,
    /// Continue a stream from this state (no header is written), its next part being
    /// `first_part`; `None` starts a new stream.
    pub resume: Option<MemberState>,
    /// The number of the first part this compressor emits (1 unless resuming).
    pub first_part: u64,
}

impl CompressorConfig {
    /// A new `compression` stream at `level` on `workers` threads, parts sized by `parts`,
    /// no limit on parts alive, parts cut at exact sizes.
    pub fn new(compression: Compression, level: i32, workers: usize, parts: PartSizer) -> Self {
        CompressorConfig {
            compression,
            level,
            workers,
            queue_depth: 1,
            parts,
            part_slots: None,
            cut_at_boundaries: false,
            resume: None,
            first_part: 1,
        }
    }
}

/// A part of the compressed stream, holding its memory slot until dropped.
#[derive(Debug)]
pub struct Part {
    /// The bytes.
    pub data: Bytes,
    /// The slot, released when the part (and its upload) is done.
    pub slot: Option<OwnedSemaphorePermit>,
    /// The part's number in the upload, from 1.
    pub number: u64,
    /// Set when the part ends at a marked boundary.
    pub end: Option<PartEnd>,
    /// Whether this is the stream's last part.
    pub last: bool,
    /// The object the part belongs to, from 1: the stream is one object unless the caller
    /// ends objects ([`Compressor::send_ending_object`]).
    pub object: u64,
    /// Whether this is its object's last part (the stream's last part is).
    pub object_end: bool,
}

/// Where the compressor stands in the object it is writing: what an encoder that cuts
/// objects by size needs to bound the object's final size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectFigures {
    /// The object, from 1.
    pub object: u64,
    /// Uncompressed bytes of the object compressed so far.
    pub bytes_in: u64,
    /// Compressed bytes of the object so far (its header included).
    pub bytes_out: u64,
}

/// Handle on the compressor threads.
pub struct Compressor {
    chunks: SyncSender<Chunk>,
    recycled: Receiver<Vec<u8>>,
    figures: Arc<std::sync::Mutex<ObjectFigures>>,
    thread: JoinHandle<Result<CompressStats, CompressError>>,
}

impl Compressor {
    /// Starts the threads; parts go to `parts_out` (the last one when the stream is finished).
    pub fn spawn(
        config: CompressorConfig,
        parts_out: tokio::sync::mpsc::Sender<Part>,
    ) -> std::io::Result<Self> {
        let (chunks, chunk_rx) = mpsc::sync_channel::<Chunk>(config.queue_depth.max(1));
        let (recycle_tx, recycled) = mpsc::channel();
        let figures = Arc::new(std::sync::Mutex::new(ObjectFigures {
            object: 1,
            ..ObjectFigures::default()
        }));
        let shared = Arc::clone(&figures);
        let builder = std::thread::Builder::new().name(format!("landline-{}", config.compression));
        let thread = match config.compression {
            Compression::Gzip => builder.spawn(move || {
                coordinate(block::Gzip, config, chunk_rx, recycle_tx, parts_out, shared)
            })?,
            Compression::Zstd => builder.spawn(move || {
                coordinate(zstd::Zstd, config, chunk_rx, recycle_tx, parts_out, shared)
            })?,
            Compression::None => builder.spawn(move || {
                coordinate(Plain, config, chunk_rx, recycle_tx, parts_out, shared)
            })?,
        };
        Ok(Compressor {
            chunks,
            recycled,
            figures,
            thread,
        })
    }

    /// Where the compressor stands in the object it is writing (which may still be the one
    /// before the last [`send_ending_object`](Self::send_ending_object)'s chunk, until that
    /// chunk is compressed).
    pub fn figures(&self) -> ObjectFigures {
        self.figures.lock().map(|f| *f).unwrap_or_default()
    }

    /// An empty buffer for the next chunk, reusing one the compressor has finished with.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        self.recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(capacity))
    }

    /// Queues a chunk of JSON Lines; blocks while the queue is full.
    pub fn send(&self, chunk: Vec<u8>) -> Result<(), CompressError> {
        self.send_chunk(Chunk {
            data: chunk,
            mark: None,
            ends_object: false,
        })
    }

    /// Queues a chunk that ends the current object: its stream ends after it (trailer), its
    /// last part goes out with [`Part::object_end`], and the chunks after it begin the next
    /// object, a stream of its own (header, part numbers from 1, no window reaching back).
    /// Send more after it: the stream's end ([`finish`](Self::finish)) ends the last object.
    pub fn send_ending_object(&self, chunk: Vec<u8>) -> Result<(), CompressError> {
        self.send_chunk(Chunk {
            data: chunk,
            mark: None,
            ends_object: true,
        })
    }

    /// Queues a chunk that ends at a boundary of the caller's, named by `mark` (a page
    /// number): with [`CompressorConfig::cut_at_boundaries`], a part may end after it.
    pub fn send_marked(&self, chunk: Vec<u8>, mark: u64) -> Result<(), CompressError> {
        self.send_chunk(Chunk {
            data: chunk,
            mark: Some(mark),
            ends_object: false,
        })
    }

    fn send_chunk(&self, chunk: Chunk) -> Result<(), CompressError> {
        self.chunks
            .send(chunk)
            .map_err(|_| CompressError::ThreadGone)
    }

    /// Ends the stream: the coordinator writes the trailer, sends the last part and exits.
    pub fn finish(self) -> Result<CompressStats, CompressError> {
        drop(self.chunks);
        self.thread.join().map_err(|_| CompressError::ThreadGone)?
    }
}

/// A chunk of JSON Lines, maybe ending at a boundary or an object.
struct Chunk {
    data: Vec<u8>,
    mark: Option<u64>,
    ends_object: bool,
}

/// A block for a worker, and the buffers it comes back in.
struct Job {
    input: Vec<u8>,
    dictionary: Vec<u8>,
    output: Vec<u8>,
    done: SyncSender<Done>,
}

struct Done {
    input: Vec<u8>,
    dictionary: Vec<u8>,
    output: Vec<u8>,
    crc: crc32fast::Hasher,
    result: Result<(), CompressError>,
}

fn work<F: BlockFormat>(mut worker: F::Worker, crc32: bool, jobs: Receiver<Job>) {
    // The coordinator closes the channel to end the stream.
    while let Ok(job) = jobs.recv() {
        let Job {
            input,
            dictionary,
            mut output,
            done,
        } = job;
        output.clear();
        let result = F::compress(&mut worker, &dictionary, &input, &mut output);
        let mut crc = crc32fast::Hasher::new();
        if crc32 {
            crc.update(&input);
        }
        // The coordinator may have stopped; then the result is not needed.
        let _ = done.send(Done {
            input,
            dictionary,
            output,
            crc,
            result,
        });
    }
}

/// Fills parts in order and ships each full one with its slot.
struct PartWriter {
    sizes: PartSizer,
    slots: Option<Arc<Semaphore>>,
    out: tokio::sync::mpsc::Sender<Part>,
    cut_at_boundaries: bool,
    current: PartBuffer,
    /// The current part's number and the size it is cut at (at a boundary, when cutting at
    /// boundaries).
    number: u64,
    target: usize,
    slot: Option<OwnedSemaphorePermit>,
    stats: CompressStats,
    /// The object being written, from 1, and its compressed bytes so far.
    object: u64,
    object_bytes: u64,
}

/// What a shipped part ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Only itself: more of the object follows.
    Part,
    /// Its object: the next part begins another.
    Object,
    /// The stream (and its last object).
    Stream,
}

impl PartWriter {
    fn new(
        config: &CompressorConfig,
        out: tokio::sync::mpsc::Sender<Part>,
    ) -> Result<Self, CompressError> {
        let slot = take_slot(&config.part_slots)?;
        let number = config.first_part.max(1);
        let (target, capacity) = part_bounds(config.parts, config.cut_at_boundaries, number);
        Ok(PartWriter {
            sizes: config.parts,
            slots: config.part_slots.clone(),
            out,
            cut_at_boundaries: config.cut_at_boundaries,
            current: PartBuffer::new(capacity).map_err(CompressError::Memory)?,
            number,
            target,
            slot,
            stats: CompressStats::default(),
            object: 1,
            object_bytes: 0,
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), CompressError> {
        self.object_bytes += bytes.len() as u64;
        while !bytes.is_empty() {
            let n = self.current.fill(bytes);
            bytes = &bytes[n..];
            if self.current.is_full() {
                self.ship(None, Ending::Part)?;
            }
        }
        Ok(())
    }

    /// A marked boundary: the part ends here if it has reached its size.
    fn boundary(&mut self, end: impl FnOnce() -> PartEnd) -> Result<(), CompressError> {
        if self.cut_at_boundaries && self.current.len() >= self.target {
            self.ship(Some(end()), Ending::Part)?;
        }
        Ok(())
    }

    fn ship(&mut self, end: Option<PartEnd>, ending: Ending) -> Result<(), CompressError> {
        self.stats.parts += 1;
        self.stats.bytes_out += self.current.len() as u64;
        let last = ending == Ending::Stream;
        let next_number = match ending {
            Ending::Object => 1,
            _ => self.number + 1,
        };
        // After the last part nothing is written: a one-page stand-in takes its place.
        let (target, capacity) = if last {
            (0, 0)
        } else {
            part_bounds(self.sizes, self.cut_at_boundaries, next_number)
        };
        let next = PartBuffer::new(capacity).map_err(CompressError::Memory)?;
        let part = Part {
            data: std::mem::replace(&mut self.current, next).freeze(),
            slot: self.slot.take(),
            number: self.number,
            end,
            last,
            object: self.object,
            object_end: ending != Ending::Part,
        };
        self.out
            .blocking_send(part)
            .map_err(|_| CompressError::OutputClosed)?;
        self.number = next_number;
        self.target = target;
        if ending == Ending::Object {
            self.object += 1;
            self.object_bytes = 0;
            self.stats.objects += 1;
        }
        if !last {
            // The next part needs a slot before it takes memory.
            self.slot = take_slot(&self.slots)?;
        }
        Ok(())
    }
}

/// Part `number`'s target size and its buffer's capacity: the schedule's size for both, or,
/// when parts are cut at boundaries, twice it (at most S3's largest part) for the capacity.
fn part_bounds(sizes: PartSizer, cut_at_boundaries: bool, number: u64) -> (usize, usize) {
    let target = sizes.size_of(number);
    if cut_at_boundaries {
        (target, target.saturating_mul(2).min(MAX_PART_SIZE))
    } else {
        (target, target)
    }
}

/// Waits for a part slot on this (non-async) thread; `Err` when the slots were closed.
fn take_slot(
    slots: &Option<Arc<Semaphore>>,
) -> Result<Option<OwnedSemaphorePermit>, CompressError> {
    match slots {
        None => Ok(None),
        Some(s) => futures::executor::block_on(Arc::clone(s).acquire_owned())
            .map(Some)
            .map_err(|_| CompressError::OutputClosed),
    }
}

/// Appends `chunk` to the rolling dictionary `tail`, keeping its last [`DICTIONARY_BYTES`].
fn roll_dictionary(tail: &mut Vec<u8>, chunk: &[u8]) {
    if chunk.len() >= DICTIONARY_BYTES {
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - DICTIONARY_BYTES..]);
    } else {
        let excess = (tail.len() + chunk.len()).saturating_sub(DICTIONARY_BYTES);
        tail.drain(..excess);
        tail.extend_from_slice(chunk);
    }
}

/// A block handed to a worker, waiting to be collected in order.
struct Pending {
    done: Receiver<Done>,
    /// The chunk's mark, with the dictionary after it.
    mark: Option<(u64, Vec<u8>)>,
    /// Whether the chunk ends its object.
    ends_object: bool,
}

/// The member as collected so far.
struct Member {
    crc: crc32fast::Hasher,
    bytes_in: u64,
}

fn coordinate<F: BlockFormat>(
    format: F,
    config: CompressorConfig,
    chunks: Receiver<Chunk>,
    recycle: mpsc::Sender<Vec<u8>>,
    parts_out: tokio::sync::mpsc::Sender<Part>,
    figures: Arc<std::sync::Mutex<ObjectFigures>>,
) -> Result<CompressStats, CompressError> {
    let workers = match config.compression {
        Compression::None => 1,
        _ => config.workers.max(1),
    };
    let windowed = format.needs_window();
    // Block n goes to worker n % workers: with a fixed share each, a run's output does not
    // depend on thread scheduling (see `BlockDeflater::deflate`).
    let mut job_txs = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = mpsc::sync_channel::<Job>(1);
        let worker = format.worker(config.level)?;
        let crc32 = format.crc32();
        std::thread::Builder::new()
            .name(format!("landline-{}-{i}", config.compression))
            .spawn(move || work::<F>(worker, crc32, rx))
            .map_err(CompressError::Memory)?;
        job_txs.push(tx);
    }
    let mut next_worker = 0;
    let mut parts = PartWriter::new(&config, parts_out)?;
    let resumed = config.resume.clone();
    let (mut member, mut tail) = match resumed {
        Some(state) => (
            Member {
                crc: crc32fast::Hasher::new_with_initial_len(state.crc32, state.bytes_in),
                bytes_in: state.bytes_in,
            },
            state.dictionary,
        ),
        None => {
            parts.write(format.header())?;
            (
                Member {
                    crc: crc32fast::Hasher::new(),
                    bytes_in: 0,
                },
                Vec::with_capacity(if windowed { DICTIONARY_BYTES } else { 0 }),
            )
        }
    };
    // Results in submission order; at most `workers + 1` outstanding.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut spare: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    // Uncompressed bytes of the objects ended before the current one.
    let mut ended_in = 0u64;
    let publish = |parts: &PartWriter, member: &Member| {
        if let Ok(mut f) = figures.lock() {
            *f = ObjectFigures {
                object: parts.object,
                bytes_in: member.bytes_in,
                bytes_out: parts.object_bytes,
            };
        }
    };

    let collect = |pending: Pending,
                   parts: &mut PartWriter,
                   member: &mut Member,
                   spare: &mut Vec<(Vec<u8>, Vec<u8>)>,
                   ended_in: &mut u64|
     -> Result<(), CompressError> {
        let done = pending.done.recv().map_err(|_| CompressError::ThreadGone)?;
        done.result?;
        parts.write(&done.output)?;
        member.crc.combine(&done.crc);
        member.bytes_in += done.input.len() as u64;
        if let Some((mark, dictionary)) = pending.mark {
            parts.boundary(|| PartEnd {
                mark,
                member: MemberState {
                    crc32: member.crc.clone().finalize(),
                    bytes_in: member.bytes_in,
                    dictionary,
                },
            })?;
        }
        if pending.ends_object {
            // The object's stream ends here; the next object is a stream of its own.
            parts.write(&format.trailer(&member.crc, member.bytes_in))?;
            parts.ship(None, Ending::Object)?;
            *ended_in += member.bytes_in;
            *member = Member {
                crc: crc32fast::Hasher::new(),
                bytes_in: 0,
            };
            parts.write(format.header())?;
        }
        publish(parts, member);
        let mut input = done.input;
        input.clear();
        // The encoder may be gone already; then the buffer is simply freed.
        let _ = recycle.send(input);
        spare.push((done.dictionary, done.output));
        Ok(())
    };

    // The encoder closes the queue to end the stream.
    while let Ok(Chunk {
        data: chunk,
        mark,
        ends_object,
    }) = chunks.recv()
    {
        let (mut dictionary, output) = spare.pop().unwrap_or_default();
        dictionary.clear();
        if windowed {
            dictionary.extend_from_slice(&tail);
            roll_dictionary(&mut tail, &chunk);
            if ends_object {
                // Nothing of this object primes the next one's first block.
                tail.clear();
            }
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        job_txs[next_worker]
            .send(Job {
                input: chunk,
                dictionary,
                output,
                done: done_tx,
            })
            .map_err(|_| CompressError::ThreadGone)?;
        next_worker = (next_worker + 1) % workers;
        pending.push_back(Pending {
            done: done_rx,
            mark: mark
                .filter(|_| config.cut_at_boundaries)
                .map(|m| (m, tail.clone())),
            ends_object,
        });
        while pending.len() > workers {
            if let Some(p) = pending.pop_front() {
                collect(p, &mut parts, &mut member, &mut spare, &mut ended_in)?;
            }
        }
    }
    drop(job_txs);
    while let Some(p) = pending.pop_front() {
        collect(p, &mut parts, &mut member, &mut spare, &mut ended_in)?;
    }
    parts.write(&format.trailer(&member.crc, member.bytes_in))?;
    parts.ship(None, Ending::Stream)?;
    let mut stats = parts.stats;
    stats.bytes_in = ended_in + member.bytes_in;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x1234_5678_u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'a' + (x % 26) as u8
            })
            .collect()
    }

    /// Runs the gzip compressor over `data` in `chunk`-byte chunks; returns stats and parts.
    fn compress(
        data: &[u8],
        chunk: usize,
        workers: usize,
        part: usize,
    ) -> (CompressStats, Vec<Bytes>) {
        compress_as(Compression::Gzip, data, chunk, workers, part)
    }

    /// Runs a `compression` compressor over `data` in `chunk`-byte chunks.
    fn compress_as(
        compression: Compression,
        data: &[u8],
        chunk: usize,
        workers: usize,
        part: usize,
    ) -> (CompressStats, Vec<Bytes>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let slots = Arc::new(Semaphore::new(2));
        let config = CompressorConfig {
            queue_depth: 2,
            part_slots: Some(Arc::clone(&slots)),
            ..CompressorConfig::new(
                compression,
                compression.default_level(),
                workers,
                PartSizer::new(part, false),
            )
        };
        let c = Compressor::spawn(config, tx).unwrap();
        let collector = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(p) = rt.block_on(rx.recv()) {
                assert!(p.slot.is_some());
                got.push(p.data);
            }
            got
        });
        for piece in data.chunks(chunk) {
            let mut b = c.buffer(chunk);
            b.extend_from_slice(piece);
            c.send(b).unwrap();
        }
        let stats = c.finish().unwrap();
        (stats, collector.join().unwrap())
    }

    #[test]
    fn parallel_output_is_one_member_cut_into_exact_parts() {
        let data = noise(3_000_000);
        for workers in [1, 2, 3] {
            let (stats, parts) = compress(&data, 100_000, workers, 256 * 1024);
            assert_eq!(stats.parts as usize, parts.len());
            assert!(parts.len() > 3, "{} parts", parts.len());
            for p in &parts[..parts.len() - 1] {
                assert_eq!(p.len(), 256 * 1024);
            }
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(joined.len() as u64, stats.bytes_out);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&joined[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{workers} workers: the data differs");
            // Reproducible: the same bytes on every run with the same settings.
            let (_, again) = compress(&data, 100_000, workers, 256 * 1024);
            assert!(
                again == parts,
                "{workers} workers: output differs between runs"
            );
            if workers == 1 {
                let reference = block::gzip_blocks(&data, 100_000, 6).unwrap();
                assert!(joined == reference, "one worker: not the reference output");
            }
            assert_eq!(stats.bytes_in, data.len() as u64);
        }
    }

    /// Feeds `pages` (each in `chunk`-byte chunks, the last one marked with the page's
    /// number, `first_page` for the first) through a compressor with `config`.
    fn compress_pages(
        config: CompressorConfig,
        pages: &[Vec<u8>],
        first_page: u64,
        chunk: usize,
    ) -> Vec<Part> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let c = Compressor::spawn(config, tx).unwrap();
        let collector = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(p) = rt.block_on(rx.recv()) {
                got.push(p);
            }
            got
        });
        for (i, page) in pages.iter().enumerate() {
            let pieces: Vec<&[u8]> = page.chunks(chunk).collect();
            for (j, piece) in pieces.iter().enumerate() {
                let mut b = c.buffer(chunk);
                b.extend_from_slice(piece);
                if j + 1 == pieces.len() {
                    c.send_marked(b, first_page + i as u64).unwrap();
                } else {
                    c.send(b).unwrap();
                }
            }
        }
        c.finish().unwrap();
        collector.join().unwrap()
    }

    fn gunzip_one_member(parts: &[&Part]) -> Vec<u8> {
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        let mut back = Vec::new();
        // GzDecoder stops after the first member: all the data means one member.
        flate2::read::GzDecoder::new(&joined[..])
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    #[test]
    fn parts_cut_at_page_ends_continue_as_the_same_member_in_another_compressor() {
        // Pages of uneven sizes; one is larger than two parts.
        let sizes = [
            70_000, 90_000, 30_000, 400_000, 50_000, 120_000, 80_000, 60_000,
        ];
        let pages: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut p = noise(n);
                p[0] = b'0' + i as u8;
                p
            })
            .collect();
        let data: Vec<u8> = pages.concat();
        let part = 64 * 1024;
        let config = || CompressorConfig {
            cut_at_boundaries: true,
            ..CompressorConfig::new(Compression::Gzip, 6, 2, PartSizer::new(part, false))
        };
        let whole = compress_pages(config(), &pages, 1, 16 * 1024);
        let all: Vec<&Part> = whole.iter().collect();
        assert_eq!(gunzip_one_member(&all), data);
        let ends: Vec<u64> = pages
            .iter()
            .scan(0u64, |at, p| {
                *at += p.len() as u64;
                Some(*at)
            })
            .collect();
        for (i, p) in whole.iter().enumerate() {
            assert_eq!(p.number, i as u64 + 1);
            assert_eq!(p.last, i + 1 == whole.len());
            if p.last {
                continue;
            }
            assert!(p.data.len() <= 2 * part, "part {} too large", p.number);
            match &p.end {
                Some(end) => {
                    assert!(p.data.len() >= part, "part {} cut short", p.number);
                    assert_eq!(end.member.bytes_in, ends[end.mark as usize - 1]);
                    let so_far = &data[..end.member.bytes_in as usize];
                    assert_eq!(end.member.crc32, crc32fast::hash(so_far));
                    let tail = &so_far[so_far.len().saturating_sub(DICTIONARY_BYTES)..];
                    assert_eq!(end.member.dictionary, tail);
                }
                // Only a page larger than a part may be cut inside.
                None => assert_eq!(p.data.len(), 2 * part, "part {}", p.number),
            }
        }
        assert!(
            whole.iter().any(|p| p.end.is_none() && !p.last),
            "the large page was not cut inside"
        );
        let cut = whole
            .iter()
            .filter(|p| p.end.is_some())
            .nth(1)
            .expect("two parts end at a page");
        let end = cut.end.clone().unwrap();
        // A checkpoint's state survives JSON.
        let json = serde_json::to_string(&end.member).unwrap();
        let member: MemberState = serde_json::from_str(&json).unwrap();
        assert_eq!(member, end.member);

        let resumed = compress_pages(
            CompressorConfig {
                resume: Some(member),
                first_part: cut.number + 1,
                ..config()
            },
            &pages[end.mark as usize..],
            end.mark + 1,
            16 * 1024,
        );
        assert_eq!(resumed[0].number, cut.number + 1);
        let joined: Vec<&Part> = whole[..cut.number as usize]
            .iter()
            .chain(resumed.iter())
            .collect();
        assert_eq!(
            gunzip_one_member(&joined),
            data,
            "the resumed member differs"
        );
    }

    #[test]
    fn an_empty_stream_is_a_valid_empty_member() {
        let (stats, parts) = compress(&[], 1000, 2, 64 * 1024);
        assert_eq!(parts.len(), 1);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&parts[0][..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
        assert_eq!(stats.bytes_in, 0);
    }

    fn decode(compression: Compression, bytes: &[u8]) -> Vec<u8> {
        match compression {
            Compression::Gzip => {
                let mut back = Vec::new();
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut back)
                    .unwrap();
                back
            }
            Compression::Zstd => ::zstd::stream::decode_all(bytes).unwrap(),
            Compression::None => bytes.to_vec(),
        }
    }

    #[test]
    fn zstd_and_plain_streams_are_exact_parts_of_the_same_bytes_on_any_number_of_workers() {
        let data = noise(3_000_000);
        for compression in [Compression::Zstd, Compression::None] {
            let (stats, reference) = compress_as(compression, &data, 100_000, 1, 256 * 1024);
            for workers in [1, 2, 3] {
                let (stats, parts) = compress_as(compression, &data, 100_000, workers, 256 * 1024);
                for p in &parts[..parts.len() - 1] {
                    assert_eq!(p.len(), 256 * 1024, "{compression}");
                }
                let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
                assert_eq!(joined.len() as u64, stats.bytes_out);
                assert!(
                    decode(compression, &joined) == data,
                    "{compression}, {workers}"
                );
                // Blocks are independent: the bytes do not depend on the workers.
                assert!(
                    parts == reference,
                    "{compression}: {workers} workers differ"
                );
            }
            assert_eq!(stats.bytes_in, data.len() as u64);
        }
        let (_, plain) = compress_as(Compression::None, b"", 1000, 2, 64 * 1024);
        assert_eq!(plain.len(), 1);
        assert!(plain[0].is_empty());
        let (_, zstd) = compress_as(Compression::Zstd, b"", 1000, 2, 64 * 1024);
        assert_eq!(decode(Compression::Zstd, &zstd[0]), b"");
    }

    #[test]
    fn zstd_and_plain_streams_continue_in_another_compressor_from_a_part_end() {
        let sizes = [70_000, 90_000, 30_000, 400_000, 50_000, 120_000, 80_000];
        let pages: Vec<Vec<u8>> = sizes.iter().map(|&n| noise(n)).collect();
        let data: Vec<u8> = pages.concat();
        let part = 64 * 1024;
        for compression in [Compression::Zstd, Compression::None] {
            let config = || CompressorConfig {
                cut_at_boundaries: true,
                ..CompressorConfig::new(compression, 1, 2, PartSizer::new(part, false))
            };
            let whole = compress_pages(config(), &pages, 1, 16 * 1024);
            let cut = whole
                .iter()
                .filter(|p| p.end.is_some())
                .nth(1)
                .expect("two parts end at a page");
            let end = cut.end.clone().unwrap();
            assert_eq!(end.member.crc32, 0);
            assert!(end.member.dictionary.is_empty());
            let resumed = compress_pages(
                CompressorConfig {
                    resume: Some(end.member.clone()),
                    first_part: cut.number + 1,
                    ..config()
                },
                &pages[end.mark as usize..],
                end.mark + 1,
                16 * 1024,
            );
            let joined: Vec<u8> = whole[..cut.number as usize]
                .iter()
                .chain(resumed.iter())
                .flat_map(|p| p.data.iter().copied())
                .collect();
            assert!(
                decode(compression, &joined) == data,
                "{compression}: resumed differs"
            );
        }
    }
}
