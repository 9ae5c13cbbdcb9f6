//! Splitting a page body into records as it arrives, in one pass over pieces of any size.
//!
//! A [`PageSplitter`] is fed the body (decoded, if the server compressed it) piece by piece,
//! as it comes off the network, into its window ([`PageSplitter::window`]). It follows up to
//! three JSON pointers through the body: the record array, and for body-driven pagination the
//! next cursor, and the `error` pointer of an API that reports failures inside a 200. Each
//! record is handed to a [`RecordSink`] as a serde_json deserializer positioned on it, as
//! soon as the record is whole in the window, so the transform reads the record's top-level
//! fields in the same pass and copies untouched values through as raw JSON text. No
//! `serde_json::Value` is ever built, and the body is never held whole.
//!
//! **How the pass is split.** The containers on the pointer paths (the page object, the
//! record array) are walked by a small state machine here, which can stop at any byte and
//! go on when the next piece arrives. Every value in them (a key, a record, a skipped value,
//! the cursor) is read by serde_json from the window, which validates it. A value that is cut
//! by the end of the window is read again once more of it has arrived; the window must then
//! grow by half before the next try, so a large record costs at most about three reads of its
//! bytes, and a record read whole costs one.
//!
//! **What the walk checks.** The body must be JSON (RFC 8259) in UTF-8, every string included
//! (skipped ones too). Outside the records it may nest at most [`MAX_DEPTH`] levels of arrays
//! and objects, as serde_json reads it; inside a record, the sink decides (the transform
//! allows [`MAX_DEPTH`] levels in each line). Deeper nesting is an error, never a stack
//! overflow. The objects on the record, cursor and error paths must not repeat the key the
//! path goes through: with two `"variants"` arrays, readers disagree on which one counts.
//! Errors name a position in the body: line and column (as serde_json counts them: the column
//! counts bytes, from 1) and byte offset, and the record's index when it is in a record.
//!
//! **Retried bodies.** When a body breaks off and the page is fetched again,
//! [`PageSplitter::restart`] makes the splitter skip the records it already handed to the
//! sink, after checking that the new body has the same ones: it keeps a 64-bit XXH3 hash of
//! the bytes of every record handed on, and a page that comes back different is
//! [`PageError::ChangedOnRetry`], never a silent duplicate or gap.
//!
//! Memory: the window holds the unread rest of the body's latest pieces plus at most one
//! value being assembled, so it is bounded by `max_value_bytes` (a record or value larger
//! than that is refused as it arrives) and the feed size, never by the page.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;
use xxhash_rust::xxh3::Xxh3;

use crate::pointer::JsonPointer;

/// The most levels of nested arrays and objects landline reads, counting from the top level of
/// a page (outside the records) or of a record's line. This is serde_json's own recursion
/// limit (it reads 127 levels and refuses 128), so every line landline writes reads back.
pub const MAX_DEPTH: usize = 127;

/// The window is read once at least this many new bytes have arrived (or the body ended), so
/// that a record cut by the window's end, which must be read again, is rare: at ~28 KB
/// records, about one in 18.
pub const MIN_READ_BYTES: usize = 256 * 1024;

/// Receives the records of a page, one at a time, in order.
pub trait RecordSink {
    /// Consumes one record. `index` is its position in the page, from 0.
    ///
    /// Returns the last piece of the record's text that it borrowed (the last value or key
    /// it read as a borrowed `&str` or `&RawValue`, or the whole record), or `""` when it
    /// borrowed nothing: the scan finds the record's end from there instead of reading the
    /// record twice. A sink that reads values as owned types still works, at the cost of a
    /// second read.
    ///
    /// An error that is not about the JSON itself should be kept by the sink and reported
    /// through [`RecordSink::take_error`]; return `D::Error::custom` to stop the scan. When
    /// the record is cut short by the end of the window, serde_json's end-of-input error must
    /// be returned as it is, with nothing kept and nothing of the record left in the output:
    /// the record is handed over again once more of it has arrived.
    fn record<'de, D: Deserializer<'de>>(
        &mut self,
        index: u64,
        record: D,
    ) -> Result<&'de str, D::Error>;

    /// The error that made [`RecordSink::record`] stop the scan, if it kept one.
    fn take_error(&mut self) -> Option<PageError>;
}

/// What one pass over a whole page found.
#[derive(Debug)]
pub struct PageScan {
    /// Records handed to the sink (or, after a [`PageSplitter::restart`], verified and
    /// skipped).
    pub records: u64,
    /// The raw JSON value at the cursor pointer, if it was asked for and present.
    pub next: Option<Box<RawValue>>,
    /// The raw JSON value at the error pointer, if it was asked for and present and is not
    /// `null`, `false`, `""`, `[]` or `{}`: the API says the page failed.
    pub error: Option<Box<RawValue>>,
}

/// Why a page body could not be split into records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// The body is not valid JSON (outside any record).
    #[error("the body is not valid JSON at line {line} column {column} (byte {offset}): {message}")]
    Syntax {
        /// Line in the body, from 1.
        line: usize,
        /// Column (in bytes), from 1.
        column: usize,
        /// Offset in the body, from 0.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A record is not valid JSON.
    #[error(
        "record {index} of the page is not valid JSON at line {line} column {column} (byte {offset} of the body): {message}"
    )]
    RecordJson {
        /// Position of the record in the page.
        index: u64,
        /// Line in the body, from 1.
        line: usize,
        /// Column (in bytes), from 1.
        column: usize,
        /// Offset in the body, from 0.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The body is not valid UTF-8 (JSON text must be), in a string or anywhere else.
    #[error("{} has invalid UTF-8 at line {line} column {column} (byte {offset} of the body)", In(*.record))]
    InvalidUtf8 {
        /// The record it is in, if it is in one.
        record: Option<u64>,
        /// Line in the body, from 1.
        line: usize,
        /// Column (in bytes), from 1.
        column: usize,
        /// Offset of the first invalid byte in the body, from 0.
        offset: u64,
    },
    /// Arrays and objects are nested more than [`MAX_DEPTH`] levels deep outside the records.
    #[error(
        "the body nests arrays and objects more than {MAX_DEPTH} levels deep at line {line} column {column} (byte {offset} of the body)"
    )]
    TooDeep {
        /// Line in the body, from 1.
        line: usize,
        /// Column (in bytes), from 1.
        column: usize,
        /// Offset of the bracket that opens one level too many, from 0.
        offset: u64,
    },
    /// A record, or a value outside the records, is larger than the splitter may buffer.
    #[error(
        "{} is larger than max_record_bytes = {limit} as received (at least {bytes} bytes of JSON from byte {offset} of the body)", Value(*.record)
    )]
    ValueTooLarge {
        /// The record it is, if it is one.
        record: Option<u64>,
        /// Bytes of it received when the limit was passed.
        bytes: usize,
        /// The limit.
        limit: usize,
        /// Where it starts in the body.
        offset: u64,
    },
    /// Nothing in the body is at the record pointer.
    #[error("the record path {pointer} does not exist in the body")]
    RecordsMissing {
        /// The configured record pointer.
        pointer: String,
    },
    /// The value at the record pointer is not an array.
    #[error("the record path {pointer} points at {found}, not an array")]
    RecordsNotArray {
        /// The configured record pointer.
        pointer: String,
        /// What is there instead.
        found: &'static str,
    },
    /// An object on the record, cursor or error path has the key the path goes through
    /// twice, so which value the path means depends on the reader.
    #[error("the {path} path {pointer} is ambiguous: the key {key:?} appears twice in one object")]
    AmbiguousPath {
        /// `"record"`, `"cursor"` or `"error"`.
        path: &'static str,
        /// The configured pointer.
        pointer: String,
        /// The repeated key.
        key: String,
    },
    /// A record is not a JSON object.
    #[error("record {index} of the page is {found}, not a JSON object")]
    NotAnObject {
        /// Position of the record in the page.
        index: u64,
        /// What it is instead.
        found: &'static str,
    },
    /// The page was fetched again after its body broke off, and its records are not the ones
    /// already written: writing on would duplicate or lose records.
    #[error(
        "the page changed when it was fetched again: {written} record(s) had been written from the first attempt, {}", changed_how(*.found)
    )]
    ChangedOnRetry {
        /// Records written from the earlier attempt.
        written: u64,
        /// How many the new body has, when it has fewer; `None` when the records differ.
        found: Option<u64>,
    },
    /// The compressor stopped taking output (it, or the upload behind it, failed).
    #[error("{0}")]
    Output(#[source] crate::compress::CompressError),
    /// A record could not be transformed (kept by the sink).
    #[error("record {index} of the page: {source}")]
    Record {
        /// Position of the record in the page.
        index: u64,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn changed_how(found: Option<u64>) -> String {
    match found {
        Some(n) => format!("and the new body has only {n}"),
        None => "and the new body's first ones differ from them".into(),
    }
}

/// "record N of the page" or "the body", for messages.
struct In(Option<u64>);

impl fmt::Display for In {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(index) => write!(f, "record {index} of the page"),
            None => f.write_str("the body"),
        }
    }
}

/// "record N of the page" or "a value outside the records", for messages.
struct Value(Option<u64>);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(index) => write!(f, "record {index} of the page"),
            None => f.write_str("a value outside the records"),
        }
    }
}

/// Splits `body`, whole, into records for `sink`, and picks up the cursor at `next` if given.
///
/// Errors name the pointers as given. On an error, records before the failing one have been
/// handed to the sink.
pub fn scan_page<S: RecordSink>(
    body: &[u8],
    records: &JsonPointer,
    next: Option<&JsonPointer>,
    sink: &mut S,
) -> Result<PageScan, PageError> {
    let mut splitter = PageSplitter::new(
        Paths {
            records: records.clone(),
            cursor: next.cloned(),
            error: None,
        },
        usize::MAX,
    );
    splitter.window().extend_from_slice(body);
    splitter.finish(sink)
}

/// The pointers a [`PageSplitter`] follows.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The record array.
    pub records: JsonPointer,
    /// The next-page cursor, for body-driven pagination.
    pub cursor: Option<JsonPointer>,
    /// A value whose presence means the API failed the page.
    pub error: Option<JsonPointer>,
}

/// The three paths, by index in [`Frame::on`].
const RECORDS: usize = 0;
const CURSOR: usize = 1;
const ERROR: usize = 2;
const PATH_NAMES: [&str; 3] = ["record", "cursor", "error"];

/// Splits one page body, fed in pieces; see the [module docs](self).
///
/// Feed it by appending to [`window`](Self::window) and calling [`feed`](Self::feed), then
/// [`finish`](Self::finish) at the end of the body.
pub struct PageSplitter {
    window: Vec<u8>,
    scan: Scan,
}

/// Where in the body an open array or object on a path stands.
#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: Kind,
    expect: Expect,
    /// For each path: how many of its tokens lead to this container, if it is on the path.
    on: [Option<usize>; 3],
    /// The paths of the value after the key just read (objects).
    child: [Option<usize>; 3],
    /// Paths whose key this object has already had (objects), as bits.
    seen: u8,
    /// The index of the next element (arrays).
    index: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    Records,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Just after `{` or `[`: a first member or the end.
    FirstOrEnd,
    /// After a `,`: a member.
    Member,
    /// After a key: `:`.
    Colon,
    /// After `:`: the value.
    Value,
    /// After a member: `,` or the end.
    CommaOrEnd,
}

impl fmt::Debug for PageSplitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageSplitter")
            .field("paths", &self.scan.paths)
            .field("window_bytes", &self.window.len())
            .field("consumed", &self.consumed())
            .field("records", &self.scan.records)
            .field("written", &self.scan.written)
            .finish_non_exhaustive()
    }
}

/// The splitter's state, apart from the window.
struct Scan {
    paths: Paths,
    max_value_bytes: usize,
    /// Read the window once this many new bytes have arrived.
    read_bytes: usize,
    stack: Vec<Frame>,
    /// Whether the top-level value has been read.
    root_done: bool,
    /// Where reading resumes in the window.
    pos: usize,
    /// The body offset of the window's first byte.
    base: u64,
    /// The line (from 1) of the window's first byte, and the body offset of that line's start.
    line: usize,
    line_start: u64,
    /// Read the window again only once it holds this many bytes (or the body ended).
    need: usize,
    found_records: bool,
    /// Records of this attempt: handed to the sink or verified and skipped.
    records: u64,
    /// Records handed to the sink over all attempts.
    written: u64,
    /// Hash of the bytes of this attempt's records.
    hash: Xxh3,
    /// After a restart: records already written, and the hash of their bytes.
    replay: Option<(u64, u64)>,
    cursor: Option<Box<RawValue>>,
    /// Whether the cursor was found since [`PageSplitter::take_new_cursor`] last looked.
    cursor_new: bool,
    error: Option<Box<RawValue>>,
}

/// The outcome of reading one value at the window's position.
enum Step {
    /// Read; reading goes on.
    Done,
    /// Cut by the end of the window: wait for more.
    More,
}

impl PageSplitter {
    /// A splitter following `paths`, refusing a record or other value larger than
    /// `max_value_bytes` while it is assembled.
    pub fn new(paths: Paths, max_value_bytes: usize) -> Self {
        PageSplitter {
            window: Vec::new(),
            scan: Scan {
                paths,
                max_value_bytes,
                read_bytes: MIN_READ_BYTES,
                stack: Vec::new(),
                root_done: false,
                pos: 0,
                base: 0,
                line: 1,
                line_start: 0,
                need: 0,
                found_records: false,
                records: 0,
                written: 0,
                hash: Xxh3::new(),
                replay: None,
                cursor: None,
                cursor_new: false,
                error: None,
            },
        }
    }

    /// Reads the window once `bytes` new bytes have arrived, instead of [`MIN_READ_BYTES`]
    /// (records are handed on sooner; a record cut by the window's end is read again more
    /// often).
    pub fn with_read_bytes(mut self, bytes: usize) -> Self {
        self.scan.read_bytes = bytes.max(1);
        self
    }

    /// The window: append the next piece of the body here, then call [`feed`](Self::feed).
    pub fn window(&mut self) -> &mut Vec<u8> {
        &mut self.window
    }

    /// Reads what the window holds, if enough has arrived since the last read, handing
    /// complete records to `sink`.
    pub fn feed<S: RecordSink>(&mut self, sink: &mut S) -> Result<(), PageError> {
        if self.window.len() < self.scan.need {
            return Ok(());
        }
        self.read(sink, false)
    }

    /// Reads the rest after the body's last byte, and says what the page held.
    pub fn finish<S: RecordSink>(&mut self, sink: &mut S) -> Result<PageScan, PageError> {
        self.read(sink, true)?;
        let scan = &mut self.scan;
        if let Some((written, _)) = scan.replay
            && scan.records < written
        {
            return Err(PageError::ChangedOnRetry {
                written,
                found: Some(scan.records),
            });
        }
        if scan.error.is_none() && !scan.found_records {
            return Err(PageError::RecordsMissing {
                pointer: scan.paths.records.to_string(),
            });
        }
        Ok(PageScan {
            records: scan.records,
            next: scan.cursor.take(),
            error: scan.error.take(),
        })
    }

    /// The cursor, once, as soon as it has been read (before the end of the body if it comes
    /// before the records): so the next page can be requested while this one streams.
    pub fn take_new_cursor(&mut self) -> Option<&RawValue> {
        if std::mem::take(&mut self.scan.cursor_new) {
            self.scan.cursor.as_deref()
        } else {
            None
        }
    }

    /// Records of this attempt so far.
    pub fn records(&self) -> u64 {
        self.scan.records
    }

    /// Body bytes read so far in this attempt (the window's unread rest not counted).
    pub fn consumed(&self) -> u64 {
        self.scan.base + self.scan.pos as u64
    }

    /// Starts the page over for a new attempt at its body: the records already handed to the
    /// sink will be checked against the new body's first ones and skipped.
    pub fn restart(&mut self) {
        let scan = &mut self.scan;
        let written = scan.written;
        let hash = if scan.replay.is_some() && scan.records < written {
            // The attempt broke off again before it had replayed every written record: the
            // written ones' hash is still the one of the first attempt.
            scan.replay.map_or(0, |(_, h)| h)
        } else {
            scan.hash.digest()
        };
        *scan = Scan {
            paths: scan.paths.clone(),
            max_value_bytes: scan.max_value_bytes,
            read_bytes: scan.read_bytes,
            written,
            replay: Some((written, hash)),
            ..PageSplitter::new(scan.paths.clone(), 0).scan
        };
        self.window.clear();
    }

    fn read<S: RecordSink>(&mut self, sink: &mut S, eof: bool) -> Result<(), PageError> {
        let result = self.scan.run(&self.window, eof, sink);
        self.compact();
        result
    }

    /// Drops the bytes already read from the window, keeping count of lines for positions.
    fn compact(&mut self) {
        let scan = &mut self.scan;
        let read = &self.window[..scan.pos];
        if read.is_empty() {
            return;
        }
        if let Some(last) = memchr::memrchr(b'\n', read) {
            scan.line += memchr::memchr_iter(b'\n', read).count();
            scan.line_start = scan.base + last as u64 + 1;
        }
        scan.base += scan.pos as u64;
        scan.need = scan.need.saturating_sub(scan.pos);
        self.window.drain(..scan.pos);
        scan.pos = 0;
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Scan {
    fn run<S: RecordSink>(&mut self, win: &[u8], eof: bool, sink: &mut S) -> Result<(), PageError> {
        loop {
            while self.pos < win.len() && is_ws(win[self.pos]) {
                self.pos += 1;
            }
            if self.pos == win.len() {
                if !eof {
                    self.need = win.len() + self.read_bytes;
                    return Ok(());
                }
                if self.root_done {
                    return Ok(());
                }
                let what = match self.stack.last().map(|f| f.kind) {
                    None => "a value",
                    Some(Kind::Object) => "an object",
                    Some(Kind::Array | Kind::Records) => "a list",
                };
                return Err(self.syntax(win, self.pos, format!("EOF while parsing {what}")));
            }
            let b = win[self.pos];
            let step = match self.stack.last().copied() {
                None if self.root_done => {
                    return Err(self.syntax(win, self.pos, "trailing characters".into()));
                }
                None => {
                    let on = [
                        Some(0),
                        self.paths.cursor.as_ref().map(|_| 0),
                        self.paths.error.as_ref().map(|_| 0),
                    ];
                    self.value(win, eof, on)?
                }
                Some(frame) => self.in_frame(win, eof, frame, b, sink)?,
            };
            if let Step::More = step {
                // Read again once the window has grown by half of what is pending (at least
                // `read_bytes`), so a long value is not re-read for every piece.
                let pending = win.len() - self.pos;
                self.need = win.len() + (pending / 2).max(self.read_bytes);
                return Ok(());
            }
        }
    }

    /// One step inside the innermost open container.
    fn in_frame<S: RecordSink>(
        &mut self,
        win: &[u8],
        eof: bool,
        frame: Frame,
        b: u8,
        sink: &mut S,
    ) -> Result<Step, PageError> {
        let close = if frame.kind == Kind::Object {
            b'}'
        } else {
            b']'
        };
        match frame.expect {
            Expect::FirstOrEnd | Expect::CommaOrEnd if b == close => {
                self.pos += 1;
                self.stack.pop();
                self.value_done();
                Ok(Step::Done)
            }
            Expect::Member if b == close => {
                Err(self.syntax(win, self.pos, "trailing comma".into()))
            }
            Expect::CommaOrEnd if b == b',' => {
                self.pos += 1;
                self.top().expect = Expect::Member;
                Ok(Step::Done)
            }
            Expect::CommaOrEnd => {
                let wanted = if frame.kind == Kind::Object {
                    "expected `,` or `}`"
                } else {
                    "expected `,` or `]`"
                };
                Err(self.syntax(win, self.pos, wanted.into()))
            }
            Expect::Colon if b == b':' => {
                self.pos += 1;
                self.top().expect = Expect::Value;
                Ok(Step::Done)
            }
            Expect::Colon => Err(self.syntax(win, self.pos, "expected `:`".into())),
            Expect::FirstOrEnd | Expect::Member if frame.kind == Kind::Object => {
                if b != b'"' {
                    return Err(self.syntax(win, self.pos, "key must be a string".into()));
                }
                self.key(win, eof, frame)
            }
            Expect::Value => self.value(win, eof, frame.child),
            Expect::FirstOrEnd | Expect::Member => {
                if frame.kind == Kind::Records {
                    return self.record(win, eof, sink);
                }
                let index = frame.index;
                let mut on = [None; 3];
                for (p, at) in frame.on.iter().enumerate() {
                    if let Some(d) = *at
                        && self
                            .token(p, d)
                            .is_some_and(|t| t.parse::<usize>() == Ok(index))
                    {
                        on[p] = Some(d + 1);
                    }
                }
                self.top().index += 1;
                self.value(win, eof, on)
            }
        }
    }

    fn top(&mut self) -> &mut Frame {
        // Only called while a frame is open.
        let last = self.stack.len() - 1;
        &mut self.stack[last]
    }

    /// Token `d` of path `p`, if the path is followed and that long.
    fn token(&self, p: usize, d: usize) -> Option<&str> {
        let pointer = match p {
            RECORDS => Some(&self.paths.records),
            CURSOR => self.paths.cursor.as_ref(),
            _ => self.paths.error.as_ref(),
        }?;
        pointer.tokens().get(d).map(String::as_str)
    }

    fn path_len(&self, p: usize) -> Option<usize> {
        match p {
            RECORDS => Some(self.paths.records.tokens().len()),
            CURSOR => self.paths.cursor.as_ref().map(|c| c.tokens().len()),
            _ => self.paths.error.as_ref().map(|c| c.tokens().len()),
        }
    }

    fn pointer_text(&self, p: usize) -> String {
        let pointer = match p {
            RECORDS => Some(&self.paths.records),
            CURSOR => self.paths.cursor.as_ref(),
            _ => self.paths.error.as_ref(),
        };
        pointer.map(JsonPointer::to_string).unwrap_or_default()
    }

    /// A value has been read in the innermost container (or at the top level).
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(frame) => frame.expect = Expect::CommaOrEnd,
            None => self.root_done = true,
        }
    }

    /// Reads an object key and works out which paths go on into its value.
    fn key(&mut self, win: &[u8], eof: bool, frame: Frame) -> Result<Step, PageError> {
        let start = self.pos;
        let Some((raw, end)) = self.parse_raw(win, start, eof, None)? else {
            return Ok(Step::More);
        };
        let text = raw.get();
        let mut child = [None; 3];
        if frame.on.iter().any(Option::is_some) {
            let key: std::borrow::Cow<'_, str> = if text.contains('\\') {
                match serde_json::from_str::<String>(text) {
                    Ok(k) => k.into(),
                    // A lone surrogate: it cannot match a pointer token.
                    Err(_) => text.into(),
                }
            } else {
                text[1..text.len() - 1].into()
            };
            let mut seen = frame.seen;
            for (p, at) in frame.on.iter().enumerate() {
                let Some(d) = *at else { continue };
                if self.token(p, d) != Some(&*key) {
                    continue;
                }
                if seen & (1 << p) != 0 {
                    return Err(PageError::AmbiguousPath {
                        path: PATH_NAMES[p],
                        pointer: self.pointer_text(p),
                        key: key.into_owned(),
                    });
                }
                seen |= 1 << p;
                child[p] = Some(d + 1);
            }
            self.top().seen = seen;
        }
        self.pos = end;
        let top = self.top();
        top.child = child;
        top.expect = Expect::Colon;
        Ok(Step::Done)
    }

    /// Reads the value at the window's position, which is on the paths `on`.
    fn value(&mut self, win: &[u8], eof: bool, on: [Option<usize>; 3]) -> Result<Step, PageError> {
        let at = |p: usize| on[p].is_some() && on[p] == self.path_len(p);
        let b = win[self.pos];
        if at(RECORDS) {
            if b != b'[' {
                let found = match b {
                    b'{' => "an object",
                    b'"' => "a string",
                    b't' | b'f' => "a boolean",
                    b'n' => "null",
                    b'-' | b'0'..=b'9' => "a number",
                    _ => return Err(self.syntax(win, self.pos, "expected value".into())),
                };
                return Err(PageError::RecordsNotArray {
                    pointer: self.paths.records.to_string(),
                    found,
                });
            }
            self.found_records = true;
            self.open(Kind::Records, on);
            return Ok(Step::Done);
        }
        let captured = if at(CURSOR) {
            Some(CURSOR)
        } else if at(ERROR) {
            Some(ERROR)
        } else {
            None
        };
        let deeper = (0..3).any(|p| on[p].is_some() && !at(p));
        if captured.is_none() && deeper && (b == b'{' || b == b'[') {
            if self.stack.len() >= MAX_DEPTH {
                return Err(self.too_deep(win, self.pos));
            }
            let kind = if b == b'{' { Kind::Object } else { Kind::Array };
            self.open(kind, on);
            return Ok(Step::Done);
        }
        let start = self.pos;
        let Some((raw, end)) = self.parse_raw(win, start, eof, None)? else {
            return Ok(Step::More);
        };
        self.check_depth(win, raw, self.stack.len())?;
        match captured {
            Some(CURSOR) => {
                self.cursor = Some(raw.to_owned());
                self.cursor_new = true;
            }
            Some(_) => {
                let text = raw.get();
                if !matches!(text, "null" | "false" | "\"\"" | "[]" | "{}")
                    && !is_empty_container(text)
                {
                    self.error = Some(raw.to_owned());
                }
            }
            None => {}
        }
        self.pos = end;
        self.value_done();
        Ok(Step::Done)
    }

    fn open(&mut self, kind: Kind, on: [Option<usize>; 3]) {
        self.pos += 1;
        self.stack.push(Frame {
            kind,
            expect: Expect::FirstOrEnd,
            on,
            child: [None; 3],
            seen: 0,
            index: 0,
        });
    }

    /// Reads one element of the record array: hands it to the sink, or, while replaying a
    /// retried body, checks it against the records already written.
    fn record<S: RecordSink>(
        &mut self,
        win: &[u8],
        eof: bool,
        sink: &mut S,
    ) -> Result<Step, PageError> {
        let index = self.records;
        let start = self.pos;
        let end = match self.replay {
            Some((written, _)) if index < written => {
                let Some((_, end)) = self.parse_raw(win, start, eof, Some(index))? else {
                    return Ok(Step::More);
                };
                end
            }
            _ => {
                let mut de = serde_json::Deserializer::from_slice(&win[start..]);
                match sink.record(index, &mut de) {
                    Ok(last) => match record_end(win, start, last) {
                        Some(end) => end,
                        // The sink borrowed nothing that tells: read the record again.
                        None => match self.parse_raw(win, start, true, Some(index))? {
                            Some((_, end)) => end,
                            None => return Ok(Step::More),
                        },
                    },
                    Err(e) => {
                        if let Some(kept) = sink.take_error() {
                            return Err(kept);
                        }
                        if !eof && cut_short(&win[start..], &e) {
                            self.check_pending(win, start, Some(index))?;
                            return Ok(Step::More);
                        }
                        return Err(self.json_error(win, start, &e, Some(index)));
                    }
                }
            }
        };
        self.hash.update(&win[start..end]);
        self.pos = end;
        self.records += 1;
        if let Some((written, hash)) = self.replay
            && self.records == written
            && self.hash.digest() != hash
        {
            return Err(PageError::ChangedOnRetry {
                written,
                found: None,
            });
        }
        self.written = self.written.max(self.records);
        self.top().expect = Expect::CommaOrEnd;
        Ok(Step::Done)
    }

    /// Reads one JSON value at `start` with serde_json: the value and its end, or `None` if
    /// the window ends before it does.
    fn parse_raw<'w>(
        &self,
        win: &'w [u8],
        start: usize,
        eof: bool,
        record: Option<u64>,
    ) -> Result<Option<(&'w RawValue, usize)>, PageError> {
        let mut de = serde_json::Deserializer::from_slice(&win[start..]);
        match <&RawValue>::deserialize(&mut de) {
            Ok(raw) => {
                let end = offset_in(win, raw.get()) + raw.get().len();
                // A number may go on in the next piece.
                if end == win.len() && !eof {
                    self.check_pending(win, start, record)?;
                    return Ok(None);
                }
                Ok(Some((raw, end)))
            }
            Err(e) if !eof && cut_short(&win[start..], &e) => {
                self.check_pending(win, start, record)?;
                Ok(None)
            }
            Err(e) => Err(self.json_error(win, start, &e, record)),
        }
    }

    /// Refuses a value still incomplete after more than `max_value_bytes`.
    fn check_pending(
        &self,
        win: &[u8],
        start: usize,
        record: Option<u64>,
    ) -> Result<(), PageError> {
        let bytes = win.len() - start;
        if bytes > self.max_value_bytes {
            return Err(PageError::ValueTooLarge {
                record,
                bytes,
                limit: self.max_value_bytes,
                offset: self.base + start as u64,
            });
        }
        Ok(())
    }

    /// Fails the walk if `raw`, whose enclosing arrays and objects are `depth` levels deep,
    /// nests deeper than [`MAX_DEPTH`].
    fn check_depth(&self, win: &[u8], raw: &RawValue, depth: usize) -> Result<(), PageError> {
        let text = raw.get().as_bytes();
        match nested_deeper_than(text, MAX_DEPTH.saturating_sub(depth)) {
            None => Ok(()),
            Some(at) => Err(self.too_deep(win, offset_in(win, raw.get()) + at)),
        }
    }

    fn too_deep(&self, win: &[u8], at: usize) -> PageError {
        let (line, column, offset) = self.position(win, at);
        PageError::TooDeep {
            line,
            column,
            offset,
        }
    }

    /// Line, column and body offset of window offset `at`.
    fn position(&self, win: &[u8], at: usize) -> (usize, usize, u64) {
        let before = &win[..at.min(win.len())];
        let offset = self.base + before.len() as u64;
        match memchr::memrchr(b'\n', before) {
            Some(last) => (
                self.line + memchr::memchr_iter(b'\n', before).count(),
                at - last,
                offset,
            ),
            None => (self.line, (offset - self.line_start) as usize + 1, offset),
        }
    }

    fn syntax(&self, win: &[u8], at: usize, message: String) -> PageError {
        if let Some(bad) = invalid_utf8(win, at) {
            return self.invalid_utf8(win, bad, None);
        }
        let (line, column, offset) = self.position(win, at);
        PageError::Syntax {
            line,
            column,
            offset,
            message,
        }
    }

    fn invalid_utf8(&self, win: &[u8], at: usize, record: Option<u64>) -> PageError {
        let (line, column, offset) = self.position(win, at);
        PageError::InvalidUtf8 {
            record,
            line,
            column,
            offset,
        }
    }

    /// serde_json's error reading the value at `start` as a [`PageError`] with a body
    /// position: invalid UTF-8 is named as such, and an error inside a record names it.
    fn json_error(
        &self,
        win: &[u8],
        start: usize,
        err: &serde_json::Error,
        record: Option<u64>,
    ) -> PageError {
        let value = &win[start..];
        let at = start + offset_of(value, err.line(), err.column()).min(value.len());
        // serde_json reads every string it meets as UTF-8 and stops at the first invalid byte,
        // calling it an "invalid unicode code point"; say what it is, and where.
        if err.line() > 0
            && let Some(bad) = invalid_utf8(win, at)
            && bad >= start
        {
            return self.invalid_utf8(win, bad, record);
        }
        let message = message_of(err);
        let (line, column, offset) = self.position(win, at);
        match record {
            Some(index) => PageError::RecordJson {
                index,
                line,
                column,
                offset,
                message,
            },
            None => PageError::Syntax {
                line,
                column,
                offset,
                message,
            },
        }
    }
}

/// Whether serde_json's error reading `value` may only mean that the window ends too soon:
/// it ran out of input, or failed at the window's last byte (`-12.5e` is an "invalid number"
/// until its exponent arrives).
fn cut_short(value: &[u8], err: &serde_json::Error) -> bool {
    err.is_eof() || offset_of(value, err.line(), err.column()) + 1 >= value.len()
}

/// Whether `text` is `[]` or `{}` with whitespace inside.
fn is_empty_container(text: &str) -> bool {
    let inner = text.get(1..text.len().saturating_sub(1)).unwrap_or("x");
    matches!(text.as_bytes().first(), Some(b'[' | b'{')) && inner.bytes().all(is_ws)
}

/// The window offset of `text`, a slice of the window.
fn offset_in(win: &[u8], text: &str) -> usize {
    (text.as_ptr() as usize).saturating_sub(win.as_ptr() as usize)
}

/// Where the record starting at `start` ends, given the last piece of it the sink borrowed:
/// after that piece come only whitespace and the record's `}` (or, when the piece is the
/// whole record, the `,` or `]` after it). `None` when that is not what follows.
fn record_end(win: &[u8], start: usize, last: &str) -> Option<usize> {
    let mut at = if last.is_empty() {
        // Nothing borrowed: an empty object, `{` whitespace `}`.
        (win.get(start) == Some(&b'{')).then_some(start + 1)?
    } else {
        let from = offset_in(win, last);
        if from < start || from + last.len() > win.len() {
            return None;
        }
        from + last.len()
    };
    let whole = !last.is_empty() && offset_in(win, last) == start;
    if whole {
        return Some(at);
    }
    while at < win.len() && is_ws(win[at]) {
        at += 1;
    }
    (win.get(at) == Some(&b'}')).then_some(at + 1)
}

/// The first invalid UTF-8 byte of the window at or before `at`, if any.
fn invalid_utf8(win: &[u8], at: usize) -> Option<usize> {
    // A UTF-8 sequence is at most 4 bytes: one starting at `at` is whole in this prefix.
    let upto = &win[..(at + 4).min(win.len())];
    match std::str::from_utf8(upto) {
        // A sequence cut by the window's end may be completed by the next piece.
        Err(e) if e.valid_up_to() <= at && e.error_len().is_some() => Some(e.valid_up_to()),
        _ => None,
    }
}

/// serde_json's message without its " at line L column C".
fn message_of(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// The byte offset of serde_json's (line, column) in `text`: the column counts bytes from 1,
/// and points at the byte where the error was seen.
fn offset_of(text: &[u8], line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        memchr::memchr_iter(b'\n', text)
            .nth(line - 2)
            .map_or(text.len(), |i| i + 1)
    };
    (line_start + column).saturating_sub(1)
}

/// Where a JSON value's text (as serde_json validated it) nests arrays and objects more than
/// `levels` deep: the offset of the `[` or `{` that opens level `levels + 1`, if any.
///
/// serde_json skips and captures raw values without a depth limit (and without recursion), so
/// values landline skips or copies raw are measured here. Cheap in the common case: a value
/// too short to nest that deep, or with no more opening brackets than `levels`, is not walked.
pub(crate) fn nested_deeper_than(text: &[u8], levels: usize) -> Option<usize> {
    // `levels + 1` levels take at least that many opening and closing brackets.
    if text.len() < 2 * (levels + 1) || shape(text).opening_brackets <= levels {
        return None;
    }
    deeper_at(text, levels)
}

/// The offset of the bracket that opens level `levels + 1` in `text`, walking it byte by byte
/// (strings skipped); the slow path of [`nested_deeper_than`].
pub(crate) fn deeper_at(text: &[u8], levels: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in text.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > levels {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Byte counts of a raw JSON value's text that its parse does not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// `[` and `{` bytes, in strings or not: an upper bound of the value's depth.
    pub(crate) opening_brackets: usize,
    /// Whether a byte is below 0x20: in valid JSON, whitespace (line breaks, tabs) between
    /// tokens, since strings cannot hold such bytes raw.
    pub(crate) control_bytes: bool,
}

/// Counts both in one pass, written so the compiler vectorises it: byte-wide counters over
/// 128-byte blocks (they cannot overflow, and the blocks have no odd tail to do byte by byte).
pub(crate) fn shape(text: &[u8]) -> Shape {
    let mut opening_brackets = 0usize;
    let mut control_bytes = false;
    for block in text.chunks(128) {
        let mut opens = 0u8;
        let mut controls = false;
        for &b in block {
            // `[` is 0x5B and `{` is 0x7B: they differ only in bit 0x20.
            opens += u8::from(b | 0x20 == b'{');
            controls |= b < 0x20;
        }
        opening_brackets += usize::from(opens);
        control_bytes |= controls;
    }
    Shape {
        opening_brackets,
        control_bytes,
    }
}

/// A map key, borrowed from the body unless it had escapes.
///
/// serde's own `Cow<str>` always allocates; this one borrows whenever serde_json can.
#[derive(Debug)]
pub(crate) enum KeyCow<'de> {
    /// No escapes: the key's text in the body, byte for byte.
    Borrowed(&'de str),
    /// The key had escapes; this is its unescaped value.
    Owned(String),
}

impl KeyCow<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            KeyCow::Borrowed(s) => s,
            KeyCow::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for KeyCow<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyCow<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyCow<'de>, E> {
                Ok(KeyCow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyCow<'de>, E> {
                Ok(KeyCow::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects each record's raw text.
    #[derive(Default)]
    struct Collect(Vec<String>);

    impl RecordSink for Collect {
        fn record<'de, D: Deserializer<'de>>(
            &mut self,
            _: u64,
            d: D,
        ) -> Result<&'de str, D::Error> {
            let raw = <&RawValue>::deserialize(d)?;
            self.0.push(raw.get().to_owned());
            Ok(raw.get())
        }
        fn take_error(&mut self) -> Option<PageError> {
            None
        }
    }

    fn scan(
        body: &str,
        records: &str,
        next: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), PageError> {
        scan_bytes(body.as_bytes(), records, next)
    }

    fn scan_bytes(
        body: &[u8],
        records: &str,
        next: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), PageError> {
        let records = JsonPointer::parse(records).unwrap();
        let next = next.map(|n| JsonPointer::parse(n).unwrap());
        let mut sink = Collect::default();
        let scan = scan_page(body, &records, next.as_ref(), &mut sink)?;
        assert_eq!(scan.records as usize, sink.0.len());
        Ok((sink.0, scan.next.map(|r| r.get().to_owned())))
    }

    #[test]
    fn finds_records_and_cursor_in_one_pass() {
        let body = r#"{"next_token":"abc","variants":[{"id":1},{"id":2, "x":[1,2]}],"other":{"variants":[9]}}"#;
        let (recs, next) = scan(body, "/variants", Some("/next_token")).unwrap();
        assert_eq!(recs, [r#"{"id":1}"#, r#"{"id":2, "x":[1,2]}"#]);
        assert_eq!(next.as_deref(), Some(r#""abc""#));
    }

    #[test]
    fn follows_nested_and_indexed_pointers() {
        let body = r#"{"data":{"items":[{"a":1}],"meta":[0,{"cursor":5}]}}"#;
        let (recs, next) = scan(body, "/data/items", Some("/data/meta/1/cursor")).unwrap();
        assert_eq!(recs, [r#"{"a":1}"#]);
        assert_eq!(next.as_deref(), Some("5"));
        let (recs, next) = scan(r#"[{"a":1},{"b":2}]"#, "", None).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(next, None);
        let (recs, _) = scan(r#"{"a~b":{"c/d":[{}]}}"#, "/a~0b/c~1d", None).unwrap();
        assert_eq!(recs, ["{}"]);
    }

    #[test]
    fn absent_cursor_is_none_and_escaped_keys_match() {
        let (recs, next) = scan(r#"{"v\u0061riants":[]}"#, "/variants", Some("/next")).unwrap();
        assert!(recs.is_empty());
        assert_eq!(next, None);
    }

    #[test]
    fn reports_structural_problems() {
        let err = scan(r#"{"variants":{"a":1}}"#, "/variants", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the record path /variants points at an object, not an array"
        );
        let err = scan(r#"{"variants":null}"#, "/variants", None).unwrap_err();
        assert!(matches!(
            err,
            PageError::RecordsNotArray { found: "null", .. }
        ));
        let err = scan(r#"{"items":[]}"#, "/variants", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the record path /variants does not exist in the body"
        );
        let err = scan(r#"{"variants":[{"a":1},"#, "/variants", None).unwrap_err();
        assert!(matches!(err, PageError::Syntax { .. }), "{err}");
        let err = scan("<html>oops</html>", "/variants", None).unwrap_err();
        assert!(matches!(err, PageError::Syntax { .. }), "{err}");
        let err = scan(r#"{"variants":[]} trailing"#, "/variants", None).unwrap_err();
        assert!(matches!(err, PageError::Syntax { .. }), "{err}");
    }

    /// `open` repeated `n` times, then `inner`, then `close` `n` times.
    fn nest(open: &str, n: usize, inner: &str, close: &str) -> String {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    }

    /// The error of a scan that must fail (without printing what it found: bodies are huge).
    fn scan_err(body: &str, records: &str, next: Option<&str>) -> PageError {
        match scan(body, records, next) {
            Ok((recs, _)) => panic!("expected an error, got {} records", recs.len()),
            Err(err) => err,
        }
    }

    /// serde_json's verdict on a whole body, as landline must agree with it on depth.
    fn serde_accepts(body: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(body).is_ok()
    }

    #[test]
    fn nesting_outside_records_is_limited_like_serde_json() {
        // The page's top-level object is one level; a skipped value at depth 1 may add 126.
        for (levels, ok) in [(126, true), (127, false)] {
            let body = format!(r#"{{"skip":{},"v":[]}}"#, nest("[", levels, "1", "]"));
            assert_eq!(serde_accepts(&body), ok, "serde_json, {levels}");
            assert_eq!(scan(&body, "/v", None).is_ok(), ok, "landline, {levels}");
            let body = format!(
                r#"{{"v":[],"skip":{}}}"#,
                nest(r#"{"a":"#, levels, "1", "}")
            );
            assert_eq!(serde_accepts(&body), ok, "serde_json, {levels}");
            assert_eq!(scan(&body, "/v", None).is_ok(), ok, "landline, {levels}");
        }
        // Skipped array elements on the way, and the cursor, are measured too.
        let body = format!(r#"[{},{{"v":[]}}]"#, nest("[", 127, "", "]"));
        let err = scan_err(&body, "/1/v", None);
        assert!(matches!(err, PageError::TooDeep { .. }), "{err}");
        let body = format!(r#"{{"v":[],"next":{}}}"#, nest("[", 127, "", "]"));
        let err = scan_err(&body, "/v", Some("/next"));
        assert!(matches!(err, PageError::TooDeep { .. }), "{err}");
    }

    #[test]
    fn too_deep_names_the_same_position_as_serde_json() {
        let body = format!(r#"{{"v":[],"skip":{}}}"#, nest(r#"{"a":"#, 200, "1", "}"));
        let err = scan_err(&body, "/v", None);
        // Page level 128 opens at the 127th `{` of the skipped value: byte 15 + 126 * 5.
        let offset = 15 + 126 * 5;
        assert_eq!(&body[offset..offset + 1], "{");
        assert_eq!(
            err.to_string(),
            format!(
                "the body nests arrays and objects more than 127 levels deep at line 1 column {} (byte {offset} of the body)",
                offset + 1
            )
        );
        let serde = serde_json::from_str::<serde_json::Value>(&body).unwrap_err();
        assert_eq!(
            serde.to_string(),
            format!("recursion limit exceeded at line 1 column {}", offset + 1)
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // On a thread with the default stack size (2 MiB), as the pipeline's workers have.
        std::thread::Builder::new()
            .spawn(|| {
                let n = 100_000;
                let closed = [
                    nest("[", n, "", "]"),
                    nest(r#"{"a":"#, n, "1", "}"),
                    format!(r#"{{"v":[],"x":{}}}"#, nest("[", n, "", "]")),
                    format!(r#"{{"x":{},"v":[]}}"#, nest(r#"{"a":"#, n, "1", "}")),
                ];
                for body in &closed {
                    let err = scan_err(body, "/v", None);
                    assert!(
                        matches!(
                            err,
                            PageError::TooDeep {
                                column: 128..=640,
                                ..
                            }
                        ),
                        "{err}"
                    );
                }
                // Records at the top level go to the sink whole (the transform refuses them).
                let err = scan_err(&closed[1], "", None);
                assert!(
                    matches!(
                        err,
                        PageError::RecordsNotArray {
                            found: "an object",
                            ..
                        }
                    ),
                    "{err}"
                );
                // Unclosed: the body ends first.
                for body in ["[".repeat(n), r#"{"a":"#.repeat(n)] {
                    for records in ["", "/v"] {
                        let text = scan_err(&body, records, None).to_string();
                        assert!(
                            text.contains("EOF while parsing") || text.contains("not an array"),
                            "{text}"
                        );
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn invalid_utf8_is_named_with_its_position() {
        // In a string skipped outside the records.
        let body = b"{\"x\":\"a\xffb\",\"v\":[]}";
        let err = scan_bytes(body, "/v", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the body has invalid UTF-8 at line 1 column 8 (byte 7 of the body)"
        );
        // In a key on the way, after a line break.
        let body = b"{\"v\":[],\n\"\xc3(\":1}";
        let err = scan_bytes(body, "/v", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the body has invalid UTF-8 at line 2 column 2 (byte 10 of the body)"
        );
        // In a record (the sink copies it raw): the record is named.
        let body = b"{\"v\":[{},{\"a\":[\"\xe2\x82\"]}]}";
        let err = scan_bytes(body, "/v", None).unwrap_err();
        assert!(
            matches!(
                err,
                PageError::InvalidUtf8 {
                    record: Some(1),
                    line: 1,
                    column: 17,
                    offset: 16
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "record 1 of the page has invalid UTF-8 at line 1 column 17 (byte 16 of the body)"
        );
        // In the cursor.
        let body = b"{\"v\":[],\"next\":\"\xff\"}";
        let err = scan_bytes(body, "/v", Some("/next")).unwrap_err();
        assert!(
            matches!(
                err,
                PageError::InvalidUtf8 {
                    record: None,
                    offset: 16,
                    ..
                }
            ),
            "{err}"
        );
        // A syntax error before any bad byte is reported as such.
        let body = b"{\"v\":[] x \"\xff\"}";
        let err = scan_bytes(body, "/v", None).unwrap_err();
        assert!(matches!(err, PageError::Syntax { .. }), "{err}");
    }

    #[test]
    fn json_errors_inside_a_record_name_it() {
        let err = scan(r#"{"v":[{"a":1},{"a":tru}]}"#, "/v", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 1 of the page is not valid JSON at line 1 column 23 (byte 22 of the body): expected ident"
        );
        // Between records, the page is at fault.
        let err = scan(r#"{"v":[{"a":1} {"a":2}]}"#, "/v", None).unwrap_err();
        assert!(matches!(err, PageError::Syntax { .. }), "{err}");
    }

    #[test]
    fn a_repeated_key_on_a_path_is_ambiguous() {
        let err = scan(r#"{"v":[{"a":1}],"v":[{"a":2}]}"#, "/v", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"the record path /v is ambiguous: the key "v" appears twice in one object"#
        );
        let err = scan(
            r#"{"data":{"items":[]},"data":{"items":[]}}"#,
            "/data/items",
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&err, PageError::AmbiguousPath { path: "record", key, .. } if key == "data"),
            "{err}"
        );
        let err = scan(r#"{"n":"a","v":[],"\u006e":"b"}"#, "/v", Some("/n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"the cursor path /n is ambiguous: the key "n" appears twice in one object"#
        );
        // Repeats off the paths are skipped like everything else there.
        let (recs, next) = scan(r#"{"x":1,"x":2,"v":[{}],"n":3}"#, "/v", Some("/n")).unwrap();
        assert_eq!((recs.len(), next.as_deref()), (1, Some("3")));
    }

    #[test]
    fn shape_counts_every_bracket_and_finds_control_bytes() {
        let text = "[{\"[\":{}}]".repeat(100);
        let found = shape(text.as_bytes());
        assert_eq!((found.opening_brackets, found.control_bytes), (400, false));
        let found = shape(format!("{text}\n{text}").as_bytes());
        assert_eq!((found.opening_brackets, found.control_bytes), (800, true));
        assert!(shape(b"[1,\t2]").control_bytes);
        assert_eq!(nested_deeper_than(text.as_bytes(), 3), None);
        assert_eq!(nested_deeper_than(text.as_bytes(), 2), Some(6));
        // Brackets and escaped quotes in strings do not count as nesting.
        let text = format!(r#"["\"[[[[[", {}]"#, nest("[", 3, "", "]"));
        assert_eq!(nested_deeper_than(text.as_bytes(), 4), None);
        assert!(nested_deeper_than(text.as_bytes(), 3).is_some());
    }

    /// Records, cursor and error value of a page, as text.
    type Split = (Vec<String>, Option<String>, Option<String>);

    /// Splits `body` fed `chunk` bytes at a time, reading after every piece: records, cursor
    /// and error value, or the error's message.
    fn scan_chunked(body: &[u8], paths: &Paths, chunk: usize) -> Result<Split, String> {
        let mut sink = Collect::default();
        let mut splitter = PageSplitter::new(paths.clone(), usize::MAX).with_read_bytes(1);
        for piece in body.chunks(chunk) {
            splitter.window().extend_from_slice(piece);
            splitter.feed(&mut sink).map_err(|e| e.to_string())?;
        }
        let scan = splitter.finish(&mut sink).map_err(|e| e.to_string())?;
        assert_eq!(scan.records as usize, sink.0.len());
        let text = |r: Option<Box<RawValue>>| r.map(|r| r.get().to_owned());
        Ok((sink.0, text(scan.next), text(scan.error)))
    }

    fn paths(records: &str, cursor: Option<&str>, error: Option<&str>) -> Paths {
        Paths {
            records: JsonPointer::parse(records).unwrap(),
            cursor: cursor.map(|c| JsonPointer::parse(c).unwrap()),
            error: error.map(|c| JsonPointer::parse(c).unwrap()),
        }
    }

    #[test]
    fn pieces_of_any_size_give_what_the_whole_body_gives() {
        let pretty = "{\n  \"next\" : \"n1\",\n  \"v\" : [\n    {\"a\": 1, \"b\": [1, 2, {\"c\": \"}\"}]},\n    {\"a\": -12.5e3}\n  ]\n}\n";
        let bodies: Vec<Vec<u8>> = vec![
            br#"{"next_token":"abc","variants":[{"id":1},{"id":2, "x":[1,2]}],"other":{"variants":[9]}}"#.to_vec(),
            pretty.as_bytes().to_vec(),
            br#"{"v":[{"s":"\"]}\\","n":12345678901234567890},{}],"next":12345}"#.to_vec(),
            br#"{"v":[],"next":null}"#.to_vec(),
            br#"{"v":[{"a":1},{"a":tru}]}"#.to_vec(),
            br#"{"v":[{"a":1} {"a":2}]}"#.to_vec(),
            br#"{"v":[{"a":1},]}"#.to_vec(),
            br#"{"v":[{"a":1}]} x"#.to_vec(),
            br#"{"v":[{"a":1}"#.to_vec(),
            br#"{"v":[1,{"a":1}]}"#.to_vec(),
            b"{\"x\":\"a\xffb\",\"v\":[]}".to_vec(),
            b"{\"v\":[{},{\"a\":[\"\xe2\x82\"]}]}".to_vec(),
            b"{\"v\":[],\n\"\xc3(\":1}".to_vec(),
            br#"{"v":[],"v":[]}"#.to_vec(),
            br#"{"n":"a","v":[],"\u006e":"b"}"#.to_vec(),
            br#"{"next":5,"v":{"a":1}}"#.to_vec(),
            br#"{"error":{"code":"quota"},"next":"x"}"#.to_vec(),
            br#"{"v":[{"a":1}],"error":null,"next":7}"#.to_vec(),
            br#"[{"a":1},{"b":2}]"#.to_vec(),
            format!(r#"{{"v":[],"skip":{}}}"#, nest(r#"{"a":"#, 200, "1", "}")).into_bytes(),
        ];
        for body in &bodies {
            for p in [
                paths("/v", Some("/next"), Some("/error")),
                paths("/variants", Some("/next_token"), None),
                paths("", None, None),
            ] {
                let whole = scan_chunked(body, &p, body.len().max(1));
                for chunk in [1, 2, 3, 5, 8, 13] {
                    assert_eq!(
                        scan_chunked(body, &p, chunk),
                        whole,
                        "{} in pieces of {chunk}",
                        String::from_utf8_lossy(body)
                    );
                }
            }
        }
    }

    #[test]
    fn error_values_are_found_and_empty_ones_ignored() {
        let p = paths("/v", None, Some("/error"));
        let (recs, _, error) = scan_chunked(br#"{"error":{"message":"quota"}}"#, &p, 4).unwrap();
        assert!(recs.is_empty());
        assert_eq!(error.as_deref(), Some(r#"{"message":"quota"}"#));
        for empty in ["null", "false", "\"\"", "[]", "{ }"] {
            let body = format!(r#"{{"error":{empty},"v":[{{"a":1}}]}}"#);
            let (recs, _, error) = scan_chunked(body.as_bytes(), &p, 3).unwrap();
            assert_eq!((recs.len(), error), (1, None), "{empty}");
        }
        // Without an error value, the records must be there.
        let err = scan_chunked(br#"{"error":null}"#, &p, 3).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn the_cursor_is_known_as_soon_as_it_is_read() {
        let p = paths("/v", Some("/next"), None);
        let mut splitter = PageSplitter::new(p, usize::MAX).with_read_bytes(1);
        let mut sink = Collect::default();
        splitter
            .window()
            .extend_from_slice(br#"{"next":"abc","v":[{"a":1},"#);
        splitter.feed(&mut sink).unwrap();
        assert_eq!(
            splitter.take_new_cursor().map(RawValue::get),
            Some(r#""abc""#)
        );
        assert_eq!(splitter.take_new_cursor().map(RawValue::get), None, "once");
        assert_eq!(sink.0.len(), 1, "the first record is out already");
        splitter.window().extend_from_slice(br#"{"a":2}]}"#);
        let scan = splitter.finish(&mut sink).unwrap();
        assert_eq!(scan.records, 2);
        assert_eq!(scan.next.as_deref().map(RawValue::get), Some(r#""abc""#));
    }

    #[test]
    fn a_value_larger_than_the_limit_is_refused_while_it_arrives() {
        let p = paths("/v", None, None);
        let mut splitter = PageSplitter::new(p, 100).with_read_bytes(1);
        let mut sink = Collect::default();
        splitter
            .window()
            .extend_from_slice(br#"{"v":[{"a":1},{"big":""#);
        splitter.feed(&mut sink).unwrap();
        let mut err = None;
        for _ in 0..20 {
            splitter.window().extend_from_slice(&[b'x'; 10]);
            if let Err(e) = splitter.feed(&mut sink) {
                err = Some(e);
                break;
            }
        }
        match err {
            Some(PageError::ValueTooLarge {
                record: Some(1),
                limit: 100,
                bytes,
                offset: 14,
            }) => assert!(bytes > 100),
            other => panic!("{other:?}"),
        }
        assert_eq!(sink.0.len(), 1);
    }

    #[test]
    fn a_retried_body_skips_what_was_written_after_checking_it() {
        let p = paths("/v", Some("/next"), None);
        let body = br#"{"v":[{"a":1},{"a":2},{"a":3}],"next":"n"}"#;
        let cut = body.len() - 20;
        let new = || PageSplitter::new(p.clone(), usize::MAX).with_read_bytes(1);

        // Broken after two records, fetched again whole: the third follows the first two.
        let mut splitter = new();
        let mut sink = Collect::default();
        splitter.window().extend_from_slice(&body[..cut]);
        splitter.feed(&mut sink).unwrap();
        assert_eq!(sink.0, [r#"{"a":1}"#, r#"{"a":2}"#]);
        splitter.restart();
        for piece in body.chunks(7) {
            splitter.window().extend_from_slice(piece);
            splitter.feed(&mut sink).unwrap();
        }
        let scan = splitter.finish(&mut sink).unwrap();
        assert_eq!(sink.0, [r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":3}"#]);
        assert_eq!(scan.records, 3);

        // Broken twice, the second time before the replay was done.
        let mut splitter = new();
        let mut sink = Collect::default();
        splitter.window().extend_from_slice(&body[..cut]);
        splitter.feed(&mut sink).unwrap();
        splitter.restart();
        splitter.window().extend_from_slice(&body[..12]);
        splitter.feed(&mut sink).unwrap();
        splitter.restart();
        splitter.window().extend_from_slice(body);
        let scan = splitter.finish(&mut sink).unwrap();
        assert_eq!((scan.records, sink.0.len()), (3, 3));

        // The page came back with other records, or fewer.
        for (again, found) in [
            (&br#"{"v":[{"a":1},{"a":9},{"a":3}],"next":"n"}"#[..], None),
            (&br#"{"v":[{"a":2},{"a":1},{"a":3}],"next":"n"}"#[..], None),
            (&br#"{"v":[{"a":1}],"next":"n"}"#[..], Some(1)),
        ] {
            let mut splitter = new();
            let mut sink = Collect::default();
            splitter.window().extend_from_slice(&body[..cut]);
            splitter.feed(&mut sink).unwrap();
            splitter.restart();
            splitter.window().extend_from_slice(again);
            let err = splitter.finish(&mut sink).unwrap_err();
            assert!(
                matches!(err, PageError::ChangedOnRetry { written: 2, found: f } if f == found),
                "{err}"
            );
            assert_eq!(sink.0.len(), 2, "nothing more written");
        }
    }
}
