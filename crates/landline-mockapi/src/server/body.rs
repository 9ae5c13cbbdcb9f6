//! Page bodies as streams: generated slice by slice from the pool, compressed with a streaming
//! encoder, cut or paused by body faults, and paced to the configured bandwidth.
//!
//! A page is never built whole: [`PageBytes`] writes about [`SLICE`] bytes of records at a
//! time, [`Producer`] turns those slices into the bytes for the wire (compressed or not) and
//! marks where a body fault strikes, and [`stream`] sends them from a task of its own, through
//! a channel of one slice, so a page of hundreds of megabytes holds a few slices in memory.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::ACCEPT_ENCODING;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use tokio::sync::mpsc;

use super::{Encoding, FLUSH_PAUSE, Filter, Paging, Shared, Window, encode_cursor};
use crate::generator::ID_BASE;

/// Uncompressed bytes generated at a time (a slice ends at the first record boundary past it).
const SLICE: usize = 256 * 1024;
/// Largest piece of a paced body sent at once.
const MAX_PACED_PIECE: usize = 64 * 1024;
/// Smallest piece of a paced body sent at once.
const MIN_PACED_PIECE: usize = 1024;
/// gzip and deflate level, as nginx's default `gzip_comp_level`.
const ZLIB_LEVEL: u32 = 1;
/// Brotli quality: fast, like a proxy compressing on the fly.
const BROTLI_QUALITY: u32 = 1;
/// Brotli window: 4 MiB, the encoder's default.
const BROTLI_LG_WINDOW: u32 = 22;
/// zstd level: its fastest regular one.
const ZSTD_LEVEL: i32 = 1;

// ------------------------------------------------------------------------------ negotiation

/// The first of `offered` that the request's `Accept-Encoding` headers accept, if any.
///
/// The header is a comma-separated list of codings, each with optional parameters of which
/// only `q` counts: `q=0` makes a coding unacceptable, and a `q` that is not a number in
/// `0..=1` does too. `*` stands for every coding not named. Without the header (or with an
/// empty one) nothing is accepted but the identity. `x-gzip` is `gzip` (RFC 9110, 8.4.1.3).
/// The server's order decides, not the client's weights.
pub(super) fn negotiate(offered: &[Encoding], headers: &HeaderMap) -> Option<Encoding> {
    if offered.is_empty() {
        return None;
    }
    // Coding (lower case) → whether acceptable; the highest weight of a repeated coding wins.
    let mut named: Vec<(String, bool)> = Vec::new();
    let mut any: Option<bool> = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            let mut acceptable = true;
            for param in parts {
                if let Some((name, value)) = param.split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    acceptable = qvalue(value.trim()).is_some_and(|q| q > 0.0);
                }
            }
            let coding = if coding == "x-gzip" {
                "gzip".to_owned()
            } else {
                coding
            };
            if coding == "*" {
                any = Some(any.unwrap_or(false) || acceptable);
            } else if let Some(entry) = named.iter_mut().find(|(name, _)| *name == coding) {
                entry.1 |= acceptable;
            } else {
                named.push((coding, acceptable));
            }
        }
    }
    offered.iter().copied().find(|encoding| {
        match named.iter().find(|(name, _)| name == encoding.token()) {
            Some(&(_, acceptable)) => acceptable,
            None => any.unwrap_or(false),
        }
    })
}

/// A weight `0..=1`, as RFC 9110 writes them (leniently: any decimal number in range).
fn qvalue(text: &str) -> Option<f64> {
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    text.parse::<f64>().ok().filter(|q| (0.0..=1.0).contains(q))
}

// ----------------------------------------------------------------------------- page bytes

/// The uncompressed JSON of one page, generated in slices of about [`SLICE`] bytes.
pub(super) struct PageBytes {
    api: Arc<Shared>,
    /// The JSON before the first record; taken by the first slice.
    head: Vec<u8>,
    /// Positions of the records not written yet.
    records: Range<u64>,
    /// Whether a record has been written (the next one needs a comma).
    wrote: bool,
    /// The `updated_at` range (milliseconds, inclusive) of the records served; `None`: all.
    keep: Option<(i64, i64)>,
    /// Added to each position to pick the record written ([`super::Action::Shifted`]).
    shift: u64,
    /// The JSON after the last record; taken by the slice that writes the last record.
    tail: Vec<u8>,
    /// Spaces still to write after the JSON ([`super::Action::Pad`]).
    pad: usize,
    /// Bytes of the whole page, spaces included.
    len: usize,
}

impl PageBytes {
    /// Page `window` of `paging`, with next cursor `next`, its records shifted by `shift`,
    /// those `filter` keeps only (decided by the record written, shifted or not).
    pub(super) fn new(
        api: Arc<Shared>,
        paging: Paging,
        window: &Window,
        next: Option<u64>,
        shift: u64,
        filter: &Filter,
    ) -> PageBytes {
        let (head, tail) = frame(paging, window, next, api.config.data.total, &filter.carry);
        let records = window.start..window.end;
        let keep = filter.bounds();
        let kept = |i: &u64| keeps(&api, keep, shifted(*i, shift));
        let (count, record_bytes) = records
            .clone()
            .filter(kept)
            .fold((0usize, 0usize), |(count, bytes), i| {
                (count + 1, bytes + api.pool.record_len(shifted(i, shift)))
            });
        let commas = count.saturating_sub(1);
        let len = head.len() + record_bytes + commas + tail.len();
        PageBytes {
            api,
            head,
            wrote: false,
            keep,
            records,
            shift,
            tail,
            pad: 0,
            len,
        }
    }

    /// Adds `bytes` spaces after the JSON.
    pub(super) fn pad(&mut self, bytes: usize) {
        self.pad = self.pad.saturating_add(bytes);
        self.len = self.len.saturating_add(bytes);
    }

    /// Bytes of the whole page, exactly.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The next slice of the page; `None` once it is all written.
    fn next_slice(&mut self) -> Option<Vec<u8>> {
        if self.head.is_empty() && self.records.is_empty() && self.tail.is_empty() && self.pad == 0
        {
            return None;
        }
        let pool = &self.api.pool;
        // Room for the slice and the record that crosses its end, most of the time.
        let overshoot = self
            .api
            .config
            .data
            .target_bytes
            .saturating_mul(2)
            .min(SLICE);
        let mut out = Vec::with_capacity(SLICE + overshoot);
        out.append(&mut self.head);
        while out.len() < SLICE {
            let Some(index) = self.records.next() else {
                break;
            };
            let index = shifted(index, self.shift);
            if !keeps(&self.api, self.keep, index) {
                continue;
            }
            if self.wrote {
                out.push(b',');
            }
            self.wrote = true;
            pool.write_record(index, &mut out);
        }
        if self.records.is_empty() {
            out.append(&mut self.tail);
            let spaces = self.pad.min(SLICE.saturating_sub(out.len()));
            out.resize(out.len() + spaces, b' ');
            self.pad -= spaces;
        }
        (!out.is_empty()).then_some(out)
    }
}

/// Whether the record at dataset offset `index` is in the `updated_at` range `keep`.
fn keeps(api: &Shared, keep: Option<(i64, i64)>, index: u64) -> bool {
    keep.is_none_or(|(low, high)| (low..=high).contains(&api.pool.updated_at_ms(index)))
}

/// Dataset offset `index + shift`, kept where ids (`ID_BASE + offset`) do not overflow.
fn shifted(index: u64, shift: u64) -> u64 {
    index.saturating_add(shift).min(u64::MAX - ID_BASE)
}

/// The JSON before and after the records of a page; `carry` (`&name=value…`, URL-safe and
/// JSON-safe) goes at the end of the next URL.
fn frame(
    paging: Paging,
    window: &Window,
    next: Option<u64>,
    total: u64,
    carry: &str,
) -> (Vec<u8>, Vec<u8>) {
    let (open, close): (&str, String) = match paging {
        Paging::Token => (
            r#"{"variants":["#,
            match next {
                Some(offset) => format!(r#"],"next_token":"{}"}}"#, encode_cursor(offset)),
                None => r#"],"next_token":null}"#.into(),
            },
        ),
        Paging::NextUrl => (
            r#"{"data":{"items":["#,
            match next {
                Some(offset) => format!(
                    r#"]}},"links":{{"next":"{}?count={}&cursor={}{carry}"}}}}"#,
                    paging.path(),
                    window.size,
                    encode_cursor(offset)
                ),
                None => r#"]},"links":{}}"#.into(),
            },
        ),
        Paging::LinkHeader => ("[", "]".into()),
        Paging::Offset => (r#"{"results":["#, format!(r#"],"total":{total}}}"#)),
        Paging::Page => (
            r#"{"items":["#,
            format!(r#"],"page":{},"total":{total}}}"#, window.page),
        ),
        Paging::Single => (r#"{"variants":["#, "]}".into()),
    };
    (open.as_bytes().to_vec(), close.into_bytes())
}

// ------------------------------------------------------------------------------- producer

/// What happens at the cut of a body fault, once the bytes before it are sent.
#[derive(Debug)]
pub(super) enum AtCut {
    /// The body ends there ([`super::Action::Truncate`]).
    Close,
    /// The body fails there: the connection is dropped ([`super::Action::ResetMidBody`]).
    Abort,
    /// The body pauses there, then goes on ([`super::Action::Stall`]).
    Pause(Duration),
}

/// One step of sending a body.
#[derive(Debug)]
pub(super) enum Step {
    /// Bytes for the wire, and the uncompressed page bytes they complete.
    Bytes {
        /// As sent.
        wire: Vec<u8>,
        /// Uncompressed bytes fed to the encoder since the previous step's.
        decoded: usize,
    },
    /// The cut of a body fault: everything before it has been sent (and, compressed, flushed
    /// so that it decodes to exactly the page bytes before the cut).
    Cut(AtCut),
    /// An encoder failed: the body fails.
    Fail(io::Error),
}

/// The steps that send a page: its slices, compressed if asked, with the cut of a body fault
/// after `cut.0` uncompressed bytes. Lazy: a slice is generated and compressed when the
/// steps before it have been taken.
pub(super) struct Producer {
    page: PageBytes,
    encoder: Option<Encoder>,
    cut: Option<(usize, AtCut)>,
    /// Uncompressed bytes fed so far.
    fed: usize,
    /// Uncompressed bytes fed that no step has accounted for yet.
    carried: usize,
    queue: VecDeque<Step>,
    done: bool,
}

impl Producer {
    pub(super) fn new(
        page: PageBytes,
        encoding: Option<Encoding>,
        cut: Option<(usize, AtCut)>,
    ) -> Producer {
        let mut producer = Producer {
            page,
            encoder: None,
            cut,
            fed: 0,
            carried: 0,
            queue: VecDeque::new(),
            done: false,
        };
        match encoding.map(Encoder::new).transpose() {
            Ok(encoder) => producer.encoder = encoder,
            Err(e) => producer.fail(e),
        }
        producer
    }

    fn feed(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() || self.done {
            return;
        }
        self.fed += bytes.len();
        self.carried += bytes.len();
        let wire = match &mut self.encoder {
            None => Ok(bytes),
            Some(encoder) => encoder.write(&bytes),
        };
        self.emit(wire);
    }

    /// Flushes the encoder, so that the bytes sent decode to all the bytes fed.
    fn flush(&mut self) {
        if let Some(encoder) = &mut self.encoder {
            let wire = encoder.flush();
            self.emit(wire);
        }
    }

    /// Ends the encoder's stream.
    fn finish(&mut self) {
        if let Some(encoder) = self.encoder.take() {
            let wire = encoder.finish();
            self.emit(wire);
        }
        self.done = true;
    }

    fn emit(&mut self, wire: io::Result<Vec<u8>>) {
        match wire {
            Ok(wire) if wire.is_empty() => {}
            Ok(wire) => {
                let decoded = std::mem::take(&mut self.carried);
                self.queue.push_back(Step::Bytes { wire, decoded });
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: io::Error) {
        self.queue.push_back(Step::Fail(e));
        self.encoder = None;
        self.done = true;
    }

    /// Marks the cut, after flushing what came before it.
    fn cut(&mut self, then: AtCut) {
        self.flush();
        if !self.done {
            self.queue.push_back(Step::Cut(then));
        }
    }
}

impl Iterator for Producer {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        loop {
            if let Some(step) = self.queue.pop_front() {
                return Some(step);
            }
            if self.done {
                return None;
            }
            let Some(mut slice) = self.page.next_slice() else {
                // A cut at (or past) the end: the pause of a stall comes before the end.
                if let Some((_, then)) = self.cut.take() {
                    self.cut(then);
                }
                self.finish();
                continue;
            };
            match self.cut.take() {
                Some((at, then)) if self.fed + slice.len() > at => {
                    let rest = slice.split_off(at.saturating_sub(self.fed).min(slice.len()));
                    self.feed(slice);
                    self.cut(then);
                    self.feed(rest);
                }
                cut => {
                    self.cut = cut;
                    self.feed(slice);
                }
            }
        }
    }
}

/// A streaming encoder writing into memory, whose output is taken after each call.
enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    Deflate(ZlibEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(encoding: Encoding) -> io::Result<Encoder> {
        Ok(match encoding {
            Encoding::Gzip => {
                Encoder::Gzip(GzEncoder::new(Vec::new(), Compression::new(ZLIB_LEVEL)))
            }
            Encoding::Deflate => {
                Encoder::Deflate(ZlibEncoder::new(Vec::new(), Compression::new(ZLIB_LEVEL)))
            }
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                MAX_PACED_PIECE,
                BROTLI_QUALITY,
                BROTLI_LG_WINDOW,
            ))),
            Encoding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?)
            }
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Gzip(e) => e,
            Encoder::Deflate(e) => e,
            Encoder::Brotli(e) => e.as_mut(),
            Encoder::Zstd(e) => e,
        }
    }

    /// Takes the output written so far.
    fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Deflate(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        })
    }

    /// Compresses `bytes`; returns the output so far (the encoder may hold some back).
    fn write(&mut self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        self.writer().write_all(bytes)?;
        Ok(self.take_output())
    }

    /// Flushes: the output so far decodes to all the input so far.
    fn flush(&mut self) -> io::Result<Vec<u8>> {
        self.writer().flush()?;
        Ok(self.take_output())
    }

    /// Ends the stream; returns the rest of the output.
    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Deflate(e) => e.finish(),
            // `into_inner` finishes the stream; into memory, that cannot fail.
            Encoder::Brotli(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

// -------------------------------------------------------------------------------- sending

/// A body that sends `steps` from a task of its own, paced to `MockConfig::bandwidth`;
/// `counted` says whether its bytes count in `Stats::bytes_served` and `bytes_decoded`.
pub(super) fn stream(
    api: Arc<Shared>,
    steps: impl Iterator<Item = Step> + Send + 'static,
    counted: bool,
) -> Body {
    // One slice in flight: the task runs at most a slice ahead of the connection.
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(1);
    let rate = api.config.bandwidth.filter(|&rate| rate > 0);
    let mut wire = Wire {
        api,
        tx,
        rate,
        counted,
        started: None,
        sent: 0,
    };
    tokio::spawn(async move {
        // `Err`: the connection is gone, and nobody is left to tell.
        let _ = wire.run(steps).await;
    });
    Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// The receiving side (the connection) is gone.
struct Gone;

/// The sending end of a body.
struct Wire {
    api: Arc<Shared>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    /// Bytes per second, if paced.
    rate: Option<u64>,
    counted: bool,
    /// When the first byte was due, if paced.
    started: Option<Instant>,
    /// Bytes sent so far.
    sent: u64,
}

impl Wire {
    async fn run(&mut self, steps: impl Iterator<Item = Step>) -> Result<(), Gone> {
        for step in steps {
            match step {
                Step::Bytes { wire, decoded } => self.send(wire, decoded).await?,
                Step::Cut(AtCut::Pause(pause)) => tokio::time::sleep(pause).await,
                Step::Cut(AtCut::Close) => {
                    // Let the connection flush what it has, then end the body short.
                    tokio::time::sleep(FLUSH_PAUSE).await;
                    return Ok(());
                }
                Step::Cut(AtCut::Abort) => {
                    tokio::time::sleep(FLUSH_PAUSE).await;
                    let reset = io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "injected fault: connection dropped mid-body",
                    );
                    return self.tx.send(Err(reset)).await.map_err(|_| Gone);
                }
                Step::Fail(e) => return self.tx.send(Err(e)).await.map_err(|_| Gone),
            }
        }
        Ok(())
    }

    /// Sends `wire`, in pieces at the configured rate if there is one.
    async fn send(&mut self, wire: Vec<u8>, decoded: usize) -> Result<(), Gone> {
        let wire = Bytes::from(wire);
        let Some(rate) = self.rate else {
            self.count(wire.len(), decoded);
            return self.tx.send(Ok(wire)).await.map_err(|_| Gone);
        };
        // About 1/20 s of data a piece, so that slow rates are paced smoothly too.
        let piece = usize::try_from(rate / 20)
            .unwrap_or(usize::MAX)
            .clamp(MIN_PACED_PIECE, MAX_PACED_PIECE);
        let mut decoded = decoded;
        let mut start = 0;
        while start < wire.len() {
            let end = wire.len().min(start + piece);
            let bytes = wire.slice(start..end);
            start = end;
            // No burst: a piece leaves when the rate allows all the bytes up to its end.
            let started = *self.started.get_or_insert_with(Instant::now);
            self.sent += bytes.len() as u64;
            let due = Duration::try_from_secs_f64(self.sent as f64 / rate as f64)
                .ok()
                .and_then(|wait| started.checked_add(wait));
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            self.count(bytes.len(), std::mem::take(&mut decoded));
            self.tx.send(Ok(bytes)).await.map_err(|_| Gone)?;
        }
        Ok(())
    }

    fn count(&self, wire: usize, decoded: usize) {
        if self.counted {
            self.api.bytes_served.fetch_add(wire as u64, Relaxed);
            self.api.bytes_decoded.fetch_add(decoded as u64, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn negotiation_follows_the_server_order_and_honours_q0_and_star() {
        use Encoding::{Brotli, Deflate, Gzip, Zstd};
        let offered = [Zstd, Brotli, Gzip];
        let pick = |values: &[&str]| negotiate(&offered, &accept(values));
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[""]), None);
        assert_eq!(pick(&["identity"]), None);
        assert_eq!(pick(&["deflate"]), None, "not offered");
        assert_eq!(pick(&["gzip"]), Some(Gzip));
        assert_eq!(pick(&["x-gzip"]), Some(Gzip));
        assert_eq!(pick(&["GZip;Q=0.5"]), Some(Gzip));
        assert_eq!(pick(&["gzip, br"]), Some(Brotli), "the server's order");
        assert_eq!(pick(&["gzip;q=1.0, br;q=0.1"]), Some(Brotli));
        assert_eq!(pick(&["br;q=0, gzip"]), Some(Gzip));
        assert_eq!(pick(&["br;q=0.000, gzip;q=0"]), None);
        assert_eq!(pick(&["*"]), Some(Zstd));
        assert_eq!(pick(&["*;q=0"]), None);
        assert_eq!(pick(&["*;q=0, gzip"]), Some(Gzip));
        assert_eq!(pick(&["zstd;q=0, *"]), Some(Brotli));
        assert_eq!(pick(&["zstd;q=0", "br;q=0", "*;q=0.2"]), Some(Gzip));
        assert_eq!(pick(&[" gzip ; q=0.8 ; foo=bar ,"]), Some(Gzip));
        for bad in ["gzip;q=2", "gzip;q=-1", "gzip;q=x", "gzip;q=", "gzip;q=.5"] {
            assert_eq!(pick(&[bad]), None, "{bad}");
        }
        assert_eq!(negotiate(&[], &accept(&["*"])), None);
        assert_eq!(negotiate(&[Deflate, Gzip], &accept(&["*"])), Some(Deflate));
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("0"), Some(0.0));
        assert_eq!(qvalue("0.5"), Some(0.5));
        assert_eq!(qvalue("1."), Some(1.0));
        assert_eq!(qvalue("1.000"), Some(1.0));
        for bad in ["", ".5", "1.5", "2", "-0", "0.5x", "0,5", "inf", "NaN"] {
            assert_eq!(qvalue(bad), None, "{bad}");
        }
    }
}
