//! Checkpoints in the store while a run goes: written as soon as the upload exists and after
//! every part that ends a page, holding exactly the state at that page (checked against the
//! landed object's own bytes), never a secret, and gone once the run completes or fails.

use std::time::Duration;

use landline_mockapi::{Action, Fault, Times, When};
use serde_json::Value;

use crate::harness::{
    INGEST_DATE, Style, data, gunzip, mock, pipeline, pipeline_text, run, verify,
};
use crate::s3::{self, S3Server};

/// Records of this test's data: with `compression_level = 0` and 20 records a page, about
/// eight 5 MiB parts.
const RECORDS: u64 = 1_500;
/// The page the mock API holds back for a while, so the checkpoint can be read mid-run.
const SLOW_PAGE: u64 = 60;
const SECRET: &str = "s3cr3t-bearer-token";

/// A token pipeline into `s3` at `prefix`, state under `prefix/_landline/`, stored gzip
/// (level 0) so that parts fill fast, and a bearer token the checkpoint must not hold.
fn pipeline_for(api: &str, s3: &S3Server, prefix: &str, extra_state: &str) -> String {
    let source = Style::Token.source(api, 20).replace(
        "[source.pagination]",
        &format!("headers = {{ Authorization = \"Bearer {SECRET}\" }}\n[source.pagination]"),
    );
    let sink = format!(
        "url = \"s3://{bucket}/{prefix}/date={{ingest_date}}/variants.jsonl.gz\"\n\
         compression_level = 0\n\
         [state]\nurl = \"s3://{bucket}/{prefix}/_landline/\"\n{extra_state}",
        bucket = s3.bucket
    );
    pipeline_text(&source, &sink)
}

fn checkpoint_key(prefix: &str) -> String {
    format!("{prefix}/_landline/checkpoints/test/{INGEST_DATE}.json")
}

/// Polls for the checkpoint until one holds at least `parts` parts (bounded: 20 s).
async fn checkpoint_with(s3: &S3Server, key: &str, parts: usize) -> Option<(Vec<u8>, Value)> {
    for _ in 0..400 {
        if let Some(bytes) = s3.get_object(key).await {
            let json: Value = serde_json::from_slice(&bytes).expect("a checkpoint is JSON");
            if json["upload"]["parts"].as_array().map_or(0, Vec::len) >= parts {
                return Some((bytes, json));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_mid_run_holds_the_state_at_a_page_end_and_goes_when_the_run_ends() {
    let data = data(RECORDS);
    let server = mock(data.clone(), |c| {
        c.faults.rules = vec![Fault::new(
            When::Page(SLOW_PAGE),
            Action::Delay(Duration::from_secs(3)),
            Times::First(1),
        )];
    })
    .await;
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("checkpoint");
        let key = checkpoint_key(&prefix);
        let text = pipeline_for(&server.base_url(), &s3, &prefix, "");
        let run = tokio::spawn({
            let env = s3.env();
            async move { run(&pipeline(&text), env).await }
        });
        let (raw, cp) = checkpoint_with(&s3, &key, 2)
            .await
            .unwrap_or_else(|| panic!("{}: no checkpoint with 2 parts at {key}", s3.name));
        let text = String::from_utf8_lossy(&raw);
        assert!(
            !text.contains(SECRET),
            "{}: the checkpoint holds the token",
            s3.name
        );
        assert_eq!(cp["format"], "landline-checkpoint/2");
        assert_eq!(cp["pipeline"], "test");
        assert_eq!(cp["ingest_date"], INGEST_DATE);
        let object = format!(
            "s3://{}/{prefix}/date={INGEST_DATE}/variants.jsonl.gz",
            s3.bucket
        );
        assert_eq!(cp["destination"], object.as_str());
        if s3.supports_list_multipart_uploads {
            let open = s3.list_multipart_uploads(&prefix).await;
            assert_eq!(open.len(), 1, "{}: {open:?}", s3.name);
            assert_eq!(cp["upload"]["upload_id"], open[0].1.as_str());
        }
        let parts = cp["upload"]["parts"].as_array().expect("parts");
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part["number"], i as u64 + 1);
            assert!(part["size"].as_u64().expect("size") >= 5 * 1024 * 1024);
            assert!(!part["e_tag"].as_str().expect("e_tag").is_empty());
        }
        let page = cp["counters"]["page"].as_u64().expect("page");
        let records = cp["counters"]["records"].as_u64().expect("records");
        assert!(page < SLOW_PAGE, "{}: page {page}", s3.name);
        assert_eq!(records, page * 20);
        assert_eq!(cp["counters"]["pages"], page);
        assert_eq!(cp["position"]["http"]["cursor"]["kind"], "token");
        assert_eq!(cp["position"]["http"]["pages"], page);
        assert_eq!(
            cp["position"]["http"]["seen"].as_array().map(Vec::len),
            Some(page as usize)
        );

        let report = run
            .await
            .expect("run task")
            .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        let bytes = s3
            .get_object(&format!("{prefix}/date={INGEST_DATE}/variants.jsonl.gz"))
            .await
            .expect("object");
        let jsonl = gunzip(&bytes);
        verify(&jsonl, &data, &report, 97);
        // The checkpoint's gzip state is exactly that of the object's first `records` lines.
        let upto = jsonl
            .split_inclusive(|&b| b == b'\n')
            .take(records as usize)
            .map(<[u8]>::len)
            .sum::<usize>();
        assert_eq!(cp["member"]["bytes_in"], upto as u64);
        assert_eq!(cp["member"]["crc32"], crc32fast::hash(&jsonl[..upto]));
        // The parts it lists are the object's first bytes.
        let listed: u64 = parts.iter().map(|p| p["size"].as_u64().unwrap_or(0)).sum();
        assert!(listed < bytes.len() as u64);
        assert!(
            s3.get_object(&key).await.is_none(),
            "{}: checkpoint left",
            s3.name
        );
        assert!(
            s3.list_keys(&format!("{prefix}/date=")).await.len() == 1,
            "{}: the data prefix holds only the object",
            s3.name
        );
        if s3.supports_list_multipart_uploads {
            assert!(s3.list_multipart_uploads(&prefix).await.is_empty());
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_run_leaves_no_checkpoint_and_checkpoints_can_be_off() {
    let data = data(RECORDS);
    let s3 = s3::moto();
    // Fails after several parts: the API refuses page 70 for good.
    let failing = mock(data.clone(), |c| {
        c.faults.rules = vec![
            Fault::new(
                When::Page(SLOW_PAGE),
                Action::Delay(Duration::from_secs(2)),
                Times::First(1),
            ),
            Fault::new(When::Page(70), Action::status(400), Times::Forever),
        ];
    })
    .await;
    let prefix = s3.unique_prefix("checkpoint-failed");
    let key = checkpoint_key(&prefix);
    let text = pipeline_for(&failing.base_url(), &s3, &prefix, "");
    let task = tokio::spawn({
        let env = s3.env();
        async move { run(&pipeline(&text), env).await }
    });
    assert!(
        checkpoint_with(&s3, &key, 1).await.is_some(),
        "no checkpoint mid-run"
    );
    let err = task.await.expect("run task").expect_err("the run fails");
    assert!(err.to_string().contains("page 70"), "{err}");
    assert!(
        s3.get_object(&key).await.is_none(),
        "checkpoint left after {err}"
    );
    assert!(s3.list_multipart_uploads(&prefix).await.is_empty());
    assert!(
        s3.list_keys(&prefix).await.is_empty(),
        "{:?}",
        s3.list_keys(&prefix).await
    );
    failing.shutdown().await;

    // Off: nothing but the manifest (written once the object has landed, which the loop
    // below may see before the task ends) appears under the state prefix.
    let slow = mock(data.clone(), |c| {
        c.faults.rules = vec![Fault::new(
            When::Page(SLOW_PAGE),
            Action::Delay(Duration::from_secs(2)),
            Times::First(1),
        )];
    })
    .await;
    let prefix = s3.unique_prefix("checkpoint-off");
    let text = pipeline_for(&slow.base_url(), &s3, &prefix, "checkpoints = false\n");
    let task = tokio::spawn({
        let env = s3.env();
        async move { run(&pipeline(&text), env).await }
    });
    let mut seen = Vec::new();
    while !task.is_finished() {
        let mut state = s3.list_keys(&format!("{prefix}/_landline/")).await;
        state.retain(|k| !k.starts_with(&format!("{prefix}/_landline/manifests/")));
        seen.extend(state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = task.await.expect("run task").expect("run");
    assert!(report.parts >= 3, "{} parts", report.parts);
    assert!(
        seen.is_empty(),
        "state written with checkpoints off: {seen:?}"
    );
    slow.shutdown().await;
}

/// Runs `text` with `options` (the test's ingest date and `env` added).
async fn run_with(
    text: &str,
    env: Vec<(String, String)>,
    options: landline::RunOptions,
) -> Result<landline::RunReport, landline::RunError> {
    let options = landline::RunOptions {
        ingest_date: Some(
            chrono::NaiveDate::parse_from_str(INGEST_DATE, "%Y-%m-%d").expect("date"),
        ),
        store_env: env.into(),
        ..options
    };
    landline::run(&pipeline(text), options, std::future::pending()).await
}

/// A run cut by a time limit into processes, each continuing from the last one's
/// checkpoint: the object is the uncut run's, record by record, in one gzip member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_cut_by_its_time_limit_goes_on_from_each_checkpoint_to_the_same_object() {
    let data = data(RECORDS);
    let server = mock(data.clone(), |_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("out/date={ingest_date}/variants.jsonl.gz");
    let moto = s3::moto();
    let prefix = moto.unique_prefix("resume-chain");
    let sinks = [
        (
            format!("url = \"{}\"\ncompression_level = 0\n", local.display()),
            vec![],
        ),
        (
            format!(
                "url = \"s3://{b}/{prefix}/date={{ingest_date}}/variants.jsonl.gz\"\ncompression_level = 0\n\
                 [state]\nurl = \"s3://{b}/{prefix}/_landline/\"\n",
                b = moto.bucket
            ),
            moto.env(),
        ),
    ];
    for (sink, env) in sinks {
        let text = pipeline_text(&Style::Token.source(&server.base_url(), 20), &sink);
        let limit = landline::RunOptions {
            max_duration: Some(Duration::from_millis(1)),
            ..landline::RunOptions::default()
        };
        let mut report = run_with(&text, env.clone(), limit)
            .await
            .expect("first process");
        let mut processes = 1;
        let mut records_seen = vec![report.records];
        while report.status == landline::report::RunStatus::Continue {
            let url = report
                .checkpoint
                .clone()
                .expect("a continue report names its checkpoint");
            let cp = landline::pipeline::read_checkpoint(&url, &Default::default(), env.clone())
                .await
                .expect("read")
                .expect("the checkpoint exists");
            assert_eq!(cp.counters.records, report.records);
            report = run_with(
                &text,
                env.clone(),
                landline::RunOptions {
                    resume: Some(cp),
                    max_duration: Some(Duration::from_millis(1)),
                    ..landline::RunOptions::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("process {}: {e}", processes + 1));
            processes += 1;
            records_seen.push(report.records);
            assert!(processes < 100, "no end in sight: {records_seen:?}");
        }
        assert!(processes >= 3, "{processes} processes: {records_seen:?}");
        assert!(
            records_seen.windows(2).all(|w| w[0] < w[1]),
            "every process lands something: {records_seen:?}"
        );
        let object = report.objects.first().expect("an object").clone();
        let bytes = if let Some(path) = object.strip_prefix("file://") {
            std::fs::read(path).expect("object")
        } else {
            let key = object
                .split_once(&format!("{}/", moto.bucket))
                .expect("key")
                .1;
            moto.get_object(key).await.expect("object")
        };
        assert_eq!(bytes.len() as u64, report.bytes_written);
        // One member (the single-member reader reads every record), every record once.
        verify(&gunzip(&bytes), &data, &report, 7);
        if env.is_empty() {
            let out = dir.path().join("out");
            let mut left: Vec<_> = walk(&out);
            left.retain(|path| !path.to_string_lossy().contains("/_landline/manifests/"));
            assert_eq!(
                left.len(),
                1,
                "only the object (and its manifest) is left: {left:?}"
            );
        } else {
            assert!(moto.list_multipart_uploads(&prefix).await.is_empty());
            let mut state = moto.list_keys(&format!("{prefix}/_landline")).await;
            state.retain(|key| !key.contains("/_landline/manifests/"));
            assert!(state.is_empty(), "{state:?}");
        }
    }
    server.shutdown().await;
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A checkpoint that does not fit is refused before anything is written; one whose upload the
/// store no longer has fails at its first part, naming it, and is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_that_do_not_fit_or_whose_upload_is_gone_are_refused() {
    let data = data(RECORDS);
    let server = mock(data.clone(), |_| {}).await;
    let moto = s3::moto();
    let prefix = moto.unique_prefix("resume-refused");
    let sink = format!(
        "url = \"s3://{b}/{prefix}/date={{ingest_date}}/variants.jsonl.gz\"\ncompression_level = 0\n\
         [state]\nurl = \"s3://{b}/{prefix}/_landline/\"\n",
        b = moto.bucket
    );
    let text = pipeline_text(&Style::Token.source(&server.base_url(), 20), &sink);
    let limit = landline::RunOptions {
        max_duration: Some(Duration::from_millis(1)),
        ..landline::RunOptions::default()
    };
    let report = run_with(&text, moto.env(), limit)
        .await
        .expect("first process");
    assert_eq!(report.status, landline::report::RunStatus::Continue);
    let url = report.checkpoint.clone().expect("checkpoint");
    let read = || async {
        landline::pipeline::read_checkpoint(&url, &Default::default(), moto.env())
            .await
            .expect("read")
    };
    let cp = read().await.expect("the checkpoint exists");

    // A changed pipeline file, another destination: refused, nothing touched.
    let changed = text.replace("count = 20", "count = 21");
    let resume = |cp: &landline::checkpoint::Checkpoint| landline::RunOptions {
        resume: Some(cp.clone()),
        ..landline::RunOptions::default()
    };
    let err = run_with(&changed, moto.env(), resume(&cp))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("pipeline file has changed"),
        "{err}"
    );
    let mut elsewhere = cp.clone();
    elsewhere.destination = format!("s3://{}/{prefix}/other.jsonl.gz", moto.bucket);
    let err = run_with(&text, moto.env(), resume(&elsewhere))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("it writes"), "{err}");
    assert_eq!(
        moto.list_multipart_uploads(&prefix).await.len(),
        1,
        "the upload is left open"
    );
    assert_eq!(
        read().await.as_ref(),
        Some(&cp),
        "the checkpoint is untouched"
    );

    // Not a checkpoint, another format: refused by the reader.
    let key = url
        .split_once(&format!("{}/", moto.bucket))
        .expect("key")
        .1
        .to_owned();
    let original = moto.get_object(&key).await.expect("checkpoint bytes");
    let newer = String::from_utf8(original.clone())
        .expect("utf-8")
        .replace("landline-checkpoint/2", "landline-checkpoint/9");
    moto.put_object(&key, newer).await;
    let err = landline::pipeline::read_checkpoint(&url, &Default::default(), moto.env())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("landline-checkpoint/9"), "{err}");
    moto.put_object(
        &key,
        "{\"format\": \"landline-checkpoint/2\", \"pipeline\": 3}",
    )
    .await;
    let err = landline::pipeline::read_checkpoint(&url, &Default::default(), moto.env())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    moto.put_object(&key, original).await;

    // The upload is gone (aborted by a cleanup, say): the resumed run says so.
    let object_key = cp
        .destination
        .split_once(&format!("{}/", moto.bucket))
        .expect("key")
        .1;
    moto.abort_multipart_upload(object_key, &cp.upload.upload_id)
        .await;
    let err = run_with(&text, moto.env(), resume(&cp)).await.unwrap_err();
    assert!(err.to_string().contains("no longer has upload"), "{err}");
    assert!(
        read().await.is_none(),
        "the checkpoint of a gone upload is deleted"
    );
    server.shutdown().await;
}

/// A process killed after creating its upload but before its first checkpoint named it
/// leaves only its pending checkpoint (no upload id): the next run finds that upload by key
/// and time and aborts it, with `--resume auto` (the run says the upload is gone, and starts
/// afresh) as without (the checkpoint is discarded); nothing is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_created_before_its_first_checkpoint_is_found_and_aborted() {
    let data = data(RECORDS);
    let server = mock(data.clone(), |_| {}).await;
    let moto = s3::moto();
    let prefix = moto.unique_prefix("pending");
    let text = pipeline_for(&server.base_url(), &moto, &prefix, "");
    let object_key = format!("{prefix}/date={INGEST_DATE}/variants.jsonl.gz");
    let url = format!("s3://{}/{}", moto.bucket, checkpoint_key(&prefix));
    // What such a process leaves: its pending checkpoint (made here from a real one), and the
    // upload it created after writing it.
    let limit = landline::RunOptions {
        max_duration: Some(Duration::from_millis(1)),
        ..landline::RunOptions::default()
    };
    let report = run_with(&text, moto.env(), limit)
        .await
        .expect("first process");
    assert_eq!(report.checkpoint.as_deref(), Some(url.as_str()));
    let mut cp = landline::pipeline::read_checkpoint(&url, &Default::default(), moto.env())
        .await
        .expect("read")
        .expect("a checkpoint");
    moto.abort_multipart_upload(&object_key, &cp.upload.upload_id)
        .await;
    // An upload of the key that was open before (another run's): it is not this run's.
    let other = moto.create_multipart_upload(&object_key).await;
    cp.upload.upload_id = String::new();
    cp.upload.parts.clear();
    cp.uploads_before = Some(vec![other.clone()]);
    let pending = serde_json::to_vec(&cp).expect("json");
    let checkpoint_key = checkpoint_key(&prefix);
    for resume in [true, false] {
        moto.put_object(&checkpoint_key, pending.clone()).await;
        let orphan = moto.create_multipart_upload(&object_key).await;
        assert_eq!(moto.list_multipart_uploads(&prefix).await.len(), 2);
        if resume {
            let options = landline::RunOptions {
                resume: Some(cp.clone()),
                ..landline::RunOptions::default()
            };
            let err = run_with(&text, moto.env(), options).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    landline::RunError::Sink(landline::sink::SinkError::UploadGone { .. })
                ),
                "{err}"
            );
        } else {
            let pipeline = pipeline(&text);
            landline::pipeline::discard_checkpoint(&pipeline, &url, &cp, moto.env())
                .await
                .expect("discarded");
        }
        let open = moto.list_multipart_uploads(&prefix).await;
        assert_eq!(
            open,
            [(object_key.clone(), other.clone())],
            "{orphan} is aborted, the other upload kept"
        );
        assert!(moto.get_object(&checkpoint_key).await.is_none());
    }
    moto.abort_multipart_upload(&object_key, &other).await;
    // And the run then starts afresh and lands every record.
    let report = run_with(&text, moto.env(), landline::RunOptions::default())
        .await
        .expect("a fresh run");
    let bytes = moto.get_object(&object_key).await.expect("the object");
    verify(&gunzip(&bytes), &data, &report, 1);
    assert!(moto.list_multipart_uploads(&prefix).await.is_empty());
    server.shutdown().await;
}
