//! Splitting one page body into records, in a single streaming pass.
//!
//! A page body is walked once with serde_json, following at most two JSON pointers: the
//! record array and, for body-driven pagination, the next cursor. Everything else in the body
//! is skipped without being built. Each record is handed to a [`RecordSink`] as a deserializer
//! positioned on it, so the transform reads the record's top-level fields in the same pass and
//! copies untouched values through as raw JSON text. No `serde_json::Value` is ever built.
//!
//! Memory: nothing here allocates per record; the cursor is borrowed from the body.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::pointer::JsonPointer;

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
    /// The body is not valid JSON.
    #[error("the body is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
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

/// Splits `body` into records for `sink`, and picks up the cursor at `next` if given.
pub fn scan_page<'de, S: RecordSink>(
    body: &'de [u8],
    records: &JsonPointer,
    next: Option<&JsonPointer>,
    sink: &mut S,
) -> Result<PageScan<'de>, PageError> {
    let mut state = ScanState {
        sink,
        found_records: false,
        records: 0,
        next: None,
        failure: None,
    };
    let walker = Walker {
        state: &mut state,
        records: Some(records.tokens()),
        next: next.map(JsonPointer::tokens),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = walker.deserialize(&mut de).and_then(|()| de.end());
    if let Some(failure) = state.failure.take() {
        return Err(failure);
    }
    if let Some(err) = state.sink.take_error() {
        return Err(err);
    }
    walked.map_err(PageError::Json)?;
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

struct ScanState<'s, 'de, S> {
    sink: &'s mut S,
    found_records: bool,
    records: u64,
    next: Option<&'de RawValue>,
    /// A structural problem found by the walk (kept typed; serde only carries text).
    failure: Option<PageError>,
}

/// Walks one JSON value; `records`/`next` are the pointer tokens still to follow from here.
struct Walker<'w, 's, 'de, 'p, S> {
    state: &'w mut ScanState<'s, 'de, S>,
    records: Option<&'p [String]>,
    next: Option<&'p [String]>,
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
                self.state.next = Some(<&RawValue>::deserialize(d)?);
                Ok(())
            }
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de, S: RecordSink> Visitor<'de> for Walker<'_, '_, 'de, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<KeyCow<'de>>()? {
            let key = key.as_str();
            let records = follow(self.records, |t| t == key);
            let next = follow(self.next, |t| t == key);
            if records.is_none() && next.is_none() {
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(Walker {
                    state: &mut *self.state,
                    records,
                    next,
                })?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let is_index = |t: &str| t.parse::<usize>() == Ok(index);
            let records = follow(self.records, is_index);
            let next = follow(self.next, is_index);
            let more = if records.is_none() && next.is_none() {
                seq.next_element::<IgnoredAny>()?.is_some()
            } else {
                seq.next_element_seed(Walker {
                    state: &mut *self.state,
                    records,
                    next,
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
}

impl<'de, S: RecordSink> DeserializeSeed<'de> for RecordSeed<'_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.sink.record(self.index, d)
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

/// Fills in the pointer text of a [`PageError::RecordsNotArray`] (the walk does not carry it).
pub(crate) fn with_pointer(err: PageError, pointer: &JsonPointer) -> PageError {
    match err {
        PageError::RecordsNotArray { found, .. } => PageError::RecordsNotArray {
            pointer: pointer.to_string(),
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
        let records = JsonPointer::parse(records).unwrap();
        let next = next.map(|n| JsonPointer::parse(n).unwrap());
        let mut sink = Collect::default();
        let scan = scan_page(body.as_bytes(), &records, next.as_ref(), &mut sink)
            .map_err(|e| with_pointer(e, &records))?;
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
}
