use super::*;
use crate::compress::Compression;
use crate::secret::Secret;
use crate::source::Pagination;

const EXAMPLE: &str = r#"
[source]
url = "http://127.0.0.1:18080/variants"
query = { count = "200" }
headers = { Authorization = "Bearer ${API_TOKEN}" }
records = "/variants"
max_pages = 450
[source.pagination]
type = "token"
next = "/next_token"
param = "token"
[transform]
add = { ingest_date = "{ingest_date}", ingest_ts = "{ingest_ts}" }
timestamps = ["created_at", "updated_at", "published_at"]
[sink]
url = "s3://bench/variants/date={ingest_date}/variants.jsonl.gz"
"#;

fn env(name: &str) -> Option<String> {
    (name == "API_TOKEN").then(|| "s3cr3t".to_owned())
}

fn validate(text: &str) -> Result<Pipeline, ConfigError> {
    PipelineFile::parse(text, "p.toml")?.validate(&env)
}

#[test]
fn names_identity_and_state() {
    let p = validate(EXAMPLE).unwrap();
    assert_eq!(p.name, "p");
    assert!(p.state.checkpoints);
    assert_eq!(p.state.url, None);
    // The identity is of the file as written: spacing and comments do not count, values
    // do, and the secret's value is not in it (the reference is hashed unexpanded).
    let spaced = EXAMPLE.replace("max_pages = 450", "max_pages   =   450 # comment");
    assert_eq!(validate(&spaced).unwrap().identity, p.identity);
    let other = EXAMPLE.replace("max_pages = 450", "max_pages = 451");
    assert_ne!(validate(&other).unwrap().identity, p.identity);
    let other_secret = PipelineFile::parse(EXAMPLE, "p.toml")
        .unwrap()
        .validate(&|_| Some("another".to_owned()))
        .unwrap();
    assert_eq!(other_secret.identity, p.identity);

    let named = format!(
        "name = \"variants-v2\"\n{EXAMPLE}[state]\nurl = \"s3://state-bucket/run-state\"\n"
    );
    let p = validate(&named).unwrap();
    assert_eq!(p.name, "variants-v2");
    assert_eq!(p.state.url.as_deref(), Some("s3://state-bucket/run-state/"));

    for (text, key) in [
        (format!("name = \"a/b\"\n{EXAMPLE}"), "name"),
        (format!("name = \"\"\n{EXAMPLE}"), "name"),
        (format!("name = \".hidden\"\n{EXAMPLE}"), "name"),
        (format!("{EXAMPLE}[state]\nurl = \"\"\n"), "state.url"),
        (
            format!("{EXAMPLE}[state]\nurl = \"ftp://x/\"\n"),
            "state.url",
        ),
        (
            format!("{EXAMPLE}fixed_part_size = true\n[state]\ncheckpoints = true\n"),
            "state.checkpoints",
        ),
    ] {
        let err = validate(&text).unwrap_err().to_string();
        assert!(err.starts_with(key), "{key}: {err}");
    }
    let fixed = validate(&format!("{EXAMPLE}fixed_part_size = true\n")).unwrap();
    assert!(
        !fixed.state.checkpoints,
        "equal parts cannot end at page ends"
    );
    let err = PipelineFile::parse(EXAMPLE, "bad name.toml")
        .unwrap()
        .validate(&env)
        .unwrap_err();
    assert!(err.to_string().contains("from the file name"), "{err}");
}

#[test]
fn the_documented_example_validates() {
    let p = validate(EXAMPLE).unwrap();
    let vars = p
        .run_vars(
            "2026-11-25".into(),
            "2026-11-25T00:00:00.000Z".into(),
            &BTreeMap::new(),
        )
        .unwrap();
    let source = p.source.as_ref().unwrap().config(&vars).unwrap();
    assert_eq!(
        source.url.as_str(),
        "http://127.0.0.1:18080/variants?count=200"
    );
    assert_eq!(
        source.headers,
        [("Authorization".to_owned(), Secret::new("Bearer s3cr3t"))]
    );
    assert_eq!(source.max_pages, 450);
    assert!(matches!(source.pagination, Pagination::Token { .. }));
    // Debug shows no secret.
    let debug = format!("{p:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert_eq!(
        p.sink.url.render(&vars),
        "s3://bench/variants/date=2026-11-25/variants.jsonl.gz"
    );
    assert_eq!(p.sink.part_size_bytes, DEFAULT_PART_SIZE);
}

#[test]
fn template_variables_render_in_source_transform_and_sink() {
    let text = format!(
        "[vars]\nregion = \"eu west\"\nshard = 3\n{}",
        EXAMPLE
            .replace(
                "url = \"http://127.0.0.1:18080/variants\"",
                "url = \"http://127.0.0.1:18080/{region}/variants\""
            )
            .replace(
                "query = { count = \"200\" }",
                "query = { count = \"200\", day = \"{ingest_date}\", s = \"{shard}/{{x}}\" }"
            )
            .replace(
                "headers = { Authorization = \"Bearer ${API_TOKEN}\" }",
                "headers = { Authorization = \"Bearer ${API_TOKEN}\", X-Region = \"{region}\" }"
            )
            .replace("date={ingest_date}/", "region={region}/date={ingest_date}/")
            .replace(
                "ingest_ts = \"{ingest_ts}\"",
                "ingest_ts = \"{ingest_ts}\", shard = \"{shard}\""
            )
    );
    let p = validate(&text).unwrap();
    assert_eq!(p.vars.get("shard").map(String::as_str), Some("3"));
    assert!(
        p.source.as_ref().unwrap().uses("region")
            && p.source.as_ref().unwrap().uses("ingest_date")
            && !p.source.as_ref().unwrap().uses("ingest_ts")
    );
    let overrides = BTreeMap::from([("region".to_owned(), "us/east?x=1".to_owned())]);
    let vars = p
        .run_vars(
            "2024-02-03".into(),
            "2024-02-03T00:00:00.000Z".into(),
            &overrides,
        )
        .unwrap();
    let source = p.source.as_ref().unwrap().config(&vars).unwrap();
    // A value in the URL is percent-encoded: it cannot add a path segment or a query.
    assert_eq!(
        source.url.as_str(),
        "http://127.0.0.1:18080/us%2Feast%3Fx%3D1/variants?count=200&day=2024-02-03&s=3%2F%7Bx%7D"
    );
    assert!(
        source
            .headers
            .contains(&("X-Region".to_owned(), Secret::new("us/east?x=1")))
    );
    assert_eq!(
        p.sink.url.render(&vars),
        "s3://bench/variants/region=us/east?x=1/date=2024-02-03/variants.jsonl.gz"
    );
    let defaults = p
        .run_vars("2024-02-03".into(), "t".into(), &BTreeMap::new())
        .unwrap();
    assert_eq!(defaults.vars["region"], "eu west");
    assert!(
        p.source
            .as_ref()
            .unwrap()
            .config(&defaults)
            .unwrap()
            .url
            .as_str()
            .contains("/eu%20west/")
    );
    let debug = format!("{:?}", p.source);
    assert!(
        !debug.contains("s3cr3t") && debug.contains("\"region\""),
        "{debug}"
    );

    // Overrides must be declared, and plain.
    for (name, value, says) in [
        (
            "zone",
            "a",
            "not a variable of this pipeline (declared: region, shard",
        ),
        ("region", "a\nb", "control character"),
        (
            "region",
            &"x".repeat(MAX_VAR_VALUE_BYTES + 1),
            "longer than",
        ),
    ] {
        let overrides = BTreeMap::from([(name.to_owned(), value.to_owned())]);
        let err = p
            .run_vars("d".into(), "t".into(), &overrides)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("vars.{name}: ")) && err.contains(says),
            "{err}"
        );
    }
    let err = validate(EXAMPLE)
        .unwrap()
        .run_vars("d".into(), "t".into(), &overrides)
        .unwrap_err();
    assert!(
        err.to_string().contains("the pipeline declares none"),
        "{err}"
    );

    // Declarations and uses are checked.
    for (bad, key) in [
        ("[vars]\ningest_date = \"x\"\n", "vars.ingest_date"),
        ("[vars]\nRegion = \"x\"\n", "vars.Region"),
        ("[vars]\n\"a-b\" = \"x\"\n", "vars.a-b"),
        ("[vars]\nregion = \"a\\u0007\"\n", "vars.region"),
    ] {
        let err = validate(&format!("{bad}{EXAMPLE}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(key), "{bad}: {err}");
    }
    let undeclared = EXAMPLE.replace("date={ingest_date}/", "region={region}/");
    let err = validate(&undeclared).unwrap_err().to_string();
    assert!(
        err.starts_with("sink.url: unknown template variable {region}") && err.contains("[vars]"),
        "{err}"
    );
    // A header value's secret may hold braces: it is never read as a template.
    let braces = |name: &str| (name == "API_TOKEN").then(|| "a{b}c".to_owned());
    let p = PipelineFile::parse(EXAMPLE, "p.toml")
        .unwrap()
        .validate(&braces)
        .unwrap();
    let source = p.source.as_ref().unwrap().config(&defaults_of(&p)).unwrap();
    assert_eq!(source.headers[0].1.expose(), "Bearer a{b}c");
}

fn defaults_of(p: &Pipeline) -> RunVars {
    p.run_vars("2024-01-01".into(), "t".into(), &BTreeMap::new())
        .unwrap()
}

/// Each invalid file and the key its error must name.
#[test]
fn invalid_files_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "url = \"http://127.0.0.1:18080/variants\"",
            "url = \"not a url\"",
            "source.url",
        ),
        (
            "url = \"http://127.0.0.1:18080/variants\"",
            "url = \"ftp://h/x\"",
            "source.url",
        ),
        ("${API_TOKEN}", "${NOPE}", "source.headers.Authorization"),
        (
            "records = \"/variants\"",
            "records = \"variants\"",
            "source.records",
        ),
        (
            "type = \"token\"",
            "type = \"cursor\"",
            "unknown variant `cursor`",
        ),
        (
            "next = \"/next_token\"",
            "next = \"next_token\"",
            "source.pagination.next",
        ),
        ("param = \"token\"", "", "source.pagination.param"),
        ("max_pages = 450", "max_pages = 0", "source.max_pages"),
        (
            "max_pages = 450",
            "max_pages = 450\nmax_pagez = 1",
            "unknown field `max_pagez`",
        ),
        (
            "[sink]",
            "[sink]\npart_size_bytes = 5000000",
            "sink.part_size_bytes",
        ),
        (
            "[sink]",
            "[sink]\ncompression_level = 10",
            "sink.compression_level",
        ),
        (
            "[sink]",
            "[sink]\nmax_parts_in_flight = 0",
            "sink.max_parts_in_flight",
        ),
        (
            "\"{ingest_date}\", ingest_ts",
            "\"{today}\", ingest_ts",
            "transform.add.ingest_date",
        ),
        (
            "[transform]",
            "[transform]\ntimezone = \"Mars/Olympus\"",
            "transform.timezone",
        ),
        (
            "[transform]",
            "[transform]\nextra = 1",
            "unknown field `extra`",
        ),
        ("variants.jsonl.gz\"", "{x}.gz\"", "sink.url"),
        // Every value is checked, and each error names its key.
        (
            "url = \"http://127.0.0.1:18080/variants\"",
            "url = \"http://${NOPE}/variants\"",
            "source.url",
        ),
        (
            "query = { count = \"200\" }",
            "query = { count = \"${NOPE}\" }",
            "source.query.count",
        ),
        (
            "records = \"/variants\"",
            "records = \"/vari~2ants\"",
            "source.records",
        ),
        (
            "max_pages = 450",
            "max_pages = \"many\"",
            "max_pages = \"many\"",
        ),
        ("max_pages = 450", "max_pages = -1", "max_pages = -1"),
        (
            "max_pages = 450",
            "max_page_bytes = 10",
            "source.max_page_bytes",
        ),
        (
            "max_pages = 450",
            "max_record_bytes = 0",
            "source.max_record_bytes",
        ),
        ("max_pages = 450", "timeout_secs = 0", "source.timeout_secs"),
        (
            "max_pages = 450",
            "timeout_secs = nan",
            "source.timeout_secs",
        ),
        (
            "max_pages = 450",
            "connect_timeout_secs = -1.5",
            "source.connect_timeout_secs",
        ),
        (
            "max_pages = 450",
            "ca_bundle = \"/nonexistent/ca.pem\"",
            "source.ca_bundle",
        ),
        (
            "[transform]",
            "[source.retry]\nmax_attempts = 0\n[transform]",
            "source.retry.max_attempts",
        ),
        (
            "[transform]",
            "[source.retry]\nmax_attemps = 3\n[transform]",
            "unknown field `max_attemps`",
        ),
        (
            "[transform]",
            "[transform]\non_invalid_timestamp = \"explode\"",
            "unknown variant `explode`",
        ),
        (
            "ingest_ts = \"{ingest_ts}\" }",
            "ingest_ts = \"{ingest_ts}\", ratio = nan }",
            "transform.add.ratio",
        ),
        (
            "[sink]",
            "[sink]\npart_size_bytes = 5368709121",
            "sink.part_size_bytes",
        ),
        (
            "[sink]",
            "[sink]\ncompression_threads = 1000",
            "sink.compression_threads",
        ),
        ("[sink]", "[sink]\ntimeout_secs = 0", "sink.timeout_secs"),
        (
            "[sink]",
            "[sink]\nca_bundle = \"/nonexistent/ca.pem\"",
            "sink.ca_bundle",
        ),
        (
            "[sink]",
            "[sink.retry]\nmax_attempts = 0\n[sink]",
            "sink.retry.max_attempts",
        ),
        (
            "[sink]",
            "[sink.retry]\ntimeout_secs = -1\n[sink]",
            "sink.retry.timeout_secs",
        ),
        (
            "url = \"s3://bench/variants/date={ingest_date}/variants.jsonl.gz\"",
            "url = \"s3://bench/\"",
            "sink.url",
        ),
        (
            "url = \"s3://bench/variants/date={ingest_date}/variants.jsonl.gz\"",
            "url = \"ftp://bench/x.gz\"",
            "sink.url",
        ),
        (
            "url = \"s3://bench/variants/date={ingest_date}/variants.jsonl.gz\"",
            "url = \"out/\"",
            "sink.url",
        ),
        ("records = \"/variants\"\n", "", "missing field `records`"),
        ("[sink]\nurl", "[sinks]\nurl", "unknown field `sinks`"),
    ];
    for (from, to, want) in cases {
        assert!(EXAMPLE.contains(from), "{from}");
        let text = EXAMPLE.replacen(from, to, 1);
        let err = validate(&text).expect_err(to).to_string();
        assert!(err.contains(want), "{to}: {err}");
    }
}

#[test]
fn unknown_keys_name_the_line() {
    let text = EXAMPLE.replace("max_pages = 450", "max_pages = 450\nbogus = true");
    let err = validate(&text).unwrap_err().to_string();
    assert!(err.contains("line 8"), "{err}");
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn secrets_are_not_in_errors() {
    let text = EXAMPLE.replace("Bearer ${API_TOKEN}", "Bearer ${API_TOKEN}\n");
    let err = validate(&text).unwrap_err().to_string();
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn pagination_kinds_validate() {
    let base = "[source]\nurl = \"http://h/x\"\nrecords = \"/r\"\n[sink]\nurl = \"out.gz\"\n";
    let ok = [
        "[source.pagination]\ntype = \"none\"",
        "[source.pagination]\ntype = \"link_header\"",
        "[source.pagination]\ntype = \"next_url\"\nnext = \"/links/next\"",
        "[source.pagination]\ntype = \"offset\"\nparam = \"offset\"\nlimit_param = \"limit\"\nlimit = 100",
        "[source.pagination]\ntype = \"page\"\nparam = \"page\"\nstart = 0",
    ];
    for section in ok {
        let text = base.replace("[sink]", &format!("{section}\n[sink]"));
        validate(&text).unwrap_or_else(|e| panic!("{section}: {e}"));
    }
    let bad = [
        (
            "[source.pagination]\ntype = \"offset\"\nparam = \"o\"\nlimit = 5",
            "limit_param",
        ),
        (
            "[source.pagination]\ntype = \"link_header\"\nnext = \"/n\"",
            "source.pagination.next",
        ),
        (
            "[source.pagination]\ntype = \"next_url\"\nnext = \"/r/0\"",
            "must not overlap",
        ),
    ];
    for (section, want) in bad {
        let text = base.replace("[sink]", &format!("{section}\n[sink]"));
        let err = validate(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{section}: {err}");
    }
}

/// `[transform]` of [`EXAMPLE`] with `extra` lines added.
fn with_transform(extra: &str) -> String {
    EXAMPLE.replace("[sink]", &format!("{extra}\n[sink]"))
}

#[test]
fn transform_rules_at_pointers_build_the_run_transform() {
    use crate::transform::RecordWriter;
    let text = EXAMPLE.replace(
        "ingest_ts = \"{ingest_ts}\" }",
        "ingest_ts = \"{ingest_ts}\", \"/meta/source\" = \"api\" }",
    );
    assert_ne!(text, EXAMPLE);
    let text = text.replace(
        "[sink]",
        r#"drop = ["/internal", "debug"]
rename = { "old" = "new", "/meta/ts" = "/meta/timestamp" }
dates = ["/birth_date"]
timestamp_precision = "us"
[sink]"#,
    );
    let p = validate(&text).unwrap();
    let vars = p
        .run_vars(
            "2024-02-03".into(),
            "2024-02-03T00:00:00.000Z".into(),
            &BTreeMap::new(),
        )
        .unwrap();
    let t = p.transform.build(&vars).unwrap();
    let body = br#"{"variants":[{"debug":1,"old":2,"internal":{},"birth_date":"1990-05-17T23:00:00-02:00","created_at":1700000000123,"meta":{"ts":3}}]}"#;
    let mut out = Vec::new();
    let mut w = RecordWriter::new(&t, &mut out);
    let ptr = crate::pointer::JsonPointer::parse("/variants").unwrap();
    crate::source::page::scan_page(body, &ptr, None, &mut w).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        concat!(
            r#"{"new":2,"birth_date":"1990-05-18","created_at":"2023-11-14T22:13:20.123000Z","#,
            r#""meta":{"timestamp":3,"source":"api"},"ingest_date":"2024-02-03","#,
            r#""ingest_ts":"2024-02-03T00:00:00.000Z"}"#,
            "\n"
        )
    );
}

#[test]
fn conflicting_transform_rules_are_refused_naming_the_key() {
    for (extra, want) in [
        (
            r#"drop = ["created_at"]"#,
            r#"transform.drop.created_at: "created_at" is also in transform.timestamps (as "created_at"): a field takes one transform"#,
        ),
        (
            r#"rename = { "/meta/ts" = "/other/ts" }"#,
            r#"transform.rename./meta/ts: the new name "/other/ts" is not in the same object"#,
        ),
        (
            r#"rename = { "a" = "x", "b" = "x" }"#,
            r#"transform.rename.b: the new name "x" is also the new name of "a""#,
        ),
        (
            r#"rename = { "old" = "ingest_date" }"#,
            r#"transform.rename.old: the new name "ingest_date" is a field transform.add names"#,
        ),
        (
            r#"drop = ["/meta"]
dates = ["/meta/day"]"#,
            r#"transform.dates./meta/day: "/meta/day" is inside "/meta", which transform.drop already transforms"#,
        ),
        (
            r#"drop = ["/a~2"]"#,
            r#"transform.drop./a~2: JSON pointer "/a~2" has a '~' not followed by 0 or 1"#,
        ),
    ] {
        let err = validate(&with_transform(extra)).unwrap_err().to_string();
        assert!(err.starts_with(want), "{extra}: {err}");
    }
    let err = validate(&with_transform(r#"timestamp_precision = "s""#))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown variant `s`, expected one of `ms`, `us`, `ns`"),
        "{err}"
    );
}

#[test]
fn the_format_follows_the_extension_unless_named() {
    let with = |url: &str, extra: &str| {
        EXAMPLE.replace(
            "url = \"s3://bench/variants/date={ingest_date}/variants.jsonl.gz\"",
            &format!("url = \"{url}\"\n{extra}"),
        )
    };
    let cases = [
        ("s3://b/v/{ingest_date}.jsonl.gz", "", Compression::Gzip, 6),
        ("s3://b/v/{ingest_date}.jsonl.zst", "", Compression::Zstd, 3),
        ("s3://b/v/{ingest_date}.jsonl", "", Compression::None, 0),
        (
            "s3://b/v/{ingest_date}.jsonl.zst",
            "compression_level = 19",
            Compression::Zstd,
            19,
        ),
        (
            "s3://b/v/{ingest_date}.csv",
            "compression = \"zstd\"",
            Compression::Zstd,
            3,
        ),
        (
            "s3://b/v/{ingest_date}.jsonl.gz",
            "compression = \"none\"",
            Compression::None,
            0,
        ),
    ];
    for (url, extra, format, level) in cases {
        let p = validate(&with(url, extra)).unwrap_or_else(|e| panic!("{url} {extra}: {e}"));
        assert_eq!(p.sink.compression, format, "{url} {extra}");
        let run = p.sink.url.render(&defaults_of(&p));
        assert_eq!(p.sink.compression_of(&run).unwrap(), (format, level));
    }
    // Each run's own key decides when the file does not name the format, and the level is
    // checked against it.
    let p = validate(&with("s3://b/v/{ingest_date}.jsonl.gz", "")).unwrap();
    assert_eq!(
        p.sink.compression_of("s3://b/v/x.jsonl.zst").unwrap(),
        (Compression::Zstd, 3)
    );
    assert!(p.sink.compression_of("s3://b/v/x.csv").is_err());
    let p = validate(&with(
        "s3://b/v/{ingest_date}.jsonl.zst",
        "compression_level = 19",
    ))
    .unwrap();
    for (run, says) in [
        ("s3://b/v/x.jsonl.gz", "between 0 and 9 for gzip"),
        ("s3://b/v/x.jsonl", "which have no level"),
    ] {
        let err = p.sink.compression_of(run).unwrap_err().to_string();
        assert!(
            err.contains("sink.compression_level") && err.contains(says),
            "{err}"
        );
    }

    let refused = [
        ("s3://b/v/{ingest_date}.csv", "", "sink.url"),
        ("s3://b/v/{ingest_date}", "", "sink.url"),
        (
            "s3://b/v/{ingest_date}.jsonl.zst",
            "compression_level = 0",
            "must be between 1 and 19 for zstd",
        ),
        (
            "s3://b/v/{ingest_date}.jsonl.zst",
            "compression_level = 20",
            "sink.compression_level",
        ),
        (
            "s3://b/v/{ingest_date}.jsonl.gz",
            "compression_level = 10",
            "must be between 0 and 9 for gzip",
        ),
        (
            "s3://b/v/{ingest_date}.jsonl",
            "compression_level = 1",
            "uncompressed JSON Lines, which have no level",
        ),
        (
            "s3://b/v/{ingest_date}.jsonl",
            "compression = \"lz4\"",
            "unknown variant `lz4`",
        ),
    ];
    for (url, extra, says) in refused {
        let err = validate(&with(url, extra)).unwrap_err().to_string();
        assert!(err.contains(says), "{url} {extra}: {err}");
    }
}
