//! `landline verify`: an object read back from its store and checked, in constant memory.
//!
//! The object is streamed once. Its bytes are counted and hashed (SHA-256) as they arrive,
//! and handed over a bounded channel to a blocking thread that walks the gzip container
//! member by member (header, deflate data, trailer CRC-32 and length, checked here rather
//! than trusted to a decoder that stops quietly at a truncation) and splits the JSON Lines
//! it holds: every line must be one JSON object and end with a newline. Only the partial
//! last line of a chunk is carried over, bounded by [`VerifyOptions::max_line_bytes`].
//!
//! What was found is then compared with the run's [`Manifest`], when one is given: size,
//! SHA-256, records, uncompressed bytes and gzip members. Every difference is a
//! [`Problem`]; any problem makes [`verify`] fail with [`VerifyError::Mismatch`], which
//! lists them all. Reading the manifest, and finding it, is the caller's job
//! ([`crate::manifest::read`], [`crate::pipeline::manifest_location`]).

use std::io::BufRead;

use bytes::{Buf as _, Bytes};
use flate2::{Decompress, FlushDecompress, Status};
use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use serde::Serialize;

use crate::manifest::Manifest;
use crate::sink::digest::StreamDigest;
use crate::sink::{Destination, StoreOptions};

/// Chunks of the object in flight between the reader and the decoding thread: a few of the
/// store's chunks, so memory stays bounded however large the object is.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The decoder's output buffer: the uncompressed bytes looked at in one go.
const INFLATE_BUFFER_BYTES: usize = 256 * 1024;

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
    /// gzip members decoded (up to the first broken one, if one is).
    pub gzip_members: u64,
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
    let decoding = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            chunk: Bytes::new(),
        };
        decode(&mut reader, max_line_bytes)
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
        gzip_members: decoded.members,
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
/// compared when the container is broken (decoding stopped early; the fault says so).
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
        Some(manifest) => match &manifest.object {
            Some(facts) => Some((manifest, facts)),
            None => {
                problems.push(Problem::NoObjectInManifest);
                None
            }
        },
        None => None,
    };
    let (members, from_manifest) = facts.map_or((1, false), |(_, f)| (f.gzip_members, true));
    if !broken && verified.gzip_members != members {
        problems.push(Problem::GzipMembers {
            found: verified.gzip_members,
            expected: members,
            from_manifest,
        });
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
        if verified.records != manifest.records {
            problems.push(Problem::Records {
                found: verified.records,
                manifest: manifest.records,
            });
        }
        if verified.bytes_uncompressed != manifest.bytes_uncompressed {
            problems.push(Problem::BytesUncompressed {
                found: verified.bytes_uncompressed,
                manifest: manifest.bytes_uncompressed,
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
    /// Members decoded whole.
    members: u64,
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
    fn fill(&mut self) -> Result<&[u8], GzipFault> {
        self.inner.fill_buf().map_err(|e| GzipFault::Deflate {
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
        let mut out = [0u8; N];
        let mut got = 0;
        while got < N {
            let available = self.fill()?;
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

/// Walks the gzip members of `reader` and checks the lines they hold.
fn decode(reader: &mut impl BufRead, max_line_bytes: usize) -> Decoded {
    let mut input = Counted {
        inner: reader,
        consumed: 0,
    };
    let mut lines = Lines::new(max_line_bytes);
    let mut members = 0u64;
    let mut out = vec![0u8; INFLATE_BUFFER_BYTES];
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
        members,
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
    if got >= 1 && fixed[0] != 0x1f || got >= 2 && fixed[1] != 0x8b {
        let found = fixed[..got.min(4)]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(GzipFault::NotGzip { found });
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

    fn manifest_of(object: &[u8], jsonl: &[u8]) -> Manifest {
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
                gzip_members: 1,
            }),
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

    /// `object` written to a temporary file and verified against `manifest`.
    async fn verify_bytes(
        object: &[u8],
        manifest: Option<&Manifest>,
    ) -> Result<Verified, VerifyError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl.gz");
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
}
