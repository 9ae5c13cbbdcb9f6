//! Compressed responses: which encodings landline asks for, and reading a page's body,
//! decoded, off its fetch task's channel.
//!
//! [`BodyReader`] is the blocking end of one page's channel (see [`super::fetch`]) as a
//! [`BufRead`]: it yields the body's bytes as received, counting them, and stops at the end
//! of the attempt's body, or with an error when the body broke off. [`decoder`] wraps it in
//! the decoder of the answer's `Content-Encoding`. Decoding is done by the page processor's
//! thread, so the bytes are decoded once, as they are split into records, and never held
//! decoded beyond the splitter's window.
//!
//! Memory: the decoders' own state: 32 KiB of window for gzip and deflate; for brotli up to
//! 16 MiB (the format's largest window, chosen by the server); for zstd at most 8 MiB, the
//! window RFC 9659 allows for HTTP (a frame asking for more is refused).

use std::io::{self, BufRead, Read};

use bytes::{Buf, Bytes};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::SourceError;
use super::fetch::{BodyEvent, Verdict};

/// `Accept-Encoding` sent when `[source] compression` is on (the default).
pub const ACCEPT: &str = "gzip, br, zstd, deflate";

/// The zstd window landline accepts: 2^23 bytes = 8 MiB (RFC 9659).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A `Content-Encoding` landline decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Not encoded.
    Identity,
    /// `gzip` (or `x-gzip`): one or more gzip members.
    Gzip,
    /// `deflate`: zlib-wrapped deflate (RFC 9110), or raw deflate as some servers send it.
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

impl Encoding {
    /// The encoding of one `Content-Encoding` token (case-insensitive).
    pub fn parse(token: &str) -> Option<Encoding> {
        let token = token.trim().to_ascii_lowercase();
        Some(match token.as_str() {
            "identity" => Encoding::Identity,
            "gzip" | "x-gzip" => Encoding::Gzip,
            "deflate" => Encoding::Deflate,
            "br" => Encoding::Brotli,
            "zstd" => Encoding::Zstd,
            _ => return None,
        })
    }

    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

/// How one attempt's body ended, as [`BodyReader`] saw it.
#[derive(Debug)]
pub enum BodyEnd {
    /// Complete: the fetch task waits for the processor's verdict.
    Complete(oneshot::Sender<Verdict>),
    /// It broke off; the task fetches the page again.
    Broken(String),
    /// The page failed for good.
    Failed(SourceError),
    /// The fetch task went away (the run is stopping), or broke the protocol.
    Gone,
}

/// The blocking reading end of one page's body channel; see the [module docs](self).
#[derive(Debug)]
pub struct BodyReader<'a> {
    rx: &'a mut mpsc::Receiver<BodyEvent>,
    chunk: Bytes,
    permit: Option<OwnedSemaphorePermit>,
    end: &'a mut Option<BodyEnd>,
    /// Set when dropped: bytes received and not read (after the end of a decoder's stream).
    unread: &'a mut u64,
    wire: u64,
}

impl<'a> BodyReader<'a> {
    /// Reads the body that follows a [`BodyEvent::Start`] off `rx`; how it ended goes to
    /// `end`, and the bytes left unread when it is dropped to `unread`.
    pub fn new(
        rx: &'a mut mpsc::Receiver<BodyEvent>,
        end: &'a mut Option<BodyEnd>,
        unread: &'a mut u64,
    ) -> Self {
        BodyReader {
            rx,
            chunk: Bytes::new(),
            permit: None,
            end,
            unread,
            wire: 0,
        }
    }

    /// Bytes received so far, as sent.
    pub fn wire_bytes(&self) -> u64 {
        self.wire
    }
}

impl Drop for BodyReader<'_> {
    fn drop(&mut self) {
        *self.unread = self.chunk.len() as u64;
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for BodyReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.chunk.is_empty() {
            // The budget share of a chunk read to its end goes back to the fetch task.
            self.permit = None;
            match self.end {
                Some(BodyEnd::Complete(_)) => return Ok(&[]),
                Some(_) => return Err(io::Error::other("the body did not arrive whole")),
                None => {}
            }
            *self.end = match self.rx.blocking_recv() {
                Some(BodyEvent::Chunk(chunk, permit)) => {
                    self.wire += chunk.len() as u64;
                    self.chunk = chunk;
                    self.permit = Some(permit);
                    continue;
                }
                Some(BodyEvent::End(verdict)) => Some(BodyEnd::Complete(verdict)),
                Some(BodyEvent::Broken { cause }) => Some(BodyEnd::Broken(cause)),
                Some(BodyEvent::Failed(e)) => Some(BodyEnd::Failed(e)),
                Some(BodyEvent::Start { .. }) | None => Some(BodyEnd::Gone),
            };
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, amount: usize) {
        self.chunk.advance(amount.min(self.chunk.len()));
    }
}

/// `body` decoded as `encoding` says.
pub fn decoder<'a, R: BufRead + 'a>(
    encoding: Encoding,
    mut body: R,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match encoding {
        Encoding::Identity => Box::new(body),
        Encoding::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(body)),
        Encoding::Deflate => {
            // RFC 9110's deflate is a zlib stream; some servers send raw deflate instead. A
            // zlib header is two bytes, deflate method, whose value is a multiple of 31.
            let head = body.fill_buf()?;
            let zlib = head.len() >= 2
                && head[0] & 0x0f == 8
                && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
            if zlib {
                Box::new(flate2::bufread::ZlibDecoder::new(body))
            } else {
                Box::new(flate2::bufread::DeflateDecoder::new(body))
            }
        }
        Encoding::Brotli => Box::new(brotli_decompressor::Decompressor::new(body, 64 * 1024)),
        Encoding::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body)?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(decoder)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn encode(encoding: Encoding, data: &[u8]) -> Vec<u8> {
        match encoding {
            Encoding::Identity => data.to_vec(),
            Encoding::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Encoding::Deflate => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Encoding::Brotli => {
                let mut out = Vec::new();
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
                drop(w);
                out
            }
            Encoding::Zstd => zstd::stream::encode_all(data, 3).unwrap(),
        }
    }

    fn decode(encoding: Encoding, wire: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(encoding, wire)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_encoding_decodes() {
        let data = br#"{"v":[{"a":1},{"a":2}],"next":"x"}"#.repeat(100);
        for encoding in [
            Encoding::Identity,
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Brotli,
            Encoding::Zstd,
        ] {
            assert_eq!(decode(encoding, &encode(encoding, &data)).unwrap(), data);
        }
        // Raw deflate, as some servers send for `deflate`.
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&data).unwrap();
        assert_eq!(
            decode(Encoding::Deflate, &e.finish().unwrap()).unwrap(),
            data
        );
        // Two gzip members.
        let mut two = encode(Encoding::Gzip, b"ab");
        two.extend(encode(Encoding::Gzip, b"cd"));
        assert_eq!(decode(Encoding::Gzip, &two).unwrap(), b"abcd");
    }

    #[test]
    fn corrupt_and_cut_bodies_are_errors() {
        let data = b"{\"v\":[]}".repeat(50);
        for encoding in [
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Brotli,
            Encoding::Zstd,
        ] {
            let wire = encode(encoding, &data);
            assert!(
                decode(encoding, &wire[..wire.len() / 2]).is_err(),
                "{encoding:?} cut"
            );
            let mut bad = wire.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0xff;
            bad[mid + 1] ^= 0x55;
            assert!(
                decode(encoding, &bad).map(|d| d != data).unwrap_or(true),
                "{encoding:?} corrupt"
            );
        }
    }

    #[test]
    fn a_zstd_window_over_8_mib_is_refused() {
        let data = vec![7u8; 1 << 20];
        let mut e = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        e.window_log(27).unwrap();
        e.long_distance_matching(true).unwrap();
        e.write_all(&data).unwrap();
        let wire = e.finish().unwrap();
        assert!(decode(Encoding::Zstd, &wire).is_err());
    }
}
