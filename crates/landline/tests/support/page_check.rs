//! The properties of page → records → transform → JSON Lines, checked on any input bytes.
//!
//! Shared, word for word, by the fuzz target (`fuzz/fuzz_targets/page.rs`) and by
//! `tests/fuzz_corpus.rs`, which runs the committed corpus through it in every `cargo test`:
//! both pull this file in with `#[path = ...] mod page_check;`.
//!
//! [`check_page`] runs the input through landline's public API under a few configurations and
//! panics when a property fails:
//!
//! - whatever the input, the output is whole lines only: each ends with `\n`, has no other
//!   line break, and is a valid JSON object (RFC 8259, UTF-8, at most 127 levels deep) with
//!   no repeated top-level key; when a record is refused, the lines before it are there;
//! - when serde_json reads the page (keeping duplicate keys, as [`Json`] does), landline
//!   agrees with it: the records are the elements of the array at the record path, each line
//!   is its record, key for key and in order, with the added fields replacing or following
//!   its own, the cursor is the value at the cursor path, and the errors are the ones that
//!   must happen (path missing or ambiguous, not an array, not an object, repeated key);
//! - `max_record_bytes` refuses exactly the records whose line is longer than the limit;
//! - the body fed in pieces of any size, as it comes off the network, gives exactly what the
//!   whole body gives: the same lines, the same cursor, the same error.

use landline::pointer::JsonPointer;
use landline::source::page::{PageError, PageSplitter, Paths, scan_page};
use landline::transform::{OnInvalidTimestamp, RecordError, RecordWriter, TimeZone, Transform};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value as serde_json reads it, keeping object keys in order, repeats included.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
                serde_json::Number::from_f64(v)
                    .map(Json::Number)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Json::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// One way of reading a page.
struct Config {
    records: &'static str,
    next: Option<&'static str>,
    /// Added fields: key and JSON text.
    added: &'static [(&'static str, &'static str)],
    /// A timestamp field, kept as it is when it is not a timestamp.
    timestamp: Option<&'static str>,
    /// A second run with this `max_record_bytes`.
    limit: Option<usize>,
}

const CONFIGS: &[Config] = &[
    Config {
        records: "/v",
        next: Some("/next"),
        added: &[("ingest_date", r#""2026-11-25""#), ("n", "7")],
        timestamp: None,
        limit: None,
    },
    Config {
        records: "",
        next: None,
        added: &[],
        timestamp: None,
        limit: Some(64),
    },
    Config {
        records: "/data/items",
        next: Some("/meta/next"),
        added: &[("src", r#"{"a":[1,"x"]}"#)],
        timestamp: Some("ts"),
        limit: Some(200),
    },
];

/// What one run produced.
struct Run {
    result: Result<(u64, Option<String>), PageError>,
    lines: Vec<String>,
}

fn run(body: &[u8], config: &Config, limit: usize) -> Run {
    run_in_pieces(body, config, limit, None)
}

/// Like [`run`], with the body fed `piece` bytes at a time (and read after each) when given.
fn run_in_pieces(body: &[u8], config: &Config, limit: usize, piece: Option<usize>) -> Run {
    let records = JsonPointer::parse(config.records).expect("pointer");
    let next = config.next.map(|n| JsonPointer::parse(n).expect("pointer"));
    let transform = Transform::new(
        config
            .added
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        config.timestamp.iter().map(|t| (*t).to_owned()).collect(),
        TimeZone::Utc,
        OnInvalidTimestamp::Keep,
        limit,
    )
    .expect("transform");
    let mut out = Vec::new();
    let mut writer = RecordWriter::new(&transform, &mut out);
    let result = match piece {
        None => scan_page(body, &records, next.as_ref(), &mut writer),
        Some(piece) => {
            let paths = Paths {
                records,
                cursor: next,
                error: None,
            };
            let mut splitter = PageSplitter::new(paths, usize::MAX).with_read_bytes(1);
            body.chunks(piece)
                .try_for_each(|p| {
                    splitter.window().extend_from_slice(p);
                    splitter.feed(&mut writer)
                })
                .and_then(|()| splitter.finish(&mut writer))
        }
    }
    .map(|scan| (scan.records, scan.next.map(|n| n.get().to_owned())));
    Run {
        result,
        lines: whole_lines(&out),
    }
}

/// Checks every property of `body` under every configuration; panics on the first failure.
pub(crate) fn check_page(body: &[u8]) {
    // serde_json's reading of the page, if it has one (UTF-8, syntax, depth, number range).
    let page = serde_json::from_slice::<Json>(body).ok();
    for config in CONFIGS {
        let full = run(body, config, usize::MAX);
        if let Some(page) = &page {
            agrees_with_serde_json(page, config, &full);
        }
        if let Some(limit) = config.limit {
            limit_refuses_exactly_the_long_lines(&full, &run(body, config, limit), limit);
        }
        // Pieces of a few sizes, the size picked from the body so the fuzzer varies it.
        let seed = body
            .iter()
            .fold(0usize, |h, &b| h.wrapping_mul(31) ^ usize::from(b));
        for piece in [1, 2 + seed % 7, 9 + seed % 61] {
            let pieces = run_in_pieces(body, config, usize::MAX, Some(piece));
            assert_eq!(pieces.lines, full.lines, "lines, in pieces of {piece}");
            assert_eq!(
                format!("{:?}", pieces.result),
                format!("{:?}", full.result),
                "result, in pieces of {piece}"
            );
        }
    }
}

/// The output as lines, each checked: whole, one line, a JSON object without repeated keys.
fn whole_lines(out: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(out).expect("the output is UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the output ends with a partial line: {text:?}"
    );
    let lines: Vec<String> = text.split_terminator('\n').map(str::to_owned).collect();
    for line in &lines {
        assert!(
            !line.contains('\r'),
            "a line has a carriage return: {line:?}"
        );
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "a line is not an object: {line:?}"
        );
        if let Err(why) = validate(line.as_bytes()) {
            panic!("a line is not valid JSON ({why}): {line:?}");
        }
        let keys = top_level_keys(line);
        for (i, key) in keys.iter().enumerate() {
            assert!(
                !keys[..i].contains(key),
                "a line repeats the key {key:?}: {line:?}"
            );
        }
    }
    lines
}

/// What a path leads to in a page.
enum Lookup<'a> {
    Found(&'a Json),
    Missing,
    /// An object on the way has the key twice.
    Ambiguous,
}

fn lookup<'a>(root: &'a Json, pointer: &str) -> Lookup<'a> {
    let pointer = JsonPointer::parse(pointer).expect("pointer");
    let mut at = root;
    for token in pointer.tokens() {
        at = match at {
            Json::Object(entries) => {
                let mut found = entries.iter().filter(|(k, _)| k == token);
                match (found.next(), found.next()) {
                    (Some((_, v)), None) => v,
                    (None, _) => return Lookup::Missing,
                    (Some(_), Some(_)) => return Lookup::Ambiguous,
                }
            }
            Json::Array(items) => match token.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(v) => v,
                None => return Lookup::Missing,
            },
            _ => return Lookup::Missing,
        };
    }
    Lookup::Found(at)
}

/// When serde_json reads the page, landline must read it the same way.
fn agrees_with_serde_json(page: &Json, config: &Config, run: &Run) {
    let next = match config.next.map(|n| lookup(page, n)) {
        Some(Lookup::Ambiguous) => {
            assert!(run.result.is_err(), "an ambiguous cursor path was accepted");
            return;
        }
        Some(Lookup::Found(v)) => Some(v),
        _ => None,
    };
    let records = match lookup(page, config.records) {
        Lookup::Ambiguous => {
            assert!(run.result.is_err(), "an ambiguous record path was accepted");
            return;
        }
        Lookup::Missing => {
            assert!(
                matches!(run.result, Err(PageError::RecordsMissing { .. })),
                "records missing, but landline said {:?}",
                run.result
            );
            return;
        }
        Lookup::Found(Json::Array(items)) => items,
        Lookup::Found(other) => {
            assert!(
                matches!(&run.result, Err(PageError::RecordsNotArray { found, .. }) if *found == other.kind()),
                "records are {}, but landline said {:?}",
                other.kind(),
                run.result
            );
            return;
        }
    };
    for (index, record) in records.iter().enumerate() {
        let refused = |why: &str| {
            assert_eq!(run.lines.len(), index, "lines before the refused record");
            match &run.result {
                Err(PageError::NotAnObject { index: i, .. }) if why == "not an object" => {
                    assert_eq!(*i as usize, index)
                }
                Err(PageError::Record { index: i, source }) if why == "repeated key" => {
                    assert_eq!(*i as usize, index);
                    assert!(
                        matches!(
                            source.downcast_ref::<RecordError>(),
                            Some(RecordError::DuplicateKey { .. })
                        ),
                        "{source}"
                    );
                }
                other => panic!("record {index}: {why}, but landline said {other:?}"),
            }
        };
        let Json::Object(entries) = record else {
            return refused("not an object");
        };
        if entries
            .iter()
            .enumerate()
            .any(|(i, (k, _))| entries[..i].iter().any(|(k2, _)| k2 == k))
        {
            return refused("repeated key");
        }
        let line = run.lines.get(index).unwrap_or_else(|| {
            panic!("record {index} has no line; landline said {:?}", run.result)
        });
        let Ok(Json::Object(written)) = serde_json::from_str::<Json>(line) else {
            panic!("serde_json cannot read line {index}: {line:?}");
        };
        let expected = with_added(entries, config);
        assert_eq!(
            written.len(),
            expected.len(),
            "record {index}: {line:?} is not {expected:?}"
        );
        for ((key, value), (want_key, want)) in written.iter().zip(&expected) {
            assert_eq!(key, want_key, "record {index}: keys in order");
            if Some(key.as_str()) == config.timestamp {
                // Normalised, or kept as it was when it is not a timestamp.
                let normalised = matches!(value, Json::String(s) if is_normalised(s));
                assert!(
                    value == want || normalised && *want != Json::Null,
                    "record {index}: timestamp {want:?} became {value:?}"
                );
            } else {
                assert_eq!(value, want, "record {index}, field {key:?}");
            }
        }
    }
    match &run.result {
        Ok((count, cursor)) => {
            assert_eq!(*count as usize, records.len(), "record count");
            assert_eq!(run.lines.len(), records.len(), "one line per record");
            let cursor = cursor
                .as_deref()
                .map(|raw| serde_json::from_str::<Json>(raw).expect("the cursor is JSON"));
            assert_eq!(cursor.as_ref(), next, "the cursor");
        }
        Err(err) => panic!("serde_json reads this page, but landline said: {err}"),
    }
}

/// The record's entries with the added fields: in place of the record's own, or after them.
fn with_added(entries: &[(String, Json)], config: &Config) -> Vec<(String, Json)> {
    let added: Vec<(&str, Json)> = config
        .added
        .iter()
        .map(|(k, v)| (*k, serde_json::from_str(v).expect("added value")))
        .collect();
    let mut out = Vec::new();
    let mut seen = vec![false; added.len()];
    for (key, value) in entries {
        match added.iter().position(|(k, _)| k == key) {
            Some(i) => {
                seen[i] = true;
                out.push((key.clone(), added[i].1.clone()));
            }
            None => out.push((key.clone(), value.clone())),
        }
    }
    for ((key, value), seen) in added.iter().zip(seen) {
        if !seen {
            out.push(((*key).to_owned(), value.clone()));
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ`.
fn is_normalised(s: &str) -> bool {
    // `YYYY-MM-DDTHH:MM:SS.` then 3, 6 or 9 fractional digits and `Z`.
    let b = s.as_bytes();
    matches!(b.len(), 24 | 27 | 30)
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            _ if i == b.len() - 1 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// With a limit, the output is the unlimited one up to the first line longer than the limit,
/// and that record is refused as too large.
fn limit_refuses_exactly_the_long_lines(full: &Run, limited: &Run, limit: usize) {
    match full.lines.iter().position(|l| l.len() > limit) {
        Some(index) => {
            assert_eq!(
                limited.lines,
                full.lines[..index],
                "lines before the long one"
            );
            match &limited.result {
                Err(PageError::Record { index: i, source }) => {
                    assert_eq!(*i as usize, index, "the long record");
                    match source.downcast_ref::<RecordError>() {
                        Some(RecordError::TooLarge { bytes, limit: l }) => {
                            assert_eq!(*l, limit);
                            assert!(*bytes > limit && *bytes <= full.lines[index].len());
                        }
                        _ => panic!("record {index} is too long, but: {source}"),
                    }
                }
                other => panic!("record {index} is too long, but landline said {other:?}"),
            }
        }
        None => {
            assert_eq!(limited.lines, full.lines, "no line is too long");
            let too_large_at = |at: u64| {
                matches!(&limited.result, Err(PageError::Record { index, source })
                if *index == at && matches!(
                    source.downcast_ref::<RecordError>(),
                    Some(RecordError::TooLarge { .. })
                ))
            };
            // A record refused for its content may be found too large before that.
            let same = format!("{:?}", limited.result) == format!("{:?}", full.result);
            assert!(
                same || failed_record(&full.result).is_some_and(too_large_at),
                "no line is too long, yet {:?} became {:?}",
                full.result,
                limited.result
            );
        }
    }
}

/// The record an error is about, if it is about one record's content.
fn failed_record<T>(result: &Result<T, PageError>) -> Option<u64> {
    match result {
        Err(
            PageError::Record { index, .. }
            | PageError::RecordJson { index, .. }
            | PageError::InvalidUtf8 {
                record: Some(index),
                ..
            },
        ) => Some(*index),
        _ => None,
    }
}

/// The top-level keys of a line (an object that [`validate`] accepted), unescaped.
fn top_level_keys(line: &str) -> Vec<String> {
    let map: Result<KeysOnly, _> = serde_json::from_str(line);
    match map {
        Ok(KeysOnly(keys)) => keys,
        // Lone surrogates in a key cannot be unescaped; compare their text instead.
        Err(_) => raw_top_level_keys(line),
    }
}

struct KeysOnly(Vec<String>);

impl<'de> Deserialize<'de> for KeysOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeysOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeysOnly, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(KeysOnly(keys))
            }
        }
        d.deserialize_map(V)
    }
}

/// The top-level keys' texts, quotes included, by walking the validated line.
fn raw_top_level_keys(line: &str) -> Vec<String> {
    let b = line.as_bytes();
    let mut keys = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let mut expect_key = false;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i;
                i += 1;
                while b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && expect_key {
                    keys.push(line[start..=i].to_owned());
                    expect_key = false;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'}' | b']' => depth -= 1,
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    keys
}

/// Checks that `text` is one JSON value (RFC 8259: UTF-8, grammar, escapes) nested at most
/// 127 levels deep, without leaning on serde_json, whose number range and surrogate checks
/// are stricter than JSON's grammar.
fn validate(text: &[u8]) -> Result<(), String> {
    std::str::from_utf8(text).map_err(|e| e.to_string())?;
    let mut v = Validator { b: text, i: 0 };
    v.ws();
    v.value(0)?;
    v.ws();
    if v.i == text.len() {
        Ok(())
    } else {
        Err(format!("trailing bytes at {}", v.i))
    }
}

struct Validator<'a> {
    b: &'a [u8],
    i: usize,
}

impl Validator<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.i))
        }
    }
    fn value(&mut self, depth: usize) -> Result<(), String> {
        match self.peek() {
            Some(b'{') => {
                self.nest(depth)?;
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(format!("expected , or }} at {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.nest(depth)?;
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(format!("expected , or ] at {}", self.i)),
                    }
                }
            }
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(format!("expected a value at {}", self.i)),
        }
    }
    fn nest(&self, depth: usize) -> Result<(), String> {
        if depth >= 127 {
            Err(format!("nested more than 127 levels at {}", self.i))
        } else {
            Ok(())
        }
    }
    fn literal(&mut self, word: &[u8]) -> Result<(), String> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }
    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }
    fn number(&mut self) -> Result<(), String> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(format!("bad number at {}", self.i)),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(format!("bad fraction at {}", self.i));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(format!("bad exponent at {}", self.i));
            }
        }
        Ok(())
    }
    fn string(&mut self) -> Result<(), String> {
        self.eat(b'"')?;
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(format!("bad \\u escape at {}", self.i));
                            }
                            self.i += 5;
                        }
                        _ => return Err(format!("bad escape at {}", self.i)),
                    }
                }
                Some(c) if c < 0x20 => {
                    return Err(format!("control character in a string at {}", self.i));
                }
                Some(_) => self.i += 1,
            }
        }
    }
}
