//! zstd objects: one zstd frame (RFC 8878) per block, the frames one after another.
//!
//! Each block of JSON Lines is compressed on its own, as a complete frame with its content
//! size and XXH64 checksum, so blocks compress in parallel and need no window, and every
//! block end is a frame end: a checkpoint there needs nothing but the byte count, and a
//! resumed run simply goes on with the next frame. zstd readers (the `zstd` CLI, libzstd's
//! streaming API behind DuckDB, ClickHouse, Spark and Python's `zstandard`) read
//! concatenated frames as one stream, as gzip readers read concatenated members.
//!
//! The cost of independent frames is ratio: the encoder hands zstd blocks of 1 MiB
//! ([`super::Compression::chunk_bytes`]) rather than gzip's 256 KiB, and a page end starts a
//! new frame only after a quarter of that ([`super::Compression::min_boundary_bytes`]).

use super::{BlockFormat, CompressError};

/// The zstd format.
pub(crate) struct Zstd;

impl BlockFormat for Zstd {
    type Worker = zstd::bulk::Compressor<'static>;

    fn worker(&self, level: i32) -> Result<Self::Worker, CompressError> {
        let mut worker = zstd::bulk::Compressor::new(level).map_err(CompressError::Zstd)?;
        worker.include_checksum(true).map_err(CompressError::Zstd)?;
        worker
            .include_contentsize(true)
            .map_err(CompressError::Zstd)?;
        Ok(worker)
    }

    fn compress(
        worker: &mut Self::Worker,
        _window: &[u8],
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        // The output goes at the start of `out`, bounded by its capacity: reserve the most a
        // frame of `input` can take.
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(input.len()));
        worker
            .compress_to_buffer(input, out)
            .map_err(CompressError::Zstd)?;
        Ok(())
    }

    /// Nothing, but for an empty stream: one empty frame, so that it is still zstd.
    fn trailer(&self, _crc: &crc32fast::Hasher, bytes_in: u64) -> Vec<u8> {
        if bytes_in > 0 {
            return Vec::new();
        }
        // Level 1 with the default parameters cannot fail on no input.
        zstd::bulk::compress(&[], 1).unwrap_or_default()
    }
}

/// Compresses `data` in `block`-byte blocks on this thread, as the compressor does: the
/// reference for tests and benchmarks.
#[cfg(any(test, feature = "internals"))]
pub fn zstd_blocks(data: &[u8], block: usize, level: i32) -> Result<Vec<u8>, CompressError> {
    let mut worker = Zstd.worker(level)?;
    let mut out = Vec::new();
    let mut frame = Vec::new();
    for piece in data.chunks(block.max(1)) {
        Zstd::compress(&mut worker, &[], piece, &mut frame)?;
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_frames_that_read_as_one_stream() {
        let mut data = Vec::new();
        for i in 0..50_000 {
            data.extend_from_slice(format!("{{\"id\":{i},\"v\":\"{}\"}}\n", i % 97).as_bytes());
        }
        let z = zstd_blocks(&data, 100_000, 3).unwrap();
        assert_eq!(zstd::stream::decode_all(&z[..]).expect("decodes"), data);
        // Each frame says its size and carries a checksum.
        let first = zstd::zstd_safe::get_frame_content_size(&z)
            .expect("a frame")
            .expect("a content size");
        assert_eq!(first, 100_000);
        let frames = zstd::zstd_safe::find_frame_compressed_size(&z).expect("a frame");
        assert!(frames < z.len());
        assert!(zstd_blocks(&[], 1024, 3).unwrap().is_empty());
    }
}
