//! `landline verify`: an object read back from its store and checked, in constant memory.
//!
//! The object is streamed once. Its bytes are counted and hashed (SHA-256) as they arrive,
//! and handed over a bounded channel to a blocking thread that reads them in the format
//! their first bytes show ([`Compression`]): gzip (`1f 8b`), zstd (a frame's `28 b5 2f fd`,
//! or a skippable frame's magic number), anything else uncompressed JSON Lines.
//!
//! - gzip is walked member by member: header, deflate data, trailer CRC-32 and length,
//!   checked here rather than trusted to a decoder that stops quietly at a truncation.
//! - zstd is walked frame by frame, each decoded by libzstd's streaming decoder (which checks
//!   the frame's content size and XXH64 checksum) and skippable frames skipped, so that a
//!   truncation, a corrupt frame or garbage after the last one is named by its frame and
//!   where that starts. The decoder's window is the frame's: a block's worth (about 1 MiB)
//!   for the frames landline writes.
//! - Plain JSON Lines go to the line checker as they are.
//!
//! Whatever the format, the JSON Lines are checked the same way: every line must be one JSON
//! object and end with a newline. Only the partial last line of a chunk is carried over,
//! bounded by [`VerifyOptions::max_line_bytes`]. An empty object is a problem in every
//! format.
//!
//! Bytes with no magic number are read as the format expected of the object (its manifest's,
//! else the one its URL's extension names) when that is gzip or zstd, so that a damaged
//! start, or JSON Lines stored as a `.gz`, is reported as "not a gzip member (it starts …)"
//! rather than as lines that do not parse.
//!
//! What was found is then compared with the run's [`Manifest`], when one is given: the
//! format (when the bytes show one the manifest does not say), size, SHA-256, records,
//! uncompressed bytes and, for gzip objects, gzip members. Every difference is a
//! [`Problem`]; any problem makes [`verify`] fail with [`VerifyError::Mismatch`], which
//! lists them all. Reading the manifest, and finding it, is the caller's job
//! ([`crate::manifest::read`], [`crate::pipeline::manifest_location`]).

use std::io::BufRead;

use bytes::{Buf as _, Bytes};
use flate2::{Decompress, FlushDecompress, Status};
use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use serde::Serialize;
use zstd::zstd_safe::{self, DCtx, InBuffer, OutBuffer};

use crate::compress::Compression;
use crate::manifest::Manifest;
use crate::sink::digest::StreamDigest;
use crate::sink::{Destination, StoreOptions};

/// Chunks of the object in flight between the reader and the decoding thread: a few of the
/// store's chunks, so memory stays bounded however large the object is.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The decoders' output buffer: the uncompressed bytes looked at in one go.
const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;

/// The first bytes of a gzip member (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The first bytes of a zstd frame (RFC 8878: 0xFD2FB528, little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A skippable zstd frame's magic number, its low 4 bits masked (0x184D2A50 to 0x184D2A5F).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// How to read and check an object.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The store's timeouts, retries and CA bundle.
    pub store: StoreOptions,
    /// The longest line accepted (its newline not counted): the partial line carried
    /// between chunks never grows past it. A pipeline's `max_record_bytes`.
    pub max_line_bytes: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            store: StoreOptions::default(),
            max_line_bytes: crate::config::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// What an object was found to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// The object's URL as given.
    pub location: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes (lowercase hex).
    pub sha256: String,
    /// The format it was read as: the one its first bytes show; when they show none, the
    /// one expected of it (its manifest's, else its URL extension's) if that is gzip or zstd,
    /// else uncompressed JSON Lines. For an empty object, the one expected, else `none`.
    pub compression: Compression,
    /// gzip members decoded (up to the first broken one, if one is); 0 for other formats.
    pub gzip_members: u64,
    /// zstd frames decoded (up to the first broken one, if one is), skippable frames not
    /// counted; 0 for other formats.
    pub zstd_frames: u64,
    /// Uncompressed (JSON Lines) bytes decoded.
    pub bytes_uncompressed: u64,
    /// Lines, the records (a partial last line not counted).
    pub records: u64,
    /// The widest line, its newline not counted.
    pub largest_record_bytes: u64,
    /// Whether a manifest was compared with.
    pub compared_with_manifest: bool,
}

/// One thing wrong with an object: in its container, in its lines, or against its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// The object's size is not the manifest's.
    #[error("size {found} != manifest {manifest}")]
    Size {
        /// Bytes read.
        found: u64,
        /// Bytes the manifest says.
        manifest: u64,
    },
    /// The object's SHA-256 is not the manifest's.
    #[error("sha256 {found} != manifest {manifest}")]
    Sha256 {
        /// Of the bytes read.
        found: String,
        /// The manifest's.
        manifest: String,
    },
    /// The line count is not the manifest's record count.
    #[error("{found} records (lines) != manifest {manifest}")]
    Records {
        /// Lines read.
        found: u64,
        /// Records the manifest says.
        manifest: u64,
    },
    /// The uncompressed size is not the manifest's.
    #[error("{found} uncompressed bytes != manifest {manifest}")]
    BytesUncompressed {
        /// Bytes decoded.
        found: u64,
        /// Bytes the manifest says.
        manifest: u64,
    },
    /// More (or fewer) gzip members than expected.
    #[error(
        "{found} gzip member{}, {} {expected}",
        if *found == 1 { "" } else { "s" },
        if *from_manifest { "the manifest says" } else { "expected" }
    )]
    GzipMembers {
        /// Members decoded.
        found: u64,
        /// Members expected: the manifest's, else 1.
        expected: u64,
        /// Whether `expected` is the manifest's.
        from_manifest: bool,
    },
    /// The manifest says its run wrote no object.
    #[error("the manifest records no object (its run had no records)")]
    NoObjectInManifest,
    /// The object's first bytes show a format other than the manifest's.
    #[error("compression {found} (by the object's first bytes) != manifest {manifest}")]
    Compression {
        /// The format the bytes show (`none`: no magic number, JSON Lines as they are).
        found: Compression,
        /// The manifest's.
        manifest: Compression,
    },
    /// An object expected to be uncompressed JSON Lines (or of no known format) has no
    /// bytes at all. (An empty gzip or zstd object is that container's fault.)
    #[error("the object is empty: no JSON Lines")]
    Empty,
    /// The gzip container is broken; decoding stopped here.
    #[error("gzip member {member} (byte {offset}): {fault}")]
    Gzip {
        /// The member, from 1.
        member: u64,
        /// The compressed byte where the fault was found.
        offset: u64,
        /// What is wrong.
        fault: GzipFault,
    },
    /// The zstd frames are broken; decoding stopped here.
    #[error("zstd frame {frame} (byte {offset}): {fault}")]
    Zstd {
        /// The frame, from 1, counting the frames that hold data (skippable frames are not
        /// counted).
        frame: u64,
        /// The compressed byte where the frame starts (where garbage starts, for garbage
        /// after the last frame).
        offset: u64,
        /// What is wrong.
        fault: ZstdFault,
    },
    /// The object's bytes could not be read on, whatever their format: decoding stopped.
    #[error("reading the object stopped at byte {offset}: {reason}")]
    Unreadable {
        /// The compressed byte reached.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// A line that is not a record: the first such line.
    #[error("line {line} (byte {offset}) {fault}{}", others(*bad_lines))]
    Line {
        /// The line, from 1.
        line: u64,
        /// The uncompressed byte where it starts.
        offset: u64,
        /// What is wrong with it.
        fault: LineFault,
        /// Bad lines in all.
        bad_lines: u64,
    },
}

fn others(bad_lines: u64) -> String {
    if bad_lines > 1 {
        format!(" ({bad_lines} bad lines in all)")
    } else {
        String::new()
    }
}

/// What is wrong with a gzip container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "fault", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GzipFault {
    /// No bytes at all.
    #[error("the object is empty: no gzip member")]
    Empty,
    /// The bytes do not start a gzip member.
    #[error("not a gzip member (it starts {found})")]
    NotGzip {
        /// The first bytes, in hex.
        found: String,
    },
    /// A header this reader does not take (a reserved flag, a method other than deflate).
    #[error("bad gzip header: {reason}")]
    BadHeader {
        /// Why.
        reason: String,
    },
    /// The object ends inside a member.
    #[error("truncated: the object ends inside the member's {part}")]
    Truncated {
        /// `header`, `compressed data` or `trailer`.
        part: &'static str,
    },
    /// The deflate data is corrupt.
    #[error("corrupt deflate data: {reason}")]
    Deflate {
        /// The decoder's message.
        reason: String,
    },
    /// The trailer's CRC-32 is not that of the data.
    #[error("trailer CRC mismatch: the trailer says {trailer:08x}, the data's is {data:08x}")]
    Crc {
        /// The trailer's.
        trailer: u32,
        /// The decoded data's.
        data: u32,
    },
    /// The trailer's length (ISIZE, modulo 2^32) is not that of the data.
    #[error("trailer length mismatch: the trailer says {trailer} bytes, the data has {data}")]
    Length {
        /// The trailer's.
        trailer: u32,
        /// The decoded data's, modulo 2^32.
        data: u32,
    },
}

/// What is wrong with a zstd object's frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "fault", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ZstdFault {
    /// No bytes at all.
    #[error("the object is empty: no zstd frame")]
    Empty,
    /// The bytes do not start a zstd frame (nor a skippable one).
    #[error("not a zstd frame (it starts {found})")]
    NotZstd {
        /// The first bytes, in hex.
        found: String,
    },
    /// Bytes after the last frame that do not start another.
    #[error("garbage after the last frame (it starts {found})")]
    TrailingGarbage {
        /// The garbage's first bytes, in hex.
        found: String,
    },
    /// The object ends inside a frame.
    #[error("truncated: the object ends inside the {part}")]
    Truncated {
        /// `magic number`, `frame` or `skippable frame`.
        part: &'static str,
    },
    /// The frame's XXH64 content checksum is not that of the data it decodes to.
    #[error("content checksum mismatch: the data decoded is not what was compressed")]
    Checksum,
    /// The decoder refused the frame: corrupt data, a content size that is not the data's,
    /// a header it does not take.
    #[error("corrupt frame: {reason}")]
    Corrupt {
        /// The decoder's message.
        reason: String,
    },
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "fault", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LineFault {
    /// It does not parse as JSON.
    #[error("is not JSON: {reason}")]
    NotJson {
        /// The parser's message.
        reason: String,
    },
    /// It is JSON but not an object.
    #[error("is not a JSON object")]
    NotObject,
    /// It is empty.
    #[error("is empty")]
    Empty,
    /// It is longer than the limit.
    #[error("is longer than {limit} bytes")]
    TooLong {
        /// [`VerifyOptions::max_line_bytes`].
        limit: usize,
    },
    /// The object ends without a newline after it.
    #[error("does not end with a newline (the object ends inside it)")]
    Unterminated,
}

/// An object that could not be read, or was read and is not what it should be.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The URL does not open a store.
    #[error("verify {location}: {reason}")]
    Open {
        /// The object's URL.
        location: String,
        /// Why.
        reason: String,
    },
    /// The store failed or has no such object.
    #[error("verify {location}: reading: {reason}")]
    Read {
        /// The object's URL.
        location: String,
        /// Why.
        reason: String,
    },
    /// The object was read and something is wrong with it.
    #[error(
        "verify {location}: {} difference{}: {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Mismatch {
        /// The object's URL.
        location: String,
        /// What was found.
        verified: Box<Verified>,
        /// Everything wrong, container and lines first.
        problems: Vec<Problem>,
    },
}

/// Reads the object at `url` (s3://, gs://, az://, file:// or a path; the store configured
/// from `env` as for a run) and checks its container and lines, and against `expected`, its
/// manifest, when given.
pub async fn verify(
    url: &str,
    options: &VerifyOptions,
    env: impl IntoIterator<Item = (String, String)>,
    expected: Option<&Manifest>,
) -> Result<Verified, VerifyError> {
    let at = Destination::open(url, &options.store, env).map_err(|e| VerifyError::Open {
        location: url.to_owned(),
        reason: e.to_string(),
    })?;
    let read_error = |e: object_store::Error| VerifyError::Read {
        location: url.to_owned(),
        reason: match e {
            object_store::Error::NotFound { .. } => "no such object".to_owned(),
            e => crate::errors::one_line(&e),
        },
    };
    let mut stream = at
        .store
        .get(&at.path)
        .await
        .map_err(read_error)?
        .into_stream();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let max_line_bytes = options.max_line_bytes;
    // The format expected, for bytes that show none: the manifest's, else the URL's.
    let expected_format = expected
        .and_then(|m| m.object.as_ref())
        .map(|facts| facts.compression)
        .or_else(|| Compression::from_key(url));
    let decoding = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            chunk: Bytes::new(),
        };
        decode_object(&mut reader, max_line_bytes, expected_format)
    });
    let mut size = 0u64;
    let mut digest = StreamDigest::default();
    let mut decoder = Some(tx);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(read_error)?;
        size += chunk.len() as u64;
        digest.update(&chunk);
        // A decoder that stopped (a broken container) takes no more; the rest is hashed.
        if let Some(tx) = &decoder
            && tx.send(chunk).await.is_err()
        {
            decoder = None;
        }
    }
    drop(decoder);
    let decoded = decoding.await.map_err(|e| VerifyError::Read {
        location: url.to_owned(),
        reason: format!("the decoding thread failed: {e}"),
    })?;
    let verified = Verified {
        location: url.to_owned(),
        size,
        sha256: digest.hex(),
        compression: decoded.compression,
        gzip_members: decoded.members,
        zstd_frames: decoded.frames,
        bytes_uncompressed: decoded.lines.offset,
        records: decoded.lines.records,
        largest_record_bytes: decoded.lines.largest,
        compared_with_manifest: expected.is_some(),
    };
    let problems = problems(&verified, &decoded, expected);
    if problems.is_empty() {
        Ok(verified)
    } else {
        Err(VerifyError::Mismatch {
            location: url.to_owned(),
            verified: Box::new(verified),
            problems,
        })
    }
}

/// Everything wrong: the container, the lines, then the manifest's figures. Counts are not
/// compared when the container is broken (decoding stopped early; the fault says so). gzip
/// members are compared for gzip objects only: with the manifest's count when it says gzip,
/// else with 1.
fn problems(verified: &Verified, decoded: &Decoded, expected: Option<&Manifest>) -> Vec<Problem> {
    let mut problems = Vec::new();
    problems.extend(decoded.fault.clone());
    problems.extend(
        decoded
            .lines
            .first_bad
            .clone()
            .map(|(line, offset, fault)| Problem::Line {
                line,
                offset,
                fault,
                bad_lines: decoded.lines.bad,
            }),
    );
    let broken = decoded.fault.is_some();
    let facts = match expected {
        Some(manifest) => match manifest.facts_of(&verified.location) {
            Some(facts) => Some((manifest, facts)),
            None => {
                problems.push(Problem::NoObjectInManifest);
                None
            }
        },
        None => None,
    };
    if let Some((_, facts)) = facts
        && facts.compression != verified.compression
    {
        problems.push(Problem::Compression {
            found: verified.compression,
            manifest: facts.compression,
        });
    }
    if verified.compression == Compression::Gzip {
        let (members, from_manifest) = match facts {
            Some((_, f)) if f.compression == Compression::Gzip => (f.gzip_members, true),
            _ => (1, false),
        };
        if !broken && verified.gzip_members != members {
            problems.push(Problem::GzipMembers {
                found: verified.gzip_members,
                expected: members,
                from_manifest,
            });
        }
    }
    let Some((manifest, facts)) = facts else {
        return problems;
    };
    if verified.size != facts.size {
        problems.push(Problem::Size {
            found: verified.size,
            manifest: facts.size,
        });
    }
    if let Some(sha256) = &facts.sha256
        && !sha256.eq_ignore_ascii_case(&verified.sha256)
    {
        problems.push(Problem::Sha256 {
            found: verified.sha256.clone(),
            manifest: sha256.clone(),
        });
    }
    if !broken {
        let records = facts.records.unwrap_or(manifest.records);
        if verified.records != records {
            problems.push(Problem::Records {
                found: verified.records,
                manifest: records,
            });
        }
        let bytes = facts
            .bytes_uncompressed
            .unwrap_or(manifest.bytes_uncompressed);
        if verified.bytes_uncompressed != bytes {
            problems.push(Problem::BytesUncompressed {
                found: verified.bytes_uncompressed,
                manifest: bytes,
            });
        }
    }
    problems
}

/// The object's chunks as a [`BufRead`], on the decoding thread; the end of the channel is
/// the end of the object.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => break,
            }
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, amt: usize) {
        self.chunk.advance(amt);
    }
}

/// What decoding found.
#[derive(Debug)]
struct Decoded {
    /// The format the object was read as.
    compression: Compression,
    /// gzip members decoded whole.
    members: u64,
    /// zstd frames (with data) decoded whole.
    frames: u64,
    /// The first fault of the container; decoding stopped there.
    fault: Option<Problem>,
    lines: Lines,
}

/// A [`BufRead`] that counts the bytes consumed: the compressed offset of a fault.
struct Counted<'a, R> {
    inner: &'a mut R,
    consumed: u64,
}

impl<R: BufRead> Counted<'_, R> {
    fn fill_raw(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn fill(&mut self) -> Result<&[u8], GzipFault> {
        self.fill_raw().map_err(|e| GzipFault::Deflate {
            reason: format!("reading: {e}"),
        })
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.consumed += n as u64;
    }

    /// `N` bytes, or `Truncated` in `part`.
    fn take<const N: usize>(&mut self, part: &'static str) -> Result<[u8; N], GzipFault> {
        match self.take_up_to::<N>()? {
            (out, got) if got == N => Ok(out),
            _ => Err(GzipFault::Truncated { part }),
        }
    }

    /// Up to `N` bytes (fewer at the end), and how many.
    fn take_up_to<const N: usize>(&mut self) -> Result<([u8; N], usize), GzipFault> {
        self.take_up_to_raw().map_err(|e| GzipFault::Deflate {
            reason: format!("reading: {e}"),
        })
    }

    /// Up to `N` bytes (fewer at the end), and how many; a reading error as it is.
    fn take_up_to_raw<const N: usize>(&mut self) -> std::io::Result<([u8; N], usize)> {
        let mut out = [0u8; N];
        let mut got = 0;
        while got < N {
            let available = self.fill_raw()?;
            if available.is_empty() {
                break;
            }
            let n = available.len().min(N - got);
            out[got..got + n].copy_from_slice(&available[..n]);
            self.consume(n);
            got += n;
        }
        Ok((out, got))
    }

    /// Skips a zero-terminated header field.
    fn skip_zero_terminated(&mut self) -> Result<(), GzipFault> {
        loop {
            let available = self.fill()?;
            if available.is_empty() {
                return Err(GzipFault::Truncated { part: "header" });
            }
            match memchr::memchr(0, available) {
                Some(at) => {
                    self.consume(at + 1);
                    return Ok(());
                }
                None => {
                    let n = available.len();
                    self.consume(n);
                }
            }
        }
    }
}

/// Up to the first 4 of `bytes` in hex, spaced: `7b 22 69 64`.
fn hex_start(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The format an object's `first` bytes show (up to 4; fewer only when the object is that
/// short, and then a start of a magic number counts as it, so that a truncated object is
/// read as its container): gzip, zstd, else uncompressed JSON Lines.
fn detect(first: &[u8]) -> Compression {
    let starts = |magic: &[u8]| {
        !first.is_empty()
            && if first.len() >= magic.len() {
                first.starts_with(magic)
            } else {
                magic.starts_with(first)
            }
    };
    let skippable = <[u8; 4]>::try_from(first)
        .is_ok_and(|word| u32::from_le_bytes(word) & !0xf == SKIPPABLE_MAGIC);
    if starts(&GZIP_MAGIC) {
        Compression::Gzip
    } else if starts(&ZSTD_MAGIC) || skippable {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Reads `reader` in the format its first bytes show ([`detect`]), or in `expected` when
/// they show none and that is gzip or zstd, and checks the lines it holds. An empty object
/// is a fault of the `expected` format's (gzip's, zstd's, else [`Problem::Empty`]).
fn decode_object(
    reader: &mut impl BufRead,
    max_line_bytes: usize,
    expected: Option<Compression>,
) -> Decoded {
    let taken = Counted {
        inner: reader,
        consumed: 0,
    }
    .take_up_to_raw::<4>();
    let (first, got) = match taken {
        Ok(taken) => taken,
        Err(e) => {
            return Decoded::stopped(
                expected.unwrap_or(Compression::None),
                Problem::Unreadable {
                    offset: 0,
                    reason: e.to_string(),
                },
                max_line_bytes,
            );
        }
    };
    if got == 0 {
        let compression = expected.unwrap_or(Compression::None);
        let fault = match compression {
            Compression::Gzip => Problem::Gzip {
                member: 1,
                offset: 0,
                fault: GzipFault::Empty,
            },
            Compression::Zstd => Problem::Zstd {
                frame: 1,
                offset: 0,
                fault: ZstdFault::Empty,
            },
            Compression::None => Problem::Empty,
        };
        return Decoded::stopped(compression, fault, max_line_bytes);
    }
    // The bytes looked at go first again.
    let mut reader = std::io::Read::chain(&first[..got], reader);
    let format = match (detect(&first[..got]), expected) {
        (Compression::None, Some(container @ (Compression::Gzip | Compression::Zstd))) => container,
        (found, _) => found,
    };
    match format {
        Compression::Gzip => decode(&mut reader, max_line_bytes),
        Compression::Zstd => decode_zstd(&mut reader, max_line_bytes),
        Compression::None => decode_plain(&mut reader, max_line_bytes),
    }
}

impl Decoded {
    /// Decoding in `compression` that stopped before it began.
    fn stopped(compression: Compression, fault: Problem, max_line_bytes: usize) -> Self {
        Decoded {
            compression,
            members: 0,
            frames: 0,
            fault: Some(fault),
            lines: Lines::new(max_line_bytes),
        }
    }
}

/// Checks the lines of uncompressed JSON Lines.
fn decode_plain(reader: &mut impl BufRead, max_line_bytes: usize) -> Decoded {
    let mut input = Counted {
        inner: reader,
        consumed: 0,
    };
    let mut lines = Lines::new(max_line_bytes);
    let fault = loop {
        match input.fill_raw() {
            Ok([]) => break None,
            Ok(available) => {
                lines.feed(available);
                let n = available.len();
                input.consume(n);
            }
            Err(e) => {
                break Some(Problem::Unreadable {
                    offset: input.consumed,
                    reason: e.to_string(),
                });
            }
        }
    };
    if fault.is_none() {
        lines.finish();
    }
    Decoded {
        compression: Compression::None,
        members: 0,
        frames: 0,
        fault,
        lines,
    }
}

/// Why reading a zstd frame stopped.
enum ZstdStop {
    /// The frames are broken.
    Fault(ZstdFault),
    /// The bytes could not be read.
    Read(std::io::Error),
}

impl From<ZstdFault> for ZstdStop {
    fn from(fault: ZstdFault) -> Self {
        ZstdStop::Fault(fault)
    }
}

impl From<std::io::Error> for ZstdStop {
    fn from(e: std::io::Error) -> Self {
        ZstdStop::Read(e)
    }
}

/// What was read of a zstd object at a frame boundary.
enum ZstdFrame {
    /// A frame with data, decoded whole.
    Data,
    /// A skippable frame, skipped.
    Skippable,
    /// The end of the object.
    End,
}

/// Walks the zstd frames of `reader` and checks the lines they hold.
fn decode_zstd(reader: &mut impl BufRead, max_line_bytes: usize) -> Decoded {
    let mut input = Counted {
        inner: reader,
        consumed: 0,
    };
    let mut lines = Lines::new(max_line_bytes);
    let mut frames = 0u64;
    let mut out = vec![0u8; OUTPUT_BUFFER_BYTES];
    let fault = match DCtx::try_create() {
        None => Some(Problem::Unreadable {
            offset: 0,
            reason: "no memory for a zstd decoder".to_owned(),
        }),
        Some(mut dctx) => loop {
            let start = input.consumed;
            match zstd_frame(&mut dctx, &mut input, &mut lines, &mut out) {
                Ok(ZstdFrame::Data) => frames += 1,
                Ok(ZstdFrame::Skippable) => {}
                Ok(ZstdFrame::End) if start == 0 => {
                    break Some(Problem::Zstd {
                        frame: 1,
                        offset: 0,
                        fault: ZstdFault::Empty,
                    });
                }
                Ok(ZstdFrame::End) => break None,
                Err(ZstdStop::Fault(fault)) => {
                    break Some(Problem::Zstd {
                        frame: frames + 1,
                        offset: start,
                        fault,
                    });
                }
                Err(ZstdStop::Read(e)) => {
                    break Some(Problem::Unreadable {
                        offset: input.consumed,
                        reason: e.to_string(),
                    });
                }
            }
        },
    };
    if fault.is_none() {
        lines.finish();
    }
    Decoded {
        compression: Compression::Zstd,
        members: 0,
        frames,
        fault,
        lines,
    }
}

/// Reads one frame at `input`: decodes a zstd frame (its output into `lines`), skips a
/// skippable one, or finds the end of the object.
fn zstd_frame<R: BufRead>(
    dctx: &mut DCtx<'_>,
    input: &mut Counted<'_, R>,
    lines: &mut Lines,
    out: &mut [u8],
) -> Result<ZstdFrame, ZstdStop> {
    let start = input.consumed;
    let (magic, got) = input.take_up_to_raw::<4>()?;
    let found = &magic[..got];
    if got == 0 {
        return Ok(ZstdFrame::End);
    }
    if found == ZSTD_MAGIC {
        return zstd_data_frame(dctx, input, found, lines, out).map(|()| ZstdFrame::Data);
    }
    if detect(found) == Compression::Zstd {
        // A skippable frame, or the start of a magic number the object ends in.
        if got < 4 {
            return Err(ZstdFault::Truncated {
                part: "magic number",
            }
            .into());
        }
        let truncated = ZstdFault::Truncated {
            part: "skippable frame",
        };
        let (size, got) = input.take_up_to_raw::<4>()?;
        if got < 4 {
            return Err(truncated.into());
        }
        let mut left = u64::from(u32::from_le_bytes(size));
        while left > 0 {
            let available = input.fill_raw()?.len();
            if available == 0 {
                return Err(truncated.into());
            }
            let n = usize::try_from(left).map_or(available, |left| left.min(available));
            input.consume(n);
            left -= n as u64;
        }
        return Ok(ZstdFrame::Skippable);
    }
    let found = hex_start(found);
    Err(if start == 0 {
        ZstdFault::NotZstd { found }
    } else {
        ZstdFault::TrailingGarbage { found }
    }
    .into())
}

/// Decodes the zstd frame at `input`, its magic number (`magic`) already read, into `lines`.
fn zstd_data_frame<R: BufRead>(
    dctx: &mut DCtx<'_>,
    input: &mut Counted<'_, R>,
    magic: &[u8],
    lines: &mut Lines,
    out: &mut [u8],
) -> Result<(), ZstdStop> {
    // The magic number goes to the decoder first, then the object's bytes.
    let mut ahead = magic;
    loop {
        let from_ahead = !ahead.is_empty();
        let available = if from_ahead { ahead } else { input.fill_raw()? };
        let at_end = available.is_empty();
        let mut src = InBuffer::around(available);
        let mut dst = OutBuffer::around(&mut *out);
        let left = dctx
            .decompress_stream(&mut dst, &mut src)
            .map_err(zstd_fault)?;
        let (consumed, produced) = (src.pos(), dst.pos());
        if from_ahead {
            ahead = &ahead[consumed..];
        } else {
            input.consume(consumed);
        }
        lines.feed(&out[..produced]);
        // 0: the frame is decoded, checked and flushed; the decoder stops at its end.
        if left == 0 {
            return Ok(());
        }
        if at_end && produced == 0 {
            return Err(ZstdFault::Truncated { part: "frame" }.into());
        }
        if consumed == 0 && produced == 0 {
            return Err(ZstdFault::Corrupt {
                reason: "the decoder is stuck".to_owned(),
            }
            .into());
        }
    }
}

/// The fault a zstd error code names.
fn zstd_fault(code: zstd_safe::ErrorCode) -> ZstdFault {
    if zstd_safe::is_error_kind(
        code,
        zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_checksum_wrong,
    ) {
        ZstdFault::Checksum
    } else {
        ZstdFault::Corrupt {
            reason: zstd_safe::get_error_name(code).to_owned(),
        }
    }
}

/// Walks the gzip members of `reader` and checks the lines they hold.
fn decode(reader: &mut impl BufRead, max_line_bytes: usize) -> Decoded {
    let mut input = Counted {
        inner: reader,
        consumed: 0,
    };
    let mut lines = Lines::new(max_line_bytes);
    let mut members = 0u64;
    let mut out = vec![0u8; OUTPUT_BUFFER_BYTES];
    let fault = loop {
        let start = input.consumed;
        match input.fill() {
            Ok([]) if members == 0 => break Some((start, GzipFault::Empty)),
            Ok([]) => break None,
            Ok(_) => {}
            Err(fault) => break Some((start, fault)),
        }
        if let Err(fault) = member(&mut input, &mut lines, &mut out) {
            let in_header = matches!(
                fault,
                GzipFault::NotGzip { .. }
                    | GzipFault::BadHeader { .. }
                    | GzipFault::Truncated { part: "header" }
            );
            break Some((if in_header { start } else { input.consumed }, fault));
        }
        members += 1;
    };
    let fault = match fault {
        Some((offset, fault)) => Some(Problem::Gzip {
            member: members + 1,
            offset,
            fault,
        }),
        None => {
            lines.finish();
            None
        }
    };
    Decoded {
        compression: Compression::Gzip,
        members,
        frames: 0,
        fault,
        lines,
    }
}

/// Decodes one member: header, deflate data (its output into `lines`), trailer.
fn member<R: BufRead>(
    input: &mut Counted<'_, R>,
    lines: &mut Lines,
    out: &mut [u8],
) -> Result<(), GzipFault> {
    header(input)?;
    let mut inflate = Decompress::new(false);
    let mut crc = crc32fast::Hasher::new();
    let mut length = 0u64;
    loop {
        let available = input.fill()?;
        let at_end = available.is_empty();
        let (in_before, out_before) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress(available, out, FlushDecompress::None)
            .map_err(|e| GzipFault::Deflate {
                reason: e.to_string(),
            })?;
        let consumed = (inflate.total_in() - in_before) as usize;
        let produced = (inflate.total_out() - out_before) as usize;
        input.consume(consumed);
        crc.update(&out[..produced]);
        length += produced as u64;
        lines.feed(&out[..produced]);
        if status == Status::StreamEnd {
            break;
        }
        if at_end && produced == 0 {
            return Err(GzipFault::Truncated {
                part: "compressed data",
            });
        }
        if consumed == 0 && produced == 0 {
            return Err(GzipFault::Deflate {
                reason: format!("the decoder is stuck ({status:?})"),
            });
        }
    }
    let trailer = input.take::<8>("trailer")?;
    let [c0, c1, c2, c3, l0, l1, l2, l3] = trailer;
    let (trailer_crc, data_crc) = (u32::from_le_bytes([c0, c1, c2, c3]), crc.finalize());
    if trailer_crc != data_crc {
        return Err(GzipFault::Crc {
            trailer: trailer_crc,
            data: data_crc,
        });
    }
    let (trailer_len, data_len) = (u32::from_le_bytes([l0, l1, l2, l3]), length as u32);
    if trailer_len != data_len {
        return Err(GzipFault::Length {
            trailer: trailer_len,
            data: data_len,
        });
    }
    Ok(())
}

/// A member's header (RFC 1952 §2.3), skipped after checking it is one.
fn header<R: BufRead>(input: &mut Counted<'_, R>) -> Result<(), GzipFault> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    let (fixed, got) = input.take_up_to::<10>()?;
    if got >= 1 && fixed[0] != GZIP_MAGIC[0] || got >= 2 && fixed[1] != GZIP_MAGIC[1] {
        return Err(GzipFault::NotGzip {
            found: hex_start(&fixed[..got]),
        });
    }
    if got < 10 {
        return Err(GzipFault::Truncated { part: "header" });
    }
    let (method, flags) = (fixed[2], fixed[3]);
    if method != 8 {
        return Err(GzipFault::BadHeader {
            reason: format!("compression method {method}, not deflate (8)"),
        });
    }
    if flags & 0xe0 != 0 {
        return Err(GzipFault::BadHeader {
            reason: format!("reserved flags set ({flags:#04x})"),
        });
    }
    if flags & FEXTRA != 0 {
        let extra = u16::from_le_bytes(input.take::<2>("header")?);
        for _ in 0..extra {
            input.take::<1>("header")?;
        }
    }
    if flags & FNAME != 0 {
        input.skip_zero_terminated()?;
    }
    if flags & FCOMMENT != 0 {
        input.skip_zero_terminated()?;
    }
    if flags & FHCRC != 0 {
        input.take::<2>("header")?;
    }
    Ok(())
}

/// Splits uncompressed bytes into lines and checks each, carrying only the partial last line.
#[derive(Debug)]
struct Lines {
    max_line_bytes: usize,
    /// The start of the line not yet ended, when it began in an earlier chunk.
    partial: Vec<u8>,
    /// The line not yet ended is too long: its bytes are skipped to its newline.
    overlong: bool,
    /// Lines ended.
    records: u64,
    /// Bytes seen: the offset of the next byte.
    offset: u64,
    /// The offset where the line not yet ended starts.
    line_start: u64,
    largest: u64,
    bad: u64,
    first_bad: Option<(u64, u64, LineFault)>,
}

impl Lines {
    fn new(max_line_bytes: usize) -> Self {
        Lines {
            max_line_bytes,
            partial: Vec::new(),
            overlong: false,
            records: 0,
            offset: 0,
            line_start: 0,
            largest: 0,
            bad: 0,
            first_bad: None,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(at) = memchr::memchr(b'\n', bytes) {
            let (line, rest) = (&bytes[..at], &bytes[at + 1..]);
            let width = self.partial.len() + line.len();
            if self.overlong || width > self.max_line_bytes {
                self.fault(LineFault::TooLong {
                    limit: self.max_line_bytes,
                });
            } else if self.partial.is_empty() {
                self.check(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.check(&whole);
                // Keeps the allocation for the next long line.
                whole.clear();
                self.partial = whole;
            }
            if !self.overlong {
                self.largest = self.largest.max(width as u64);
            }
            self.offset += at as u64 + 1;
            self.records += 1;
            self.line_start = self.offset;
            self.overlong = false;
            bytes = rest;
        }
        self.offset += bytes.len() as u64;
        if !self.overlong {
            if self.partial.len() + bytes.len() > self.max_line_bytes {
                self.overlong = true;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(bytes);
            }
        }
    }

    fn check(&mut self, line: &[u8]) {
        match line.first() {
            None => self.fault(LineFault::Empty),
            Some(b'{') => {
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                    self.fault(LineFault::NotJson {
                        reason: e.to_string(),
                    });
                }
            }
            Some(_) => match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                Ok(_) => self.fault(LineFault::NotObject),
                Err(e) => self.fault(LineFault::NotJson {
                    reason: e.to_string(),
                }),
            },
        }
    }

    fn fault(&mut self, fault: LineFault) {
        self.bad += 1;
        if self.first_bad.is_none() {
            self.first_bad = Some((self.records + 1, self.line_start, fault));
        }
    }

    /// The end of the data: a line not ended is a fault.
    fn finish(&mut self) {
        if self.overlong || !self.partial.is_empty() {
            self.fault(LineFault::Unterminated);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;

    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::manifest::ObjectFacts;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn jsonl(records: usize) -> Vec<u8> {
        (0..records)
            .flat_map(|i| {
                format!(
                    "{{\"id\":{i},\"name\":\"record {i}\",\"pad\":\"{}\"}}\n",
                    "x".repeat(i % 97)
                )
                .into_bytes()
            })
            .collect()
    }

    /// `data` as zstd frames of `block` bytes each (with their content size and checksum, as
    /// landline writes them), and where each frame starts.
    fn zstd_frames(data: &[u8], block: usize) -> (Vec<u8>, Vec<usize>) {
        let mut zstd = zstd::bulk::Compressor::new(3).unwrap();
        zstd.include_checksum(true).unwrap();
        zstd.include_contentsize(true).unwrap();
        let (mut object, mut starts) = (Vec::new(), Vec::new());
        for piece in data.chunks(block) {
            starts.push(object.len());
            object.extend(zstd.compress(piece).unwrap());
        }
        (object, starts)
    }

    /// A skippable zstd frame holding `payload`.
    fn skippable(payload: &[u8]) -> Vec<u8> {
        let size = u32::try_from(payload.len()).unwrap().to_le_bytes();
        [&[0x53, 0x2a, 0x4d, 0x18][..], &size, payload].concat()
    }

    fn manifest_of(object: &[u8], jsonl: &[u8]) -> Manifest {
        manifest_in(Compression::Gzip, object, jsonl)
    }

    /// The manifest of `object`, in `compression`, holding `jsonl`.
    fn manifest_in(compression: Compression, object: &[u8], jsonl: &[u8]) -> Manifest {
        let records = jsonl.iter().filter(|&&b| b == b'\n').count() as u64;
        Manifest {
            format: crate::manifest::FORMAT.into(),
            pipeline: "p".into(),
            ingest_date: "2026-01-01".into(),
            ingest_ts: "2026-01-01T00:00:00.000Z".into(),
            vars: BTreeMap::new(),
            landline_version: env!("CARGO_PKG_VERSION").into(),
            object: Some(ObjectFacts {
                url: "x".into(),
                size: object.len() as u64,
                e_tag: None,
                sha256: Some(crate::sink::digest::hex(&Sha256::digest(object))),
                parts: 1,
                compression,
                gzip_members: u64::from(compression == Compression::Gzip),
                records: None,
                bytes_uncompressed: None,
            }),
            objects: Vec::new(),
            records,
            bytes_uncompressed: jsonl.len() as u64,
            average_record_bytes: 0.0,
            largest_record_bytes: 0,
            fields: None,
            drift: None,
            report: serde_json::json!({}),
            written_at: chrono::Utc::now(),
        }
    }

    /// `object` written to a temporary file (a `.jsonl.gz`) and verified against `manifest`.
    async fn verify_bytes(
        object: &[u8],
        manifest: Option<&Manifest>,
    ) -> Result<Verified, VerifyError> {
        verify_named("o.jsonl.gz", object, manifest).await
    }

    /// `object` written to a temporary file called `name` and verified against `manifest`.
    async fn verify_named(
        name: &str,
        object: &[u8],
        manifest: Option<&Manifest>,
    ) -> Result<Verified, VerifyError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, object).unwrap();
        verify(
            &path.to_string_lossy(),
            &VerifyOptions::default(),
            Vec::new(),
            manifest,
        )
        .await
    }

    fn problems_of(result: Result<Verified, VerifyError>) -> (Verified, Vec<Problem>, String) {
        match result {
            Err(e @ VerifyError::Mismatch { .. }) => {
                let text = e.to_string();
                let VerifyError::Mismatch {
                    verified, problems, ..
                } = e
                else {
                    unreachable!()
                };
                (*verified, problems, text)
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_good_object_matches_its_manifest() {
        let lines = jsonl(5_000);
        let object = gzip(&lines);
        let manifest = manifest_of(&object, &lines);
        let verified = verify_bytes(&object, Some(&manifest)).await.unwrap();
        assert_eq!(verified.records, 5_000);
        assert_eq!(verified.gzip_members, 1);
        assert_eq!(verified.size, object.len() as u64);
        assert_eq!(verified.bytes_uncompressed, lines.len() as u64);
        assert_eq!(
            Some(verified.sha256.as_str()),
            manifest.object.as_ref().unwrap().sha256.as_deref()
        );
        let widest = lines.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap();
        assert_eq!(verified.largest_record_bytes, widest as u64);
        assert!(verified.compared_with_manifest);
        // Without a manifest: the container and the lines only.
        let alone = verify_bytes(&object, None).await.unwrap();
        assert!(!alone.compared_with_manifest);
    }

    #[tokio::test]
    async fn a_truncated_object_says_where_it_ends() {
        let lines = jsonl(3_000);
        let object = gzip(&lines);
        let manifest = manifest_of(&object, &lines);
        for (cut, part) in [
            (object.len() - 3, "trailer"),
            (object.len() / 2, "compressed data"),
            (5, "header"),
        ] {
            let (found, problems, text) =
                problems_of(verify_bytes(&object[..cut], Some(&manifest)).await);
            assert!(
                matches!(&problems[0], Problem::Gzip { member: 1, fault: GzipFault::Truncated { part: p }, .. } if *p == part),
                "{cut}: {problems:?}"
            );
            assert!(
                text.contains(&format!("size {cut} != manifest {}", object.len())),
                "{text}"
            );
            assert!(text.contains("sha256 "), "{text}");
            assert_eq!(found.size, cut as u64);
            // Counts are not compared once decoding stopped.
            assert!(!text.contains("records (lines)"), "{text}");
        }
        let (_, problems, _) = problems_of(verify_bytes(&[], None).await);
        assert!(matches!(
            problems[..],
            [Problem::Gzip {
                fault: GzipFault::Empty,
                ..
            }]
        ));
        let (_, problems, text) = problems_of(verify_bytes(&lines, None).await);
        assert!(
            matches!(
                problems[..],
                [Problem::Gzip {
                    fault: GzipFault::NotGzip { .. },
                    ..
                }]
            ),
            "{text}"
        );
        assert!(text.contains("it starts 7b 22"), "{text}");
    }

    #[tokio::test]
    async fn a_flipped_byte_is_a_deflate_or_crc_error() {
        let lines = jsonl(3_000);
        let object = gzip(&lines);
        let mut flipped = object.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x5a;
        let (_, problems, text) = problems_of(verify_bytes(&flipped, None).await);
        assert!(
            matches!(
                &problems[0],
                Problem::Gzip {
                    fault: GzipFault::Deflate { .. } | GzipFault::Crc { .. },
                    ..
                }
            ),
            "{text}"
        );
        // The trailer's own CRC and length, flipped.
        let mut bad_crc = object.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        let (_, problems, text) = problems_of(verify_bytes(&bad_crc, None).await);
        assert!(
            matches!(
                problems[..],
                [Problem::Gzip {
                    fault: GzipFault::Crc { .. },
                    ..
                }]
            ),
            "{text}"
        );
        assert!(text.contains("trailer CRC mismatch"), "{text}");
        let mut bad_len = object;
        let at = bad_len.len() - 1;
        bad_len[at] ^= 1;
        let (_, _, text) = problems_of(verify_bytes(&bad_len, None).await);
        assert!(text.contains("trailer length mismatch"), "{text}");
    }

    #[tokio::test]
    async fn members_are_counted_and_compared() {
        let (a, b) = (jsonl(100), jsonl(50));
        let mut object = gzip(&a);
        object.extend(gzip(&b));
        let (found, _, text) = problems_of(verify_bytes(&object, None).await);
        assert_eq!(found.gzip_members, 2);
        assert_eq!(found.records, 150);
        assert!(text.contains("2 gzip members, expected 1"), "{text}");
        let lines = [a, b].concat();
        let mut manifest = manifest_of(&object, &lines);
        let (_, _, text) = problems_of(verify_bytes(&object, Some(&manifest)).await);
        assert!(
            text.contains("2 gzip members, the manifest says 1"),
            "{text}"
        );
        manifest.object.as_mut().unwrap().gzip_members = 2;
        let verified = verify_bytes(&object, Some(&manifest)).await.unwrap();
        assert_eq!(verified.records, 150);
        // Garbage after the last member.
        object.extend_from_slice(b"junk");
        let (_, _, text) = problems_of(verify_bytes(&object, Some(&manifest)).await);
        assert!(text.contains("gzip member 3"), "{text}");
        assert!(text.contains("not a gzip member"), "{text}");
    }

    #[tokio::test]
    async fn bad_lines_give_their_number_and_offset() {
        let good = jsonl(10);
        let first_line = good.iter().position(|&b| b == b'\n').unwrap() + 1;
        let (head, tail) = good.split_at(first_line);
        let cases: [(Vec<u8>, u64, usize, &str); 5] = [
            (
                [head, b"{\"a\":1,}\n", tail].concat(),
                2,
                first_line,
                "is not JSON",
            ),
            (
                [head, b"[1,2]\n", tail].concat(),
                2,
                first_line,
                "is not a JSON object",
            ),
            ([head, b"\n", tail].concat(), 2, first_line, "is empty"),
            (
                [head, b"{\"a\":1}{}\n", tail].concat(),
                2,
                first_line,
                "is not JSON",
            ),
            (
                [&good[..], b"{\"a\":1}"].concat(),
                11,
                good.len(),
                "does not end with a newline",
            ),
        ];
        for (lines, line, at, says) in cases {
            let (_, problems, text) = problems_of(verify_bytes(&gzip(&lines), None).await);
            assert_eq!(problems.len(), 1, "{text}");
            assert!(
                text.contains(&format!("line {line} (byte {at}) {says}")),
                "{text}"
            );
        }
        // The first bad line, and how many in all.
        let lines = [&b"[]\n"[..], &good, b"nope\n"].concat();
        let (found, _, text) = problems_of(verify_bytes(&gzip(&lines), None).await);
        assert!(
            text.contains("line 1 (byte 0) is not a JSON object (2 bad lines in all)"),
            "{text}"
        );
        assert_eq!(found.records, 12);
    }

    #[test]
    fn lines_split_across_chunks_and_long_lines_stay_bounded() {
        let text = jsonl(200);
        for chunk in [1, 7, 64, 4096] {
            let mut lines = Lines::new(1_000);
            for piece in text.chunks(chunk) {
                lines.feed(piece);
            }
            lines.finish();
            assert_eq!(lines.records, 200, "chunk {chunk}");
            assert!(lines.first_bad.is_none(), "{:?}", lines.first_bad);
            assert_eq!(lines.offset, text.len() as u64);
        }
        let long = [&b"{\"a\":\""[..], &vec![b'x'; 5_000], b"\"}\n{}\n"].concat();
        let mut lines = Lines::new(1_000);
        for piece in long.chunks(300) {
            lines.feed(piece);
            assert!(lines.partial.len() <= 1_000);
        }
        lines.finish();
        assert_eq!(lines.records, 2);
        assert_eq!(
            lines.first_bad,
            Some((1, 0, LineFault::TooLong { limit: 1_000 }))
        );
        assert_eq!(lines.bad, 1);
    }

    #[tokio::test]
    async fn figures_that_differ_from_the_manifest_are_named() {
        let lines = jsonl(400);
        let object = gzip(&lines);
        let mut manifest = manifest_of(&object, &lines);
        manifest.records = 401;
        manifest.bytes_uncompressed += 1;
        let facts = manifest.object.as_mut().unwrap();
        facts.size += 10;
        facts.sha256 = Some("00".repeat(32));
        let (_, problems, text) = problems_of(verify_bytes(&object, Some(&manifest)).await);
        assert_eq!(problems.len(), 4, "{text}");
        assert!(text.contains("4 differences"), "{text}");
        assert!(
            text.contains(&format!(
                "size {} != manifest {}",
                object.len(),
                object.len() + 10
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("!= manifest {}", "00".repeat(32))),
            "{text}"
        );
        assert!(
            text.contains("400 records (lines) != manifest 401"),
            "{text}"
        );
        assert!(text.contains("uncompressed bytes != manifest"), "{text}");
        // A manifest without the hash (a resumed run's, from an older landline) is not a mismatch.
        let mut manifest = manifest_of(&object, &lines);
        manifest.object.as_mut().unwrap().sha256 = None;
        verify_bytes(&object, Some(&manifest)).await.unwrap();
        manifest.object = None;
        let (_, problems, _) = problems_of(verify_bytes(&object, Some(&manifest)).await);
        assert_eq!(problems, [Problem::NoObjectInManifest]);
    }

    #[tokio::test]
    async fn a_missing_object_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.jsonl.gz");
        let e = verify(
            &path.to_string_lossy(),
            &VerifyOptions::default(),
            Vec::new(),
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, VerifyError::Read { .. }), "{e}");
        assert!(e.to_string().contains("no such object"), "{e}");
    }

    #[test]
    fn headers_with_optional_fields_are_skipped() {
        let data = jsonl(3);
        let mut gz = flate2::GzBuilder::new()
            .filename("v.jsonl")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let object = gz.finish().unwrap();
        let decoded = decode(&mut &object[..], 1 << 20);
        assert!(decoded.fault.is_none(), "{:?}", decoded.fault);
        assert_eq!((decoded.members, decoded.lines.records), (1, 3));
    }

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        let cases: [(&[u8], Compression); 11] = [
            (&[0x1f, 0x8b, 0x08, 0x00], Compression::Gzip),
            (&[0x1f, 0x8b], Compression::Gzip),
            // A whole object that short: the start of a magic number, a truncated container.
            (&[0x1f], Compression::Gzip),
            (&ZSTD_MAGIC, Compression::Zstd),
            (&[0x28, 0xb5], Compression::Zstd),
            (b"(", Compression::Zstd),
            (&[0x5f, 0x2a, 0x4d, 0x18], Compression::Zstd),
            (b"{\"a\"", Compression::None),
            (b"{", Compression::None),
            (&[0x1f, 0x00], Compression::None),
            (&[0x28, 0xb5, 0x2f, 0x00], Compression::None),
        ];
        for (first, format) in cases {
            assert_eq!(detect(first), format, "{first:02x?}");
        }
    }

    #[tokio::test]
    async fn a_good_zstd_object_of_several_frames_matches_its_manifest() {
        let lines = jsonl(5_000);
        let (object, starts) = zstd_frames(&lines, 64 * 1024);
        assert!(starts.len() > 3, "{}", starts.len());
        let manifest = manifest_in(Compression::Zstd, &object, &lines);
        for name in ["o.jsonl.zst", "o.jsonl.gz", "o"] {
            let verified = verify_named(name, &object, Some(&manifest)).await.unwrap();
            assert_eq!(verified.compression, Compression::Zstd);
            assert_eq!(verified.zstd_frames, starts.len() as u64);
            assert_eq!(verified.gzip_members, 0);
            assert_eq!(verified.records, 5_000);
            assert_eq!(verified.bytes_uncompressed, lines.len() as u64);
            assert_eq!(verified.size, object.len() as u64);
            let widest = lines.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap();
            assert_eq!(verified.largest_record_bytes, widest as u64);
        }
        let alone = verify_bytes(&object, None).await.unwrap();
        assert_eq!(
            (alone.compression, alone.zstd_frames),
            (Compression::Zstd, starts.len() as u64)
        );
        // Skippable frames, first and between, are skipped and not counted.
        let at = starts[2];
        let with_skippable = [
            &skippable(b"first")[..],
            &object[..at],
            &skippable(&[7; 100_000]),
            &object[at..],
        ]
        .concat();
        let verified = verify_bytes(&with_skippable, None).await.unwrap();
        assert_eq!(verified.zstd_frames, starts.len() as u64);
        assert_eq!(verified.records, 5_000);
        // Read in pieces of a few bytes: magic numbers split across reads.
        for capacity in [1, 3, 4096] {
            let mut reader = std::io::BufReader::with_capacity(capacity, &with_skippable[..]);
            let decoded = decode_object(&mut reader, 1 << 20, None);
            assert!(decoded.fault.is_none(), "{capacity}: {:?}", decoded.fault);
            assert_eq!(
                (decoded.frames, decoded.lines.records),
                (starts.len() as u64, 5_000)
            );
        }
        // The lines the frames hold are checked as gzip's are.
        let first_line = lines.iter().position(|&b| b == b'\n').unwrap() + 1;
        let bad = [&lines[..first_line], b"[1]\n", &lines[first_line..]].concat();
        let (object, _) = zstd_frames(&bad, 64 * 1024);
        let (_, problems, text) = problems_of(verify_bytes(&object, None).await);
        assert_eq!(problems.len(), 1, "{text}");
        assert!(
            text.contains(&format!("line 2 (byte {first_line}) is not a JSON object")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_truncated_zstd_object_names_the_frame() {
        let lines = jsonl(3_000);
        let (object, starts) = zstd_frames(&lines, 64 * 1024);
        let manifest = manifest_in(Compression::Zstd, &object, &lines);
        for (cut, frame, part) in [
            ((starts[1] + starts[2]) / 2, 2, "frame"),
            (starts[2] - 1, 2, "frame"),
            (starts[2] + 2, 3, "magic number"),
            (object.len() - 2, starts.len(), "frame"),
            (2, 1, "magic number"),
        ] {
            let (found, problems, text) =
                problems_of(verify_bytes(&object[..cut], Some(&manifest)).await);
            let start = starts[frame - 1] as u64;
            assert!(
                matches!(
                    &problems[0],
                    Problem::Zstd { frame: f, offset, fault: ZstdFault::Truncated { part: p } }
                        if *f == frame as u64 && *offset == start && *p == part
                ),
                "{cut}: {problems:?}"
            );
            assert!(
                text.contains(&format!(
                    "zstd frame {frame} (byte {start}): truncated: the object ends inside the {part}"
                )),
                "{text}"
            );
            assert_eq!(found.zstd_frames, frame as u64 - 1);
            assert!(
                text.contains(&format!("size {cut} != manifest {}", object.len())),
                "{text}"
            );
            assert!(!text.contains("records (lines)"), "{text}");
            assert!(!text.contains("compression"), "{text}");
        }
        // Cut at a frame's end, the object is whole but short: the manifest says so.
        let (found, problems, text) =
            problems_of(verify_bytes(&object[..starts[2]], Some(&manifest)).await);
        assert_eq!(found.zstd_frames, 2);
        assert!(
            problems.iter().all(|p| !matches!(p, Problem::Zstd { .. })),
            "{text}"
        );
        assert!(text.contains("records (lines) != manifest 3000"), "{text}");
        // A truncated skippable frame.
        let cut = [&object[..], &skippable(&[0; 100])[..50]].concat();
        let (_, problems, text) = problems_of(verify_bytes(&cut, None).await);
        assert!(
            matches!(
                &problems[..],
                [Problem::Zstd { fault: ZstdFault::Truncated { part: "skippable frame" }, offset, .. }]
                    if *offset == object.len() as u64
            ),
            "{text}"
        );
        // Empty, where a zstd object is expected.
        let (found, problems, text) = problems_of(verify_named("o.zst", &[], None).await);
        assert_eq!(found.compression, Compression::Zstd);
        assert_eq!(
            problems,
            [Problem::Zstd {
                frame: 1,
                offset: 0,
                fault: ZstdFault::Empty
            }],
            "{text}"
        );
        assert!(
            text.contains("the object is empty: no zstd frame"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_flipped_byte_in_zstd_is_a_checksum_or_corruption_error_in_its_frame() {
        let lines = jsonl(3_000);
        let (object, starts) = zstd_frames(&lines, 64 * 1024);
        let mut flipped = object.clone();
        flipped[(starts[1] + starts[2]) / 2] ^= 0x5a;
        let (found, problems, text) = problems_of(verify_bytes(&flipped, None).await);
        assert!(
            matches!(
                &problems[..],
                [Problem::Zstd {
                    frame: 2,
                    fault: ZstdFault::Checksum | ZstdFault::Corrupt { .. },
                    offset,
                }] if *offset == starts[1] as u64
            ),
            "{text}"
        );
        assert_eq!(found.zstd_frames, 1);
        // The checksum itself, the last 4 bytes of frame 2.
        let mut bad_checksum = object.clone();
        bad_checksum[starts[2] - 1] ^= 1;
        let (_, problems, text) = problems_of(verify_bytes(&bad_checksum, None).await);
        assert_eq!(
            problems,
            [Problem::Zstd {
                frame: 2,
                offset: starts[1] as u64,
                fault: ZstdFault::Checksum
            }],
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "zstd frame 2 (byte {}): content checksum mismatch",
                starts[1]
            )),
            "{text}"
        );
        // The frame header's content size, one too many: the decoder refuses the frame.
        let (object, _) = zstd_frames(&lines[..1000], 64 * 1024);
        let mut bad_size = object.clone();
        // Magic, descriptor (single segment, 2-byte size, checksum), then the size.
        assert_eq!(bad_size[4], 0x64, "{:02x}", bad_size[4]);
        bad_size[5] = bad_size[5].wrapping_add(1);
        let (_, problems, text) = problems_of(verify_bytes(&bad_size, None).await);
        assert!(
            matches!(
                &problems[..],
                [Problem::Zstd {
                    frame: 1,
                    offset: 0,
                    fault: ZstdFault::Corrupt { .. }
                }]
            ),
            "{text}"
        );
        assert!(
            text.contains("zstd frame 1 (byte 0): corrupt frame: "),
            "{text}"
        );
    }

    #[tokio::test]
    async fn garbage_after_the_last_zstd_frame_is_named() {
        let lines = jsonl(1_000);
        let (mut object, starts) = zstd_frames(&lines, 16 * 1024);
        let whole = object.len();
        let mut manifest = manifest_in(Compression::Zstd, &object, &lines);
        object.extend_from_slice(b"junk");
        manifest.object.as_mut().unwrap().size = object.len() as u64;
        let (found, problems, text) = problems_of(verify_bytes(&object, Some(&manifest)).await);
        let frame = starts.len() as u64 + 1;
        assert!(
            matches!(
                &problems[..],
                [Problem::Zstd { frame: f, offset, fault: ZstdFault::TrailingGarbage { found } }, Problem::Sha256 { .. }]
                    if *f == frame && *offset == whole as u64 && found == "6a 75 6e 6b"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "zstd frame {frame} (byte {whole}): garbage after the last frame (it starts 6a 75 6e 6b)"
            )),
            "{text}"
        );
        assert_eq!(found.zstd_frames, starts.len() as u64);
        // A lone byte that is not a magic number's start.
        object.truncate(whole);
        object.push(b'\n');
        let (_, problems, _) = problems_of(verify_bytes(&object, None).await);
        assert!(
            matches!(
                &problems[..],
                [Problem::Zstd { fault: ZstdFault::TrailingGarbage { found }, .. }] if found == "0a"
            ),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn a_good_plain_object_matches_its_manifest() {
        let lines = jsonl(2_000);
        let manifest = manifest_in(Compression::None, &lines, &lines);
        for name in ["o.jsonl", "o.ndjson", "o"] {
            let verified = verify_named(name, &lines, Some(&manifest)).await.unwrap();
            assert_eq!(verified.compression, Compression::None);
            assert_eq!((verified.gzip_members, verified.zstd_frames), (0, 0));
            assert_eq!(verified.records, 2_000);
            assert_eq!(verified.size, lines.len() as u64);
            assert_eq!(verified.bytes_uncompressed, lines.len() as u64);
            let alone = verify_named(name, &lines, None).await.unwrap();
            assert_eq!(alone.records, 2_000);
        }
        // Empty.
        for (name, manifest) in [("o.jsonl", None), ("o", None), ("o.gz", Some(&manifest))] {
            let (found, problems, text) = problems_of(verify_named(name, &[], manifest).await);
            assert_eq!(found.compression, Compression::None, "{name}");
            assert_eq!(problems[0], Problem::Empty, "{name}: {text}");
            assert!(
                text.contains("the object is empty: no JSON Lines"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_plain_object_with_a_bad_line_names_it() {
        let good = jsonl(10);
        let first_line = good.iter().position(|&b| b == b'\n').unwrap() + 1;
        let lines = [&good[..first_line], b"{\"a\":1,}\n", &good[first_line..]].concat();
        let manifest = manifest_in(Compression::None, &lines, &lines);
        let (found, problems, text) =
            problems_of(verify_named("o.jsonl", &lines, Some(&manifest)).await);
        assert!(
            matches!(
                &problems[..],
                [Problem::Line { line: 2, offset, fault: LineFault::NotJson { .. }, bad_lines: 1 }]
                    if *offset == first_line as u64
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!("line 2 (byte {first_line}) is not JSON")),
            "{text}"
        );
        assert_eq!(found.records, 11);
        // Unterminated.
        let (_, problems, text) =
            problems_of(verify_named("o.jsonl", &good[..good.len() - 1], None).await);
        assert!(
            matches!(
                &problems[..],
                [Problem::Line {
                    line: 10,
                    fault: LineFault::Unterminated,
                    ..
                }]
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_format_other_than_the_manifests_is_named() {
        let lines = jsonl(500);
        let gz = gzip(&lines);
        let (zst, _) = zstd_frames(&lines, 16 * 1024);
        for (object, found, manifest) in [
            (&zst, Compression::Zstd, Compression::Gzip),
            (&zst, Compression::Zstd, Compression::None),
            (&gz, Compression::Gzip, Compression::Zstd),
            (&gz, Compression::Gzip, Compression::None),
            (&lines, Compression::None, Compression::Zstd),
        ] {
            let facts = manifest_in(manifest, object, &lines);
            // Whatever the name: the manifest is what is compared with.
            let (verified, problems, text) =
                problems_of(verify_named("o.jsonl.gz", object, Some(&facts)).await);
            let mismatch = Problem::Compression { found, manifest };
            if found == Compression::None {
                // Bytes with no magic number, where zstd is expected: read as zstd.
                assert_eq!(verified.compression, manifest);
                assert!(
                    matches!(
                        &problems[..],
                        [Problem::Zstd { frame: 1, offset: 0, fault: ZstdFault::NotZstd { found } }]
                            if found == "7b 22 69 64"
                    ),
                    "{text}"
                );
                assert!(
                    text.contains("not a zstd frame (it starts 7b 22 69 64)"),
                    "{text}"
                );
                continue;
            }
            // Only the format: the object is read in its own, and matches otherwise.
            assert_eq!(verified.compression, found);
            assert_eq!(problems, [mismatch], "{found} vs {manifest}: {text}");
            assert!(
                text.contains(&format!(
                    "compression {found} (by the object's first bytes) != manifest {manifest}"
                )),
                "{text}"
            );
            assert_eq!(verified.records, 500);
        }
        // A manifest from before the choice (no `compression`) says gzip.
        let mut json = serde_json::to_value(manifest_in(Compression::Gzip, &zst, &lines)).unwrap();
        json["object"]
            .as_object_mut()
            .unwrap()
            .remove("compression");
        let old: Manifest = serde_json::from_value(json).unwrap();
        let (_, problems, _) = problems_of(verify_bytes(&zst, Some(&old)).await);
        assert_eq!(
            problems,
            [Problem::Compression {
                found: Compression::Zstd,
                manifest: Compression::Gzip
            }]
        );
    }
}
