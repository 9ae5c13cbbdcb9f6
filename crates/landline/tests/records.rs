//! Records through the public API, page bytes → records → transform → JSON Lines: each bad
//! input and the error it gets (table-driven), and properties of good input (proptest).
//! No servers needed.

use landline::pointer::JsonPointer;
use landline::source::page::{PageError, scan_page};
use landline::transform::{
    OnInvalidTimestamp, RecordWriter, TimeZone, TimestampPrecision, Transform, TransformRules,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Added to every record by the transforms below.
const ADDED: [(&str, &str); 2] = [("ingest_date", r#""2026-11-25""#), ("src", r#"{"run":7}"#)];

fn transform(timestamps: &[&str], max_record_bytes: usize) -> Transform {
    Transform::new(
        ADDED
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        timestamps.iter().map(|t| (*t).to_owned()).collect(),
        TimeZone::Utc,
        OnInvalidTimestamp::Error,
        max_record_bytes,
    )
    .expect("a valid transform")
}

/// Runs `body` through the stages; the lines written, and the outcome.
fn land(
    body: &[u8],
    records: &str,
    next: Option<&str>,
    t: &Transform,
) -> (String, Result<u64, PageError>) {
    let records = JsonPointer::parse(records).expect("pointer");
    let next = next.map(|n| JsonPointer::parse(n).expect("pointer"));
    let mut out = Vec::new();
    let mut writer = RecordWriter::new(t, &mut out);
    let result = scan_page(body, &records, next.as_ref(), &mut writer).map(|scan| scan.records);
    (String::from_utf8(out).expect("UTF-8 output"), result)
}

fn nest(open: &str, n: usize, inner: &str, close: &str) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

/// How an error message must look.
enum Want {
    Is(&'static str),
    Starts(&'static str),
}

#[test]
fn bad_inputs_get_clear_errors() {
    let deep_arrays = nest("[", 100_000, "", "]");
    let deep_objects = nest(r#"{"a":"#, 100_000, "1", "}");
    let big = "x".repeat(300);
    let many_keys = (0..100)
        .map(|i| format!("\"k{i}\":{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let cases: Vec<(&str, Vec<u8>, &str, Want)> = vec![
        (
            "record over max_record_bytes",
            format!(r#"{{"v":[{{"id":1}},{{"id":2,"text":"{big}"}}]}}"#).into_bytes(),
            "/v",
            Want::Is(
                "record 1 of the page: the record is larger than max_record_bytes = 256 (at least 317 bytes as a JSON line)",
            ),
        ),
        (
            "record over max_record_bytes with the added fields",
            format!(r#"{{"v":[{{"t":"{}"}}]}}"#, "y".repeat(240)).into_bytes(),
            "/v",
            Want::Is(
                "record 0 of the page: the record is larger than max_record_bytes = 256 (at least 291 bytes as a JSON line)",
            ),
        ),
        (
            "100,000 nested arrays in a record",
            format!(r#"{{"v":[{{"id":1,"deep":{deep_arrays}}}]}}"#).into_bytes(),
            "/v",
            Want::Is(
                "record 0 of the page: field \"deep\" is nested too deeply: the line would have more than 127 levels of arrays and objects",
            ),
        ),
        (
            "100,000 nested objects in a record",
            format!(r#"{{"v":[{{"deep":{deep_objects}}}]}}"#).into_bytes(),
            "/v",
            Want::Is(
                "record 0 of the page: field \"deep\" is nested too deeply: the line would have more than 127 levels of arrays and objects",
            ),
        ),
        (
            "100,000 nested arrays at the top level of the page",
            format!(r#"{{"meta":{deep_arrays},"v":[]}}"#).into_bytes(),
            "/v",
            Want::Is(
                "the body nests arrays and objects more than 127 levels deep at line 1 column 135 (byte 134 of the body)",
            ),
        ),
        (
            "100,000 nested objects as the page",
            deep_objects.clone().into_bytes(),
            "/v",
            Want::Is(
                "the body nests arrays and objects more than 127 levels deep at line 1 column 636 (byte 635 of the body)",
            ),
        ),
        (
            "100,000 unclosed arrays as the page",
            "[".repeat(100_000).into_bytes(),
            "/v",
            Want::Is(
                "the body is not valid JSON at line 1 column 100000 (byte 99999): EOF while parsing a list",
            ),
        ),
        (
            "invalid UTF-8 in a string of a record",
            b"{\"v\":[{\"id\":1},{\"name\":\"caf\xe9\"}]}".to_vec(),
            "/v",
            Want::Is(
                "record 1 of the page has invalid UTF-8 at line 1 column 28 (byte 27 of the body)",
            ),
        ),
        (
            "invalid UTF-8 in a key of a record",
            b"{\"v\":[{\"n\xffme\":1}]}".to_vec(),
            "/v",
            Want::Is(
                "record 0 of the page has invalid UTF-8 at line 1 column 10 (byte 9 of the body)",
            ),
        ),
        (
            "invalid UTF-8 outside the records",
            b"{\"note\":\"\xc3\x28\",\n\"v\":[]}".to_vec(),
            "/v",
            Want::Is("the body has invalid UTF-8 at line 1 column 10 (byte 9 of the body)"),
        ),
        (
            "duplicate top-level key",
            br#"{"v":[{"id":1},{"id":1,"id":2}]}"#.to_vec(),
            "/v",
            Want::Is(
                r#"record 1 of the page: the key "id" appears more than once (readers disagree on which value counts)"#,
            ),
        ),
        (
            "duplicate top-level key, one of them escaped",
            br#"{"v":[{"id":1,"\u0069d":2}]}"#.to_vec(),
            "/v",
            Want::Is(
                r#"record 0 of the page: the key "id" appears more than once (readers disagree on which value counts)"#,
            ),
        ),
        (
            "duplicate top-level key after 100 others",
            format!(r#"{{"v":[{{{many_keys},"k7":"again"}}]}}"#).into_bytes(),
            "/v",
            Want::Is(
                r#"record 0 of the page: the key "k7" appears more than once (readers disagree on which value counts)"#,
            ),
        ),
        (
            "record path at an object",
            br#"{"v":{"id":1}}"#.to_vec(),
            "/v",
            Want::Is("the record path /v points at an object, not an array"),
        ),
        (
            "record path at a string",
            br#"{"data":{"items":"none"}}"#.to_vec(),
            "/data/items",
            Want::Is("the record path /data/items points at a string, not an array"),
        ),
        (
            "record path at null",
            br#"{"v":null}"#.to_vec(),
            "/v",
            Want::Is("the record path /v points at null, not an array"),
        ),
        (
            "record path missing",
            br#"{"items":[]}"#.to_vec(),
            "/v",
            Want::Is("the record path /v does not exist in the body"),
        ),
        (
            "record path twice",
            br#"{"v":[{"id":1}],"v":[{"id":2}]}"#.to_vec(),
            "/v",
            Want::Is(r#"the record path /v is ambiguous: the key "v" appears twice in one object"#),
        ),
        (
            "cursor path twice",
            br#"{"next":"a","v":[],"next":"b"}"#.to_vec(),
            "/v",
            Want::Is(
                r#"the cursor path /next is ambiguous: the key "next" appears twice in one object"#,
            ),
        ),
        (
            "record is a number",
            br#"{"v":[{"id":1},42]}"#.to_vec(),
            "/v",
            Want::Is("record 1 of the page is a number, not a JSON object"),
        ),
        (
            "record is a string",
            br#"["a"]"#.to_vec(),
            "",
            Want::Is("record 0 of the page is a string, not a JSON object"),
        ),
        (
            "record is an array",
            br#"{"v":[[{"id":1}]]}"#.to_vec(),
            "/v",
            Want::Is("record 0 of the page is an array, not a JSON object"),
        ),
        (
            "record is null",
            br#"{"v":[null]}"#.to_vec(),
            "/v",
            Want::Is("record 0 of the page is null, not a JSON object"),
        ),
        (
            "record is a boolean",
            br#"{"v":[true]}"#.to_vec(),
            "/v",
            Want::Is("record 0 of the page is a boolean, not a JSON object"),
        ),
        (
            "record is not valid JSON",
            br#"{"v":[{"id":1},{"id":tru}]}"#.to_vec(),
            "/v",
            Want::Is(
                "record 1 of the page is not valid JSON at line 1 column 25 (byte 24 of the body): expected ident",
            ),
        ),
        (
            "body cut short",
            br#"{"v":[{"id":1},"#.to_vec(),
            "/v",
            Want::Is(
                "the body is not valid JSON at line 1 column 16 (byte 15): EOF while parsing a list",
            ),
        ),
        (
            "timestamp that is not one",
            br#"{"v":[{"created_at":"yesterday"}]}"#.to_vec(),
            "/v",
            Want::Starts(r#"record 0 of the page: field "created_at": "#),
        ),
    ];
    // On a thread with the default stack size (2 MiB), as the pipeline's workers have.
    std::thread::Builder::new()
        .spawn(move || {
            // Most cases with room to spare; the size cases at 256 bytes.
            let roomy = transform(&["created_at"], 1 << 20);
            let tight = transform(&["created_at"], 256);
            let mut wrong = Vec::new();
            for (name, body, records, want) in &cases {
                let t = if name.contains("max_record_bytes") {
                    &tight
                } else {
                    &roomy
                };
                let (out, result) = land(body, records, Some("/next"), t);
                let err = match result {
                    Ok(n) => format!("accepted ({n} records)"),
                    Err(err) => err.to_string(),
                };
                let right = match want {
                    Want::Is(text) => err == *text,
                    Want::Starts(text) => err.starts_with(text),
                };
                if !right {
                    wrong.push(format!("{name}: {err}"));
                }
                // Only the whole lines of the records before the bad one are written.
                for line in out.split_terminator('\n') {
                    let value: Value = serde_json::from_str(line).expect("a whole line");
                    assert_eq!(value["id"], 1, "{name}: {line}");
                }
            }
            assert!(wrong.is_empty(), "wrong errors:\n{}", wrong.join("\n"));
        })
        .expect("a thread")
        .join()
        .expect("no panic");
}

#[test]
fn good_inputs_near_the_limits_are_accepted() {
    // A record value may add 126 levels to the record object: 127 in the line.
    let body = format!(r#"{{"v":[{{"deep":{}}}]}}"#, nest("[", 126, "", "]"));
    let (out, result) = land(body.as_bytes(), "/v", None, &transform(&[], usize::MAX));
    assert_eq!(result.expect("accepted"), 1);
    serde_json::from_str::<Value>(&out).expect("serde_json reads the line back");
    // Exactly max_record_bytes.
    let t = transform(&[], 256);
    let filler = "z".repeat(256 - r#"{"t":"","ingest_date":"2026-11-25","src":{"run":7}}"#.len());
    let body = format!(r#"[{{"t":"{filler}"}}]"#);
    let (out, result) = land(body.as_bytes(), "", None, &t);
    assert_eq!(result.expect("accepted"), 1);
    assert_eq!(out.len(), 257);
    // Repeated keys inside a value copied raw are passed on as they came.
    let (out, result) = land(br#"[{"a":{"b":1,"b":2}}]"#, "", None, &t);
    assert_eq!(result.expect("accepted"), 1);
    assert!(out.starts_with(r#"{"a":{"b":1,"b":2},"#), "{out}");
}

// ----------------------------------------------------------------------------- properties

/// Keys: arbitrary text, plus the added fields' keys (which must then be replaced in place).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-z_]{1,8}",
        1 => Just("ingest_date".to_owned()),
        1 => Just("src".to_owned()),
        1 => Just(String::new()),
    ]
}

/// Strings heavy in what JSON must escape, and in unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\"\\\\/\u{0}-\u{1f}\u{7f}\u{80}\u{2028}\u{2029}\u{fffd}é漢😀a ]{0,12}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop_oneof![
            Just(1e300),
            Just(-1e-300),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE)
        ]
        .prop_map(Value::from),
        text().prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn record() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(key(), value(), 0..10).prop_map(|m| m.into_iter().collect())
}

/// How records sit in a page: pointer, cursor pointer, and the page around them.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Token,
    NextUrl,
    Bare,
    Nested,
}

fn page(
    shape: Shape,
    records: &[Value],
    pretty: bool,
) -> (Vec<u8>, &'static str, Option<&'static str>) {
    let array = Value::Array(records.to_vec());
    let (value, ptr, next) = match shape {
        Shape::Token => (
            serde_json::json!({"next_token": "djE6MjAw", "variants": array, "count": records.len()}),
            "/variants",
            Some("/next_token"),
        ),
        Shape::NextUrl => (
            serde_json::json!({"links": {"next": "/v?page=2"}, "data": array}),
            "/data",
            Some("/links/next"),
        ),
        Shape::Bare => (array, "", None),
        Shape::Nested => (
            serde_json::json!({"result": {"meta": {"total": 1}, "items": array}}),
            "/result/items",
            None,
        ),
    };
    let body = if pretty {
        serde_json::to_vec_pretty(&value)
    } else {
        serde_json::to_vec(&value)
    };
    (body.expect("serialisable"), ptr, next)
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Token),
        Just(Shape::NextUrl),
        Just(Shape::Bare),
        Just(Shape::Nested),
    ]
}

/// The records as serde_json reads them back from the page (so floats compare as parsed).
fn records_in(body: &[u8], ptr: &str) -> Vec<Value> {
    let page: Value = serde_json::from_slice(body).expect("the page is JSON");
    match page.pointer(ptr) {
        Some(Value::Array(items)) => items.clone(),
        other => panic!("no records at {ptr}: {other:?}"),
    }
}

/// The lines of `out`: one per record, each ending with `\n` and holding no other line break.
fn lines_of(out: &str, records: usize) -> Vec<&str> {
    assert!(
        out.is_empty() || out.ends_with('\n'),
        "the last line ends with \\n"
    );
    let lines: Vec<&str> = out.split_terminator('\n').collect();
    assert_eq!(lines.len(), records, "one line per record");
    for line in &lines {
        assert!(!line.contains('\r'), "no carriage return in {line:?}");
    }
    lines
}

fn with_added(mut record: Map<String, Value>) -> Value {
    for (key, json) in ADDED {
        record.insert(
            key.to_owned(),
            serde_json::from_str(json).expect("added value"),
        );
    }
    Value::Object(record)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any object records, in any page shape, compact or pretty-printed: each line reads back
    /// as its record plus the added fields.
    #[test]
    fn lines_read_back_as_the_records_plus_added_fields(
        records in prop::collection::vec(record(), 0..5),
        shape in shape(),
        pretty in any::<bool>(),
    ) {
        let records: Vec<Value> = records.into_iter().map(Value::Object).collect();
        let (body, ptr, next) = page(shape, &records, pretty);
        let (out, result) = land(&body, ptr, next, &transform(&[], usize::MAX));
        prop_assert_eq!(result.expect("accepted") as usize, records.len());
        let lines = lines_of(&out, records.len());
        for (line, record) in lines.iter().zip(records_in(&body, ptr)) {
            let Value::Object(record) = record else { unreachable!("records are objects") };
            let written: Value = serde_json::from_str(line).expect("a JSON line");
            prop_assert_eq!(written, with_added(record));
        }
    }

    /// Timestamps given as epoch milliseconds, RFC 3339 with `Z`, or naive UTC text become
    /// RFC 3339 UTC with milliseconds; the rest of the record reads back unchanged.
    #[test]
    fn timestamps_are_normalised(
        records in prop::collection::vec(
            (record(), 100_000_000_000i64..4_102_444_800_000i64, 0..3u8),
            1..5,
        ),
        shape in shape(),
        pretty in any::<bool>(),
    ) {
        let mut expected_times = Vec::new();
        let records: Vec<Value> = records
            .into_iter()
            .map(|(mut record, millis, form)| {
                let time = chrono::DateTime::from_timestamp_millis(millis).expect("in range");
                let given = match form {
                    0 => Value::from(millis),
                    1 => Value::from(time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
                    _ => Value::from(time.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
                };
                record.insert("created_at".to_owned(), given);
                expected_times.push(time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
                Value::Object(record)
            })
            .collect();
        let (body, ptr, next) = page(shape, &records, pretty);
        let (out, result) = land(&body, ptr, next, &transform(&["created_at"], usize::MAX));
        prop_assert_eq!(result.expect("accepted") as usize, records.len());
        let lines = lines_of(&out, records.len());
        for ((line, record), time) in lines.iter().zip(records_in(&body, ptr)).zip(expected_times) {
            let Value::Object(mut record) = record else { unreachable!("records are objects") };
            record.insert("created_at".to_owned(), Value::from(time));
            let written: Value = serde_json::from_str(line).expect("a JSON line");
            prop_assert_eq!(written, with_added(record));
        }
    }

    /// Numbers are copied as written: big, negative, with exponents, beyond f64's precision.
    #[test]
    fn numbers_pass_through_as_written(
        digits in "-?[1-9][0-9]{0,60}",
        fraction in proptest::option::of("[0-9]{1,30}"),
        exponent in proptest::option::of("[eE][+-]?[0-9]{1,3}"),
    ) {
        let number = format!(
            "{digits}{}{}",
            fraction.map(|f| format!(".{f}")).unwrap_or_default(),
            exponent.unwrap_or_default()
        );
        let body = format!(r#"{{"v":[{{"n":{number},"a":[{number}]}}]}}"#);
        let (out, result) = land(body.as_bytes(), "/v", None, &Transform::identity());
        prop_assert_eq!(result.expect("accepted"), 1);
        prop_assert_eq!(out, format!("{{\"n\":{number},\"a\":[{number}]}}\n"));
    }
}

/// What a rule of [`rule_sets_change_exactly_their_fields`] does to its field.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Keep,
    Drop,
    Rename,
    Add,
    Timestamp,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        Just(Act::Keep),
        Just(Act::Drop),
        Just(Act::Rename),
        Just(Act::Add),
        Just(Act::Timestamp),
    ]
}

/// The fields the rules name: path, then the new name a rename gives, as the rule writes
/// it and as the key it becomes. Upper case: the generated records' own keys never clash.
const RULE_FIELDS: [(&str, &str, &str); 4] = [
    ("A1", "A1r", "A1r"),
    ("B1", "/B1r", "B1r"),
    ("/M1/X1", "/M1/X1r", "X1r"),
    ("/M1/Y1", "Y1r", "Y1r"),
];

/// A timestamp's text, its instant (seconds, nanoseconds) and its fractional digits.
type Stamp = (String, i64, u32, usize);

/// A timestamp string with `digits` fractional digits, and its instant.
fn stamp() -> impl Strategy<Value = Stamp> {
    (0i64..4_102_444_800, 0u32..1_000_000_000, 0usize..=9).prop_map(|(secs, nanos, digits)| {
        let kept = nanos / 10u32.pow(9 - digits as u32) * 10u32.pow(9 - digits as u32);
        let time = chrono::DateTime::from_timestamp(secs, kept).expect("in range");
        let fraction = format!("{kept:09}");
        let text = if digits == 0 {
            time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            format!(
                "{}.{}Z",
                time.format("%Y-%m-%dT%H:%M:%S"),
                &fraction[..digits]
            )
        };
        (text, secs, kept, digits)
    })
}

/// The record with `rules` applied, as the field rules say (landline's `transform::fields`).
fn apply_rules(
    mut record: Map<String, Value>,
    rules: &[(Act, Option<Stamp>)],
    precision: Option<usize>,
) -> Value {
    for ((path, _, new_key), (act, stamp)) in RULE_FIELDS.iter().zip(rules) {
        let (parent, key) = match path.strip_prefix("/M1/") {
            Some(key) => {
                if *act == Act::Add && !record.contains_key("M1") {
                    record.insert("M1".into(), Value::Object(Map::new()));
                }
                match record.get_mut("M1") {
                    Some(Value::Object(m1)) => (m1, key),
                    _ => continue,
                }
            }
            None => (&mut record, *path),
        };
        match act {
            Act::Keep => {}
            Act::Drop => {
                parent.remove(key);
            }
            Act::Rename => {
                if let Some(value) = parent.remove(key) {
                    parent.insert((*new_key).to_owned(), value);
                }
            }
            Act::Add => {
                parent.insert(key.to_owned(), Value::from("added"));
            }
            Act::Timestamp => {
                if let (Some(slot), Some((_, secs, nanos, digits))) = (parent.get_mut(key), stamp) {
                    let digits = precision.unwrap_or(((*digits).max(3)).div_ceil(3) * 3);
                    let time = chrono::DateTime::from_timestamp(*secs, *nanos).expect("in range");
                    let fraction = format!("{nanos:09}");
                    *slot = Value::from(format!(
                        "{}.{}Z",
                        time.format("%Y-%m-%dT%H:%M:%S"),
                        &fraction[..digits]
                    ));
                }
            }
        }
    }
    Value::Object(record)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any record and any set of field rules (drop, rename, add, timestamps, at top-level keys
    /// and at pointers into a nested object that may be missing or not an object), with any
    /// timestamp precision: the line reads back as the record with exactly those changes.
    #[test]
    fn rule_sets_change_exactly_their_fields(
        base in record(),
        acts in prop::collection::vec(act(), 4),
        values in prop::collection::vec((value(), any::<bool>(), stamp()), 4),
        m1 in prop_oneof![Just(0u8), Just(1), Just(2)],
        precision in prop_oneof![Just(None), Just(Some(3usize)), Just(Some(6)), Just(Some(9))],
        pretty in any::<bool>(),
    ) {
        let mut record = base;
        // M1: absent (0), an object (1), or not an object (2).
        match m1 {
            1 => { record.insert("M1".into(), Value::Object(Map::new())); }
            2 => { record.insert("M1".into(), Value::from(5)); }
            _ => {}
        }
        let mut rules = Vec::new();
        for (((path, _, _), act), (value, present, stamp)) in
            RULE_FIELDS.iter().zip(&acts).zip(values)
        {
            let given = if *act == Act::Timestamp { Value::from(stamp.0.clone()) } else { value };
            if present {
                match path.strip_prefix("/M1/") {
                    Some(key) => {
                        if let Some(Value::Object(m)) = record.get_mut("M1") {
                            m.insert(key.to_owned(), given);
                        }
                    }
                    None => { record.insert((*path).to_owned(), given); }
                }
            }
            rules.push((*act, (*act == Act::Timestamp).then_some(stamp)));
        }
        let pick = |wanted: Act| -> Vec<String> {
            RULE_FIELDS.iter().zip(&acts)
                .filter(|(_, a)| **a == wanted)
                .map(|((p, _, _), _)| (*p).to_owned())
                .collect()
        };
        let t = Transform::from_rules(TransformRules {
            add: pick(Act::Add).into_iter().map(|p| (p, "\"added\"".to_owned())).collect(),
            timestamps: pick(Act::Timestamp),
            drop: pick(Act::Drop),
            rename: RULE_FIELDS.iter().zip(&acts)
                .filter(|(_, a)| **a == Act::Rename)
                .map(|((p, n, _), _)| ((*p).to_owned(), (*n).to_owned()))
                .collect(),
            timestamp_precision: precision.map(|d| match d {
                3 => TimestampPrecision::Ms,
                6 => TimestampPrecision::Us,
                _ => TimestampPrecision::Ns,
            }),
            ..TransformRules::default()
        }).expect("a valid rule set");
        let (body, ptr, next) = page(Shape::Token, &[Value::Object(record)], pretty);
        let (out, result) = land(&body, ptr, next, &t);
        prop_assert_eq!(result.expect("accepted"), 1);
        let lines = lines_of(&out, 1);
        let Value::Object(read) = records_in(&body, ptr).remove(0) else {
            unreachable!("an object")
        };
        let written: Value = serde_json::from_str(lines[0]).expect("a JSON line");
        prop_assert_eq!(written, apply_rules(read, &rules, precision));
    }
}
