//! The compressor stage: JSON Lines chunks in, one gzip member out, cut into upload parts.
//!
//! Chunks arrive from the encoder through a bounded queue. A coordinator thread hands each
//! chunk, with the last 32 KiB of the chunk before it, to a pool of deflate workers (one per
//! core by default) and collects their outputs strictly in order, so the member is the same
//! whatever finishes first (see [`block`] for the format). Outputs are appended to the part
//! being filled; a full part goes to the upload stage, whose bounded channel makes the
//! coordinator wait, which in turn makes the encoder wait. Emptied chunk buffers go back to
//! the encoder.
//!
//! Memory: `queue_depth` chunks waiting, `workers + 1` chunks being deflated or waiting to be
//! collected, and the parts alive. A part is started only with a slot from
//! [`CompressorConfig::part_slots`], and the slot travels with the part until its upload ends,
//! so the parts alive at once (filling, queued and uploading) never exceed the slots. Parts are
//! [`PartBuffer`]s: every part but the last holds exactly its part size.

pub mod block;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sink::PartSizer;
use block::{BlockDeflater, DICTIONARY_BYTES, FINAL_BLOCK, GZIP_HEADER};

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
    /// Uncompressed bytes in.
    pub bytes_in: u64,
    /// Compressed bytes out, gzip header and trailer included.
    pub bytes_out: u64,
    /// Parts emitted.
    pub parts: u64,
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

    /// Copies as much of `bytes` as fits; returns how much did.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.map.len() - self.len);
        self.map[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Whether the buffer is full.
    pub fn is_full(&self) -> bool {
        self.len == self.map.len()
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

/// Settings of the compressor stage.
#[derive(Debug, Clone)]
pub struct CompressorConfig {
    /// zlib level, 0–9.
    pub level: u32,
    /// Deflate worker threads.
    pub workers: usize,
    /// Chunks waiting for the coordinator before the encoder has to wait.
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

/// Handle on the compressor threads.
pub struct Compressor {
    chunks: SyncSender<Vec<u8>>,
    recycled: Receiver<Vec<u8>>,
    thread: JoinHandle<Result<CompressStats, CompressError>>,
}

impl Compressor {
    /// Starts the threads; parts go to `parts_out` (the last one when the stream is finished).
    pub fn spawn(
        config: CompressorConfig,
        parts_out: tokio::sync::mpsc::Sender<Part>,
    ) -> std::io::Result<Self> {
        let (chunks, chunk_rx) = mpsc::sync_channel::<Vec<u8>>(config.queue_depth.max(1));
        let (recycle_tx, recycled) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("landline-gzip".into())
            .spawn(move || coordinate(config, chunk_rx, recycle_tx, parts_out))?;
        Ok(Compressor {
            chunks,
            recycled,
            thread,
        })
    }

    /// An empty buffer for the next chunk, reusing one the compressor has finished with.
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

    /// Ends the stream: the coordinator writes the trailer, sends the last part and exits.
    pub fn finish(self) -> Result<CompressStats, CompressError> {
        drop(self.chunks);
        self.thread.join().map_err(|_| CompressError::ThreadGone)?
    }
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

fn work(level: u32, jobs: Receiver<Job>) {
    let mut deflater = BlockDeflater::new(level);
    // The coordinator closes the channel to end the stream.
    while let Ok(job) = jobs.recv() {
        let Job {
            input,
            dictionary,
            mut output,
            done,
        } = job;
        output.clear();
        let result = deflater.deflate(&dictionary, &input, &mut output);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&input);
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
    current: PartBuffer,
    slot: Option<OwnedSemaphorePermit>,
    stats: CompressStats,
}

impl PartWriter {
    fn new(
        sizes: PartSizer,
        slots: Option<Arc<Semaphore>>,
        out: tokio::sync::mpsc::Sender<Part>,
    ) -> Result<Self, CompressError> {
        let slot = take_slot(&slots)?;
        let current = PartBuffer::new(sizes.size_of(1)).map_err(CompressError::Memory)?;
        Ok(PartWriter {
            sizes,
            slots,
            out,
            current,
            slot,
            stats: CompressStats::default(),
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), CompressError> {
        while !bytes.is_empty() {
            let n = self.current.fill(bytes);
            bytes = &bytes[n..];
            if self.current.is_full() {
                self.ship(false)?;
            }
        }
        Ok(())
    }

    fn ship(&mut self, last: bool) -> Result<(), CompressError> {
        self.stats.parts += 1;
        self.stats.bytes_out += self.current.len() as u64;
        // After the last part nothing is written: a one-page stand-in takes its place.
        let size = if last {
            0
        } else {
            self.sizes.size_of(self.stats.parts + 1)
        };
        let next = PartBuffer::new(size).map_err(CompressError::Memory)?;
        let part = Part {
            data: std::mem::replace(&mut self.current, next).freeze(),
            slot: self.slot.take(),
        };
        self.out
            .blocking_send(part)
            .map_err(|_| CompressError::OutputClosed)?;
        if !last {
            // The next part needs a slot before it takes memory.
            self.slot = take_slot(&self.slots)?;
        }
        Ok(())
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

fn coordinate(
    config: CompressorConfig,
    chunks: Receiver<Vec<u8>>,
    recycle: mpsc::Sender<Vec<u8>>,
    parts_out: tokio::sync::mpsc::Sender<Part>,
) -> Result<CompressStats, CompressError> {
    let workers = config.workers.max(1);
    // Block n goes to worker n % workers: with a fixed share each, a run's output does not
    // depend on thread scheduling (see `BlockDeflater::deflate`).
    let mut job_txs = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = mpsc::sync_channel::<Job>(1);
        let level = config.level;
        std::thread::Builder::new()
            .name(format!("landline-deflate-{i}"))
            .spawn(move || work(level, rx))
            .map_err(CompressError::Memory)?;
        job_txs.push(tx);
    }
    let mut next_worker = 0;
    let mut parts = PartWriter::new(config.parts, config.part_slots.clone(), parts_out)?;
    parts.write(&GZIP_HEADER)?;
    let mut crc = crc32fast::Hasher::new();
    let mut bytes_in = 0u64;
    // Results in submission order; at most `workers + 1` outstanding.
    let mut pending: VecDeque<Receiver<Done>> = VecDeque::new();
    let mut spare: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut tail: Vec<u8> = Vec::with_capacity(DICTIONARY_BYTES);

    let mut collect = |done: Done,
                       parts: &mut PartWriter,
                       spare: &mut Vec<(Vec<u8>, Vec<u8>)>|
     -> Result<(), CompressError> {
        done.result?;
        parts.write(&done.output)?;
        crc.combine(&done.crc);
        let mut input = done.input;
        input.clear();
        // The encoder may be gone already; then the buffer is simply freed.
        let _ = recycle.send(input);
        spare.push((done.dictionary, done.output));
        Ok(())
    };
    let wait = |rx: Receiver<Done>| rx.recv().map_err(|_| CompressError::ThreadGone);

    // The encoder closes the queue to end the stream.
    while let Ok(chunk) = chunks.recv() {
        bytes_in += chunk.len() as u64;
        let (mut dictionary, output) = spare.pop().unwrap_or_default();
        dictionary.clear();
        dictionary.extend_from_slice(&tail);
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(DICTIONARY_BYTES)..]);
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
        pending.push_back(done_rx);
        while pending.len() > workers {
            if let Some(rx) = pending.pop_front() {
                collect(wait(rx)?, &mut parts, &mut spare)?;
            }
        }
    }
    drop(job_txs);
    while let Some(rx) = pending.pop_front() {
        collect(wait(rx)?, &mut parts, &mut spare)?;
    }
    parts.write(&FINAL_BLOCK)?;
    parts.write(&block::trailer(&crc, bytes_in))?;
    parts.ship(true)?;
    let mut stats = parts.stats;
    stats.bytes_in = bytes_in;
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

    /// Runs the compressor over `data` in `chunk`-byte chunks; returns stats and parts.
    fn compress(
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
            level: 6,
            workers,
            queue_depth: 2,
            parts: PartSizer::new(part, false),
            part_slots: Some(Arc::clone(&slots)),
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
}
