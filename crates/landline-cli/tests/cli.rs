//! The `landline` binary as users run it: help, version, the demo, and bad input.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

fn landline(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_landline"))
        .args(args)
        .current_dir(dir)
        .env_remove("LANDLINE_LOG")
        .output()
        .expect("landline starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let help = landline(dir.path(), &["--help"]);
    assert!(help.status.success());
    let out = text(&help.stdout);
    for word in ["run", "demo", "--log-format"] {
        assert!(out.contains(word), "{out}");
    }
    let run_help = text(&landline(dir.path(), &["run", "--help"]).stdout);
    for word in ["--ingest-date", "--report-json", "PIPELINE"] {
        assert!(run_help.contains(word), "{run_help}");
    }
    let version = landline(dir.path(), &["--version"]);
    assert_eq!(
        text(&version.stdout).trim(),
        format!("landline {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The demo runs with nothing but the binary and writes gzip any reader takes.
#[test]
fn demo_writes_a_readable_object_and_a_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = landline(
        dir.path(),
        &["demo", "--records", "700", "--report-json", "report.json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("700 records in 4 pages"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).expect("report"))
            .expect("json");
    for key in [
        "records",
        "pages",
        "bytes_uncompressed",
        "bytes_written",
        "parts",
        "objects",
        "peak_rss_bytes",
        "wall_seconds",
        "cpu",
        "rates",
    ] {
        assert!(report.get(key).is_some(), "{key} missing in {report}");
    }
    assert_eq!(report["records"], 700);
    // The derived figures agree with the counters they come from.
    let rates = &report["rates"];
    let uncompressed = report["bytes_uncompressed"].as_f64().expect("bytes");
    let ratio = uncompressed / report["bytes_written"].as_f64().expect("bytes");
    assert!((rates["compression_ratio"].as_f64().expect("ratio") - ratio).abs() < 1e-9);
    let width = rates["average_record_bytes"].as_f64().expect("width");
    assert!((width - uncompressed / 700.0).abs() < 1e-9, "{rates}");
    assert!(rates["records_per_second"].as_f64().expect("rate") > 0.0);
    assert!(report["cpu"]["user_seconds"].as_f64().expect("user CPU") > 0.0);
    assert!(report["cpu"]["system_seconds"].as_f64().is_some());
    let object = report["objects"][0].as_str().expect("an object");
    let path = object.strip_prefix("file://").expect("a local file");
    assert!(
        path.starts_with(&*dir.path().canonicalize().expect("dir").to_string_lossy())
            || path.contains("landline-demo")
    );
    let mut lines = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("object"))
        .read_to_string(&mut lines)
        .expect("gzip");
    assert_eq!(lines.lines().count(), 700);
    let widest = lines.lines().map(str::len).max().expect("lines");
    assert_eq!(report["largest_record_bytes"], widest as u64);
    let zcat = Command::new("zcat").arg(path).output().expect("zcat runs");
    assert!(zcat.status.success());
    assert_eq!(text(&zcat.stdout).lines().count(), 700);
}

/// Bad pipeline files exit 2 with one paragraph naming the key.
#[test]
fn bad_pipeline_files_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[source]\nurl = \"http://127.0.0.1:1/x\"\nrecords = \"/r\"\nbogus = 1\n[sink]\nurl = \"o.gz\"\n",
            "bogus",
        ),
        (
            "[source]\nurl = \"http://127.0.0.1:1/x\"\nrecords = \"/r\"\nheaders = { Authorization = \"Bearer ${LANDLINE_TEST_UNSET_VAR}\" }\n[sink]\nurl = \"o.gz\"\n",
            "source.headers.Authorization: environment variable LANDLINE_TEST_UNSET_VAR is not set",
        ),
        (
            "[source]\nurl = \"http://127.0.0.1:1/x\"\nrecords = \"/r\"\n[sink]\nurl = \"o.gz\"\npart_size_bytes = 1000\n",
            "sink.part_size_bytes",
        ),
    ];
    for (file, want) in cases {
        std::fs::write(dir.path().join("p.toml"), file).expect("write");
        let out = landline(dir.path(), &["run", "p.toml"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
}

/// A run against an API that is not there fails with exit 1, naming the URL.
#[test]
fn unreachable_api_fails_with_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let file = format!(
        "[source]\nurl = \"http://127.0.0.1:{port}/x\"\nquery = {{ api_key = \"hunter2\" }}\nrecords = \"/r\"\n\
         [source.retry]\nmax_attempts = 2\ninitial_backoff_ms = 1\n[sink]\nurl = \"o.jsonl.gz\"\n"
    );
    std::fs::write(dir.path().join("p.toml"), file).expect("write");
    let out = landline(dir.path(), &["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "page 1 of http://127.0.0.1:{port}/x?api_key=REDACTED"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!dir.path().join("o.jsonl.gz").exists());
}

/// SIGTERM in the middle of a run: the upload is aborted, the exit status is 130, and no
/// object or staging file is left behind.
#[test]
fn sigterm_mid_run_aborts_and_leaves_nothing() {
    use std::time::{Duration, Instant};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let data = landline_mockapi::DataConfig {
        total: 2_000,
        pool: 50,
        ..Default::default()
    };
    let server = rt
        .block_on(landline_mockapi::spawn(landline_mockapi::MockConfig {
            data,
            latency: Duration::from_millis(100),
            ..Default::default()
        }))
        .expect("mock API");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = format!(
        "[source]\nurl = \"{}/variants\"\nquery = {{ count = 20 }}\nrecords = \"/variants\"\n\
         [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
         [sink]\nurl = \"out/o.jsonl.gz\"\n",
        server.base_url()
    );
    std::fs::write(dir.path().join("p.toml"), file).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_landline"))
        .args(["run", "p.toml"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("landline starts");
    // 100 pages at 100 ms each: the run is well under way after 3 pages.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.stats().pages_served < 3 {
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "landline did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("error: cancelled"), "{stderr}");
    assert!(
        server.stats().pages_served < 100,
        "the run finished before the signal"
    );
    let mut left = Vec::new();
    let mut dirs = vec![dir.path().join("out")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                dirs.push(entry.path());
            } else {
                left.push(entry.path());
            }
        }
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    // Nor the directories: `out/` (the object's and the state's, `out/_landline/`) was made
    // by the run.
    assert!(!dir.path().join("out").exists(), "out/ left behind");
}

/// A failing run with secrets in a header and in the query, logging at debug level: no
/// secret appears anywhere in what landline prints.
#[test]
fn secrets_never_appear_in_output_of_a_failing_run() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt
        .block_on(landline_mockapi::spawn(landline_mockapi::MockConfig {
            data: landline_mockapi::DataConfig {
                total: 500,
                pool: 20,
                ..Default::default()
            },
            auth: landline_mockapi::Auth::Bearer("bearer-secret-4711".into()),
            faults: landline_mockapi::Faults {
                error_after_pages: Some(2),
                ..Default::default()
            },
            ..Default::default()
        }))
        .expect("mock API");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = format!(
        "[source]\nurl = \"{}/variants\"\nquery = {{ count = 50, api_key = \"query-secret-0815\" }}\n\
         headers = {{ Authorization = \"Bearer ${{LANDLINE_TEST_TOKEN}}\" }}\nrecords = \"/variants\"\n\
         [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
         [source.retry]\nmax_attempts = 2\ninitial_backoff_ms = 1\n[sink]\nurl = \"o.jsonl.gz\"\n",
        server.base_url()
    );
    std::fs::write(dir.path().join("p.toml"), file).expect("write");
    for format in ["json", "text"] {
        let out = Command::new(env!("CARGO_BIN_EXE_landline"))
            .args(["run", "p.toml", "--log-format", format])
            .current_dir(dir.path())
            .env("LANDLINE_LOG", "debug")
            .env("LANDLINE_TEST_TOKEN", "bearer-secret-4711")
            .output()
            .expect("landline runs");
        assert_eq!(out.status.code(), Some(1));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        // The fault counts pages across both runs: the first fails at page 3, the second at 1.
        assert!(all.contains("HTTP 500"), "{all}");
        assert!(all.contains("api_key=REDACTED"), "{all}");
        for secret in ["bearer-secret-4711", "query-secret-0815"] {
            assert!(!all.contains(secret), "{secret} leaked ({format}):\n{all}");
        }
    }
    assert_eq!(server.stats().pages_served, 2);
}

/// A run to a local path in directories that do not exist, failing at page 3: the upload is
/// aborted and its checkpoint deleted, and every directory the run made goes with them,
/// innermost first, up to the first that was there before (or is not empty).
#[test]
fn a_failed_run_to_a_local_path_leaves_no_directories() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt
        .block_on(landline_mockapi::spawn(landline_mockapi::MockConfig {
            data: landline_mockapi::DataConfig {
                total: 500,
                pool: 20,
                ..Default::default()
            },
            faults: landline_mockapi::Faults {
                error_after_pages: Some(2),
                ..Default::default()
            },
            ..Default::default()
        }))
        .expect("mock API");
    let dir = tempfile::tempdir().expect("tempdir");
    let names = |d: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    std::fs::create_dir(dir.path().join("keep")).expect("mkdir");
    std::fs::write(dir.path().join("keep/old.txt"), "there before").expect("write");
    // The data below a {variable}, the state (_landline/) beside its first directory; then
    // the same below a directory that was there and holds something.
    for (sink, before) in [
        (
            "new/dir/date={ingest_date}/o.jsonl.gz",
            vec!["keep", "p.toml"],
        ),
        ("keep/new/date={ingest_date}/o.jsonl.gz", vec!["old.txt"]),
    ] {
        let file = format!(
            "[source]\nurl = \"{}/variants\"\nquery = {{ count = 50 }}\nrecords = \"/variants\"\n\
             [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
             [source.retry]\nmax_attempts = 2\ninitial_backoff_ms = 1\n[sink]\nurl = \"{sink}\"\n",
            server.base_url()
        );
        std::fs::write(dir.path().join("p.toml"), file).expect("write");
        let out = landline(
            dir.path(),
            &["run", "p.toml", "--ingest-date", "2026-01-01"],
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("HTTP 500"),
            "{}",
            text(&out.stderr)
        );
        let top = if sink.starts_with("keep/") {
            dir.path().join("keep")
        } else {
            dir.path().to_path_buf()
        };
        assert_eq!(names(&top), before, "{sink}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep/old.txt")).expect("read"),
        "there before"
    );
    // The first run failed at page 3, the second (the fault counts on) at page 1.
    assert_eq!(server.stats().pages_served, 2);
}

/// `--var` sets a `[vars]` variable for a run (in the query, an added field and the key), and
/// `plan` makes one event per value; undeclared variables exit 2.
#[test]
fn template_variables_from_the_command_line() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let data = landline_mockapi::DataConfig {
        total: 120,
        pool: 50,
        ..Default::default()
    };
    let server = rt
        .block_on(landline_mockapi::spawn(landline_mockapi::MockConfig {
            data,
            ..Default::default()
        }))
        .expect("mock API");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = format!(
        "[vars]\nregion = \"eu\"\n\
         [source]\nurl = \"{}/variants\"\nquery = {{ count = 50, region = \"{{region}}\" }}\nrecords = \"/variants\"\n\
         [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
         [transform]\nadd = {{ region = \"{{region}}\" }}\n\
         [sink]\nurl = \"out/region={{region}}/date={{ingest_date}}/v.jsonl.gz\"\n",
        server.base_url()
    );
    std::fs::write(dir.path().join("p.toml"), &file).expect("write");
    let out = landline(
        dir.path(),
        &[
            "run",
            "p.toml",
            "--var",
            "region=us",
            "--ingest-date",
            "2024-03-01",
            "--report-json",
            "r.json",
            "--quiet",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).expect("report"))
            .expect("json");
    assert_eq!(report["vars"], serde_json::json!({"region": "us"}));
    let object = dir.path().join("out/region=us/date=2024-03-01/v.jsonl.gz");
    let mut lines = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&object).expect("the object"))
        .read_to_string(&mut lines)
        .expect("gzip");
    assert_eq!(lines.lines().count(), 120);
    assert!(lines.lines().all(|l| l.contains(r#""region":"us""#)));
    let log = server.request_log();
    assert!(!log.is_empty() && log.iter().all(|r| r.path_and_query.contains("region=us")));

    // Undeclared variables and bad splits are usage errors.
    for args in [
        &["run", "p.toml", "--var", "zone=x"][..],
        &["run", "p.toml", "--var", "novalue"],
        &["plan", "p.toml", "--split-by", "values:zone=a,b"],
        &[
            "plan",
            "p.toml",
            "--split-by",
            "values:region=a",
            "--var",
            "region=b",
        ],
    ] {
        let out = landline(dir.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = landline(dir.path(), &["run", "p.toml", "--var", "zone=x"]);
    assert!(
        text(&out.stderr).contains("vars.zone: not a variable of this pipeline (declared: region"),
        "{}",
        text(&out.stderr)
    );

    let out = landline(
        dir.path(),
        &[
            "plan",
            "p.toml",
            "--split-by",
            "values:eu,us,ap",
            "--split-by",
            "date:2024-03-01..2024-03-02",
            "--pipeline-url",
            "s3://b/p.toml",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(events.len(), 6);
    assert_eq!(
        events[1],
        serde_json::json!({
            "pipeline": {"url": "s3://b/p.toml"},
            "ingest_date": "2024-03-02",
            "vars": {"region": "eu"},
            "checkpoint": null
        })
    );
    assert_eq!(events[5]["vars"]["region"], "ap");
    rt.block_on(server.shutdown());
}

/// `landline verify` passes on what the demo landed, against its manifest given by path or
/// found through the pipeline file, and exits 1 on a truncated copy, naming the differences.
#[test]
fn verify_checks_an_object_against_its_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = landline(dir.path(), &["demo", "--records", "300", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let find = |root: &Path, pick: &dyn Fn(&Path) -> bool| -> String {
        let mut stack = vec![root.to_owned()];
        while let Some(at) = stack.pop() {
            for entry in std::fs::read_dir(&at).expect("dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if pick(&path) {
                    return path.display().to_string();
                }
            }
        }
        panic!("not found under {}", root.display())
    };
    let demo = dir.path().join("landline-demo");
    let object = find(&demo, &|p| p.to_string_lossy().ends_with(".jsonl.gz"));
    let manifest = find(&demo, &|p| p.to_string_lossy().contains("/manifests/"));

    let out = landline(dir.path(), &["verify", &object, "--manifest", &manifest]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok "), "{stdout}");
    assert!(stdout.contains("300 records"), "{stdout}");
    assert!(stdout.contains("matches its manifest"), "{stdout}");

    let out = landline(dir.path(), &["verify", &object, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["ok"], true);
    assert_eq!(json["object"]["records"], 300);
    assert_eq!(json["manifest"], serde_json::Value::Null);

    // The manifest found from the pipeline file (the date from the object's `date=`).
    std::fs::write(
        dir.path().join("demo.toml"),
        include_str!("../src/demo.toml"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_landline"))
        .args(["verify", &object, "--pipeline", "demo.toml"])
        .current_dir(dir.path())
        .env("DEMO_API", "http://127.0.0.1:9")
        .output()
        .expect("landline starts");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("matches its manifest"));

    let bytes = std::fs::read(&object).expect("object");
    let copy = dir.path().join("truncated.jsonl.gz");
    std::fs::write(&copy, &bytes[..bytes.len() / 2]).expect("write");
    let copy = copy.display().to_string();
    let out = landline(dir.path(), &["verify", &copy, "--manifest", &manifest]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "size {} != manifest {}",
            bytes.len() / 2,
            bytes.len()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("sha256 "), "{stderr}");
    assert!(text(&out.stdout).starts_with("FAILED "));
}

/// `landline state show|set|reset` on an incremental pipeline into a local directory: the
/// cursor a run stored, set by hand (checked against the cursor's kind), forgotten; the next
/// run asks from what it says.
#[test]
fn state_shows_sets_and_resets_the_incremental_cursor() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let data = landline_mockapi::DataConfig {
        total: 120,
        pool: 120,
        ..Default::default()
    };
    let server = rt
        .block_on(landline_mockapi::spawn(landline_mockapi::MockConfig {
            data,
            ..Default::default()
        }))
        .expect("mock API");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = format!(
        "name = \"changes\"\n\
         [source]\nurl = \"{}/variants\"\nquery = {{ count = 50 }}\nrecords = \"/variants\"\n\
         [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
         [source.incremental]\nfield = \"updated_at\"\nparam = \"updated_since\"\nstart = \"2000-01-01T00:00:00Z\"\n\
         [sink]\nurl = \"out/date={{ingest_date}}/v.jsonl.gz\"\n",
        server.base_url()
    );
    std::fs::write(dir.path().join("p.toml"), &file).expect("write");
    let show = |json: bool| {
        let args: &[&str] = if json {
            &["state", "show", "p.toml", "--json"]
        } else {
            &["state", "show", "p.toml"]
        };
        let out = landline(dir.path(), args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(show(false).contains("cursor   none: the next run asks from start"));

    let run = landline(
        dir.path(),
        &["run", "p.toml", "--quiet", "--report-json", "r.json"],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).expect("report"))
            .expect("json");
    let high = report["incremental"]["high_water"].clone();
    assert!(high.is_string(), "{report}");
    let shown: serde_json::Value = serde_json::from_str(&show(true)).expect("json");
    assert_eq!(shown["stored"]["cursor"], high);
    assert_eq!(shown["stored"]["set_by"], "run");
    assert!(
        dir.path()
            .join("out/_landline/incremental/changes/cursor.json")
            .exists(),
        "{shown}"
    );

    // By hand: a timestamp cursor takes a timestamp only.
    let bad = landline(dir.path(), &["state", "set", "p.toml", "yesterday"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("is not a timestamp"),
        "{}",
        text(&bad.stderr)
    );
    let set = landline(
        dir.path(),
        &["state", "set", "p.toml", "2030-01-01T00:00:00Z"],
    );
    assert!(set.status.success(), "{}", text(&set.stderr));
    let shown = show(false);
    assert!(shown.contains("\"2030-01-01T00:00:00Z\""), "{shown}");
    assert!(shown.contains("landline state set"), "{shown}");
    let run = landline(
        dir.path(),
        &["run", "p.toml", "--quiet", "--ingest-date", "2030-01-02"],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let log = server.request_log();
    assert!(
        log.last().is_some_and(|r| r
            .path_and_query
            .contains("updated_since=2030-01-01T00%3A00%3A00Z")),
        "{:?}",
        log.last()
    );

    // check asks the first page the way a run would.
    let check = landline(dir.path(), &["check", "p.toml"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let checked = text(&check.stdout);
    assert!(
        checked.contains("cursor  asks updated_since=2030-01-01T00:00:00Z: the cursor"),
        "{checked}"
    );

    let reset = landline(dir.path(), &["state", "reset", "p.toml"]);
    assert!(reset.status.success(), "{}", text(&reset.stderr));
    assert!(show(false).contains("cursor   none"));
}

/// Every kind of `[source.auth]`, logging at debug level: a run that stops at a checkpoint
/// (`--max-duration`), then its `landline resume` to the end. No secret, and no access token
/// the API issued, is in what landline prints, in the report, or in any state file it wrote
/// (checkpoint, manifest).
#[test]
fn secrets_of_every_auth_kind_stay_out_of_logs_reports_checkpoints_and_manifests() {
    use landline_mockapi::{Auth, OAuth2Server};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let oauth = |refresh: bool| {
        let mut server = OAuth2Server::new("landline-client", "client-secret-577");
        // Not rotated: the resumed process starts again from the configured refresh token
        // (rotated ones are kept in memory only; tests/it/auth.rs rotates them in one run).
        if refresh {
            server.initial_refresh_token = Some("refresh-secret-1414".into());
        }
        Auth::OAuth2(server)
    };
    let kinds = [
        (
            Auth::Basic {
                user: "ana".into(),
                password: "pw-secret-2718".into(),
            },
            "type = \"basic\"\nuser = \"ana\"\npassword = \"${LANDLINE_TEST_SECRET}\"",
            "pw-secret-2718",
        ),
        (
            Auth::ApiKeyHeader {
                name: "X-API-Key".into(),
                key: "key-secret-1618".into(),
            },
            "type = \"api_key\"\nheader = \"X-API-Key\"\nkey = \"${LANDLINE_TEST_SECRET}\"",
            "key-secret-1618",
        ),
        (
            Auth::ApiKeyQuery {
                param: "access_key".into(),
                key: "key-secret-1619".into(),
            },
            "type = \"api_key\"\nparam = \"access_key\"\nkey = \"${LANDLINE_TEST_SECRET}\"",
            "key-secret-1619",
        ),
        (
            oauth(false),
            "type = \"oauth2_client_credentials\"\ntoken_url = \"{base}/oauth/token\"\n\
             client_id = \"landline-client\"\nclient_secret = \"${LANDLINE_TEST_SECRET}\"",
            "client-secret-577",
        ),
        (
            oauth(true),
            "type = \"oauth2_refresh_token\"\ntoken_url = \"{base}/oauth/token\"\n\
             client_id = \"landline-client\"\nclient_secret = \"client-secret-577\"\n\
             refresh_token = \"${LANDLINE_TEST_SECRET}\"",
            "refresh-secret-1414",
        ),
        (
            Auth::SigV4 {
                access_key_id: "AKIDLANDLINE".into(),
                secret_access_key: "sigv4-secret-2236".into(),
                session_token: Some("session-secret-99".into()),
                region: "eu-west-3".into(),
                service: "execute-api".into(),
            },
            "type = \"aws_sigv4\"",
            "sigv4-secret-2236",
        ),
    ];
    for (auth, section, secret) in kinds {
        let server = rt
            .block_on(landline_mockapi::spawn(landline_mockapi::MockConfig {
                data: landline_mockapi::DataConfig {
                    total: 500,
                    pool: 20,
                    ..Default::default()
                },
                auth,
                ..Default::default()
            }))
            .expect("mock API");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = format!(
            "[source]\nurl = \"{base}/variants\"\nquery = {{ count = 50 }}\nrecords = \"/variants\"\n\
             [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
             [source.auth]\n{section}\n\
             [sink]\nurl = \"out/date={{ingest_date}}/o.jsonl.gz\"\ncompression_level = 0\n",
            section = section.replace("{base}", &server.base_url()),
            base = server.base_url(),
        );
        std::fs::write(dir.path().join("p.toml"), file).expect("write");
        let landline = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_landline"))
                .args(args)
                .current_dir(dir.path())
                .env("LANDLINE_LOG", "debug")
                .env("LANDLINE_TEST_SECRET", secret)
                .env("HOME", dir.path())
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("AWS_ACCESS_KEY_ID", "AKIDLANDLINE")
                .env("AWS_SECRET_ACCESS_KEY", "sigv4-secret-2236")
                .env("AWS_SESSION_TOKEN", "session-secret-99")
                .env("AWS_REGION", "eu-west-3")
                .output()
                .expect("landline runs");
            assert!(out.status.success(), "{section}: {}", text(&out.stderr));
            format!("{}{}", text(&out.stdout), text(&out.stderr))
        };
        let mut printed = landline(&[
            "run",
            "p.toml",
            "--log-format",
            "json",
            "--max-duration",
            "1ms",
            "--report-json",
            "r1.json",
        ]);
        let first: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("r1.json")).expect("report"))
                .expect("json");
        assert_eq!(first["status"], "continue", "{section}: {first}");
        let checkpoint = first["checkpoint"]
            .as_str()
            .expect("a checkpoint")
            .to_owned();
        // The checkpoint, read while the run is stopped.
        let mut written = std::fs::read_to_string(checkpoint.trim_start_matches("file://"))
            .expect("the checkpoint");
        printed += &landline(&[
            "resume",
            &checkpoint,
            "--log-format",
            "text",
            "--report-json",
            "r2.json",
        ]);
        for entry in walk(dir.path()) {
            // The object, and the pipeline file (the user's own text), aside.
            let name = entry.to_string_lossy();
            if !name.ends_with(".jsonl.gz") && !name.ends_with("p.toml") {
                written += &String::from_utf8_lossy(&std::fs::read(&entry).expect("read"));
            }
        }
        assert!(
            written.contains("landline-manifest"),
            "{section}: a manifest was read"
        );
        let mut secrets = vec![
            secret.to_owned(),
            "client-secret-577".into(),
            "sigv4-secret-2236".into(),
            "session-secret-99".into(),
        ];
        secrets.extend(server.issued_tokens().into_iter().map(|t| t.access_token));
        for s in &secrets {
            assert!(
                !printed.contains(s.as_str()),
                "{section}: {s} printed:\n{printed}"
            );
            assert!(!written.contains(s.as_str()), "{section}: {s} written");
        }
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
