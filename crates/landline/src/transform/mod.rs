//! The transform stage: fields added, normalised (timestamps, dates), dropped and renamed,
//! and the record written out as one JSON Lines line.
//!
//! A record arrives as a deserializer positioned on it (see [`crate::source::page`]). Only its
//! top-level keys are read: a value whose key no rule names is copied through as its raw JSON
//! text and never parsed into a tree. This is what keeps a ~28 KB record at memory-copy cost
//! when two fields are added. Top-level timestamps are normalised in that same pass. A rule on
//! a nested field (a JSON pointer, see [`fields`]) has the object holding it rewritten, and
//! only along the path: that object's value is parsed again key by key, its other values
//! copied raw.
//!
//! Output per record: `{` + top-level entries (raw, or as the rules make them) + added
//! fields the record lacked + `}` + `\n`, appended to a caller's buffer
//! ([`crate::encode::LineEncoder`] hands full buffers to the compressor). An added field
//! whose key the record already has replaces that value in place; a renamed field keeps its
//! place; a dropped one leaves no trace.
//!
//! **Raw, but one line.** A raw value is copied byte for byte, except that the line breaks
//! (and tabs) between its tokens become spaces: a pretty-printed API response must not split a
//! record over several lines. Inside strings JSON has no raw control characters, so nothing
//! else changes, and the value means what it meant.
//!
//! **Refused records** (the error names the record's index on the page; see [`RecordError`]):
//! a record that is not an object; a top-level key that appears twice (`{"id":1,"id":2}`:
//! readers disagree on which value counts, so landline will not write such a line), or a key
//! twice in a nested object the rules rewrite; a renamed field whose new name the object
//! already has; a line longer than `max_record_bytes`; nesting deeper than [`MAX_DEPTH`]
//! levels; a timestamp or date it cannot read (unless told to keep it or write `null`). Only
//! the objects written key by key are checked for repeats: values copied through raw are not
//! parsed, so a repeated key inside one of them is passed on as it came. A dropped key is not
//! written, so it is not checked either.

pub mod fields;
pub mod inventory;
pub mod timestamp;

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::encode::{LineError, LineOutput, Span};
pub use crate::source::page::MAX_DEPTH;
use crate::source::page::{KeyCow, PageError, RecordSink, deeper_at, shape};
pub use fields::{MAX_PATH_TOKENS, MAX_RENAMES, RuleError};
pub use inventory::{FieldInventory, FieldStats};
pub use timestamp::{TimeZone, TimestampError, TimestampPrecision, instant};

use fields::{Action, Node};

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
    /// The record object's rules (see [`fields`]).
    root: Node,
    /// `,"k1":v1,"k2":v2` ready to append when the record has none of the fields that must
    /// appear at its top level (adds, and objects holding adds).
    added_tail: Vec<u8>,
    /// Each such field's key and value in `added_tail`: key start, key end, value end.
    added_spans: Vec<Span>,
    timestamps: Vec<String>,
    timezone: TimeZone,
    precision: Option<TimestampPrecision>,
    on_invalid: OnInvalidTimestamp,
    max_record_bytes: usize,
}

/// Everything a [`Transform`] does, for [`Transform::from_rules`]. Paths are top-level keys,
/// or JSON pointers when they start with `/` (see [`fields`] for the rules' semantics).
#[derive(Debug, Clone)]
pub struct TransformRules {
    /// Fields added (or set): path and the JSON text of the value.
    pub add: Vec<(String, String)>,
    /// Fields normalised as timestamps.
    pub timestamps: Vec<String>,
    /// Fields normalised as dates (`YYYY-MM-DD`).
    pub dates: Vec<String>,
    /// Fields left out.
    pub drop: Vec<String>,
    /// Fields renamed: path and new name (a key, or a pointer into the same object).
    pub rename: Vec<(String, String)>,
    /// The zone of naive timestamps, and of the dates of instants.
    pub timezone: TimeZone,
    /// Fractional digits of timestamps (`None`: those the value gave, in groups of three).
    pub timestamp_precision: Option<TimestampPrecision>,
    /// What to do with a timestamp or date that cannot be read.
    pub on_invalid: OnInvalidTimestamp,
    /// The longest line a record may make, its newline not counted.
    pub max_record_bytes: usize,
}

impl Default for TransformRules {
    /// No rules, UTC, the default precision, no size limit.
    fn default() -> Self {
        TransformRules {
            add: Vec::new(),
            timestamps: Vec::new(),
            dates: Vec::new(),
            drop: Vec::new(),
            rename: Vec::new(),
            timezone: TimeZone::Utc,
            timestamp_precision: None,
            on_invalid: OnInvalidTimestamp::Error,
            max_record_bytes: usize::MAX,
        }
    }
}

/// Why a transform could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformBuildError {
    /// More added fields than [`MAX_ADDED_FIELDS`].
    #[error("at most {MAX_ADDED_FIELDS} added fields are supported, got {0}")]
    TooManyFields(usize),
    /// The same key is both added and normalised (no longer returned: see
    /// [`TransformBuildError::Rule`]).
    #[error("field {0:?} is both added and listed in timestamps")]
    Conflict(String),
    /// A rule cannot be applied: a bad path, a field named by two rules or inside another
    /// rule's field, a rename that cannot be done.
    #[error("{0}")]
    Rule(RuleError),
}

impl Transform {
    /// Builds a transform that adds fields and normalises timestamps. `added` holds paths and
    /// the JSON text of their values.
    ///
    /// `max_record_bytes` bounds each record's line, its newline not counted. For the other
    /// rules, see [`Transform::from_rules`].
    pub fn new(
        added: Vec<(String, String)>,
        timestamps: Vec<String>,
        timezone: TimeZone,
        on_invalid: OnInvalidTimestamp,
        max_record_bytes: usize,
    ) -> Result<Self, TransformBuildError> {
        Transform::from_rules(TransformRules {
            add: added,
            timestamps,
            timezone,
            on_invalid,
            max_record_bytes,
            ..TransformRules::default()
        })
    }

    /// Builds a transform from all its rules, checking them (see [`fields`]).
    pub fn from_rules(rules: TransformRules) -> Result<Self, TransformBuildError> {
        if rules.add.len() > MAX_ADDED_FIELDS {
            return Err(TransformBuildError::TooManyFields(rules.add.len()));
        }
        let root = fields::compile(&fields::RuleLists {
            add: &rules.add,
            timestamps: &rules.timestamps,
            dates: &rules.dates,
            drop: &rules.drop,
            rename: &rules.rename,
        })
        .map_err(TransformBuildError::Rule)?;
        let mut added_tail = Vec::new();
        let mut added_spans = Vec::new();
        for field in root.fields.iter().filter(|f| f.must_appear()) {
            added_tail.push(b',');
            let key_start = added_tail.len();
            added_tail.extend_from_slice(&field.out_key);
            let key_end = added_tail.len();
            added_tail.push(b':');
            added_tail.extend_from_slice(field.created_value());
            added_spans.push((key_start, key_end, added_tail.len()));
        }
        Ok(Transform {
            root,
            added_tail,
            added_spans,
            timestamps: rules.timestamps,
            timezone: rules.timezone,
            precision: rules.timestamp_precision,
            on_invalid: rules.on_invalid,
            max_record_bytes: rules.max_record_bytes,
        })
    }

    /// The fields normalised as timestamps.
    pub fn timestamp_fields(&self) -> &[String] {
        &self.timestamps
    }

    /// The longest line a record may make, its newline not counted.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
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
    /// The record's line is longer than `max_record_bytes`. Writing stops as soon as it is,
    /// so `bytes` is how far it got, not the whole record's size.
    #[error(
        "the record is larger than max_record_bytes = {limit} (at least {bytes} bytes as a JSON line)"
    )]
    TooLarge {
        /// Bytes of the line reached when the limit was passed (a lower bound of its size).
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The record has no usable value for the field that names its partition
    /// (`{record:...}` in `[sink] url`), and no `default_partition` is configured.
    #[error("the partition field {field} {reason}")]
    NoPartition {
        /// The field (its JSON pointer).
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// The record's partition was completed earlier to keep at most `max_open_partitions`
    /// open, and the URL has no `{part}` to number its next object.
    #[error(
        "its partition {partition:?} was completed earlier to keep at most max_open_partitions = {max_open} open: its next object needs {{part}} in [sink] url (or raise max_open_partitions)"
    )]
    PartitionClosed {
        /// The partition, escaped.
        partition: String,
        /// `[sink] max_open_partitions`.
        max_open: usize,
    },
    /// A top-level key appears more than once. JSON readers disagree on which value counts
    /// (the first, the last, or an error), so such a record is refused.
    #[error("the key {key:?} appears more than once (readers disagree on which value counts)")]
    DuplicateKey {
        /// The key, unescaped.
        key: String,
    },
    /// A key appears more than once in a nested object that the transform rewrites (the
    /// objects copied raw are not checked).
    #[error(
        "the key {key:?} appears more than once in {object} (readers disagree on which value counts)"
    )]
    DuplicateNestedKey {
        /// The object's JSON pointer.
        object: String,
        /// The key, unescaped.
        key: String,
    },
    /// A renamed field's new name is a key its object already has.
    #[error(
        "field {field:?} cannot be renamed to {new_name:?}: its object already has a field of that name"
    )]
    RenameCollision {
        /// The field, as the rule names it.
        field: String,
        /// The new name.
        new_name: String,
    },
    /// A field nests arrays and objects so deep that the line would have more than
    /// [`MAX_DEPTH`] levels.
    #[error(
        "field {field:?} is nested too deeply: the line would have more than {MAX_DEPTH} levels of arrays and objects"
    )]
    TooDeep {
        /// The field.
        field: String,
    },
}

/// Writes transformed records as JSON Lines into a [`LineOutput`]; a [`RecordSink`] for page
/// scans.
///
/// A record that fails leaves nothing of itself in the output: the output only ever holds
/// whole lines.
pub struct RecordWriter<'a, O> {
    transform: &'a Transform,
    out: &'a mut O,
    error: Option<PageError>,
    /// The current record's keys, reused from record to record.
    keys: KeySet,
    /// The keys of the nested objects rewritten, a set per level, reused likewise.
    nested: Vec<KeySet>,
    /// The longest line written so far, its newline not counted.
    largest: usize,
    /// Where the records' fields are counted, if anywhere.
    inventory: Option<&'a mut FieldInventory>,
    /// The incremental cursor field's highest value, if it is tracked.
    high_water: Option<&'a mut crate::incremental::HighWater>,
}

impl<'a, O: LineOutput> RecordWriter<'a, O> {
    /// Appends to `out`.
    pub fn new(transform: &'a Transform, out: &'a mut O) -> Self {
        RecordWriter {
            transform,
            out,
            error: None,
            keys: KeySet::default(),
            nested: Vec::new(),
            largest: 0,
            inventory: None,
            high_water: None,
        }
    }

    /// Tracks the highest value of the incremental cursor field in `high_water` (`None`: not
    /// at all).
    pub fn with_high_water(
        mut self,
        high_water: Option<&'a mut crate::incremental::HighWater>,
    ) -> Self {
        self.high_water = high_water;
        self
    }

    /// Counts the fields of every record written in `inventory` (`None`: not at all).
    pub fn with_inventory(mut self, inventory: Option<&'a mut FieldInventory>) -> Self {
        self.inventory = inventory;
        self
    }

    /// The longest line written so far, in bytes, its newline not counted.
    pub fn largest(&self) -> usize {
        self.largest
    }

    /// The fields counted so far, if they are counted.
    pub fn inventory(&self) -> Option<&FieldInventory> {
        self.inventory.as_deref()
    }

    /// The cursor field's highest value so far, if it is tracked.
    pub fn high_water(&self) -> Option<&crate::incremental::HighWater> {
        self.high_water.as_deref()
    }

    /// The output the lines go to.
    pub fn output(&mut self) -> &mut O {
        self.out
    }
}

impl<O: LineOutput> RecordSink for RecordWriter<'_, O> {
    fn record<'de, D: Deserializer<'de>>(
        &mut self,
        index: u64,
        d: D,
    ) -> Result<&'de str, D::Error> {
        let buf = self.out.buf();
        let start = buf.len();
        self.keys.clear();
        let t = self.transform;
        let mut rec = Record {
            t,
            out: &mut *buf,
            start,
            index,
            error: &mut self.error,
            keys: &mut self.keys,
            nested: &mut self.nested,
        };
        let visitor = ObjectVisitor {
            rec: &mut rec,
            node: &t.root,
            level: 1,
            _de: std::marker::PhantomData,
        };
        let last = match d.deserialize_any(visitor) {
            Ok(last) => last,
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        };
        // The closing brace and the added fields may have taken the line over the limit.
        let bytes = buf.len() - start - 1;
        if bytes > self.transform.max_record_bytes {
            buf.truncate(start);
            self.error = Some(too_large(index, bytes, self.transform.max_record_bytes));
            return Err(de::Error::custom("record too large"));
        }
        self.largest = self.largest.max(bytes);
        if let Some(inventory) = self.inventory.as_deref_mut() {
            for (position, &(key_start, key_end, value_end)) in self.keys.spans.iter().enumerate() {
                // The value follows the key's colon.
                inventory.add(
                    position,
                    &buf[key_start..key_end],
                    &buf[key_end + 1..value_end],
                );
            }
        }
        if let Some(high_water) = self.high_water.as_deref_mut() {
            high_water.observe(buf, &self.keys.spans);
        }
        match self.out.end_record(&self.keys.spans) {
            Ok(()) => {}
            Err(LineError::Output(e)) => {
                self.error = Some(PageError::Output(e));
                return Err(de::Error::custom("compressor stopped"));
            }
            Err(LineError::Record(e)) => {
                self.error = Some(PageError::Record {
                    index,
                    source: Box::new(e),
                });
                return Err(de::Error::custom("record refused by the output"));
            }
        }
        Ok(last)
    }

    fn take_error(&mut self) -> Option<PageError> {
        self.error.take()
    }
}

fn too_large(index: u64, bytes: usize, limit: usize) -> PageError {
    PageError::Record {
        index,
        source: Box::new(RecordError::TooLarge { bytes, limit }),
    }
}

/// Keys of the record being written, as spans of their JSON text in the output, to refuse a
/// key that comes twice without allocating per record.
///
/// Keys are compared as written: borrowed keys have no escapes and escaped ones are
/// re-escaped by serde_json, so equal keys have equal text. The first [`LINEAR_KEYS`] keys are
/// checked as they come, against a small fingerprint array; past that, the spans are sorted
/// once at the end of the record (no quadratic work on records with very many keys).
struct KeySet {
    /// Fingerprints of the first [`LINEAR_KEYS`] keys.
    fingerprints: [u32; LINEAR_KEYS],
    /// Each entry's key and value (see [`Span`]).
    spans: Vec<Span>,
}

/// Keys checked one by one as they come; the rest are checked by sorting.
const LINEAR_KEYS: usize = 32;

impl Default for KeySet {
    fn default() -> Self {
        KeySet {
            fingerprints: [0; LINEAR_KEYS],
            spans: Vec::with_capacity(LINEAR_KEYS),
        }
    }
}

impl KeySet {
    fn clear(&mut self) {
        self.spans.clear();
    }

    /// Adds the key written at `out[start..end]`; `true` if it is known to repeat an earlier one.
    fn insert(&mut self, out: &[u8], start: usize, end: usize) -> bool {
        let key = &out[start..end];
        let n = self.spans.len();
        if n < LINEAR_KEYS {
            let fingerprint = fingerprint(key);
            // No early exit, so the compiler compares several fingerprints at once.
            let maybe = self.fingerprints[..n]
                .iter()
                .fold(false, |hit, &f| hit | (f == fingerprint));
            if maybe && self.spans.iter().any(|&(s, e, _)| out[s..e] == *key) {
                return true;
            }
            self.fingerprints[n] = fingerprint;
        }
        self.spans.push((start, end, end));
        false
    }

    /// The last key's value ends at `end`.
    fn value_ends(&mut self, end: usize) {
        if let Some(span) = self.spans.last_mut() {
            span.2 = end;
        }
    }

    /// After the last key of a record with more than [`LINEAR_KEYS`] keys: a repeated key's
    /// span, if there is one.
    fn find_repeat(&mut self, out: &[u8]) -> Option<(usize, usize)> {
        if self.spans.len() <= LINEAR_KEYS {
            return None;
        }
        self.spans
            .sort_unstable_by(|&(s1, e1, _), &(s2, e2, _)| out[s1..e1].cmp(&out[s2..e2]));
        self.spans
            .windows(2)
            .find(|w| out[w[0].0..w[0].1] == out[w[1].0..w[1].1])
            .map(|w| (w[0].0, w[0].1))
    }
}

/// Length and three bytes of a key's text (quotes included): equal keys have equal
/// fingerprints.
fn fingerprint(key: &[u8]) -> u32 {
    let n = key.len();
    let at = |i: usize| u32::from(key.get(i).copied().unwrap_or(0));
    (n as u32) << 24 ^ at(1) << 16 ^ at(n / 2) << 8 ^ at(n.saturating_sub(2))
}

/// What writing one record shares across the objects it writes.
struct Record<'a> {
    t: &'a Transform,
    out: &'a mut Vec<u8>,
    /// Where the record's line starts in `out`.
    start: usize,
    index: u64,
    error: &'a mut Option<PageError>,
    /// The record object's keys (their spans feed the inventory).
    keys: &'a mut KeySet,
    /// The keys of the nested objects being rewritten, one set per level below the record.
    nested: &'a mut Vec<KeySet>,
}

impl Record<'_> {
    /// Keeps `source` as the record's error; the error that stops the scan.
    fn fail<E: de::Error>(&mut self, source: RecordError) -> E {
        *self.error = Some(PageError::Record {
            index: self.index,
            source: Box::new(source),
        });
        E::custom("record refused")
    }

    /// The error for the key written at `out[s..e]`, met twice in `node`'s object.
    fn repeated(
        &self,
        node: &Node,
        level: usize,
        (s, e): (usize, usize),
        renamed: u64,
    ) -> RecordError {
        let text = &self.out[s..e];
        let key = serde_json::from_slice::<String>(text)
            .unwrap_or_else(|_| String::from_utf8_lossy(text).into_owned());
        let rename = node.fields.iter().find(|f| {
            f.action == Action::Rename && f.out_key == text && renamed & (1 << f.bit) != 0
        });
        match rename {
            Some(f) => RecordError::RenameCollision {
                field: f.name.clone(),
                new_name: key,
            },
            None if level == 1 => RecordError::DuplicateKey { key },
            None => RecordError::DuplicateNestedKey {
                object: node.path.clone(),
                key,
            },
        }
    }
}

/// The key set of the object at `level` (1: the record).
fn keys_at<'k>(keys: &'k mut KeySet, nested: &'k mut [KeySet], level: usize) -> &'k mut KeySet {
    if level == 1 {
        keys
    } else {
        &mut nested[level - 2]
    }
}

/// The name of the value of `key` in `node`'s object at `level`, for errors.
fn field_name(node: &Node, level: usize, key: &str) -> String {
    if level == 1 {
        key.to_owned()
    } else {
        format!(
            "{}/{}",
            node.path,
            key.replace('~', "~0").replace('/', "~1")
        )
    }
}

/// Writes one object of a record: the record itself (`level` 1), or an object in it that the
/// rules reach into (then the value's raw text is parsed again, along the path only).
struct ObjectVisitor<'r, 'a, 'de> {
    rec: &'r mut Record<'a>,
    node: &'a Node,
    /// 1 for the record, 2 for an object in it, and so on.
    level: usize,
    /// The visitor returns the object's last value, borrowed for `'de`.
    _de: std::marker::PhantomData<&'de str>,
}

impl<'de> ObjectVisitor<'_, '_, 'de> {
    fn not_object<E: de::Error>(self, found: &'static str) -> Result<&'de str, E> {
        *self.rec.error = Some(PageError::NotAnObject {
            index: self.rec.index,
            found,
        });
        Err(E::custom("record is not an object"))
    }
}

/// Rewrites the object `raw` (its text starts with `{`) at `level` along `node`.
fn rewrite_object<'a, E: de::Error>(
    rec: &mut Record<'a>,
    node: &'a Node,
    level: usize,
    raw: &RawValue,
) -> Result<(), E> {
    if rec.nested.len() < level - 1 {
        rec.nested.resize_with(level - 1, KeySet::default);
    }
    rec.nested[level - 2].clear();
    let mut d = serde_json::Deserializer::from_str(raw.get());
    let visitor = ObjectVisitor {
        rec: &mut *rec,
        node,
        level,
        _de: std::marker::PhantomData,
    };
    match de::Deserializer::deserialize_map(&mut d, visitor) {
        Ok(_) => Ok(()),
        // The error is kept, the object read: the text was read once already.
        Err(_) if rec.error.is_some() => Err(E::custom("record refused")),
        Err(e) => Err(E::custom(e)),
    }
}

impl<'de> Visitor<'de> for ObjectVisitor<'_, '_, 'de> {
    type Value = &'de str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<&'de str, A::Error> {
        let ObjectVisitor {
            rec, node, level, ..
        } = self;
        let t = rec.t;
        let start = rec.start;
        let limit = t.max_record_bytes;
        // Values in this object may nest this many levels.
        let levels = MAX_DEPTH - level;
        rec.out.push(b'{');
        let mut first = true;
        // The fields that must appear met so far, and the renames.
        let (mut seen, mut renamed) = (0u64, 0u64);
        let mut last = "";
        while let Some(key) = map.next_key::<KeyCow<'de>>()? {
            let raw = map.next_value::<&'de RawValue>()?;
            last = raw.get();
            let field = node.find(key.as_str());
            let action = field.map(|f| &f.action);
            if action == Some(&Action::Drop) {
                continue;
            }
            let out = &mut *rec.out;
            if !first {
                out.push(b',');
            }
            first = false;
            let key_start = out.len();
            match (field, &key) {
                (Some(f), _) => out.extend_from_slice(&f.out_key),
                (None, KeyCow::Borrowed(k)) => {
                    // No escapes in the body, so the raw text is the key itself.
                    out.push(b'"');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'"');
                }
                (None, KeyCow::Owned(k)) => write_key(out, k),
            }
            let key_end = out.len();
            if let Some(f) = field {
                if f.action == Action::Rename {
                    renamed |= 1 << f.bit;
                } else if f.must_appear() {
                    seen |= 1 << f.bit;
                }
            }
            if keys_at(rec.keys, rec.nested, level).insert(rec.out, key_start, key_end) {
                let error = rec.repeated(node, level, (key_start, key_end), renamed);
                return Err(rec.fail(error));
            }
            rec.out.push(b':');
            match (action, field) {
                (Some(Action::Add(value)), _) => rec.out.extend_from_slice(value.as_bytes()),
                (Some(action @ (Action::Timestamp | Action::Date)), Some(f)) => {
                    let out = &mut *rec.out;
                    let mark = out.len();
                    let normalised = if *action == Action::Date {
                        timestamp::normalise_date(raw.get(), &t.timezone, out)
                    } else {
                        timestamp::normalise(raw.get(), &t.timezone, t.precision, out)
                    };
                    if let Err(source) = normalised {
                        out.truncate(mark);
                        match t.on_invalid {
                            OnInvalidTimestamp::Keep => {
                                if !copy_raw(out, raw, levels) {
                                    let field = f.name.clone();
                                    return Err(rec.fail(RecordError::TooDeep { field }));
                                }
                            }
                            OnInvalidTimestamp::Null => out.extend_from_slice(b"null"),
                            OnInvalidTimestamp::Error => {
                                let field = f.name.clone();
                                return Err(rec.fail(RecordError::Timestamp { field, source }));
                            }
                        }
                    }
                }
                (Some(Action::Nested(child)), _) if raw.get().starts_with('{') => {
                    rewrite_object(rec, child, level + 1, raw)?;
                }
                _ => {
                    // Check before copying: a huge value is refused without being copied.
                    let bytes = rec.out.len() - start + raw.get().len();
                    if bytes > limit {
                        return Err(rec.fail(RecordError::TooLarge { bytes, limit }));
                    }
                    if !copy_raw(rec.out, raw, levels) {
                        let field = field_name(node, level, key.as_str());
                        return Err(rec.fail(RecordError::TooDeep { field }));
                    }
                }
            }
            let end = rec.out.len();
            keys_at(rec.keys, rec.nested, level).value_ends(end);
            let bytes = end - start;
            if bytes > limit {
                return Err(rec.fail(RecordError::TooLarge { bytes, limit }));
            }
        }
        if let Some(span) = keys_at(rec.keys, rec.nested, level).find_repeat(rec.out) {
            let error = rec.repeated(node, level, span, renamed);
            return Err(rec.fail(error));
        }
        let out = &mut *rec.out;
        if level == 1 && seen == 0 {
            let tail = &t.added_tail;
            // Where the tail's byte 0 is (or would be, when its comma is left out).
            let base = out.len();
            let base = if first && !tail.is_empty() {
                out.extend_from_slice(&tail[1..]);
                base - 1
            } else {
                out.extend_from_slice(tail);
                base
            };
            let spans = t.added_spans.iter();
            rec.keys
                .spans
                .extend(spans.map(|&(k, e, v)| (base + k, base + e, base + v)));
        } else {
            let keys = keys_at(rec.keys, rec.nested, level);
            for f in node.fields.iter().filter(|f| f.must_appear()) {
                if seen & (1 << f.bit) == 0 {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    let key_start = out.len();
                    out.extend_from_slice(&f.out_key);
                    let key_end = out.len();
                    out.push(b':');
                    out.extend_from_slice(f.created_value());
                    keys.spans.push((key_start, key_end, out.len()));
                }
            }
        }
        out.push(b'}');
        if level == 1 {
            out.push(b'\n');
        }
        Ok(last)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<&'de str, A::Error> {
        self.not_object("an array")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<&'de str, E> {
        self.not_object("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<&'de str, E> {
        self.not_object("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<&'de str, E> {
        self.not_object("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<&'de str, E> {
        self.not_object("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<&'de str, E> {
        self.not_object("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<&'de str, E> {
        self.not_object("null")
    }
}

/// Appends a value's raw JSON text, with any whitespace control characters between its
/// tokens (line breaks, tabs) turned into spaces. `false` if the value nests more than
/// `levels` levels (nothing is undone: the caller fails the record).
fn copy_raw(out: &mut Vec<u8>, raw: &RawValue, levels: usize) -> bool {
    let text = raw.get().as_bytes();
    let mark = out.len();
    out.extend_from_slice(text);
    // Only arrays and objects have whitespace inside, or depth.
    if !matches!(text.first(), Some(b'[' | b'{')) {
        return true;
    }
    let copied = &mut out[mark..];
    let found = shape(copied);
    if found.control_bytes {
        // In a valid JSON text, bytes below 0x20 are whitespace between tokens.
        for b in copied.iter_mut() {
            if *b < 0x20 {
                *b = b' ';
            }
        }
    }
    found.opening_brackets <= levels || deeper_at(copied, levels).is_none()
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
    use crate::source::page::scan_page;

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
        scan_page(body.as_bytes(), &ptr, None, &mut w)?;
        Ok(String::from_utf8(out).unwrap())
    }

    /// The inventory of `lines`, worked out by parsing each line again.
    fn inventory_of(lines: &str) -> Vec<(String, u64, Vec<&'static str>, u64, u64)> {
        let mut found: Vec<(String, u64, u8, u64, u64)> = Vec::new();
        for line in lines.lines() {
            let entries: Vec<(String, &RawValue)> =
                serde_json::from_str::<IndexLike>(line).unwrap().0;
            for (key, raw) in entries {
                let text = raw.get().as_bytes();
                let bit = match text[0] {
                    b'{' => 1,
                    b'[' => 2,
                    b'"' => 4,
                    b't' | b'f' => 16,
                    b'n' => 32,
                    _ => 8,
                };
                let width = text.len() as u64;
                match found.iter_mut().find(|f| f.0 == key) {
                    Some(f) => {
                        f.1 += 1;
                        f.2 |= bit;
                        f.3 += width;
                        f.4 = f.4.max(width);
                    }
                    None => found.push((key, 1, bit, width, width)),
                }
            }
        }
        found
            .into_iter()
            .map(|(k, n, bits, total, max)| {
                let stats = FieldStats {
                    name: k.clone(),
                    records: n,
                    types: bits,
                    total_bytes: total,
                    largest_bytes: max,
                };
                (k, n, stats.type_names(), total, max)
            })
            .collect()
    }

    /// A JSON object's entries in order, values raw.
    struct IndexLike<'a>(Vec<(String, &'a RawValue)>);

    impl<'de: 'a, 'a> serde::Deserialize<'de> for IndexLike<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = IndexLike<'a>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(k) = map.next_key::<String>()? {
                        entries.push((k, map.next_value::<&'de RawValue>()?));
                    }
                    Ok(IndexLike(entries))
                }
            }
            d.deserialize_map(V(std::marker::PhantomData))
        }
    }

    #[test]
    fn the_inventory_is_what_the_lines_written_hold() {
        let t = transform();
        let many: String = (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect();
        let body = format!(
            r#"{{"v":[
                {{"id":1,"name":"a","created_at":1700000000123}},
                {{"name":null,"id":2,"ingest_date":"replaced in place","tags":[1,2]}},
                {{}},
                {{"caf\u00e9":"x","a\"b":{{"deep":[true]}}}},
                {{{many}"id":"x40"}},
                {{"id":3,"name":"bb","created_at":"2024-01-01T00:00:00Z"}}
            ]}}"#
        );
        let mut out = Vec::new();
        let mut inventory = FieldInventory::default();
        let mut w = RecordWriter::new(&t, &mut out).with_inventory(Some(&mut inventory));
        let ptr = JsonPointer::parse("/v").unwrap();
        scan_page(body.as_bytes(), &ptr, None, &mut w).unwrap();
        drop(w);
        let lines = String::from_utf8(out).unwrap();
        let mut expected = inventory_of(&lines);
        let mut got: Vec<_> = inventory
            .fields()
            .iter()
            .map(|f| {
                let types = f.type_names();
                (
                    f.name.clone(),
                    f.records,
                    types,
                    f.total_bytes,
                    f.largest_bytes,
                )
            })
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, expected);
        let ingest = inventory.field("ingest_date").unwrap();
        assert_eq!(ingest.records, 6);
        assert_eq!(inventory.field("café").unwrap().records, 1);
        assert_eq!(inventory.field("a\"b").unwrap().type_names(), ["object"]);
        assert_eq!(
            inventory.field("id").unwrap().type_names(),
            ["string", "number"]
        );
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

    fn limited(max_record_bytes: usize) -> Transform {
        Transform::new(
            vec![("d".into(), "1".into())],
            vec![],
            TimeZone::Utc,
            OnInvalidTimestamp::Error,
            max_record_bytes,
        )
        .unwrap()
    }

    #[test]
    fn enforces_max_record_bytes() {
        // `{"a":1,"d":1}` is 13 bytes: at the limit is fine, one over is not.
        assert_eq!(
            run(&limited(13), r#"{"v":[{"a":1}]}"#).unwrap(),
            "{\"a\":1,\"d\":1}\n"
        );
        let err = run(&limited(12), r#"{"v":[{"a":1}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 0 of the page: the record is larger than max_record_bytes = 12 (at least 13 bytes as a JSON line)"
        );
        let err = run(&limited(13), r#"{"v":[{"a":1},{"abc":"defghij"}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 1 of the page: the record is larger than max_record_bytes = 13 (at least 16 bytes as a JSON line)"
        );
    }

    #[test]
    fn a_huge_value_is_refused_before_it_is_copied() {
        let big = "x".repeat(1 << 20);
        let body = format!(r#"{{"v":[{{"a":1}},{{"b":"{big}"}}]}}"#);
        let t = limited(1000);
        let mut out = Vec::new();
        let mut w = RecordWriter::new(&t, &mut out);
        let ptr = JsonPointer::parse("/v").unwrap();
        let err = scan_page(body.as_bytes(), &ptr, None, &mut w).unwrap_err();
        assert!(
            matches!(&err, PageError::Record { index: 1, source } if matches!(
                source.downcast_ref::<RecordError>(),
                Some(RecordError::TooLarge { limit: 1000, bytes }) if *bytes > 1 << 20
            )),
            "{err}"
        );
        // Only whole lines are left: the first record's.
        assert_eq!(out, b"{\"a\":1,\"d\":1}\n");
        assert!(out.capacity() < 1 << 20, "the big value was never copied");
    }

    #[test]
    fn refuses_repeated_top_level_keys() {
        let t = transform();
        for (body, key) in [
            (r#"{"v":[{"id":1,"id":2}]}"#, "id"),
            (r#"{"v":[{"id":1,"x":[],"\u0069d":2}]}"#, "id"),
            (r#"{"v":[{"a\"b":1,"a\u0022b":2}]}"#, "a\"b"),
            (r#"{"v":[{"ingest_ts":1,"ingest_ts":2}]}"#, "ingest_ts"),
            (r#"{"v":[{"":1,"":2}]}"#, ""),
        ] {
            let err = run(&t, body).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "record 0 of the page: the key {key:?} appears more than once (readers disagree on which value counts)"
                ),
                "{body}"
            );
        }
        // Repeats inside values copied raw are passed on (documented).
        let out = run(&Transform::identity(), r#"{"v":[{"a":{"b":1,"b":2}}]}"#).unwrap();
        assert_eq!(out, "{\"a\":{\"b\":1,\"b\":2}}\n");
    }

    #[test]
    fn refuses_repeated_keys_in_records_with_many_keys() {
        let t = Transform::identity();
        let keys = |n: usize| (0..n).map(|i| format!("\"k{i}\":{i}")).collect::<Vec<_>>();
        // Past the linear check, found by sorting at the end; at the start, the middle, the end.
        for n in [LINEAR_KEYS - 1, LINEAR_KEYS, LINEAR_KEYS + 1, 1000] {
            let all = keys(n);
            assert!(run(&t, &format!(r#"{{"v":[{{{}}}]}}"#, all.join(","))).is_ok());
            for repeat in [0, n / 2, n - 1] {
                let mut with = all.clone();
                with.push(format!("\"k{repeat}\":null"));
                let err = run(&t, &format!(r#"{{"v":[{{{}}}]}}"#, with.join(","))).unwrap_err();
                assert_eq!(
                    err.to_string(),
                    format!(
                        "record 0 of the page: the key \"k{repeat}\" appears more than once (readers disagree on which value counts)"
                    ),
                    "{n} keys, repeat of k{repeat}"
                );
            }
        }
        // Keys with the same fingerprint but different text are different keys.
        let out = run(&t, r#"{"v":[{"axxb":1,"ayyb":2,"axyb":3}]}"#).unwrap();
        assert_eq!(out, "{\"axxb\":1,\"ayyb\":2,\"axyb\":3}\n");
    }

    #[test]
    fn line_breaks_inside_raw_values_become_spaces() {
        let body = "{\"v\":[{\"a\" : [1,\n  2],\r\n \"b\":{\"c\":\t\"x\\ny\"},\"n\" :\n5}]}";
        let out = run(&Transform::identity(), body).unwrap();
        assert_eq!(out, "{\"a\":[1,   2],\"b\":{\"c\": \"x\\ny\"},\"n\":5}\n");
        // A kept invalid timestamp is copied the same way.
        let t = Transform::new(
            vec![],
            vec!["t".into()],
            TimeZone::Utc,
            OnInvalidTimestamp::Keep,
            1 << 20,
        )
        .unwrap();
        let out = run(&t, "{\"v\":[{\"t\":[\n1]}]}").unwrap();
        assert_eq!(out, "{\"t\":[ 1]}\n");
    }

    /// `n` levels of `[`, then `]`.
    fn arrays(n: usize) -> String {
        format!("{}{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn nesting_is_limited_so_every_line_reads_back() {
        let t = Transform::identity();
        // The record object is one level: its values may add 126.
        let line = run(&t, &format!(r#"{{"v":[{{"a":{}}}]}}"#, arrays(126))).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).expect("serde_json reads it");
        let err = run(&t, &format!(r#"{{"v":[{{"a":{}}}]}}"#, arrays(127))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 0 of the page: field \"a\" is nested too deeply: the line would have more than 127 levels of arrays and objects"
        );
        let deep = format!("{}1{}", r#"{"b":"#.repeat(127), "}".repeat(127));
        let err = run(&t, &format!(r#"{{"v":[{{"a":{deep}}}]}}"#)).unwrap_err();
        assert!(
            err.to_string().contains("field \"a\" is nested too deeply"),
            "{err}"
        );
    }

    #[test]
    fn deep_nesting_in_a_record_is_an_error_not_a_stack_overflow() {
        // On a thread with the default stack size (2 MiB), as the pipeline's workers have.
        std::thread::Builder::new()
            .spawn(|| {
                let t = transform();
                let n = 100_000;
                let objects = format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
                for value in [arrays(n), objects] {
                    let body = format!(r#"{{"v":[{{"id":1,"x":{value}}}]}}"#);
                    let err = run(&t, &body).map(|out| out.len()).unwrap_err();
                    assert!(
                        err.to_string().contains("field \"x\" is nested too deeply"),
                        "{err}"
                    );
                    // As the whole record, and unclosed.
                    let body = format!(r#"{{"v":[{value}]}}"#);
                    let err = run(&t, &body).map(|out| out.len()).unwrap_err();
                    assert!(
                        matches!(
                            err,
                            PageError::NotAnObject { .. } | PageError::Record { .. }
                        ),
                        "{err}"
                    );
                    let body = format!(r#"{{"v":[{{"x":{}"#, &value[..n]);
                    let err = run(&t, &body).map(|out| out.len()).unwrap_err();
                    assert!(err.to_string().contains("EOF while parsing"), "{err}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn invalid_utf8_in_a_record_names_it_and_the_position() {
        let t = transform();
        let ptr = JsonPointer::parse("/v").unwrap();
        for (body, column) in [
            (&b"{\"v\":[{},{\"a\":\"x\xffy\"}]}"[..], 17),
            (&b"{\"v\":[{},{\"a\xc0\":1}]}"[..], 13),
        ] {
            let mut out = Vec::new();
            let mut w = RecordWriter::new(&t, &mut out);
            let err = scan_page(body, &ptr, None, &mut w).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "record 1 of the page has invalid UTF-8 at line 1 column {column} (byte {} of the body)",
                    column - 1
                )
            );
        }
    }

    fn rules(f: impl FnOnce(&mut TransformRules)) -> Transform {
        let mut rules = TransformRules {
            max_record_bytes: 1 << 20,
            ..TransformRules::default()
        };
        f(&mut rules);
        Transform::from_rules(rules).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    /// Each record alone through `t`: its line, or its error.
    fn each(t: &Transform, cases: &[(&str, &str)]) {
        for (record, want) in cases {
            let got = match run(t, &format!(r#"{{"v":[{record}]}}"#)) {
                Ok(line) => line.trim_end_matches('\n').to_owned(),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, *want, "{record}");
        }
    }

    #[test]
    fn timestamps_at_pointers_are_normalised_and_siblings_stay_raw() {
        let t = rules(|r| {
            r.timestamps = strings(&["/meta/created_at", "/a~1b/c~0d", "updated_at", "/x/y/z"]);
        });
        each(
            &t,
            &[
                (
                    r#"{"id":1,"meta" : { "x":[1, 2] ,"created_at":1700000000123,"y":"z"},"a/b":{"c~d":"2024-01-01T00:00:00.5Z"},"updated_at":null}"#,
                    r#"{"id":1,"meta":{"x":[1, 2],"created_at":"2023-11-14T22:13:20.123Z","y":"z"},"a/b":{"c~d":"2024-01-01T00:00:00.500Z"},"updated_at":null}"#,
                ),
                (
                    r#"{"x":{"y":{"z":"2024-01-01 00:00:00.123456"},"w":{"z":1}}}"#,
                    r#"{"x":{"y":{"z":"2024-01-01T00:00:00.123456Z"},"w":{"z":1}}}"#,
                ),
                // Missing, or under something that is not an object: left alone.
                (r#"{}"#, r#"{}"#),
                (
                    r#"{"meta":5,"x":{"y":[{"z":1}]}}"#,
                    r#"{"meta":5,"x":{"y":[{"z":1}]}}"#,
                ),
                (r#"{"meta":{"other":1}}"#, r#"{"meta":{"other":1}}"#),
                (r#"{"meta":null,"a/b":"s"}"#, r#"{"meta":null,"a/b":"s"}"#),
                // A key named like the pointer is just a key.
                (r#"{"/meta/created_at":1}"#, r#"{"/meta/created_at":1}"#),
                (
                    r#"{"meta":{"created_at":"soon"}}"#,
                    r#"record 0 of the page: field "/meta/created_at": not a recognised timestamp: "soon""#,
                ),
                (
                    r#"{"meta":{"a":1,"\u0061":2}}"#,
                    r#"record 0 of the page: the key "a" appears more than once in /meta (readers disagree on which value counts)"#,
                ),
            ],
        );
    }

    #[test]
    fn precision_and_dates_apply_at_every_level() {
        let t = rules(|r| {
            r.timestamps = strings(&["ts", "/m/ts"]);
            r.dates = strings(&["day", "/m/day"]);
            r.timezone = "Asia/Tokyo".parse().unwrap();
            r.timestamp_precision = Some(TimestampPrecision::Us);
        });
        each(
            &t,
            &[(
                r#"{"ts":"2024-01-01T00:00:00Z","day":1700000000,"m":{"ts":1700000000123456789,"day":"2024-02-29"}}"#,
                r#"{"ts":"2024-01-01T00:00:00.000000Z","day":"2023-11-15","m":{"ts":"2023-11-14T22:13:20.123456Z","day":"2024-02-29"}}"#,
            )],
        );
        for (mode, want) in [
            (OnInvalidTimestamp::Keep, r#"{"m":{"day":[ 1]}}"#),
            (OnInvalidTimestamp::Null, r#"{"m":{"day":null}}"#),
        ] {
            let t = rules(|r| {
                r.dates = strings(&["/m/day"]);
                r.on_invalid = mode;
            });
            each(&t, &[("{\"m\":{\"day\":[\n1]}}", want)]);
        }
    }

    #[test]
    fn drops_fields_at_any_level() {
        let t = rules(|r| r.drop = strings(&["debug", "/meta/internal", "/a/b/c"]));
        each(
            &t,
            &[
                (
                    r#"{"debug":1,"id":2,"meta":{"internal":{"a":1},"k":true}}"#,
                    r#"{"id":2,"meta":{"k":true}}"#,
                ),
                (r#"{"debug":[1,2]}"#, r#"{}"#),
                (r#"{"id":1,"debug":2}"#, r#"{"id":1}"#),
                (r#"{"meta":{"internal":1}}"#, r#"{"meta":{}}"#),
                (
                    r#"{"a":{"b":{"c":1,"d":2},"e":3}}"#,
                    r#"{"a":{"b":{"d":2},"e":3}}"#,
                ),
                (r#"{"a":{"b":"c"}}"#, r#"{"a":{"b":"c"}}"#),
            ],
        );
    }

    #[test]
    fn renames_keep_the_field_in_its_place_and_refuse_collisions() {
        let t = rules(|r| {
            r.rename = pairs(&[
                ("old", "new"),
                ("/meta/ts", "/meta/timestamp"),
                ("/meta/a", "b"),
            ]);
        });
        each(
            &t,
            &[
                (
                    r#"{"x":0,"old":{"k":1},"meta":{"ts":2,"a":3,"y":4}}"#,
                    r#"{"x":0,"new":{"k":1},"meta":{"timestamp":2,"b":3,"y":4}}"#,
                ),
                (r#"{"new":1}"#, r#"{"new":1}"#),
                (
                    r#"{"old":1,"new":2}"#,
                    r#"record 0 of the page: field "old" cannot be renamed to "new": its object already has a field of that name"#,
                ),
                (
                    r#"{"new":2,"old":1}"#,
                    r#"record 0 of the page: field "old" cannot be renamed to "new": its object already has a field of that name"#,
                ),
                (
                    r#"{"meta":{"timestamp":0,"ts":1}}"#,
                    r#"record 0 of the page: field "/meta/ts" cannot be renamed to "timestamp": its object already has a field of that name"#,
                ),
                // Without the renamed field, a repeat is a plain repeat.
                (
                    r#"{"new":1,"new":2}"#,
                    r#"record 0 of the page: the key "new" appears more than once (readers disagree on which value counts)"#,
                ),
            ],
        );
        // Past the linear check too.
        let many: String = (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect();
        each(
            &t,
            &[(
                &format!(r#"{{"new":0,{many}"old":1}}"#),
                r#"record 0 of the page: field "old" cannot be renamed to "new": its object already has a field of that name"#,
            )],
        );
    }

    #[test]
    fn adds_at_pointers_create_missing_parents() {
        let t = rules(|r| {
            r.add = pairs(&[
                ("/meta/source", r#""api""#),
                ("/a/b/c", "1"),
                ("top", "true"),
            ]);
        });
        each(
            &t,
            &[
                (
                    r#"{}"#,
                    r#"{"meta":{"source":"api"},"a":{"b":{"c":1}},"top":true}"#,
                ),
                (
                    r#"{"meta":{"x":1}}"#,
                    r#"{"meta":{"x":1,"source":"api"},"a":{"b":{"c":1}},"top":true}"#,
                ),
                (
                    r#"{"top":0,"meta":{"source":"old","x":1}}"#,
                    r#"{"top":true,"meta":{"source":"api","x":1},"a":{"b":{"c":1}}}"#,
                ),
                (
                    r#"{"meta":{}}"#,
                    r#"{"meta":{"source":"api"},"a":{"b":{"c":1}},"top":true}"#,
                ),
                // A parent that is not an object is kept, and nothing is added under it.
                (
                    r#"{"meta":null}"#,
                    r#"{"meta":null,"a":{"b":{"c":1}},"top":true}"#,
                ),
                (
                    r#"{"a":{"b":[1]}}"#,
                    r#"{"a":{"b":[1]},"meta":{"source":"api"},"top":true}"#,
                ),
                (
                    r#"{"a":{"x":2}}"#,
                    r#"{"a":{"x":2,"b":{"c":1}},"meta":{"source":"api"},"top":true}"#,
                ),
            ],
        );
    }

    #[test]
    fn nested_rules_keep_the_limits() {
        let t = rules(|r| r.timestamps = strings(&["/m/ts"]));
        // An object in the record is level 2: its values may add 125.
        each(
            &t,
            &[
                (
                    &format!(r#"{{"m":{{"x":{}}}}}"#, arrays(125)),
                    &format!(r#"{{"m":{{"x":{}}}}}"#, arrays(125)),
                ),
                (
                    &format!(r#"{{"m":{{"x":{}}}}}"#, arrays(126)),
                    "record 0 of the page: field \"/m/x\" is nested too deeply: the line would have more than 127 levels of arrays and objects",
                ),
            ],
        );
        let t = rules(|r| {
            r.timestamps = strings(&["/m/ts"]);
            r.max_record_bytes = 100;
        });
        let big = "x".repeat(1 << 16);
        let err = run(&t, &format!(r#"{{"v":[{{"m":{{"a":"{big}"}}}}]}}"#)).unwrap_err();
        assert!(
            err.to_string()
                .contains("larger than max_record_bytes = 100 (at least 655"),
            "{err}"
        );
    }

    #[test]
    fn the_inventory_counts_the_fields_written_by_nested_rules() {
        let t = rules(|r| {
            r.add = pairs(&[("/meta/source", r#""api""#), ("ingest", "1")]);
            r.drop = strings(&["debug"]);
            r.rename = pairs(&[("old", "new")]);
            r.timestamps = strings(&["/meta/ts"]);
        });
        let body = r#"{"v":[
            {"id":1,"debug":true,"old":"o","meta":{"ts":0}},
            {"debug":1},
            {"meta":7,"ingest":"x","new":[1]},
            {"old":{"a":1},"meta":{"source":null,"z":1}}
        ]}"#;
        let mut out = Vec::new();
        let mut inventory = FieldInventory::default();
        let mut w = RecordWriter::new(&t, &mut out).with_inventory(Some(&mut inventory));
        let ptr = JsonPointer::parse("/v").unwrap();
        scan_page(body.as_bytes(), &ptr, None, &mut w).unwrap();
        drop(w);
        let lines = String::from_utf8(out).unwrap();
        let mut expected = inventory_of(&lines);
        let mut got: Vec<_> = inventory
            .fields()
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    f.records,
                    f.type_names(),
                    f.total_bytes,
                    f.largest_bytes,
                )
            })
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, expected);
        assert!(inventory.field("debug").is_none());
        assert_eq!(inventory.field("new").unwrap().records, 3);
        assert_eq!(inventory.field("meta").unwrap().records, 4);
    }

    #[test]
    fn build_errors_name_the_rule() {
        let build = |f: &dyn Fn(&mut TransformRules)| {
            let mut r = TransformRules::default();
            f(&mut r);
            Transform::from_rules(r).unwrap_err().to_string()
        };
        assert_eq!(
            build(&|r| {
                r.add = pairs(&[("created_at", "1")]);
                r.timestamps = strings(&["created_at"]);
            }),
            r#"timestamps.created_at: "created_at" is also in transform.add (as "created_at"): a field takes one transform"#
        );
        assert_eq!(
            build(&|r| r.add = (0..65).map(|i| (format!("k{i}"), "1".to_owned())).collect()),
            "at most 64 added fields are supported, got 65"
        );
    }
}
