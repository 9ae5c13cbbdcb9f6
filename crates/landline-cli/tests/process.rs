//! Process faults against a real S3 server (moto, from `scripts/test.sh`): SIGINT and SIGTERM
//! abort the upload; SIGKILL leaves no object but an incomplete upload, which
//! `landline cleanup` finds and aborts. Checkpoints: a run killed at any point (before the
//! first part, between parts, mid-part, during completion) is continued by
//! `landline run --resume auto` into the object an uncut run writes; a plain run aborts a dead
//! run's upload; `--max-duration` stops at a checkpoint that `landline resume` goes on from.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[path = "../../landline/tests/it/s3.rs"]
mod s3;

/// A mock API slow enough (100 ms a page of 20 records, 100 pages) that a run is still going
/// when the test signals it.
fn slow_api(rt: &tokio::runtime::Runtime) -> landline_mockapi::MockServer {
    rt.block_on(landline_mockapi::spawn(landline_mockapi::MockConfig {
        data: landline_mockapi::DataConfig {
            total: 2_000,
            pool: 50,
            ..Default::default()
        },
        latency: Duration::from_millis(100),
        ..Default::default()
    }))
    .expect("mock API")
}

/// Starts `landline run` of a pipeline from `api` to `s3://bucket/key` on `server`. Its
/// checkpoints go under the key's first directory (the test's prefix), not to the bucket's
/// `_landline/`, which every test's pipeline `p` of the same day would share.
fn start_run(dir: &Path, api: &str, server: &s3::S3Server, key: &str) -> Child {
    let prefix = key.split('/').next().expect("a prefix");
    let file = format!(
        "[source]\nurl = \"{api}/variants\"\nquery = {{ count = 20 }}\nrecords = \"/variants\"\n\
         [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
         [sink]\nurl = \"s3://{bucket}/{key}\"\n\
         [state]\nurl = \"s3://{bucket}/{prefix}/_landline/\"\n",
        bucket = server.bucket
    );
    std::fs::write(dir.join("p.toml"), file).expect("write");
    Command::new(env!("CARGO_BIN_EXE_landline"))
        .args(["run", "p.toml", "--log-format", "json"])
        .current_dir(dir)
        .env_remove("LANDLINE_LOG")
        .envs(server.env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("landline starts")
}

/// Waits until the API has served `pages` pages to the running `child`.
fn wait_for_pages(api: &landline_mockapi::MockServer, child: &mut Child, pages: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.stats().pages_served < pages {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                pipe.read_to_string(&mut stderr).expect("stderr");
            }
            panic!("landline exited early ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name}");
}

/// Waits (bounded) for the child to exit; its status and stderr.
fn wait(mut child: Child) -> (ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("landline did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    (status, stderr)
}

fn cleanup(dir: &Path, server: &s3::S3Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_landline"))
        .arg("cleanup")
        .args(args)
        .current_dir(dir)
        .env_remove("LANDLINE_LOG")
        .envs(server.env())
        .output()
        .expect("landline starts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SIGINT and SIGTERM mid-run: exit 130, the upload aborted, no object, and the object an
/// earlier run wrote at the key untouched.
#[test]
fn sigint_and_sigterm_abort_the_upload() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = s3::moto();
    for sig in ["INT", "TERM"] {
        let api = slow_api(&rt);
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = server.unique_prefix(&format!("sig{sig}"));
        let key = format!("{prefix}/v.jsonl.gz");
        rt.block_on(server.put_object(&key, b"earlier run".to_vec()));
        let mut child = start_run(dir.path(), &api.base_url(), &server, &key);
        wait_for_pages(&api, &mut child, 3);
        assert_eq!(
            rt.block_on(server.list_multipart_uploads(&prefix)).len(),
            1,
            "the upload is started before the first page"
        );
        signal(&child, sig);
        let (status, stderr) = wait(child);
        assert_eq!(status.code(), Some(130), "SIG{sig}: {stderr}");
        assert!(stderr.contains("error: cancelled"), "SIG{sig}: {stderr}");
        assert!(api.stats().pages_served < 100, "finished before SIG{sig}");
        assert_eq!(
            rt.block_on(server.get_object(&key)).as_deref(),
            Some(&b"earlier run"[..])
        );
        assert_eq!(rt.block_on(server.list_keys(&prefix)), [key.as_str()]);
        assert!(
            rt.block_on(server.list_multipart_uploads(&prefix))
                .is_empty(),
            "SIG{sig} left an open upload"
        );
    }
}

/// SIGKILL mid-run: no object appears (the earlier one stays), the upload is left open, and
/// `landline cleanup` leaves it alone while it is younger than `--older-than`, lists it with
/// `--dry-run`, and aborts it, and only it.
#[test]
fn sigkill_leaves_no_object_and_cleanup_aborts_the_upload() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = s3::moto();
    let api = slow_api(&rt);
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = server.unique_prefix("sigkill");
    let key = format!("{prefix}/date=2026-11-25/v.jsonl.gz");
    let other = format!("{prefix}-other/v.jsonl.gz");
    rt.block_on(server.put_object(&key, b"earlier run".to_vec()));
    // An upload under another prefix: cleanup must not touch it.
    let other_id = rt.block_on(server.create_multipart_upload(&other));

    let mut child = start_run(dir.path(), &api.base_url(), &server, &key);
    wait_for_pages(&api, &mut child, 3);
    signal(&child, "KILL");
    let (status, _) = wait(child);
    assert_eq!(status.code(), None, "killed by a signal");
    assert_eq!(
        rt.block_on(server.get_object(&key)).as_deref(),
        Some(&b"earlier run"[..]),
        "the earlier object is untouched"
    );
    let open = rt.block_on(server.list_multipart_uploads(&format!("{prefix}/")));
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].0, key);

    // moto reports every upload as started on 2010-11-10 (a fixed date in its answer), so the
    // age filter is shown here with an age beyond that; landline::sink::cleanup's unit tests cover it
    // with real times.
    let location = format!("s3://{}/{prefix}/", server.bucket);
    let (ok, stdout, stderr) = cleanup(dir.path(), &server, &[&location, "--older-than", "36500d"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("0 incomplete upload(s)"),
        "an upload younger than the age is left alone: {stdout}"
    );

    let (ok, stdout, stderr) = cleanup(
        dir.path(),
        &server,
        &[&location, "--older-than", "0s", "--dry-run"],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "would abort s3://{}/{key} (upload {}",
            server.bucket, open[0].1
        )),
        "{stdout}"
    );
    assert_eq!(
        rt.block_on(server.list_multipart_uploads(&format!("{prefix}/")))
            .len(),
        1,
        "--dry-run aborts nothing"
    );

    let (ok, stdout, stderr) = cleanup(dir.path(), &server, &[&location, "--older-than", "0s"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("aborted s3://{}/{key}", server.bucket)),
        "{stdout}"
    );
    assert!(stdout.contains("1 incomplete upload(s)"), "{stdout}");
    assert!(
        rt.block_on(server.list_multipart_uploads(&format!("{prefix}/")))
            .is_empty()
    );
    assert_eq!(
        rt.block_on(server.list_multipart_uploads(&other)),
        [(other.clone(), other_id.clone())],
        "an upload outside the prefix is left alone"
    );
    rt.block_on(server.abort_multipart_upload(&other, &other_id));
    assert_eq!(
        rt.block_on(server.get_object(&key)).as_deref(),
        Some(&b"earlier run"[..])
    );
}

/// Cleanup of something that is not an S3 location is a usage error (exit 2).
#[test]
fn cleanup_refuses_non_s3_locations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_landline"))
        .args(["cleanup", "/tmp/x"])
        .current_dir(dir.path())
        .output()
        .expect("landline starts");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("s3://"), "{stderr}");
}

// ------------------------------------------------------------ checkpoints and resumption --
//
// The pipeline of these tests reads `${LANDLINE_TEST_API}/variants`: the variable is not part
// of the pipeline's identity (a hash of the file as written), so the killed run can read a
// slow mock API with faults and the run that continues it a fresh one without, whose counters
// then show exactly which pages the continuation fetched. Both serve the same records.

/// The `--ingest-date` of every run below.
const DATE: &str = "2026-11-25";
/// Records of the data set, in pages of `PAGE_RECORDS` (about 570 KB of JSON Lines each, so
/// that with `compression_level = 0` a 5 MiB part ends about every tenth page).
const TOTAL: u64 = 600;
const PAGE_RECORDS: u64 = 20;
const PAGES: u64 = TOTAL / PAGE_RECORDS;

fn data() -> landline_mockapi::DataConfig {
    landline_mockapi::DataConfig {
        total: TOTAL,
        pool: 50,
        ..Default::default()
    }
}

/// A mock API serving [`data`] on 127.0.0.1 with `latency` a page and fault `rules`.
fn mock_api(
    rt: &tokio::runtime::Runtime,
    latency: Duration,
    rules: Vec<landline_mockapi::Fault>,
) -> landline_mockapi::MockServer {
    rt.block_on(landline_mockapi::spawn(landline_mockapi::MockConfig {
        data: data(),
        latency,
        faults: landline_mockapi::Faults {
            rules,
            ..Default::default()
        },
        ..Default::default()
    }))
    .expect("mock API")
}

/// Page `page` is answered `secs` seconds late, the first time its URL is asked for.
fn delay_page(page: u64, secs: u64) -> landline_mockapi::Fault {
    landline_mockapi::Fault::new(
        landline_mockapi::When::Page(page),
        landline_mockapi::Action::Delay(Duration::from_secs(secs)),
        landline_mockapi::Times::First(1),
    )
}

/// The pipeline file of these tests: `${LANDLINE_TEST_API}` to `sink`, uncompressed gzip
/// (level 0) so that parts fill quickly, checkpoints under `state`.
fn pipeline_text(sink: &str, state: &str) -> String {
    format!(
        "[source]\nurl = \"${{LANDLINE_TEST_API}}/variants\"\nquery = {{ count = {PAGE_RECORDS} }}\n\
         records = \"/variants\"\n\
         [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
         [sink]\nurl = \"{sink}\"\ncompression_level = 0\n\
         [state]\nurl = \"{state}\"\n"
    )
}

/// Where one test writes on the S3 server.
struct Layout {
    /// The test's own prefix (no trailing `/`).
    prefix: String,
    /// The object's key.
    key: String,
    /// The checkpoint's key and URL.
    checkpoint_key: String,
    checkpoint_url: String,
}

impl Layout {
    fn new(server: &s3::S3Server, test: &str) -> Layout {
        let prefix = server.unique_prefix(test);
        let checkpoint_key = format!("{prefix}/_landline/checkpoints/p/{DATE}.json");
        Layout {
            key: format!("{prefix}/date={DATE}/v.jsonl.gz"),
            checkpoint_url: format!("s3://{}/{checkpoint_key}", server.bucket),
            checkpoint_key,
            prefix,
        }
    }

    /// Writes `p.toml` (the pipeline is named `p`) into `dir`.
    fn write_pipeline(&self, server: &s3::S3Server, dir: &Path) {
        let text = pipeline_text(
            &format!("s3://{}/{}", server.bucket, self.key),
            &format!("s3://{}/{}/_landline/", server.bucket, self.prefix),
        );
        std::fs::write(dir.join("p.toml"), text).expect("write the pipeline");
    }

    /// The checkpoint, if there is one.
    fn checkpoint(&self, rt: &tokio::runtime::Runtime, server: &s3::S3Server) -> Option<Cp> {
        rt.block_on(server.get_object(&self.checkpoint_key))
            .map(|bytes| Cp(serde_json::from_slice(&bytes).expect("a checkpoint is JSON")))
    }

    /// The multipart uploads open under the prefix.
    fn open_uploads(
        &self,
        rt: &tokio::runtime::Runtime,
        server: &s3::S3Server,
    ) -> Vec<(String, String)> {
        rt.block_on(server.list_multipart_uploads(&format!("{}/", self.prefix)))
    }
}

/// A checkpoint as read from the store.
#[derive(Debug, Clone)]
struct Cp(serde_json::Value);

impl Cp {
    fn upload_id(&self) -> String {
        self.0["upload"]["upload_id"]
            .as_str()
            .expect("upload.upload_id")
            .to_owned()
    }

    fn parts(&self) -> u64 {
        self.0["upload"]["parts"]
            .as_array()
            .expect("upload.parts")
            .len() as u64
    }

    /// `counters.pages`: the pages its parts hold.
    fn pages(&self) -> u64 {
        self.0["counters"]["pages"]
            .as_u64()
            .expect("counters.pages")
    }

    fn records(&self) -> u64 {
        self.0["counters"]["records"]
            .as_u64()
            .expect("counters.records")
    }
}

/// A `landline` command in `dir`, with JSON logs, the S3 environment `s3_env` and the mock API
/// at `api`.
fn landline(dir: &Path, s3_env: &[(String, String)], api: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_landline"));
    cmd.args(args)
        .args(["--log-format", "json"])
        .current_dir(dir)
        .env_remove("LANDLINE_LOG")
        .envs(s3_env.iter().cloned())
        .env("LANDLINE_TEST_API", api)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end (killed after 30 s): its status, stdout and stderr.
fn run_to_end(mut cmd: Command) -> (ExitStatus, String, String) {
    let mut child = cmd.spawn().expect("landline starts");
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "landline did not finish in 30 s: {}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// Reads a pipe to its end on a thread, so that a chatty child never blocks on it.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("the report file")).expect("report JSON")
}

/// The decoded JSON Lines of [`data`] run uncut through the same pipeline, into a local file.
fn reference(rt: &tokio::runtime::Runtime) -> Vec<u8> {
    let api = mock_api(rt, Duration::ZERO, Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let object = dir.path().join("ref.jsonl.gz");
    let state = dir.path().join("state");
    std::fs::write(
        dir.path().join("p.toml"),
        pipeline_text(&object.display().to_string(), &state.display().to_string()),
    )
    .expect("write the pipeline");
    let (status, _, stderr) = run_to_end(landline(
        dir.path(),
        &[],
        &api.base_url(),
        &["run", "p.toml", "--ingest-date", DATE],
    ));
    assert!(status.success(), "the uncut run failed: {stderr}");
    one_member(&std::fs::read(&object).expect("the uncut run's object"))
}

/// The JSON Lines of a gzip file that is exactly one member (nothing after it).
fn one_member(gz: &[u8]) -> Vec<u8> {
    let mut lines = Vec::new();
    if let Err(e) = flate2::read::GzDecoder::new(gz).read_to_end(&mut lines) {
        let start: Vec<String> = gz.iter().take(16).map(|b| format!("{b:02x}")).collect();
        panic!(
            "the object ({} bytes, starting {}) is not gzip: {e}",
            gz.len(),
            start.join(" ")
        );
    }
    let mut member = flate2::bufread::GzDecoder::new(gz);
    std::io::copy(&mut member, &mut std::io::sink()).expect("gzip");
    assert!(
        member.into_inner().is_empty(),
        "{} bytes follow the first gzip member",
        gz.len()
    );
    lines
}

/// The object is one gzip member holding the reference's JSON Lines: every record of the data
/// set once, in order; no upload is left open under the prefix, and no checkpoint.
fn check_object(
    rt: &tokio::runtime::Runtime,
    server: &s3::S3Server,
    layout: &Layout,
    reference: &[u8],
) {
    let object = rt
        .block_on(server.get_object(&layout.key))
        .expect("the object was written");
    let lines = one_member(&object);
    let config = data();
    let mut count = 0;
    for (i, line) in lines
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let record: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("line {} is not JSON: {e}", i + 1));
        assert_eq!(
            record["id"].as_u64(),
            Some(landline_mockapi::ID_BASE + i as u64),
            "line {}",
            i + 1
        );
        assert!(
            record == landline_mockapi::expected_record(i as u64, &config),
            "line {} is not record {i}",
            i + 1
        );
        count += 1;
    }
    assert_eq!(count, TOTAL, "records in the object");
    // Byte for byte what the uncut run wrote (the first differing line, if not).
    if lines != reference {
        let line = lines
            .split(|&b| b == b'\n')
            .zip(reference.split(|&b| b == b'\n'))
            .position(|(a, b)| a != b);
        panic!(
            "the object ({} bytes of JSON Lines) differs from the uncut run's ({} bytes), first at line {line:?}",
            lines.len(),
            reference.len()
        );
    }
    assert_eq!(
        layout.open_uploads(rt, server),
        [],
        "an upload is left open under the prefix"
    );
    assert!(
        layout.checkpoint(rt, server).is_none(),
        "the checkpoint is left"
    );
    let mut left = rt.block_on(server.list_keys(&format!("{}/", layout.prefix)));
    left.retain(|key| !key.contains("/_landline/manifests/"));
    assert_eq!(
        left,
        [layout.key.as_str()],
        "only the object (and its manifest) is left"
    );
}

/// What a kill waits for: the checkpoint, the killed run's API and the proxy its S3 requests
/// go through.
struct Probe<'a> {
    checkpoint: Option<&'a Cp>,
    api: landline_mockapi::Stats,
    held: usize,
}

/// What a kill leaves besides the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// The upload open, no object.
    OpenUpload,
    /// The upload completed: the object.
    Completed,
}

/// A run killed with SIGKILL once `ready`.
struct Killed {
    layout: Layout,
    dir: tempfile::TempDir,
    /// The checkpoint read just before the kill.
    before: Cp,
    /// The checkpoint left by the kill, the one a continuation reads.
    after: Cp,
}

/// Starts `landline run p.toml` on an API with 50 ms a page and `rules`, its S3 requests
/// through `proxy` if given; kills it with SIGKILL once `ready` holds (polled every ~10 ms for
/// at most 20 s); checks that it left its upload open and its checkpoint, and no object.
fn run_and_kill(
    rt: &tokio::runtime::Runtime,
    server: &s3::S3Server,
    test: &str,
    rules: Vec<landline_mockapi::Fault>,
    proxy: Option<&Proxy>,
    left: Left,
    ready: impl Fn(&Probe<'_>) -> bool,
) -> Killed {
    let layout = Layout::new(server, test);
    let dir = tempfile::tempdir().expect("tempdir");
    layout.write_pipeline(server, dir.path());
    let api = mock_api(rt, Duration::from_millis(50), rules);
    let env = match proxy {
        Some(proxy) => proxy.env(server),
        None => server.env(),
    };
    let mut child = landline(
        dir.path(),
        &env,
        &api.base_url(),
        &["run", "p.toml", "--ingest-date", DATE],
    )
    .stdout(Stdio::null())
    .spawn()
    .expect("landline starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let checkpoint = layout.checkpoint(rt, server);
        let probe = Probe {
            checkpoint: checkpoint.as_ref(),
            api: api.stats(),
            held: proxy.map_or(0, |p| p.held().len()),
        };
        if ready(&probe) {
            break checkpoint;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            let (_, stderr) = wait(child);
            panic!(
                "{test}: landline exited ({status}) before the kill point (checkpoint {checkpoint:?}): {stderr}"
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{test}: the kill point did not come in 20 s: checkpoint {checkpoint:?}, API {:?}",
                api.stats()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    signal(&child, "KILL");
    let (status, stderr) = wait(child);
    assert_eq!(status.code(), None, "{test}: killed by a signal: {stderr}");
    let before = before.unwrap_or_else(|| panic!("{test}: killed without a checkpoint"));
    let after = layout
        .checkpoint(rt, server)
        .unwrap_or_else(|| panic!("{test}: the kill left no checkpoint: {stderr}"));
    assert_eq!(after.upload_id(), before.upload_id(), "{test}: one upload");
    match left {
        Left::OpenUpload => {
            assert_eq!(
                rt.block_on(server.get_object(&layout.key)),
                None,
                "{test}: the killed run wrote the object"
            );
            assert_eq!(
                layout.open_uploads(rt, server),
                [(layout.key.clone(), after.upload_id())],
                "{test}: the killed run's upload is open, and only it"
            );
        }
        Left::Completed => {
            assert!(
                rt.block_on(server.get_object(&layout.key)).is_some(),
                "{test}: the killed run did not complete the object"
            );
            assert_eq!(layout.open_uploads(rt, server), [], "{test}");
        }
    }
    Killed {
        layout,
        dir,
        before,
        after,
    }
}

/// `landline run p.toml --resume auto` after `killed`, on a fresh API and through a recording
/// proxy: it continues the checkpointed run (the same upload, from the page after the
/// checkpoint's, its parts numbered after the checkpoint's) into a complete, correct object.
fn resume_auto_completes(
    rt: &tokio::runtime::Runtime,
    server: &s3::S3Server,
    test: &str,
    killed: &Killed,
) {
    let reference = reference(rt);
    let api = mock_api(rt, Duration::ZERO, Vec::new());
    let proxy = Proxy::start(server);
    let report = killed.dir.path().join("report.json");
    let started = Instant::now();
    let (status, _, stderr) = run_to_end(landline(
        killed.dir.path(),
        &proxy.env(server),
        &api.base_url(),
        &[
            "run",
            "p.toml",
            "--ingest-date",
            DATE,
            "--resume",
            "auto",
            "--report-json",
            &report.display().to_string(),
        ],
    ));
    eprintln!("{test}: the continuation took {:?}", started.elapsed());
    assert!(
        status.success(),
        "{test}: --resume auto failed ({status}): {stderr}"
    );
    assert!(
        stderr.contains("continuing the run from its checkpoint"),
        "{test}: {stderr}"
    );
    let report = read_report(&report);
    assert_eq!(report["status"], "complete", "{test}: {report}");
    assert_eq!(report["records"], TOTAL, "{test}: {report}");
    let cp = &killed.after;
    assert_eq!(
        api.stats().pages_served,
        PAGES - cp.pages(),
        "{test}: the continuation fetches the pages after the checkpoint's {}, and only them",
        cp.pages()
    );
    let requests = proxy.requests();
    let creates: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.has("uploads"))
        .collect();
    assert_eq!(creates, [] as [&ProxyRequest; 0], "{test}: no new upload");
    let completes: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.has("uploadId"))
        .collect();
    assert_eq!(completes.len(), 1, "{test}: {requests:#?}");
    assert_eq!(
        completes[0].param("uploadId"),
        Some(cp.upload_id().as_str()),
        "{test}: the checkpoint's upload is the one completed"
    );
    let puts: Vec<u64> = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.has("uploadId"))
        .map(|r| {
            assert_eq!(r.param("uploadId"), Some(cp.upload_id().as_str()), "{test}");
            r.param("partNumber")
                .and_then(|n| n.parse().ok())
                .expect("partNumber")
        })
        .collect();
    assert!(!puts.is_empty(), "{test}: the continuation put no part");
    assert!(
        puts.iter().all(|&n| n > cp.parts()),
        "{test}: parts {puts:?} put again, after a checkpoint of {} part(s)",
        cp.parts()
    );
    check_object(rt, server, &killed.layout, &reference);
}

/// (a) SIGKILL before the first part: the checkpoint written when the upload was created (no
/// parts) while page 3 is late, pages 1 and 2 in the compressor; `--resume auto` continues the
/// same upload from page 1. No part holds the gzip header yet: the continuation writes it.
#[test]
fn sigkill_before_the_first_part_then_resume_auto() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = s3::moto();
    let started = Instant::now();
    let killed = run_and_kill(
        &rt,
        &server,
        "kill-before-first-part",
        vec![delay_page(3, 10)],
        None,
        Left::OpenUpload,
        |p| p.api.faults_injected >= 1 && p.checkpoint.is_some(),
    );
    assert_eq!(killed.before.parts(), 0, "{:?}", killed.before);
    assert_eq!(killed.after.parts(), 0, "{:?}", killed.after);
    assert_eq!(killed.after.pages(), 0);
    resume_auto_completes(&rt, &server, "kill-before-first-part", &killed);
    eprintln!("took {:?}", started.elapsed());
}

/// (b) SIGKILL between parts: as soon as the checkpoint lists two parts (page 26 is late, so
/// that the run cannot end first).
#[test]
fn sigkill_between_parts_then_resume_auto() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = s3::moto();
    let started = Instant::now();
    let killed = run_and_kill(
        &rt,
        &server,
        "kill-between-parts",
        vec![delay_page(26, 10)],
        None,
        Left::OpenUpload,
        |p| p.checkpoint.is_some_and(|cp| cp.parts() >= 2),
    );
    assert!(killed.after.parts() >= 2, "{:?}", killed.after);
    assert!(killed.after.pages() < 26, "{:?}", killed.after);
    resume_auto_completes(&rt, &server, "kill-between-parts", &killed);
    eprintln!("took {:?}", started.elapsed());
}

/// (c) SIGKILL mid-part: page 15 is late, after the checkpoint of the first part (about ten
/// pages) and before the second part is cut; the pages in between are in the compressor.
#[test]
fn sigkill_mid_part_then_resume_auto() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = s3::moto();
    let started = Instant::now();
    let killed = run_and_kill(
        &rt,
        &server,
        "kill-mid-part",
        vec![delay_page(15, 10)],
        None,
        Left::OpenUpload,
        |p| p.api.faults_injected >= 1 && p.checkpoint.is_some_and(|cp| cp.parts() >= 1),
    );
    let cp = &killed.after;
    assert_eq!(cp.parts(), 1, "{cp:?}");
    assert!(cp.pages() < 14, "pages after the checkpoint's: {cp:?}");
    resume_auto_completes(&rt, &server, "kill-mid-part", &killed);
    eprintln!("took {:?}", started.elapsed());
}

/// (d) SIGKILL during completion: every page is uploaded, and the CompleteMultipartUpload
/// request is held by a proxy in front of moto (never forwarded) when the kill comes; the
/// continuation puts the parts after the last checkpoint again and completes the same upload.
#[test]
fn sigkill_during_completion_then_resume_auto() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = s3::moto();
    let started = Instant::now();
    let proxy = Proxy::start(&server);
    proxy.hold(|r| r.method == "POST" && r.has("uploadId"));
    let killed = run_and_kill(
        &rt,
        &server,
        "kill-during-completion",
        Vec::new(),
        Some(&proxy),
        Left::OpenUpload,
        |p| p.held >= 1,
    );
    let held = proxy.held();
    assert_eq!(
        held[0].param("uploadId"),
        Some(killed.after.upload_id().as_str())
    );
    // The last part holds the gzip trailer and ends no page: no checkpoint covers it.
    let put: Vec<u64> = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.has("partNumber"))
        .filter_map(|r| r.param("partNumber").and_then(|n| n.parse().ok()))
        .collect();
    assert!(
        put.iter().max().copied().unwrap_or(0) > killed.after.parts(),
        "parts {put:?}, checkpoint {:?}",
        killed.after
    );
    resume_auto_completes(&rt, &server, "kill-during-completion", &killed);
    eprintln!("took {:?}", started.elapsed());
}

/// (d, later) SIGKILL after the upload was completed, before the checkpoint was deleted (its
/// DeleteObjects request held by the proxy): the checkpoint describes an upload the store no
/// longer has. `--resume auto` still ends with the complete, correct object and no checkpoint.
#[test]
fn sigkill_after_completion_before_the_checkpoint_is_deleted_then_resume_auto() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = s3::moto();
    let started = Instant::now();
    let reference = reference(&rt);
    let proxy = Proxy::start(&server);
    proxy.hold(|r| r.method == "POST" && r.has("delete"));
    let killed = run_and_kill(
        &rt,
        &server,
        "kill-after-completion",
        Vec::new(),
        Some(&proxy),
        Left::Completed,
        |p| p.held >= 1,
    );
    let requests = proxy.requests();
    assert!(
        requests.iter().any(|r| r.method == "POST"
            && r.param("uploadId") == Some(killed.after.upload_id().as_str())),
        "the upload was completed: {requests:#?}"
    );
    let object = rt
        .block_on(server.get_object(&killed.layout.key))
        .expect("the object");
    assert!(
        one_member(&object) == reference,
        "the killed run's object is not the uncut run's"
    );

    let api = mock_api(&rt, Duration::ZERO, Vec::new());
    let report = killed.dir.path().join("report.json");
    let (status, _, stderr) = run_to_end(landline(
        killed.dir.path(),
        &server.env(),
        &api.base_url(),
        &[
            "run",
            "p.toml",
            "--ingest-date",
            DATE,
            "--resume",
            "auto",
            "--report-json",
            &report.display().to_string(),
        ],
    ));
    assert!(status.success(), "{status}: {stderr}");
    let report = read_report(&report);
    assert_eq!(report["status"], "complete", "{report}");
    assert_eq!(report["records"], TOTAL, "{report}");
    check_object(&rt, &server, &killed.layout, &reference);
    eprintln!("took {:?}", started.elapsed());
}

/// A checkpoint found by a plain `landline run` (no `--resume`) is a run that died: its upload
/// is aborted, the checkpoint deleted, a warning logged, and the run starts afresh.
#[test]
fn a_plain_run_aborts_the_upload_of_a_stale_checkpoint() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = s3::moto();
    let started = Instant::now();
    let killed = run_and_kill(
        &rt,
        &server,
        "stale-checkpoint",
        vec![delay_page(15, 10)],
        None,
        Left::OpenUpload,
        |p| p.api.faults_injected >= 1 && p.checkpoint.is_some_and(|cp| cp.parts() >= 1),
    );
    let old = killed.after.upload_id();
    let reference = reference(&rt);
    let api = mock_api(&rt, Duration::ZERO, Vec::new());
    let proxy = Proxy::start(&server);
    let (status, _, stderr) = run_to_end(landline(
        killed.dir.path(),
        &proxy.env(&server),
        &api.base_url(),
        &["run", "p.toml", "--ingest-date", DATE],
    ));
    assert!(status.success(), "{status}: {stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("found the checkpoint of an earlier run"))
        .unwrap_or_else(|| panic!("no warning about the earlier run's checkpoint: {stderr}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(&killed.layout.checkpoint_url),
        "the warning names the checkpoint: {warning}"
    );
    assert!(
        warning.contains(&old) && warning.contains("aborting its upload"),
        "the warning names the upload it aborts: {warning}"
    );
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "DELETE" && r.param("uploadId") == Some(old.as_str())),
        "the old upload is aborted: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.method == "POST" && r.has("uploads")),
        "a new upload is created: {requests:#?}"
    );
    assert_eq!(api.stats().pages_served, PAGES, "the run starts afresh");
    assert!(
        !killed
            .layout
            .open_uploads(&rt, &server)
            .iter()
            .any(|(_, id)| *id == old),
        "the old upload is still listed"
    );
    check_object(&rt, &server, &killed.layout, &reference);
    eprintln!("took {:?}", started.elapsed());
}

/// `--max-duration 1ms` stops at the first checkpoint with a part (status `continue`, its
/// URL in the report), leaving the upload open; `landline resume URL` goes on, from process to
/// process, until the object is complete.
#[test]
fn max_duration_stops_at_a_checkpoint_and_resume_completes_the_object() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = s3::moto();
    let started = Instant::now();
    let reference = reference(&rt);
    let layout = Layout::new(&server, "max-duration");
    let dir = tempfile::tempdir().expect("tempdir");
    layout.write_pipeline(&server, dir.path());
    // Slow enough that the first checkpoint comes long before the last page.
    let api = mock_api(&rt, Duration::from_millis(50), Vec::new());
    let env = server.env();
    let report = dir.path().join("r.json");
    let report_arg = report.display().to_string();
    let (status, stdout, stderr) = run_to_end(landline(
        dir.path(),
        &env,
        &api.base_url(),
        &[
            "run",
            "p.toml",
            "--ingest-date",
            DATE,
            "--max-duration",
            "1ms",
            "--report-json",
            &report_arg,
        ],
    ));
    assert!(status.success(), "{status}: {stderr}");
    let mut last = read_report(&report);
    assert_eq!(last["status"], "continue", "{last}\n{stdout}");
    assert_eq!(
        last["checkpoint"].as_str(),
        Some(layout.checkpoint_url.as_str()),
        "{last}"
    );
    let first = layout.checkpoint(&rt, &server).expect("a checkpoint");
    let upload_id = first.upload_id();
    let mut parts = 0;
    let mut continues = 1;
    // Each process adds at least one part: the object has about four.
    for round in 1..=10 {
        if last["status"] == "complete" {
            break;
        }
        assert_eq!(last["status"], "continue", "round {round}: {last}");
        let cp = layout.checkpoint(&rt, &server).expect("a checkpoint");
        assert_eq!(cp.upload_id(), upload_id, "round {round}: the same upload");
        assert!(cp.parts() > parts, "round {round}: no new part: {cp:?}");
        parts = cp.parts();
        assert_eq!(last["records"], cp.records(), "round {round}: {last}");
        assert_eq!(
            layout.open_uploads(&rt, &server),
            [(layout.key.clone(), upload_id.clone())],
            "round {round}"
        );
        let url = last["checkpoint"]
            .as_str()
            .expect("a checkpoint URL")
            .to_owned();
        let report = dir.path().join(format!("r{round}.json"));
        let (status, _, stderr) = run_to_end(landline(
            dir.path(),
            &env,
            &api.base_url(),
            &[
                "resume",
                &url,
                "--max-duration",
                "1ms",
                "--report-json",
                &report.display().to_string(),
            ],
        ));
        assert!(status.success(), "round {round}: {status}: {stderr}");
        last = read_report(&report);
        if last["status"] == "continue" {
            continues += 1;
        }
    }
    assert_eq!(last["status"], "complete", "{last}");
    assert!(continues >= 2, "only {continues} stop(s) at a checkpoint");
    assert_eq!(last["records"], TOTAL, "{last}");
    // Pages after the checkpoint a process stopped at are fetched again by the next one.
    assert!(api.stats().pages_served >= PAGES, "{:?}", api.stats());
    check_object(&rt, &server, &layout, &reference);
    eprintln!("{continues} continue(s), took {:?}", started.elapsed());
}

// ----------------------------------------------------------------------- S3 proxy --

/// An HTTP/1.1 proxy on 127.0.0.1 in front of an S3 server: it writes down every request
/// (method, path and query) and can hold the requests a predicate picks (they are never
/// forwarded, so the client waits for an answer until it is killed). Signatures still match:
/// the client signs the `Host` it sends, and the proxy forwards it as sent.
struct Proxy {
    addr: std::net::SocketAddr,
    shared: std::sync::Arc<ProxyShared>,
}

struct ProxyShared {
    upstream: String,
    requests: std::sync::Mutex<Vec<ProxyRequest>>,
    hold: std::sync::Mutex<Option<Pick>>,
    held: std::sync::Mutex<Vec<ProxyRequest>>,
}

/// Which requests the [`Proxy`] holds.
type Pick = fn(&ProxyRequest) -> bool;

/// A request seen by the [`Proxy`], its query decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProxyRequest {
    method: String,
    path: String,
    query: Vec<(String, String)>,
}

impl ProxyRequest {
    fn parse(method: &str, target: &str) -> ProxyRequest {
        let url = url::Url::parse(&format!("http://proxy{target}")).expect("a request target");
        ProxyRequest {
            method: method.to_owned(),
            path: url.path().to_owned(),
            query: url
                .query_pairs()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Proxy {
    fn start(server: &s3::S3Server) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let upstream = format!(
            "{}:{}",
            server.endpoint.host_str().expect("a host"),
            server.endpoint.port_or_known_default().expect("a port")
        );
        let shared = std::sync::Arc::new(ProxyShared {
            upstream,
            requests: Default::default(),
            hold: Default::default(),
            held: Default::default(),
        });
        let accepting = std::sync::Arc::clone(&shared);
        // Lives as long as the test's process, as do the connections' threads, which end with
        // their connections.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let shared = std::sync::Arc::clone(&accepting);
                std::thread::spawn(move || relay(client, &shared));
            }
        });
        Proxy { addr, shared }
    }

    /// The server's environment, with the endpoint of the proxy.
    fn env(&self, server: &s3::S3Server) -> Vec<(String, String)> {
        let mut env = server.env();
        for (k, v) in &mut env {
            if k == "AWS_ENDPOINT_URL" {
                *v = format!("http://{}", self.addr);
            }
        }
        env
    }

    /// From now on, requests for which `pick` is true are held.
    fn hold(&self, pick: Pick) {
        *self.shared.hold.lock().expect("lock") = Some(pick);
    }

    fn requests(&self) -> Vec<ProxyRequest> {
        self.shared.requests.lock().expect("lock").clone()
    }

    fn held(&self) -> Vec<ProxyRequest> {
        self.shared.held.lock().expect("lock").clone()
    }
}

/// One client connection: answers copied back as they come, requests forwarded one by one.
fn relay(client: std::net::TcpStream, shared: &ProxyShared) {
    use std::net::Shutdown;
    let Ok(upstream) = std::net::TcpStream::connect(&shared.upstream) else {
        return;
    };
    let (Ok(mut to_client), Ok(mut from_upstream)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_upstream, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let mut to_upstream = upstream;
    let _ = forward_requests(
        &mut std::io::BufReader::new(client),
        &mut to_upstream,
        shared,
    );
    let _ = to_upstream.shutdown(Shutdown::Write);
}

fn forward_requests(
    from: &mut std::io::BufReader<std::net::TcpStream>,
    to: &mut std::net::TcpStream,
    shared: &ProxyShared,
) -> std::io::Result<()> {
    use std::io::{BufRead as _, Write as _};
    loop {
        let mut head = Vec::new();
        let mut content_length = 0u64;
        let mut chunked = false;
        loop {
            let start = head.len();
            if from.read_until(b'\n', &mut head)? == 0 {
                return Ok(());
            }
            let line = String::from_utf8_lossy(&head[start..])
                .trim_end()
                .to_owned();
            if line.is_empty() {
                break;
            }
            if start > 0
                && let Some((name, value)) = line.split_once(':')
            {
                let name = name.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        let first = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut words = first.split(' ');
        let request = ProxyRequest::parse(
            words.next().unwrap_or_default(),
            words.next().unwrap_or("/"),
        );
        shared.requests.lock().expect("lock").push(request.clone());
        let hold = *shared.hold.lock().expect("lock");
        if hold.is_some_and(|pick| pick(&request)) {
            shared.held.lock().expect("lock").push(request);
            // Never forwarded; read (and drop) what comes until the client goes.
            std::io::copy(from, &mut std::io::sink())?;
            return Ok(());
        }
        to.write_all(&head)?;
        if chunked {
            // Not expected from object_store; forward the rest as is, unparsed.
            std::io::copy(from, to)?;
            return Ok(());
        }
        if std::io::copy(&mut from.by_ref().take(content_length), to)? < content_length {
            return Ok(());
        }
    }
}

/// `landline check` on both S3 servers: it proves the key writable (an upload created and
/// aborted), reads the first page through the transform, says what `run` would do, and leaves
/// nothing in the store. A wrong record pointer and a missing bucket fail, naming them.
#[test]
fn check_reads_the_first_page_and_proves_the_store_writable_writing_nothing() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = mock_api(&rt, Duration::ZERO, vec![]);
    for server in [s3::moto(), s3::s3s()] {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(&server, "check");
        let sink = format!(
            "s3://{}/{}/date={{ingest_date}}/v.jsonl.gz",
            server.bucket, layout.prefix
        );
        let state = format!("s3://{}/{}/_landline/", server.bucket, layout.prefix);
        std::fs::write(dir.path().join("p.toml"), pipeline_text(&sink, &state)).expect("write");
        let env = server.env();
        let args = ["check", "p.toml", "--ingest-date", DATE, "--json"];
        let (status, out, err) = run_to_end(landline(dir.path(), &env, &api.base_url(), &args));
        assert!(status.success(), "{}: {err}", server.name);
        let found: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(found["key"], layout.key, "{}", server.name);
        assert_eq!(found["first_page"]["records"], PAGE_RECORDS);
        assert_eq!(found["state"], state);
        assert!(
            found["upload_checked"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
        assert!(
            found["memory"]["budget_bytes"]
                .as_u64()
                .is_some_and(|b| b > 10 << 20)
        );
        let left = rt.block_on(server.list_keys(&format!("{}/", layout.prefix)));
        assert!(left.is_empty(), "{}: check wrote {left:?}", server.name);
        if server.supports_list_multipart_uploads {
            let open = rt.block_on(server.list_multipart_uploads(&layout.prefix));
            assert!(open.is_empty(), "{}: {open:?}", server.name);
        }
        // The text form names the parts of the plan.
        let (status, out, _) = run_to_end(landline(dir.path(), &env, &api.base_url(), &args[..4]));
        assert!(status.success());
        for part in [
            "is ready to run",
            "source",
            "object",
            "key",
            "store",
            "state",
            "budget",
        ] {
            assert!(out.contains(part), "{part}: {out}");
        }
        // Records where there are none.
        let wrong =
            pipeline_text(&sink, &state).replace("records = \"/variants\"", "records = \"/items\"");
        std::fs::write(dir.path().join("wrong.toml"), wrong).expect("write");
        let (status, _, err) = run_to_end(landline(
            dir.path(),
            &env,
            &api.base_url(),
            &["check", "wrong.toml"],
        ));
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("/items"), "{}: {err}", server.name);
        // A bucket that does not exist (s3s-fs creates uploads in any bucket, and aborts
        // them: only moto knows its buckets).
        if server.name != "moto" {
            continue;
        }
        let missing = pipeline_text(&sink.replace(&server.bucket, "no-such-bucket-here"), &state);
        std::fs::write(dir.path().join("missing.toml"), missing).expect("write");
        let (status, out, err) = run_to_end(landline(
            dir.path(),
            &env,
            &api.base_url(),
            &["check", "missing.toml"],
        ));
        assert_eq!(status.code(), Some(1), "{}: {out} {err}", server.name);
        assert!(
            err.contains("no-such-bucket-here"),
            "{}: {err}",
            server.name
        );
    }
}

/// `--fail-on-drift`: the day the records get 1.5x wider with new fields, the run exits 3,
/// says why, and the object has landed all the same; the quiet day before exits 0.
#[test]
fn fail_on_drift_exits_3_and_the_object_lands() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let day_one = mock_api(&rt, Duration::ZERO, vec![]);
    let day_two = rt
        .block_on(landline_mockapi::spawn(landline_mockapi::MockConfig {
            data: landline_mockapi::DataConfig {
                target_bytes: data().target_bytes * 3 / 2,
                extra_fields: 3,
                ..data()
            },
            ..Default::default()
        }))
        .expect("mock API");
    let server = s3::s3s();
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(&server, "fail-on-drift");
    let sink = format!(
        "s3://{}/{}/date={{ingest_date}}/v.jsonl.gz",
        server.bucket, layout.prefix
    );
    let state = format!("s3://{}/{}/_landline/", server.bucket, layout.prefix);
    std::fs::write(dir.path().join("p.toml"), pipeline_text(&sink, &state)).expect("write");
    let env = server.env();
    let run = |api: &str, date: &str| {
        let args = [
            "run",
            "p.toml",
            "--ingest-date",
            date,
            "--fail-on-drift",
            "--report-json",
            "r.json",
        ];
        run_to_end(landline(dir.path(), &env, api, &args))
    };
    for date in ["2026-11-23", "2026-11-24"] {
        let (status, _, err) = run(&day_one.base_url(), date);
        assert!(status.success(), "{date}: {err}");
    }
    let (status, out, err) = run(&day_two.base_url(), DATE);
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("drifted since the run of 2026-11-24"), "{err}");
    assert!(out.contains("DRIFT since the run of 2026-11-24"), "{out}");
    assert!(out.contains("new field \"extra_3\""), "{out}");
    let report = read_report(&dir.path().join("r.json"));
    assert!(
        report["drift"]["changes"]
            .as_array()
            .is_some_and(|c| c.len() >= 4)
    );
    let object = rt.block_on(server.get_object(&layout.key));
    assert!(object.is_some(), "the object landed");
}
