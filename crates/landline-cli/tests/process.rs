//! Process faults against a real S3 server (moto, from `scripts/test.sh`): SIGINT and SIGTERM
//! abort the upload; SIGKILL leaves no object but an incomplete upload, which
//! `landline cleanup` finds and aborts.

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

/// Starts `landline run` of a pipeline from `api` to `s3://bucket/key` on `server`.
fn start_run(dir: &Path, api: &str, server: &s3::S3Server, key: &str) -> Child {
    let file = format!(
        "[source]\nurl = \"{api}/variants\"\nquery = {{ count = 20 }}\nrecords = \"/variants\"\n\
         [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
         [sink]\nurl = \"s3://{}/{key}\"\n",
        server.bucket
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
