//! The formats an object can be written in, and the seam the compressor drives them through.
//!
//! [`Compression`] names a format and what the store and readers should know of it (its
//! extension, content type and encoding, its levels). [`BlockFormat`] is how the compressor
//! ([`super::coordinate`]) makes one: a header, then each block of JSON Lines compressed on
//! a worker thread (given the window before it, for formats that need one), then a trailer.
//! Each format is a file of its own: [`super::block`] (gzip: one member of sync-flushed
//! deflate blocks), [`super::zstd`] (one zstd frame per block) and [`Plain`] below.

use serde::{Deserialize, Serialize};

use super::CompressError;

/// The format of the objects written: gzip, zstd or uncompressed JSON Lines.
///
/// A pipeline takes it from its destination's extension ([`Compression::from_key`]), or
/// from `[sink] compression` when the two must differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// One gzip member (RFC 1952), deflated in parallel blocks: `.gz`.
    Gzip,
    /// zstd frames (RFC 8878), one per block, each with its content size and checksum:
    /// `.zst`. Readers read the frames one after another as one stream.
    Zstd,
    /// Uncompressed JSON Lines: `.jsonl`.
    None,
}

impl Compression {
    /// Every format, in the order messages list them.
    pub const ALL: [Compression; 3] = [Compression::Gzip, Compression::Zstd, Compression::None];

    /// The format a key's extension names: `.gz`/`.gzip` gzip, `.zst`/`.zstd` zstd,
    /// `.jsonl`/`.ndjson`/`.json` uncompressed; `None` for any other ending. Case is ignored.
    pub fn from_key(key: &str) -> Option<Compression> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "gz" | "gzip" => Some(Compression::Gzip),
            "zst" | "zstd" => Some(Compression::Zstd),
            "jsonl" | "ndjson" | "json" => Some(Compression::None),
            _ => None,
        }
    }

    /// The format's name in pipeline files and reports: `gzip`, `zstd` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    /// The format named `name` (as [`name`](Self::name) gives it).
    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The usual extension of an object in this format (after `.jsonl` for the compressed
    /// ones).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::None => ".jsonl",
        }
    }

    /// The object's `Content-Type` when it is stored as a compressed file (the default):
    /// `application/gzip`, `application/zstd` (RFC 8878), `application/x-ndjson`.
    pub fn content_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/gzip",
            Compression::Zstd => "application/zstd",
            Compression::None => "application/x-ndjson",
        }
    }

    /// The HTTP `Content-Encoding` token of the format, for objects stored as encoded JSON
    /// Lines (`[sink] content_encoding = true`): `gzip`, `zstd`, none for plain JSON Lines.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }

    /// The levels `[sink] compression_level` may take: gzip 0–9, zstd 1–19; none has no
    /// level (only its default, 0).
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Compression::Gzip => 0..=9,
            Compression::Zstd => 1..=19,
            Compression::None => 0..=0,
        }
    }

    /// The level used when none is configured: gzip's own 6, zstd's own 3.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }

    /// The JSON Lines chunk the encoder hands the compressor, which compresses each one as a
    /// block: 256 KiB for gzip (the window carries matches across blocks, so blocks can be
    /// small), 1 MiB for zstd (each block is an independent frame: larger frames compress
    /// better, 0.66 × gzip -6's size at 1 MiB against 0.85 × at 256 KiB on the mock's
    /// records).
    pub fn chunk_bytes(self) -> usize {
        match self {
            Compression::Gzip | Compression::None => 256 * 1024,
            Compression::Zstd => 1024 * 1024,
        }
    }

    /// The least JSON Lines a chunk must hold to end at a page (a boundary checkpoints can
    /// cut parts at): a page end with less is not a boundary, and its lines go on in the
    /// chunk. 0 for gzip and plain JSON Lines, where a short block costs a few bytes; a
    /// quarter of a chunk for zstd, where every block is a frame, so that APIs with small
    /// pages do not make small frames.
    pub fn min_boundary_bytes(self) -> usize {
        match self {
            Compression::Gzip | Compression::None => 0,
            Compression::Zstd => self.chunk_bytes() / 4,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the compressor writes a format: the seam between its threads (which cut, order and
/// ship blocks) and the format's bytes. Modelled on gzp's `FormatSpec`.
///
/// The compressor writes [`header`](Self::header) once (not when it continues a stream
/// from a checkpoint), then each block's [`compress`](Self::compress)ed bytes in order,
/// then [`trailer`](Self::trailer). Workers compress blocks in parallel, one
/// [`Worker`](Self::Worker) each; a format that [`needs_window`](Self::needs_window) is
/// given the 32 KiB of input before each block. With [`crc32`](Self::crc32), the
/// compressor keeps the CRC-32 of the whole stream for the trailer. Every block end must be
/// a place where the stream can be continued by another compressor given the
/// [`super::MemberState`] there.
pub(crate) trait BlockFormat: Send + Sync + 'static {
    /// A worker thread's compression state, reused from block to block.
    type Worker: Send + 'static;

    /// A worker's state at `level`.
    fn worker(&self, level: i32) -> Result<Self::Worker, CompressError>;

    /// The bytes before the first block (none by default).
    fn header(&self) -> &'static [u8] {
        &[]
    }

    /// Whether blocks are compressed with the input before them (the window; not by
    /// default).
    fn needs_window(&self) -> bool {
        false
    }

    /// Whether the trailer needs the CRC-32 of the whole stream (not by default).
    fn crc32(&self) -> bool {
        false
    }

    /// Compresses `input` (with `window`, the input before it, when the format needs it),
    /// appending to `out`, which is empty.
    fn compress(
        worker: &mut Self::Worker,
        window: &[u8],
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError>;

    /// The bytes after the last block, given the stream's CRC-32 (when
    /// [`crc32`](Self::crc32)) and its length (none by default).
    fn trailer(&self, _crc: &crc32fast::Hasher, _bytes_in: u64) -> Vec<u8> {
        Vec::new()
    }
}

/// Uncompressed JSON Lines: blocks are copied as they are.
pub(crate) struct Plain;

impl BlockFormat for Plain {
    type Worker = ();

    fn worker(&self, _level: i32) -> Result<(), CompressError> {
        Ok(())
    }

    fn compress(
        _: &mut (),
        _window: &[u8],
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        out.extend_from_slice(input);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_key_extension() {
        let cases = [
            (
                "s3://b/x/date=2026-01-01/v.jsonl.gz",
                Some(Compression::Gzip),
            ),
            ("v.JSONL.GZ", Some(Compression::Gzip)),
            ("out/v.jsonl.zst", Some(Compression::Zstd)),
            ("out/v.ndjson.zstd", Some(Compression::Zstd)),
            ("out/v.jsonl", Some(Compression::None)),
            ("out/v.json", Some(Compression::None)),
            ("out/v.ndjson", Some(Compression::None)),
            ("out/v.csv", None),
            ("out/v", None),
            ("out.gz/v", None),
        ];
        for (key, format) in cases {
            assert_eq!(Compression::from_key(key), format, "{key}");
        }
        for c in Compression::ALL {
            assert_eq!(Compression::from_name(c.name()), Some(c));
            assert_eq!(
                Compression::from_key(&format!("x{}", c.extension())),
                Some(c)
            );
            assert!(c.levels().contains(&c.default_level()));
        }
    }
}
