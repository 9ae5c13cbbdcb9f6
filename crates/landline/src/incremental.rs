//! Incremental runs (`[source.incremental]`): each run asks the API only for the records
//! changed since the previous one.
//!
//! **The cursor.** A run tracks the highest value of one field of the records it writes (its
//! high-water mark), as written to the object (after the transform: a renamed field by its
//! new name, a normalised timestamp as normalised). After the run has completed its object
//! (and its manifest), the cursor is stored under the state prefix, beside checkpoints and
//! manifests, never in the data prefix: `_landline/incremental/{pipeline}/cursor[.vars].json`
//! ([`IncrementalState`]). The next run sends it to the API in the query parameter `param`
//! (less `lookback` for timestamps); the first run sends `start`. A run that fails, or stops at
//! a checkpoint, never moves the cursor; a run that continues from a checkpoint sends the
//! value its first process sent, so all of one run's requests ask for the same records.
//!
//! **At-least-once at the boundary.** APIs answer `updated_since` with the records at *or*
//! after the value (and `lookback` asks for earlier ones on purpose), so the records at the
//! boundary are fetched again by the next run: a reader deduplicates by key, keeping the
//! latest. The report and the manifest give the boundary (`incremental.since`, the value
//! sent; `incremental.high_water`, the highest value written).
//!
//! **Ordering.** The kind of the cursor follows `start`: a timestamp string (compared as
//! instants, so offsets and precisions compare right), a number, or other text (compared as
//! Unicode code points). A record whose field is missing, `null` or of another kind does not
//! move the mark and is counted (`incremental.records_without_value`).
//!
//! **One run at a time.** An incremental run holds a lock object,
//! `_landline/locks/{pipeline}[.vars].json`, with its owner and an expiry ([`LOCK_TTL`],
//! renewed while the run lasts). It is created with a conditional write where the store has
//! one (`If-None-Match: *` on S3, exclusive create on a local disk), then read back; a second
//! run finds it and is refused with [`IncrementalError::Locked`]. A lock past its expiry (its
//! run was killed) is taken over, and so is one held by the run a checkpoint continues. On a
//! store that ignores conditional writes, the read-back narrows the race but cannot close it.
//!
//! Memory and time per record: the field is found among the spans of the line's top-level
//! keys the writer already keeps; a pointer into a nested object parses that object's keys.
//! A timestamp or a number is compared without allocating (a text cursor's value is unescaped
//! into a string), and its text is copied into a reused buffer when it is a new high.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::checkpoint::state_url;
use crate::pointer::JsonPointer;
use crate::sink::{Destination, StoreOptions};
use crate::transform::{TimeZone, instant};

/// The template variable of an incremental source's URL, query values and headers that holds
/// the value a run asks from (the cursor less `lookback`), for APIs that take it in another
/// form than one query parameter: `query = { q = "updated>={incremental_since}" }`.
pub const SINCE_VAR: &str = "incremental_since";

/// The state format this build writes and reads.
pub const STATE_FORMAT: &str = "landline-incremental/1";
/// The lock format this build writes and reads.
pub const LOCK_FORMAT: &str = "landline-lock/1";
/// How long a lock holds without being renewed: a run killed without releasing it blocks the
/// next one this long at most. Renewed every quarter of it while the run lasts.
pub const LOCK_TTL: Duration = Duration::from_secs(10 * 60);
/// The largest state or lock object read.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// `[source.incremental]`, validated.
#[derive(Debug, Clone)]
pub struct IncrementalSpec {
    /// The field, as the pipeline names it (a top-level key, or a JSON pointer).
    pub field: String,
    path: FieldPath,
    /// The query parameter the cursor is sent in (`None`: the source's templates use
    /// `{incremental_since}`).
    pub param: Option<String>,
    /// The cursor of the first run.
    pub start: CursorValue,
    /// How far before the cursor a run asks from (timestamps only).
    pub lookback: Option<Duration>,
    /// The kind of the cursor, from `start`.
    pub kind: CursorKind,
}

/// Where the field is in a line: the top-level key as JSON text, then keys inside it.
#[derive(Debug, Clone)]
struct FieldPath {
    top: Vec<u8>,
    rest: Vec<String>,
}

/// Why `[source.incremental]` is not acceptable (the config module adds the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The key under `source.incremental`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl IncrementalSpec {
    /// Checks the settings: `field` a key or a pointer, `start` a string or a number,
    /// `lookback` only with timestamps.
    pub fn new(
        field: &str,
        param: Option<&str>,
        start: serde_json::Value,
        lookback: Option<Duration>,
    ) -> Result<IncrementalSpec, SpecError> {
        let error = |key, message: String| SpecError { key, message };
        let tokens: Vec<String> = if field.starts_with('/') {
            let pointer = JsonPointer::parse(field).map_err(|e| error("field", e.to_string()))?;
            pointer.tokens().to_vec()
        } else if field.is_empty() {
            return Err(error("field", "is empty".into()));
        } else {
            vec![field.to_owned()]
        };
        let Some((top, rest)) = tokens.split_first() else {
            return Err(error("field", "names the whole record, not a field".into()));
        };
        if param.is_some_and(str::is_empty) {
            return Err(error("param", "is empty".into()));
        }
        let start = CursorValue(start);
        let kind = start.kind().ok_or_else(|| {
            error(
                "start",
                "must be a string (a timestamp or text) or a number".into(),
            )
        })?;
        if lookback.is_some() && kind != CursorKind::Timestamp {
            return Err(error(
                "lookback",
                format!("needs timestamps, but start {} is {}", start, kind.name()),
            ));
        }
        Ok(IncrementalSpec {
            field: field.to_owned(),
            path: FieldPath {
                top: serde_json::to_vec(top).unwrap_or_default(),
                rest: rest.to_vec(),
            },
            param: param.map(str::to_owned),
            start,
            lookback,
            kind,
        })
    }

    /// The value a run sends when the cursor is `cursor`: the cursor less `lookback`.
    pub fn since(&self, cursor: &CursorValue) -> Result<String, IncrementalError> {
        let Some(lookback) = self.lookback else {
            return Ok(cursor.as_param());
        };
        let (secs, nanos) = cursor.instant().ok_or_else(|| IncrementalError::State {
            location: String::new(),
            reason: format!("cursor {cursor} is not a timestamp"),
        })?;
        let back =
            i128::from(secs) * 1_000_000_000 + i128::from(nanos) - lookback.as_nanos() as i128;
        let secs = back.div_euclid(1_000_000_000) as i64;
        let nanos = back.rem_euclid(1_000_000_000) as u32;
        let digits = if nanos.is_multiple_of(1_000_000) {
            3
        } else if nanos.is_multiple_of(1_000) {
            6
        } else {
            9
        };
        let mut out = Vec::with_capacity(30);
        crate::transform::timestamp::format_utc(secs, nanos, digits, &mut out);
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl IncrementalSpec {
    /// `text` as a cursor of this pipeline's kind (for `landline state set`): a number for a
    /// numeric cursor, a string otherwise, checked to be a timestamp for a timestamp cursor.
    pub fn parse_cursor(&self, text: &str) -> Result<CursorValue, String> {
        let value = match self.kind {
            CursorKind::Number => serde_json::from_str::<serde_json::Number>(text)
                .map(serde_json::Value::Number)
                .map_err(|_| format!("{text:?} is not a number, and this cursor is numeric"))?,
            _ => serde_json::Value::from(text),
        };
        let value = CursorValue(value);
        match value.key(self.kind) {
            Some(_) => Ok(value),
            None => Err(format!("{text:?} is not {}", self.kind.name())),
        }
    }
}

/// A cursor: a record's field value, as JSON (a string or a number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CursorValue(pub serde_json::Value);

impl std::fmt::Display for CursorValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How cursors compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorKind {
    /// Instants: RFC 3339 strings (naive ones in UTC) or epoch numbers.
    Timestamp,
    /// Numbers.
    Number,
    /// Strings, by Unicode code point.
    Text,
}

impl CursorKind {
    fn name(self) -> &'static str {
        match self {
            CursorKind::Timestamp => "a timestamp",
            CursorKind::Number => "a number",
            CursorKind::Text => "text",
        }
    }
}

impl CursorValue {
    /// The kind a value of `start` gives the cursor.
    fn kind(&self) -> Option<CursorKind> {
        match &self.0 {
            serde_json::Value::String(_) if self.instant().is_some() => Some(CursorKind::Timestamp),
            serde_json::Value::String(_) => Some(CursorKind::Text),
            serde_json::Value::Number(_) => Some(CursorKind::Number),
            _ => None,
        }
    }

    fn instant(&self) -> Option<(i64, u32)> {
        match &self.0 {
            serde_json::Value::String(_) => instant(&self.0.to_string(), &TimeZone::Utc).ok(),
            _ => None,
        }
    }

    /// The text sent in the query: a string's content, a number as written.
    pub fn as_param(&self) -> String {
        match &self.0 {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// Whether this value is of `kind`, and its key.
    fn key(&self, kind: CursorKind) -> Option<Key> {
        let raw = self.0.to_string();
        Key::of(raw.as_bytes(), kind)
    }
}

/// A cursor value as it compares.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Instant(i64, u32),
    Int(i128),
    Float(f64),
    Text(String),
}

impl Key {
    /// The key of `raw` (a JSON value's text) if it is of `kind`.
    fn of(raw: &[u8], kind: CursorKind) -> Option<Key> {
        let text = std::str::from_utf8(raw).ok()?.trim();
        match (kind, text.as_bytes().first()?) {
            (CursorKind::Timestamp, b'"' | b'-' | b'0'..=b'9') => instant(text, &TimeZone::Utc)
                .ok()
                .map(|(s, n)| Key::Instant(s, n)),
            (CursorKind::Number, b'-' | b'0'..=b'9') => {
                if text.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                    text.parse().ok().map(Key::Float)
                } else {
                    text.parse().ok().map(Key::Int)
                }
            }
            (CursorKind::Text, b'"') => serde_json::from_str(text).ok().map(Key::Text),
            _ => None,
        }
    }

    fn cmp(&self, other: &Key) -> Ordering {
        let float = |k: &Key| match k {
            Key::Int(i) => *i as f64,
            Key::Float(f) => *f,
            _ => f64::NAN,
        };
        match (self, other) {
            (Key::Instant(a, b), Key::Instant(c, d)) => (a, b).cmp(&(c, d)),
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (a, b) => float(a).partial_cmp(&float(b)).unwrap_or(Ordering::Equal),
        }
    }
}

/// The highest value of the cursor field written so far, and the records without one.
#[derive(Debug, Clone)]
pub struct HighWater {
    path: FieldPath,
    kind: CursorKind,
    /// The highest value's key, and its JSON text in `best_text` (a buffer reused, so that a
    /// run of ascending values allocates nothing per record).
    best: Option<Key>,
    best_text: Vec<u8>,
    /// Records whose field was missing, `null`, or not of the cursor's kind.
    pub records_without_value: u64,
}

impl HighWater {
    /// Starts from `before` (a resumed run's mark), if any.
    pub fn new(spec: &IncrementalSpec, before: Option<&IncrementalMark>) -> HighWater {
        let mut high = HighWater {
            path: spec.path.clone(),
            kind: spec.kind,
            best: None,
            best_text: Vec::new(),
            records_without_value: 0,
        };
        if let Some(mark) = before {
            high.records_without_value = mark.records_without_value;
            if let Some(value) = &mark.high_water {
                high.best = value.key(spec.kind);
                high.best_text = value.0.to_string().into_bytes();
            }
        }
        high
    }

    /// Looks at a line just written: `line` and the spans of its top-level entries (key
    /// start, key end, value end; the value follows the key's colon).
    pub(crate) fn observe(&mut self, line: &[u8], spans: &[(usize, usize, usize)]) {
        let value = spans
            .iter()
            .find(|&&(s, e, _)| line[s..e] == *self.path.top)
            .map(|&(_, e, end)| &line[e + 1..end])
            .and_then(|top| nested(top, &self.path.rest));
        let key = value.and_then(|raw| Key::of(raw, self.kind).map(|k| (k, raw)));
        let Some((key, raw)) = key else {
            self.records_without_value += 1;
            return;
        };
        let higher = match &self.best {
            None => true,
            Some(best) => key.cmp(best) == Ordering::Greater,
        };
        if higher {
            self.best = Some(key);
            self.best_text.clear();
            self.best_text.extend_from_slice(raw);
        }
    }

    /// The mark so far, for checkpoints and the report.
    pub fn mark(&self) -> IncrementalMark {
        IncrementalMark {
            high_water: self
                .best
                .as_ref()
                .and_then(|_| serde_json::from_slice(&self.best_text).ok())
                .map(CursorValue),
            records_without_value: self.records_without_value,
        }
    }
}

/// The value at `rest` inside the JSON object `raw`, if every step is an object holding it.
pub(crate) fn nested<'a>(mut raw: &'a [u8], rest: &[String]) -> Option<&'a [u8]> {
    for token in rest {
        let object: HashMap<String, &'a RawValue> = serde_json::from_slice(raw).ok()?;
        raw = object.get(token)?.get().as_bytes();
    }
    Some(raw)
}

/// A run's high-water mark, as checkpoints carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalMark {
    /// The highest value written.
    pub high_water: Option<CursorValue>,
    /// Records without a value of the cursor's kind.
    #[serde(default)]
    pub records_without_value: u64,
}

/// What one incremental run asked for: fixed for the run, carried in its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalRun {
    /// The cursor when the run began (`None`: the first run, from `start`).
    pub previous: Option<CursorValue>,
    /// The value sent in the query.
    pub since: String,
}

/// The incremental part of a run's report and manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncrementalReport {
    /// The cursor field.
    pub field: String,
    /// The query parameter (`None`: sent through `{incremental_since}` in the source's
    /// templates).
    pub param: Option<String>,
    /// The value sent: every record at or after it was asked for.
    pub since: String,
    /// The cursor the run began from (`None`: the first run, which sent `start`).
    pub previous: Option<CursorValue>,
    /// The highest value written (`None`: no record had one).
    pub high_water: Option<CursorValue>,
    /// The cursor the next run begins from: the higher of `previous` and `high_water`.
    pub cursor: Option<CursorValue>,
    /// Records without a value of the cursor's kind.
    pub records_without_value: u64,
    /// Where the cursor is stored.
    pub state: String,
    /// How cursors compare.
    pub kind: CursorKind,
}

/// The later of two cursors of `kind` (a value not of that kind loses).
pub fn later(
    kind: CursorKind,
    a: Option<CursorValue>,
    b: Option<CursorValue>,
) -> Option<CursorValue> {
    match (a, b) {
        (Some(a), Some(b)) => match (a.key(kind), b.key(kind)) {
            (Some(ka), Some(kb)) if kb.cmp(&ka) == Ordering::Greater => Some(b),
            (None, Some(_)) => Some(b),
            _ => Some(a),
        },
        (a, b) => a.or(b),
    }
}

/// The stored cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncrementalState {
    /// [`STATE_FORMAT`].
    pub format: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The cursor field.
    pub field: String,
    /// How the cursor compares.
    pub kind: CursorKind,
    /// The cursor: the next run asks from it.
    pub cursor: CursorValue,
    /// When it was written.
    pub updated_at: DateTime<Utc>,
    /// Who wrote it: `run` or `landline state set`.
    pub set_by: String,
    /// The run that set it (none when set by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<StateRun>,
}

/// The run a stored cursor comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRun {
    /// Its `{ingest_date}`.
    pub ingest_date: String,
    /// Its `{ingest_ts}`.
    pub ingest_ts: String,
    /// The value it sent.
    pub since: String,
    /// Its records.
    pub records: u64,
    /// Its object, if it wrote one.
    pub object: Option<String>,
}

/// Why incremental state could not be read, written or locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IncrementalError {
    /// The state or lock object could not be read or written.
    #[error("incremental state {location}: {reason}")]
    State {
        /// Its URL.
        location: String,
        /// Why.
        reason: String,
    },
    /// Another run of the pipeline holds the lock.
    #[error(
        "another run of this pipeline holds the lock {location} (owner {owner}, since {acquired_at}, until {expires_at}): two incremental runs at once would both move the cursor; wait for it, or delete the lock if that run is gone"
    )]
    Locked {
        /// The lock's URL.
        location: String,
        /// Its owner (host, process).
        owner: String,
        /// When it was taken.
        acquired_at: DateTime<Utc>,
        /// When it expires unless renewed.
        expires_at: DateTime<Utc>,
    },
    /// The run's object landed, but the cursor could not be stored: the next run asks from
    /// the old one (records repeat, none is lost).
    #[error(
        "the object landed, but the cursor was not advanced ({0}): the next run asks from the previous cursor, so its records repeat (none is lost)"
    )]
    NotAdvanced(Box<IncrementalError>),
}

/// The cursor state's URL for `pipeline` with `vars` under the state `prefix`.
pub fn state_location(prefix: &str, pipeline: &str, vars: &BTreeMap<String, String>) -> String {
    state_url(prefix, "incremental", pipeline, "cursor", vars)
}

/// The lock's URL for `pipeline` with `vars` under the state `prefix`.
pub fn lock_location(prefix: &str, pipeline: &str, vars: &BTreeMap<String, String>) -> String {
    state_url(prefix, "locks", pipeline, "run", vars)
}

fn state_error(location: &str, reason: impl std::fmt::Display) -> IncrementalError {
    IncrementalError::State {
        location: location.to_owned(),
        reason: reason.to_string(),
    }
}

/// Reads a small JSON object; `None` when there is none.
async fn read_json<T: serde::de::DeserializeOwned>(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    location: &str,
    format: &str,
) -> Result<Option<T>, IncrementalError> {
    let got = match store.get(path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(state_error(location, crate::errors::one_line(&e))),
    };
    if got.meta.size > MAX_STATE_BYTES {
        return Err(state_error(
            location,
            format!("{} bytes: larger than state can be", got.meta.size),
        ));
    }
    let bytes = got
        .bytes()
        .await
        .map_err(|e| state_error(location, crate::errors::one_line(&e)))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| state_error(location, format!("not JSON: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(f) if f == format => {}
        other => {
            return Err(state_error(
                location,
                format!("format {other:?}, not {format:?} (the one this landline reads)"),
            ));
        }
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| state_error(location, format!("corrupt: {e}")))
}

/// Reads the stored cursor at `location`, if there is one.
pub async fn read_state(
    location: &str,
    options: &StoreOptions,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<IncrementalState>, IncrementalError> {
    let at = Destination::open(location, options, env).map_err(|e| state_error(location, e))?;
    read_json(&at.store, &at.path, location, STATE_FORMAT).await
}

/// Writes `state` at `location`.
pub async fn write_state(
    location: &str,
    state: &IncrementalState,
    options: &StoreOptions,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), IncrementalError> {
    let at = Destination::open(location, options, env).map_err(|e| state_error(location, e))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| state_error(location, e))?;
    at.store
        .put(&at.path, PutPayload::from(json))
        .await
        .map_err(|e| state_error(location, crate::errors::one_line(&e)))?;
    Ok(())
}

/// Deletes the stored cursor at `location`; `false` when there was none.
pub async fn delete_state(
    location: &str,
    options: &StoreOptions,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<bool, IncrementalError> {
    let at = Destination::open(location, options, env).map_err(|e| state_error(location, e))?;
    match at.store.head(&at.path).await {
        Err(object_store::Error::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(state_error(location, crate::errors::one_line(&e))),
        Ok(_) => {}
    }
    at.store
        .delete(&at.path)
        .await
        .map_err(|e| state_error(location, crate::errors::one_line(&e)))?;
    Ok(true)
}

/// What a lock object holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    /// [`LOCK_FORMAT`].
    pub format: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Who holds it: host, process and a random token.
    pub owner: String,
    /// The run holding it (its `{ingest_ts}`), so that the run a checkpoint continues takes
    /// it over.
    pub run: String,
    /// When it was taken.
    pub acquired_at: DateTime<Utc>,
    /// When it expires unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// Reads the lock at `location`, if there is one (for `landline state show`).
pub async fn read_lock(
    location: &str,
    options: &StoreOptions,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<LockFile>, IncrementalError> {
    let at = Destination::open(location, options, env).map_err(|e| state_error(location, e))?;
    read_json(&at.store, &at.path, location, LOCK_FORMAT).await
}

/// A lock held by this run: renewed until released. Dropping it stops the renewal but leaves
/// the object, which then expires.
#[derive(Debug)]
pub struct RunLock {
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
    owner: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

fn locked(location: &str, held: LockFile) -> IncrementalError {
    IncrementalError::Locked {
        location: location.to_owned(),
        owner: held.owner,
        acquired_at: held.acquired_at,
        expires_at: held.expires_at,
    }
}

fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl RunLock {
    /// Takes the lock at `location` for run `run` of `pipeline`, or says who holds it.
    pub async fn acquire(
        location: &str,
        pipeline: &str,
        run: &str,
        options: &StoreOptions,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RunLock, IncrementalError> {
        let at = Destination::open(location, options, env).map_err(|e| state_error(location, e))?;
        let now = Utc::now();
        let lock = LockFile {
            format: LOCK_FORMAT.to_owned(),
            pipeline: pipeline.to_owned(),
            owner: owner(),
            run: run.to_owned(),
            acquired_at: now,
            expires_at: now + LOCK_TTL,
        };
        let body = serde_json::to_vec_pretty(&lock).map_err(|e| state_error(location, e))?;
        let mut mode = PutMode::Create;
        for _ in 0..2 {
            let put = at
                .store
                .put_opts(
                    &at.path,
                    PutPayload::from(body.clone()),
                    PutOptions::from(mode.clone()),
                )
                .await;
            match put {
                Ok(_) => break,
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let held: Option<LockFile> =
                        read_json(&at.store, &at.path, location, LOCK_FORMAT).await?;
                    match held {
                        // Released between the two requests: try again.
                        None => mode = PutMode::Create,
                        Some(held) if held.expires_at < now || held.run == run => {
                            tracing::warn!(
                                location,
                                owner = %held.owner,
                                expired = held.expires_at < now,
                                "taking over a lock left by {}",
                                if held.run == run { "this run's earlier process" } else { "a run that is gone (expired)" }
                            );
                            mode = PutMode::Overwrite;
                        }
                        Some(held) => return Err(locked(location, held)),
                    }
                }
                // No conditional writes here: a plain write, checked by the read below.
                Err(object_store::Error::NotImplemented { .. })
                    if matches!(mode, PutMode::Create) =>
                {
                    if let Some(held) =
                        read_json::<LockFile>(&at.store, &at.path, location, LOCK_FORMAT).await?
                        && held.expires_at >= now
                        && held.run != run
                    {
                        return Err(locked(location, held));
                    }
                    mode = PutMode::Overwrite;
                }
                Err(e) => return Err(state_error(location, crate::errors::one_line(&e))),
            }
        }
        // Read back: a store that ignored the condition shows the last writer here.
        match read_json::<LockFile>(&at.store, &at.path, location, LOCK_FORMAT).await? {
            Some(held) if held.owner == lock.owner => {}
            Some(held) => return Err(locked(location, held)),
            None => return Err(state_error(location, "the lock vanished as it was taken")),
        }
        let renew = {
            let (store, path, location) =
                (Arc::clone(&at.store), at.path.clone(), location.to_owned());
            let mut lock = lock.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOCK_TTL / 4).await;
                    lock.expires_at = Utc::now() + LOCK_TTL;
                    let Ok(body) = serde_json::to_vec_pretty(&lock) else {
                        return;
                    };
                    if let Err(e) = store.put(&path, PutPayload::from(body)).await {
                        tracing::warn!(location, error = %e, "renewing the run's lock failed");
                    }
                }
            })
        };
        tracing::debug!(location, owner = %lock.owner, "lock taken");
        Ok(RunLock {
            store: at.store,
            path: at.path,
            location: location.to_owned(),
            owner: lock.owner,
            renew,
        })
    }

    /// Stops renewing and deletes the lock if it is still this run's. A failure is a warning:
    /// the lock then expires.
    pub async fn release(self) {
        self.renew.abort();
        let ours = matches!(
            read_json::<LockFile>(&self.store, &self.path, &self.location, LOCK_FORMAT).await,
            Ok(Some(held)) if held.owner == self.owner
        );
        if ours && let Err(e) = self.store.delete(&self.path).await {
            tracing::warn!(location = %self.location, error = %e, "could not delete the run's lock; it expires by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(field: &str, start: serde_json::Value, lookback: Option<Duration>) -> IncrementalSpec {
        IncrementalSpec::new(field, Some("updated_since"), start, lookback).expect("valid")
    }

    fn line(json: &str) -> (Vec<u8>, Vec<(usize, usize, usize)>) {
        // The spans of the top-level entries of a compact one-level-deep line.
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).expect("an object");
        let mut out = b"{".to_vec();
        let mut spans = Vec::new();
        for (i, (k, v)) in value.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let start = out.len();
            out.extend(serde_json::to_vec(k).unwrap());
            let end = out.len();
            out.push(b':');
            out.extend(serde_json::to_vec(v).unwrap());
            spans.push((start, end, out.len()));
        }
        out.push(b'}');
        (out, spans)
    }

    fn high(spec: &IncrementalSpec, lines: &[&str]) -> IncrementalMark {
        let mut h = HighWater::new(spec, None);
        for l in lines {
            let (bytes, spans) = line(l);
            h.observe(&bytes, &spans);
        }
        h.mark()
    }

    #[test]
    fn timestamps_compare_as_instants_whatever_their_form() {
        let s = spec("updated_at", "2024-01-01T00:00:00Z".into(), None);
        let mark = high(
            &s,
            &[
                r#"{"updated_at":"2024-03-01T10:00:00.000Z"}"#,
                r#"{"updated_at":"2024-03-01T11:30:00+02:00"}"#, // 09:30Z: lower
                r#"{"updated_at":"2024-03-01T10:00:00.000001Z"}"#, // a microsecond higher
                r#"{"updated_at":null}"#,
                r#"{"other":1}"#,
                r#"{"updated_at":"soon"}"#,
            ],
        );
        assert_eq!(
            mark.high_water,
            Some(CursorValue("2024-03-01T10:00:00.000001Z".into()))
        );
        assert_eq!(mark.records_without_value, 3);
    }

    #[test]
    fn numbers_and_text_and_nested_fields() {
        let n = spec("seq", 0.into(), None);
        let mark = high(&n, &[r#"{"seq":9}"#, r#"{"seq":10}"#, r#"{"seq":9.5}"#]);
        assert_eq!(mark.high_water, Some(CursorValue(10.into())));
        let t = spec("v", "a".into(), None);
        let mark = high(&t, &[r#"{"v":"b"}"#, r#"{"v":"ab"}"#, r#"{"v":"\u00e9"}"#]);
        assert_eq!(mark.high_water, Some(CursorValue("é".into())));
        let nested = spec("/meta/ts", "2024-01-01T00:00:00Z".into(), None);
        let mark = high(
            &nested,
            &[
                r#"{"meta":{"ts":"2024-05-01T00:00:00Z","x":[1]}}"#,
                r#"{"meta":5}"#,
                r#"{"meta":{"ts":"2024-04-01T00:00:00Z"}}"#,
            ],
        );
        assert_eq!(
            mark.high_water,
            Some(CursorValue("2024-05-01T00:00:00Z".into()))
        );
        assert_eq!(mark.records_without_value, 1);
    }

    #[test]
    fn since_subtracts_the_lookback() {
        let s = spec(
            "u",
            "2024-01-01T00:00:00Z".into(),
            Some(Duration::from_secs(3600)),
        );
        let cursor = CursorValue("2024-03-01T00:30:00.123456Z".into());
        assert_eq!(s.since(&cursor).unwrap(), "2024-02-29T23:30:00.123456Z");
        let plain = spec("u", "2024-01-01T00:00:00Z".into(), None);
        assert_eq!(plain.since(&cursor).unwrap(), "2024-03-01T00:30:00.123456Z");
        assert_eq!(
            spec("n", 5.into(), None)
                .since(&CursorValue(42.into()))
                .unwrap(),
            "42"
        );
    }

    #[test]
    fn settings_are_checked() {
        let err = |field: &str, start: serde_json::Value, lookback| {
            IncrementalSpec::new(field, Some("p"), start, lookback).unwrap_err()
        };
        assert_eq!(err("", "x".into(), None).key, "field");
        assert_eq!(err("/a~2", "x".into(), None).key, "field");
        assert_eq!(err("a", serde_json::Value::Bool(true), None).key, "start");
        let e = err("a", 5.into(), Some(Duration::from_secs(1)));
        assert_eq!(e.key, "lookback");
        assert!(e.message.contains("needs timestamps"), "{}", e.message);
        assert_eq!(
            IncrementalSpec::new("a", Some(""), "x".into(), None)
                .unwrap_err()
                .key,
            "param"
        );
    }

    #[tokio::test]
    async fn a_lock_is_refused_while_held_taken_over_when_expired_or_by_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("locks/p/run.json").display().to_string();
        let options = StoreOptions::default();
        let first = RunLock::acquire(&location, "p", "run-1", &options, Vec::new())
            .await
            .unwrap();
        let err = RunLock::acquire(&location, "p", "run-2", &options, Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, IncrementalError::Locked { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("another run of this pipeline holds the lock")
        );
        // The same run (continued from a checkpoint) takes it over.
        let again = RunLock::acquire(&location, "p", "run-1", &options, Vec::new())
            .await
            .unwrap();
        drop(first);
        again.release().await;
        assert!(!std::path::Path::new(&location).exists());
        // An expired lock is taken over.
        let stale = LockFile {
            format: LOCK_FORMAT.into(),
            pipeline: "p".into(),
            owner: "gone:1:0".into(),
            run: "run-0".into(),
            acquired_at: Utc::now() - chrono::Duration::hours(2),
            expires_at: Utc::now() - chrono::Duration::hours(1),
        };
        std::fs::write(&location, serde_json::to_vec(&stale).unwrap()).unwrap();
        RunLock::acquire(&location, "p", "run-3", &options, Vec::new())
            .await
            .unwrap()
            .release()
            .await;
    }
}
