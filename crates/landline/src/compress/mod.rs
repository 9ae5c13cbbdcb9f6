//! The compressor stage: JSON Lines chunks in, one gzip member out, cut into upload parts.
//!
//! The compressor runs on its own thread so that fetching the next page overlaps compressing
//! the current one. Chunks arrive through a bounded queue (backpressure to the encoder), are
//! deflated with zlib-rs into the part being filled, and every part that reaches the size the
//! [`PartSizer`] gives for its number is sent to the upload stage, whose bounded channel in turn
//! makes this thread wait. Emptied chunk buffers go back to the encoder for reuse.
//!
//! The output is a single gzip member (our own header and trailer around one raw deflate
//! stream), so every reader, including those that stop after the first member, sees all records.
//!
//! Memory: `queue_depth` chunks + zlib state (~300 KiB at level 6) + the part being filled.
//! A part is started only with a slot from [`CompressorConfig::part_slots`], and the slot
//! travels with the part until its upload ends, so the parts alive at once (filling, queued and
//! uploading) never exceed the slots.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sink::PartSizer;

/// gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Room an [`Output`] must have before each deflate call, so every call makes progress.
pub const MIN_SPARE_OUTPUT: usize = 64 * 1024;
/// A part buffer holds its part size plus this much: a part is cut as soon as it reaches its
/// size, so the room past that size is never less than this when a deflate call starts.
const PART_SLACK: usize = 4 * MIN_SPARE_OUTPUT;

/// Why compression stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// zlib reported an error (not expected for valid input).
    #[error("deflate failed: {0}")]
    Deflate(#[from] flate2::CompressError),
    /// The upload stage stopped taking parts (it failed; its error is the cause).
    #[error("the upload stage stopped taking parts")]
    OutputClosed,
    /// A part buffer could not be mapped.
    #[error("allocating a part buffer: {0}")]
    Memory(#[source] std::io::Error),
    /// The compressor thread stopped (it failed or panicked).
    #[error("the compressor thread stopped")]
    ThreadGone,
}

/// Figures from one compressed stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressStats {
    /// Uncompressed bytes in.
    pub bytes_in: u64,
    /// Compressed bytes out, gzip header and trailer included.
    pub bytes_out: u64,
    /// Parts emitted.
    pub parts: u64,
}

/// Where compressed bytes go: a buffer with room at its end.
pub trait Output {
    /// Room for at least [`MIN_SPARE_OUTPUT`] more bytes (callers make sure there is).
    fn spare(&mut self) -> &mut [u8];
    /// Marks `n` bytes of [`Output::spare`] as written.
    fn commit(&mut self, n: usize);
    /// Appends `bytes`.
    fn extend(&mut self, bytes: &[u8]) {
        let spare = self.spare();
        spare[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }
}

/// One gzip member written incrementally into caller-provided buffers.
pub struct GzipStream {
    deflate: Compress,
    crc: crc32fast::Hasher,
    bytes_in: u64,
}

impl GzipStream {
    /// A stream at zlib `level` (0–9); writes the gzip header into `out`.
    pub fn new(level: u32, out: &mut impl Output) -> Self {
        out.extend(&GZIP_HEADER);
        GzipStream {
            deflate: Compress::new(Compression::new(level), false),
            crc: crc32fast::Hasher::new(),
            bytes_in: 0,
        }
    }

    fn deflate_into<O: Output>(
        &mut self,
        input: &[u8],
        out: &mut O,
        flush: FlushCompress,
    ) -> Result<(usize, Status), CompressError> {
        let (before_in, before_out) = (self.deflate.total_in(), self.deflate.total_out());
        let status = self.deflate.compress(input, out.spare(), flush)?;
        out.commit((self.deflate.total_out() - before_out) as usize);
        Ok(((self.deflate.total_in() - before_in) as usize, status))
    }

    /// Deflates all of `input` into `out`; after each step `on_output` may swap `out` for an
    /// empty buffer, and must leave at least [`MIN_SPARE_OUTPUT`] bytes of room in it.
    pub fn write<O: Output>(
        &mut self,
        mut input: &[u8],
        out: &mut O,
        mut on_output: impl FnMut(&mut O) -> Result<(), CompressError>,
    ) -> Result<(), CompressError> {
        self.crc.update(input);
        self.bytes_in += input.len() as u64;
        while !input.is_empty() {
            let (consumed, _) = self.deflate_into(input, out, FlushCompress::None)?;
            input = &input[consumed..];
            on_output(out)?;
        }
        Ok(())
    }

    /// Ends the deflate stream and writes the gzip trailer into `out`.
    pub fn finish<O: Output>(
        &mut self,
        out: &mut O,
        mut on_output: impl FnMut(&mut O) -> Result<(), CompressError>,
    ) -> Result<(), CompressError> {
        while self.deflate_into(&[], out, FlushCompress::Finish)?.1 != Status::StreamEnd {
            on_output(out)?;
        }
        on_output(out)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE is the input size modulo 2^32 (RFC 1952), hence the truncation.
        trailer[4..].copy_from_slice(&(self.bytes_in as u32).to_le_bytes());
        out.extend(&trailer);
        Ok(())
    }

    /// Uncompressed bytes written so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }
}

/// A part's buffer: an anonymous memory map of fixed size, not a heap allocation.
///
/// Why: the allocator keeps freed multi-MiB heap blocks (glibc raises its mmap threshold
/// after the first large free, then serves and retains them from the heap), so parts
/// allocated and freed one after another made resident memory creep up with the run's
/// length. A map is returned to the kernel the moment its last reference, held by the upload,
/// is dropped, so resident memory follows the parts alive, and nothing else.
pub struct PartBuffer {
    map: memmap2::MmapMut,
    len: usize,
}

impl PartBuffer {
    /// A buffer that holds `capacity` bytes.
    pub fn new(capacity: usize) -> std::io::Result<Self> {
        Ok(PartBuffer {
            map: memmap2::MmapMut::map_anon(capacity.max(1))?,
            len: 0,
        })
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The written bytes as [`Bytes`], without a copy; the map lives as long as they do.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PartBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

impl Output for PartBuffer {
    fn spare(&mut self) -> &mut [u8] {
        &mut self.map[self.len..]
    }
    fn commit(&mut self, n: usize) {
        self.len += n;
    }
}

/// Settings of the compressor stage.
#[derive(Debug, Clone)]
pub struct CompressorConfig {
    /// zlib level, 0–9.
    pub level: u32,
    /// Chunks waiting to be compressed before the encoder has to wait.
    pub queue_depth: usize,
    /// Part sizes, by part number.
    pub parts: PartSizer,
    /// One permit per part alive at once; `None` for no limit.
    pub part_slots: Option<Arc<Semaphore>>,
}

/// A part of the compressed stream, holding its memory slot until dropped.
#[derive(Debug)]
pub struct Part {
    /// The bytes.
    pub data: Bytes,
    /// The slot, released when the part (and its upload) is done.
    pub slot: Option<OwnedSemaphorePermit>,
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

/// Handle on the compressor thread.
pub struct Compressor {
    chunks: SyncSender<Vec<u8>>,
    recycled: Receiver<Vec<u8>>,
    thread: JoinHandle<Result<CompressStats, CompressError>>,
}

impl Compressor {
    /// Starts the thread; parts go to `parts_out` (the last one when the stream is finished).
    pub fn spawn(
        config: CompressorConfig,
        parts_out: tokio::sync::mpsc::Sender<Part>,
    ) -> std::io::Result<Self> {
        let (chunks, chunk_rx) = mpsc::sync_channel::<Vec<u8>>(config.queue_depth.max(1));
        let (recycle_tx, recycled) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("landline-gzip".into())
            .spawn(move || compress_loop(config, chunk_rx, recycle_tx, parts_out))?;
        Ok(Compressor {
            chunks,
            recycled,
            thread,
        })
    }

    /// An empty buffer for the next chunk, reusing one the thread has finished with.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        self.recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(capacity))
    }

    /// Queues a chunk of JSON Lines; blocks while the queue is full.
    pub fn send(&self, chunk: Vec<u8>) -> Result<(), CompressError> {
        self.chunks
            .send(chunk)
            .map_err(|_| CompressError::ThreadGone)
    }

    /// Ends the stream: the thread writes the trailer, sends the last part and exits.
    pub fn finish(self) -> Result<CompressStats, CompressError> {
        drop(self.chunks);
        self.thread.join().map_err(|_| CompressError::ThreadGone)?
    }
}

fn compress_loop(
    config: CompressorConfig,
    chunks: Receiver<Vec<u8>>,
    recycle: mpsc::Sender<Vec<u8>>,
    parts_out: tokio::sync::mpsc::Sender<Part>,
) -> Result<CompressStats, CompressError> {
    let mut stats = CompressStats::default();
    let new_part = |size: usize| PartBuffer::new(size + PART_SLACK).map_err(CompressError::Memory);
    let mut part_size = config.parts.size_of(1);
    let mut slot = take_slot(&config.part_slots)?;
    let mut out = new_part(part_size)?;
    let mut gz = GzipStream::new(config.level, &mut out);
    let mut ship = |out: &mut PartBuffer, stats: &mut CompressStats, last: bool| {
        if out.len() < part_size && !last {
            return Ok(());
        }
        stats.parts += 1;
        stats.bytes_out += out.len() as u64;
        part_size = config.parts.size_of(stats.parts + 1);
        // After the last part nothing more is written: a one-byte stand-in will do.
        let next = new_part(if last { 0 } else { part_size })?;
        let part = Part {
            data: std::mem::replace(out, next).freeze(),
            slot: slot.take(),
        };
        parts_out
            .blocking_send(part)
            .map_err(|_| CompressError::OutputClosed)?;
        if !last {
            // The next part needs a slot before it takes memory.
            slot = take_slot(&config.part_slots)?;
        }
        Ok(())
    };
    // The encoder closes the queue to end the stream.
    while let Ok(chunk) = chunks.recv() {
        gz.write(&chunk, &mut out, |out| ship(out, &mut stats, false))?;
        let mut chunk = chunk;
        chunk.clear();
        // The encoder may be gone already; then the buffer is simply freed.
        let _ = recycle.send(chunk);
    }
    gz.finish(&mut out, |out| ship(out, &mut stats, false))?;
    stats.bytes_in = gz.bytes_in();
    ship(&mut out, &mut stats, true)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend_from_slice(
                format!("{{\"id\":{i},\"text\":\"row {}\"}}\n", i * 7919 % 1013).as_bytes(),
            );
        }
        v
    }

    #[test]
    fn gzip_stream_round_trips_through_a_single_member_reader() {
        let data = sample(50_000);
        let mut out = PartBuffer::new(data.len()).unwrap();
        let mut gz = GzipStream::new(6, &mut out);
        for piece in data.chunks(1 + 4093) {
            gz.write(piece, &mut out, |_| Ok(())).unwrap();
        }
        gz.finish(&mut out, |_| Ok(())).unwrap();
        let out = out.freeze();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn compressor_cuts_parts_at_the_part_size() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let parts = PartSizer::new(64 * 1024, false);
        let slots = Arc::new(Semaphore::new(2));
        let config = CompressorConfig {
            level: 1,
            queue_depth: 2,
            parts,
            part_slots: Some(Arc::clone(&slots)),
        };
        let c = Compressor::spawn(config, tx).unwrap();
        let collector = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(p) = rt.block_on(rx.recv()) {
                // At most two parts exist at once: this one and the one being filled.
                assert!(p.slot.is_some());
                got.push(p.data);
            }
            got
        });
        // Poorly compressible input so that several parts come out.
        let mut x = 0x1234_5678_u64;
        let data: Vec<u8> = (0..2_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'a' + (x % 26) as u8
            })
            .collect();
        for piece in data.chunks(100_000) {
            let mut b = c.buffer(100_000);
            b.extend_from_slice(piece);
            c.send(b).unwrap();
        }
        let stats = c.finish().unwrap();
        let got = collector.join().unwrap();
        assert_eq!(stats.parts as usize, got.len());
        assert!(got.len() > 3, "{} parts", got.len());
        for p in &got[..got.len() - 1] {
            assert!(p.len() >= 64 * 1024);
        }
        let joined: Vec<u8> = got.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(joined.len() as u64, stats.bytes_out);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&joined[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert_eq!(stats.bytes_in, data.len() as u64);
    }
}
