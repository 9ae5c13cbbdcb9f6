//! Splitting one page body into records, in a single streaming pass.
//!
//! A page body is walked once with serde_json, following at most two JSON pointers: the
//! record array and, for body-driven pagination, the next cursor. Everything else in the body
//! is skipped without being built. Each record is handed to a [`RecordSink`] as a deserializer
//! positioned on it, so the transform reads the record's top-level fields in the same pass and
//! copies untouched values through as raw JSON text. No `serde_json::Value` is ever built.
//!
//! **What the walk checks.** The body must be JSON (RFC 8259) in UTF-8, every string included
//! (skipped ones too). Outside the records it may nest at most [`MAX_DEPTH`] levels of arrays
//! and objects, as serde_json reads it; inside a record, the sink decides (the transform
//! allows [`MAX_DEPTH`] levels in each line). Deeper nesting is an error, never a stack
//! overflow: serde_json's recursion limit guards the walk, and the values serde_json skips or
//! captures raw (without recursion, and without a limit) are measured from their text. The
//! objects on the record and cursor paths must not repeat the key the path goes through: with
//! two `"variants"` arrays, readers disagree on which one counts. An error inside a record
//! names the record's index; UTF-8 and nesting errors name a position (line and column, as
//! serde_json counts them: the column counts bytes, from 1).
//!
//! Memory: nothing here allocates per record; the cursor is borrowed from the body.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::pointer::JsonPointer;

/// The most levels of nested arrays and objects landline reads, counting from the top level of
/// a page (outside the records) or of a record's line. This is serde_json's own recursion
/// limit (it reads 127 levels and refuses 128), so every line landline writes reads back.
pub const MAX_DEPTH: usize = 127;

/// Receives the records of a page, one at a time, in order.
pub trait RecordSink {
    /// Consumes one record. `index` is its position in the page, from 0.
    ///
    /// An error that is not about the JSON itself should be kept by the sink and reported
    /// through [`RecordSink::take_error`]; return `D::Error::custom` to stop the scan.
    fn record<'de, D: Deserializer<'de>>(&mut self, index: u64, record: D) -> Result<(), D::Error>;

    /// The error that made [`RecordSink::record`] stop the scan, if it kept one.
    fn take_error(&mut self) -> Option<PageError>;
}

/// What one pass over a page found.
#[derive(Debug, Clone, Copy)]
pub struct PageScan<'de> {
    /// Records handed to the sink.
    pub records: u64,
    /// The raw JSON value at the cursor pointer, if it was asked for and present.
    pub next: Option<&'de RawValue>,
}

/// Why a page body could not be split into records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// The body is not valid JSON (outside any record).
    #[error("the body is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A record is not valid JSON.
    #[error("record {index} of the page is not valid JSON: {source}")]
    RecordJson {
        /// Position of the record in the page.
        index: u64,
        /// What serde_json found, with its line and column in the body.
        #[source]
        source: serde_json::Error,
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
        offset: usize,
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
        offset: usize,
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
    /// An object on the record or cursor path has the key the path goes through twice, so
    /// which value the path means depends on the reader.
    #[error("the {path} path {pointer} is ambiguous: the key {key:?} appears twice in one object")]
    AmbiguousPath {
        /// `"record"` or `"cursor"`.
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

/// Splits `body` into records for `sink`, and picks up the cursor at `next` if given.
///
/// Errors name the pointers as given. On an error, records before the failing one have been
/// handed to the sink.
pub fn scan_page<'de, S: RecordSink>(
    body: &'de [u8],
    records: &JsonPointer,
    next: Option<&JsonPointer>,
    sink: &mut S,
) -> Result<PageScan<'de>, PageError> {
    let mut state = ScanState {
        sink,
        body,
        found_records: false,
        records: 0,
        next: None,
        failure: None,
        json_error_in: None,
    };
    let walker = Walker {
        state: &mut state,
        records: Some(records.tokens()),
        next: next.map(JsonPointer::tokens),
        depth: 0,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = walker.deserialize(&mut de).and_then(|()| de.end());
    if let Some(failure) = state.failure.take() {
        return Err(with_pointers(failure, records, next));
    }
    if let Some(err) = state.sink.take_error() {
        return Err(err);
    }
    if let Err(err) = walked {
        return Err(json_error(body, err, state.json_error_in));
    }
    if !state.found_records {
        return Err(PageError::RecordsMissing {
            pointer: records.to_string(),
        });
    }
    Ok(PageScan {
        records: state.records,
        next: state.next,
    })
}

/// A serde_json error as a [`PageError`]: invalid UTF-8 is named as such, and an error inside
/// a record names the record.
fn json_error(body: &[u8], err: serde_json::Error, record: Option<u64>) -> PageError {
    // serde_json reads every string it meets as UTF-8 and stops at the first invalid byte,
    // calling it an "invalid unicode code point"; say what it is, and where.
    if let (true, Err(utf8)) = (err.line() > 0, std::str::from_utf8(body)) {
        let offset = utf8.valid_up_to();
        if offset <= offset_of(body, err.line(), err.column()) {
            let (line, column) = line_column(body, offset);
            return PageError::InvalidUtf8 {
                record,
                line,
                column,
                offset,
            };
        }
    }
    match record {
        Some(index) => PageError::RecordJson { index, source: err },
        None => PageError::Json(err),
    }
}

/// The byte offset of serde_json's (line, column): the column counts bytes from 1.
fn offset_of(body: &[u8], line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        body.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(body.len(), |(i, _)| i + 1)
    };
    (line_start + column).saturating_sub(1)
}

/// serde_json's line and column (both from 1, the column in bytes) of the byte at `offset`.
pub(crate) fn line_column(body: &[u8], offset: usize) -> (usize, usize) {
    let before = &body[..offset.min(body.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

struct ScanState<'s, 'de, S> {
    sink: &'s mut S,
    /// The whole body, to turn a raw value's address into a position.
    body: &'de [u8],
    found_records: bool,
    records: u64,
    next: Option<&'de RawValue>,
    /// A structural problem found by the walk (kept typed; serde only carries text).
    failure: Option<PageError>,
    /// The record whose own JSON the parse failed in, if it failed in one.
    json_error_in: Option<u64>,
}

impl<S> ScanState<'_, '_, S> {
    /// Fails the walk if `raw`, whose enclosing arrays and objects are `depth` levels deep,
    /// nests deeper than [`MAX_DEPTH`].
    fn check_depth<E: de::Error>(&mut self, raw: &RawValue, depth: usize) -> Result<(), E> {
        let text = raw.get().as_bytes();
        match nested_deeper_than(text, MAX_DEPTH.saturating_sub(depth)) {
            None => Ok(()),
            Some(at) => {
                // `text` is part of `body`: its offset there is the difference of addresses.
                let offset =
                    (text.as_ptr() as usize).saturating_sub(self.body.as_ptr() as usize) + at;
                let (line, column) = line_column(self.body, offset);
                self.failure = Some(PageError::TooDeep {
                    line,
                    column,
                    offset,
                });
                Err(E::custom("nested too deeply"))
            }
        }
    }
}

/// Walks one JSON value; `records`/`next` are the pointer tokens still to follow from here,
/// `depth` the number of arrays and objects around the value.
struct Walker<'w, 's, 'de, 'p, S> {
    state: &'w mut ScanState<'s, 'de, S>,
    records: Option<&'p [String]>,
    next: Option<&'p [String]>,
    depth: usize,
}

impl<'de, S: RecordSink> DeserializeSeed<'de> for Walker<'_, '_, 'de, '_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match (self.records, self.next) {
            (Some([]), _) => {
                self.state.found_records = true;
                d.deserialize_any(RecordArray { state: self.state })
            }
            (_, Some([])) => {
                let raw = <&RawValue>::deserialize(d)?;
                self.state.check_depth(raw, self.depth)?;
                self.state.next = Some(raw);
                Ok(())
            }
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de, S: RecordSink> Walker<'_, '_, 'de, '_, S> {
    /// Skips a value off both paths: checked (UTF-8, depth), never built.
    fn skip<E: de::Error>(&mut self, raw: &'de RawValue) -> Result<(), E> {
        self.state.check_depth(raw, self.depth + 1)
    }
}

impl<'de, S: RecordSink> Visitor<'de> for Walker<'_, '_, 'de, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut seen_records = false;
        let mut seen_next = false;
        while let Some(key) = map.next_key::<KeyCow<'de>>()? {
            let key = key.as_str();
            let records = follow(self.records, |t| t == key);
            let next = follow(self.next, |t| t == key);
            if records.is_some() && std::mem::replace(&mut seen_records, true)
                || next.is_some() && std::mem::replace(&mut seen_next, true)
            {
                self.state.failure = Some(PageError::AmbiguousPath {
                    path: if records.is_some() {
                        "record"
                    } else {
                        "cursor"
                    },
                    pointer: String::new(),
                    key: key.to_owned(),
                });
                return Err(de::Error::custom("ambiguous path"));
            }
            if records.is_none() && next.is_none() {
                let raw = map.next_value::<&'de RawValue>()?;
                self.skip(raw)?;
            } else {
                map.next_value_seed(Walker {
                    state: &mut *self.state,
                    records,
                    next,
                    depth: self.depth + 1,
                })?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let is_index = |t: &str| t.parse::<usize>() == Ok(index);
            let records = follow(self.records, is_index);
            let next = follow(self.next, is_index);
            let more = if records.is_none() && next.is_none() {
                match seq.next_element::<&'de RawValue>()? {
                    Some(raw) => {
                        self.skip(raw)?;
                        true
                    }
                    None => false,
                }
            } else {
                seq.next_element_seed(Walker {
                    state: &mut *self.state,
                    records,
                    next,
                    depth: self.depth + 1,
                })?
                .is_some()
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    // Scalars: the pointers do not continue here, which simply means "not found".
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The rest of `pointer` below the child for which `matches` holds, if it goes there.
fn follow(pointer: Option<&[String]>, matches: impl Fn(&str) -> bool) -> Option<&[String]> {
    match pointer {
        Some([first, rest @ ..]) if matches(first) => Some(rest),
        _ => None,
    }
}

/// The array at the record pointer: each element goes to the sink.
struct RecordArray<'w, 's, 'de, S> {
    state: &'w mut ScanState<'s, 'de, S>,
}

impl<S> RecordArray<'_, '_, '_, S> {
    fn not_array<E: de::Error>(self, found: &'static str) -> Result<(), E> {
        self.state.failure = Some(PageError::RecordsNotArray {
            pointer: String::new(),
            found,
        });
        Err(E::custom("record path is not an array"))
    }
}

impl<'de, S: RecordSink> Visitor<'de> for RecordArray<'_, '_, 'de, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let seed = RecordSeed {
                sink: &mut *self.state.sink,
                index: self.state.records,
                json_error_in: &mut self.state.json_error_in,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            self.state.records += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.not_array("an object")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_array("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_array("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_array("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_array("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_array("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_array("null")
    }
}

struct RecordSeed<'a, S> {
    sink: &'a mut S,
    index: u64,
    json_error_in: &'a mut Option<u64>,
}

impl<'de, S: RecordSink> DeserializeSeed<'de> for RecordSeed<'_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let result = self.sink.record(self.index, d);
        if result.is_err() {
            // Unless the sink kept an error of its own, the record's JSON is at fault.
            *self.json_error_in = Some(self.index);
        }
        result
    }
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

/// Fills in the pointer texts the walk does not carry.
fn with_pointers(err: PageError, records: &JsonPointer, next: Option<&JsonPointer>) -> PageError {
    match err {
        PageError::AmbiguousPath { path, key, .. } => {
            let pointer = if path == "record" {
                records.to_string()
            } else {
                next.map(JsonPointer::to_string).unwrap_or_default()
            };
            PageError::AmbiguousPath { path, pointer, key }
        }
        PageError::RecordsNotArray { found, .. } => PageError::RecordsNotArray {
            pointer: records.to_string(),
            found,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects each record's raw text.
    #[derive(Default)]
    struct Collect(Vec<String>);

    impl RecordSink for Collect {
        fn record<'de, D: Deserializer<'de>>(&mut self, _: u64, d: D) -> Result<(), D::Error> {
            let raw = <&RawValue>::deserialize(d)?;
            self.0.push(raw.get().to_owned());
            Ok(())
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
        assert!(matches!(err, PageError::Json(_)), "{err}");
        let err = scan("<html>oops</html>", "/variants", None).unwrap_err();
        assert!(matches!(err, PageError::Json(_)), "{err}");
        let err = scan(r#"{"variants":[]} trailing"#, "/variants", None).unwrap_err();
        assert!(matches!(err, PageError::Json(_)), "{err}");
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
        assert!(matches!(err, PageError::Json(_)), "{err}");
    }

    #[test]
    fn json_errors_inside_a_record_name_it() {
        let err = scan(r#"{"v":[{"a":1},{"a":tru}]}"#, "/v", None).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "record 1 of the page is not valid JSON: expected ident at line 1 column"
            ),
            "{err}"
        );
        // Between records, the page is at fault.
        let err = scan(r#"{"v":[{"a":1} {"a":2}]}"#, "/v", None).unwrap_err();
        assert!(matches!(err, PageError::Json(_)), "{err}");
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
}
