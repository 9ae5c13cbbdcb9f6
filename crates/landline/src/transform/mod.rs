//! The transform stage: fields added to every record, timestamps normalised, and the record
//! written out as one JSON Lines line.
//!
//! A record arrives as a deserializer positioned on it (see [`crate::source::page`]). Only its
//! top-level keys are read: a value whose key is neither an added field nor a timestamp field is
//! copied through as its raw JSON text, byte for byte, and never parsed into a tree. This is
//! what keeps a ~28 KB record at memory-copy cost when two fields are added.
//!
//! Output per record: `{` + top-level entries (raw) + added fields + `}` + `\n`, appended to a
//! caller's buffer ([`crate::encode::LineEncoder`] hands full buffers to the compressor).
//! An added field whose key the record already has replaces that value in place.

pub mod timestamp;

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::encode::LineOutput;
use crate::source::page::{KeyCow, PageError, RecordSink};
pub use timestamp::{TimeZone, TimestampError};

/// At most this many added fields (they are tracked per record in a 64-bit mask).
pub const MAX_ADDED_FIELDS: usize = 64;

/// What to do with a timestamp field whose value cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalidTimestamp {
    /// Fail the run, naming the page, record and field (the default).
    #[default]
    Error,
    /// Keep the value as it was.
    Keep,
    /// Replace it with `null`.
    Null,
}

/// The per-record transform, compiled from `[transform]` for one run.
#[derive(Debug, Clone)]
pub struct Transform {
    /// Added fields: key and the JSON text of the value.
    added: Vec<(String, String)>,
    /// `,"k1":v1,"k2":v2` ready to append when the record has none of the added keys.
    added_tail: Vec<u8>,
    timestamps: Vec<String>,
    timezone: TimeZone,
    on_invalid: OnInvalidTimestamp,
    max_record_bytes: usize,
}

/// Why a transform could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformBuildError {
    /// More added fields than [`MAX_ADDED_FIELDS`].
    #[error("at most {MAX_ADDED_FIELDS} added fields are supported, got {0}")]
    TooManyFields(usize),
    /// The same key is both added and normalised.
    #[error("field {0:?} is both added and listed in timestamps")]
    Conflict(String),
}

impl Transform {
    /// Builds a transform. `added` holds keys and the JSON text of their values.
    pub fn new(
        added: Vec<(String, String)>,
        timestamps: Vec<String>,
        timezone: TimeZone,
        on_invalid: OnInvalidTimestamp,
        max_record_bytes: usize,
    ) -> Result<Self, TransformBuildError> {
        if added.len() > MAX_ADDED_FIELDS {
            return Err(TransformBuildError::TooManyFields(added.len()));
        }
        if let Some((k, _)) = added.iter().find(|(k, _)| timestamps.contains(k)) {
            return Err(TransformBuildError::Conflict(k.clone()));
        }
        let mut added_tail = Vec::new();
        for (key, value) in &added {
            added_tail.push(b',');
            write_key(&mut added_tail, key);
            added_tail.push(b':');
            added_tail.extend_from_slice(value.as_bytes());
        }
        Ok(Transform {
            added,
            added_tail,
            timestamps,
            timezone,
            on_invalid,
            max_record_bytes,
        })
    }

    /// A transform that only checks records are objects and re-emits them.
    pub fn identity() -> Self {
        Transform::new(
            Vec::new(),
            Vec::new(),
            TimeZone::Utc,
            OnInvalidTimestamp::Error,
            usize::MAX,
        )
        .unwrap_or_else(|_| unreachable!("an empty transform is valid"))
    }
}

/// A field-level problem with one record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A timestamp field's value could not be normalised.
    #[error("field {field:?}: {source}")]
    Timestamp {
        /// The field.
        field: String,
        /// Why.
        #[source]
        source: TimestampError,
    },
    /// The record's JSON Lines text is larger than `max_record_bytes`.
    #[error("the record is {bytes} bytes as JSON, over max_record_bytes = {limit}")]
    TooLarge {
        /// Size of the record's line.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// Writes transformed records as JSON Lines into a [`LineOutput`]; a [`RecordSink`] for page
/// scans.
pub struct RecordWriter<'a, O> {
    transform: &'a Transform,
    out: &'a mut O,
    error: Option<PageError>,
}

impl<'a, O: LineOutput> RecordWriter<'a, O> {
    /// Appends to `out`.
    pub fn new(transform: &'a Transform, out: &'a mut O) -> Self {
        RecordWriter {
            transform,
            out,
            error: None,
        }
    }
}

impl<O: LineOutput> RecordSink for RecordWriter<'_, O> {
    fn record<'de, D: Deserializer<'de>>(&mut self, index: u64, d: D) -> Result<(), D::Error> {
        let buf = self.out.buf();
        let start = buf.len();
        let visitor = ObjectVisitor {
            t: self.transform,
            out: buf,
            index,
            error: &mut self.error,
        };
        d.deserialize_any(visitor)?;
        let buf = self.out.buf();
        let bytes = buf.len() - start;
        if bytes > self.transform.max_record_bytes {
            buf.truncate(start);
            self.error = Some(PageError::Record {
                index,
                source: Box::new(RecordError::TooLarge {
                    bytes,
                    limit: self.transform.max_record_bytes,
                }),
            });
            return Err(de::Error::custom("record too large"));
        }
        if let Err(e) = self.out.end_line() {
            self.error = Some(PageError::Output(e));
            return Err(de::Error::custom("compressor stopped"));
        }
        Ok(())
    }

    fn take_error(&mut self) -> Option<PageError> {
        self.error.take()
    }
}

struct ObjectVisitor<'a> {
    t: &'a Transform,
    out: &'a mut Vec<u8>,
    index: u64,
    error: &'a mut Option<PageError>,
}

impl ObjectVisitor<'_> {
    fn not_object<E: de::Error>(self, found: &'static str) -> Result<(), E> {
        *self.error = Some(PageError::NotAnObject {
            index: self.index,
            found,
        });
        Err(E::custom("record is not an object"))
    }
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let t = self.t;
        let out = self.out;
        out.push(b'{');
        let mut first = true;
        let mut seen_added = 0u64;
        while let Some(key) = map.next_key::<KeyCow<'de>>()? {
            let raw = map.next_value::<&'de RawValue>()?;
            if !first {
                out.push(b',');
            }
            first = false;
            match &key {
                KeyCow::Borrowed(k) => {
                    // No escapes in the body, so the raw text is the key itself.
                    out.push(b'"');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'"');
                }
                KeyCow::Owned(k) => write_key(out, k),
            }
            out.push(b':');
            let key = key.as_str();
            if let Some(i) = t.added.iter().position(|(k, _)| k == key) {
                out.extend_from_slice(t.added[i].1.as_bytes());
                seen_added |= 1 << i;
            } else if t.timestamps.iter().any(|k| k == key) {
                let mark = out.len();
                if let Err(source) = timestamp::normalise(raw.get(), &t.timezone, out) {
                    out.truncate(mark);
                    match t.on_invalid {
                        OnInvalidTimestamp::Keep => out.extend_from_slice(raw.get().as_bytes()),
                        OnInvalidTimestamp::Null => out.extend_from_slice(b"null"),
                        OnInvalidTimestamp::Error => {
                            *self.error = Some(PageError::Record {
                                index: self.index,
                                source: Box::new(RecordError::Timestamp {
                                    field: key.to_owned(),
                                    source,
                                }),
                            });
                            return Err(de::Error::custom("invalid timestamp"));
                        }
                    }
                }
            } else {
                out.extend_from_slice(raw.get().as_bytes());
            }
        }
        if seen_added == 0 {
            let tail = &t.added_tail;
            out.extend_from_slice(if first && !tail.is_empty() {
                &tail[1..]
            } else {
                tail
            });
        } else {
            for (i, (key, value)) in t.added.iter().enumerate() {
                if seen_added & (1 << i) == 0 {
                    out.push(b',');
                    write_key(out, key);
                    out.push(b':');
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
        out.extend_from_slice(b"}\n");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.not_object("an array")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_object("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_object("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_object("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_object("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_object("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_object("null")
    }
}

/// Writes `"key"` with JSON escaping.
fn write_key(out: &mut Vec<u8>, key: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pointer::JsonPointer;
    use crate::source::page::{scan_page, with_pointer};

    fn transform() -> Transform {
        Transform::new(
            vec![
                ("ingest_date".into(), r#""2026-11-25""#.into()),
                ("ingest_ts".into(), r#""2026-11-25T01:02:03.004Z""#.into()),
            ],
            vec!["created_at".into(), "updated_at".into()],
            TimeZone::Utc,
            OnInvalidTimestamp::Error,
            1 << 20,
        )
        .unwrap()
    }

    fn run(t: &Transform, body: &str) -> Result<String, PageError> {
        let mut out = Vec::new();
        let mut w = RecordWriter::new(t, &mut out);
        let ptr = JsonPointer::parse("/v").unwrap();
        scan_page(body.as_bytes(), &ptr, None, &mut w).map_err(|e| with_pointer(e, &ptr))?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn adds_fields_and_passes_the_rest_through_raw() {
        let out = run(
            &transform(),
            r#"{"v":[{"id":1,"nested":{"b": [1, 2.50, "x"]},"created_at":1700000000123}, {}]}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            concat!(
                r#"{"id":1,"nested":{"b": [1, 2.50, "x"]},"created_at":"2023-11-14T22:13:20.123Z","ingest_date":"2026-11-25","ingest_ts":"2026-11-25T01:02:03.004Z"}"#,
                "\n",
                r#"{"ingest_date":"2026-11-25","ingest_ts":"2026-11-25T01:02:03.004Z"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn added_field_replaces_existing_value_in_place() {
        let out = run(&transform(), r#"{"v":[{"ingest_ts":"old","a\"b":1}]}"#).unwrap();
        assert_eq!(
            out,
            "{\"ingest_ts\":\"2026-11-25T01:02:03.004Z\",\"a\\\"b\":1,\"ingest_date\":\"2026-11-25\"}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["a\"b"], 1);
    }

    #[test]
    fn rejects_non_objects_and_bad_timestamps() {
        let err = run(&transform(), r#"{"v":[{}, 5]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 1 of the page is a number, not a JSON object"
        );
        let err = run(&transform(), r#"{"v":[{"updated_at":"yesterday"}]}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("record 0 of the page: field \"updated_at\""),
            "{err}"
        );
    }

    #[test]
    fn invalid_timestamps_can_be_kept_or_nulled() {
        for (mode, want) in [
            (OnInvalidTimestamp::Keep, r#"{"created_at":"soon"}"#),
            (OnInvalidTimestamp::Null, r#"{"created_at":null}"#),
        ] {
            let t = Transform::new(
                vec![],
                vec!["created_at".into()],
                TimeZone::Utc,
                mode,
                1 << 20,
            )
            .unwrap();
            assert_eq!(
                run(&t, r#"{"v":[{"created_at":"soon"}]}"#).unwrap(),
                format!("{want}\n")
            );
        }
    }

    #[test]
    fn enforces_max_record_bytes() {
        let t =
            Transform::new(vec![], vec![], TimeZone::Utc, OnInvalidTimestamp::Error, 10).unwrap();
        assert!(run(&t, r#"{"v":[{"a":1}]}"#).is_ok());
        let err = run(&t, r#"{"v":[{"a":1},{"abc":"defghij"}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 1 of the page: the record is 18 bytes as JSON, over max_record_bytes = 10"
        );
    }
}
