//! One gzip member made of independently deflated blocks, pigz-style.
//!
//! Each block of JSON Lines is deflated on its own (so blocks can be compressed on several
//! cores), primed with the last 32 KiB of the block before it as a preset dictionary (so
//! matches reach back across the boundary and the ratio stays that of one stream), and ended
//! with a sync flush, which byte-aligns its output without ending the deflate stream. The
//! blocks' outputs, concatenated in order after one gzip header, form one deflate stream; a
//! final empty block, the CRC-32 (combined from the blocks' CRCs) and the length end the member.
//! Readers that stop after the first gzip member therefore read everything.
//!
//! Internal to the crate. The benchmarks reach [`BlockDeflater`], [`DICTIONARY_BYTES`] and
//! [`gzip_blocks`] through `landline::__internals`, with the `internals` feature (hence the
//! `pub` items in a crate-private module).

use flate2::{Compress, Compression, FlushCompress};

use super::{BlockFormat, CompressError};

/// The gzip format: one member of sync-flushed deflate blocks, each primed with the 32 KiB
/// before it.
pub(crate) struct Gzip;

impl BlockFormat for Gzip {
    type Worker = BlockDeflater;

    fn worker(&self, level: i32) -> Result<BlockDeflater, CompressError> {
        Ok(BlockDeflater::new(level.clamp(0, 9) as u32))
    }

    fn header(&self) -> &'static [u8] {
        &GZIP_HEADER
    }

    fn needs_window(&self) -> bool {
        true
    }

    fn crc32(&self) -> bool {
        true
    }

    fn compress(
        worker: &mut BlockDeflater,
        window: &[u8],
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        worker.deflate(window, input, out)
    }

    fn trailer(&self, crc: &crc32fast::Hasher, bytes_in: u64) -> Vec<u8> {
        let mut end = FINAL_BLOCK.to_vec();
        end.extend_from_slice(&trailer(crc, bytes_in));
        end
    }
}

/// gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
pub(crate) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A final, empty fixed-Huffman deflate block: ends the stream after sync-flushed blocks.
pub(crate) const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// The deflate window: how much of the previous block primes the next.
pub const DICTIONARY_BYTES: usize = 32 * 1024;

/// Spare output room kept before each deflate call.
const MIN_SPARE: usize = 64 * 1024;

/// Deflates blocks; one per worker thread, reused from block to block.
pub struct BlockDeflater {
    deflate: Compress,
}

impl BlockDeflater {
    /// A deflater at zlib `level` (0–9).
    pub fn new(level: u32) -> Self {
        BlockDeflater {
            deflate: Compress::new(Compression::new(level), false),
        }
    }

    /// Deflates `input` primed with `dictionary` (the previous block's tail, empty for the
    /// first block), appending a sync-flushed, byte-aligned deflate fragment to `out`.
    pub fn deflate(
        &mut self,
        dictionary: &[u8],
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        // After a reset, zlib-rs output can differ by a byte or so depending on what the
        // stream compressed before (the data stays valid). The coordinator therefore gives
        // each worker a fixed share of the blocks, so a run's output is reproducible. A fresh
        // stream per block would be too, but its allocations cost ~9 MiB of resident memory
        // in the workers' malloc arenas.
        self.deflate.reset();
        if !dictionary.is_empty() {
            self.deflate.set_dictionary(dictionary)?;
        }
        let mut rest = input;
        loop {
            if out.capacity() - out.len() < MIN_SPARE {
                out.reserve(MIN_SPARE.max(rest.len() / 4));
            }
            let before = self.deflate.total_in();
            self.deflate.compress_vec(rest, out, FlushCompress::Sync)?;
            rest = &rest[(self.deflate.total_in() - before) as usize..];
            // The flush is complete once all input is taken and zlib left room unused.
            if rest.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// The gzip trailer: CRC-32 and input size modulo 2^32, little-endian.
pub(crate) fn trailer(crc: &crc32fast::Hasher, bytes_in: u64) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.clone().finalize().to_le_bytes());
    // ISIZE is the input size modulo 2^32 (RFC 1952), hence the truncation.
    t[4..].copy_from_slice(&(bytes_in as u32).to_le_bytes());
    t
}

/// Compresses `data` in `block`-byte blocks on this thread: the reference for tests and
/// benchmarks of the block format.
#[cfg(any(test, feature = "internals"))]
pub fn gzip_blocks(data: &[u8], block: usize, level: u32) -> Result<Vec<u8>, CompressError> {
    let mut out = GZIP_HEADER.to_vec();
    let mut deflater = BlockDeflater::new(level);
    let mut crc = crc32fast::Hasher::new();
    let mut start = 0usize;
    for piece in data.chunks(block.max(1)) {
        let dict_start = start.saturating_sub(DICTIONARY_BYTES);
        deflater.deflate(&data[dict_start..start], piece, &mut out)?;
        let mut h = crc32fast::Hasher::new();
        h.update(piece);
        crc.combine(&h);
        start += piece.len();
    }
    out.extend_from_slice(&FINAL_BLOCK);
    out.extend_from_slice(&trailer(&crc, data.len() as u64));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    pub(crate) fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend_from_slice(
                format!("{{\"id\":{i},\"text\":\"row {}\"}}\n", i * 7919 % 1013).as_bytes(),
            );
        }
        v
    }

    fn gunzip_single_member(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    #[test]
    fn blocks_form_one_member_that_single_member_readers_read_whole() {
        let data = sample(60_000);
        for block in [1000, 32 * 1024, 100_000, data.len(), data.len() * 2] {
            let gz = gzip_blocks(&data, block, 6).unwrap();
            assert_eq!(gunzip_single_member(&gz), data, "block {block}");
        }
        assert_eq!(
            gunzip_single_member(&gzip_blocks(&[], 1024, 6).unwrap()),
            b""
        );
    }

    #[test]
    fn priming_keeps_the_ratio_of_one_stream() {
        let data = sample(200_000);
        let one = gzip_blocks(&data, data.len(), 6).unwrap().len() as f64;
        let blocks = gzip_blocks(&data, 1 << 20, 6).unwrap().len() as f64;
        assert!(blocks / one < 1.01, "{blocks} vs {one}");
    }
}
