//! The objects' formats against the real S3 servers: zstd (`.jsonl.zst`) and uncompressed
//! JSON Lines (`.jsonl`) objects land in parts with their `Content-Type` (or
//! `Content-Encoding`), their format in the report and the manifest, and pass
//! `landline verify`; real readers (the `zstd` CLI, Python's `zstandard`, DuckDB, pandas)
//! read them whole; runs cut into processes by checkpoints resume to the same records in
//! every format; a key whose extension names no format is refused unless
//! `[sink] compression` names one.
//!
//! The readers are tools outside the crate: the `zstd` command-line tool from `PATH`
//! (Debian's `zstd` package, which `.ci/run` installs), and Python's `zstandard`, `duckdb`
//! and `pandas` in `LANDLINE_TEST_PYTHON` (moto's virtualenv, which `scripts/test.sh` sets
//! up). A test that misses one fails, saying how to get it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use landline::compress::Compression;
use landline::config::{ConfigError, PipelineFile};
use landline::manifest::Manifest;
use landline::report::RunStatus;
use landline::verify::{Verified, VerifyOptions};
use landline::{RunError, RunOptions, RunReport};
use landline_mockapi::{Action, DataConfig, Fault, ID_BASE, Times, When};
use reqwest::header::HeaderMap;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::harness::{Style, data, key, mock, pipeline_text, run_on, sink, verify};
use crate::s3::{self, S3Server};

/// A zstd frame's magic number (RFC 8878: 0xFD2FB528, little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The JSON Lines of a zstd frame landline writes: a block of about 1 MiB
/// ([`Compression::chunk_bytes`]), never less than a quarter of one (but the last), never
/// more than one and a record.
const FRAME_CONTENT: std::ops::RangeInclusive<u64> = (256 * 1024)..=(1024 * 1024 + 64 * 1024);

/// Runs `text` into `s3`, cut by a time limit into processes, each resuming from the last
/// one's checkpoint, as `landline run --max-duration` and `--resume` do. Returns the last
/// report and the number of processes (each checked to have landed something).
async fn run_in_processes(text: &str, s3: &S3Server) -> (RunReport, usize) {
    let limit = || RunOptions {
        max_duration: Some(Duration::from_millis(1)),
        ..RunOptions::default()
    };
    let mut report = run_on(text, s3, limit())
        .await
        .unwrap_or_else(|e| panic!("{}: process 1: {e}", s3.name));
    let mut records_seen = vec![report.records];
    while report.status == RunStatus::Continue {
        let url = report
            .checkpoint
            .clone()
            .expect("a continue report names its checkpoint");
        let cp = landline::pipeline::read_checkpoint(&url, &Default::default(), s3.env())
            .await
            .expect("reading the checkpoint")
            .expect("the checkpoint exists");
        assert_eq!(cp.counters.records, report.records);
        let options = RunOptions {
            resume: Some(cp),
            ..limit()
        };
        report = run_on(text, s3, options)
            .await
            .unwrap_or_else(|e| panic!("{}: process {}: {e}", s3.name, records_seen.len() + 1));
        records_seen.push(report.records);
        assert!(
            records_seen.len() < 100,
            "no end in sight: {records_seen:?}"
        );
    }
    assert!(
        records_seen.windows(2).all(|w| w[0] < w[1]),
        "every process lands something: {records_seen:?}"
    );
    (report, records_seen.len())
}

/// The object at `key`.
async fn object(s3: &S3Server, key: &str) -> Vec<u8> {
    s3.get_object(key)
        .await
        .unwrap_or_else(|| panic!("{}: no object at {key}", s3.name))
}

/// The manifest `report` names, read back from the store.
async fn manifest_of(s3: &S3Server, report: &RunReport) -> Manifest {
    let url = report
        .manifest
        .as_deref()
        .expect("the run wrote a manifest");
    landline::manifest::read(url, &Default::default(), s3.env())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name))
        .unwrap_or_else(|| panic!("{}: no manifest at {url}", s3.name))
}

/// `landline verify` of the object `report` landed against `manifest`: it must pass.
async fn landline_verify(s3: &S3Server, report: &RunReport, manifest: &Manifest) -> Verified {
    let url = &report.objects[0];
    let verified =
        landline::verify::verify(url, &VerifyOptions::default(), s3.env(), Some(manifest))
            .await
            .unwrap_or_else(|e| panic!("{}: landline verify {url}: {e}", s3.name));
    assert!(verified.compared_with_manifest);
    assert_eq!(verified.records, report.records, "{}", s3.name);
    assert_eq!(verified.size, report.bytes_written, "{}", s3.name);
    assert_eq!(report.sha256.as_deref(), Some(verified.sha256.as_str()));
    assert_eq!(verified.bytes_uncompressed, report.bytes_uncompressed);
    assert_eq!(verified.compression, report.compression, "{}", s3.name);
    assert_eq!(verified.gzip_members, 0, "{}", s3.name);
    verified
}

/// The manifest's account of the object `report` landed (`object`, its bytes): its format
/// (not gzip), size, parts, SHA-256 and records.
fn check_manifest(s3: &S3Server, manifest: &Manifest, report: &RunReport, object: &[u8]) {
    let facts = manifest.object.as_ref().expect("the object's facts");
    assert_eq!(facts.compression, report.compression, "{}", s3.name);
    assert_eq!(facts.gzip_members, 0, "{}: not gzip", s3.name);
    assert_eq!(facts.size, object.len() as u64, "{}", s3.name);
    assert_eq!(facts.parts, report.parts, "{}", s3.name);
    let sha256 = landline::sink::digest::hex(&Sha256::digest(object));
    assert_eq!(
        facts.sha256.as_deref(),
        Some(sha256.as_str()),
        "{}",
        s3.name
    );
    assert_eq!(manifest.records, report.records, "{}", s3.name);
}

/// A zstd frame of an object.
#[derive(Debug)]
struct Frame {
    /// Its compressed bytes.
    bytes: usize,
    /// The JSON Lines bytes its header says it holds (its content size).
    content: u64,
}

/// Walks the zstd frames of `object` one by one, without a streaming decoder: each must be a
/// zstd frame (no skippable ones), with its content size and checksum, decode on its own to
/// that size, end at a line end and hold a landline block ([`FRAME_CONTENT`], but the last).
/// Returns the frames and the JSON Lines they hold, one after another.
fn zstd_frames(object: &[u8]) -> (Vec<Frame>, Vec<u8>) {
    let mut frames: Vec<Frame> = Vec::new();
    let mut jsonl = Vec::new();
    let mut at = 0;
    while at < object.len() {
        let rest = &object[at..];
        let n = frames.len() + 1;
        assert!(
            rest.starts_with(&ZSTD_MAGIC),
            "frame {n} at byte {at}: no zstd magic number"
        );
        // The Frame_Header_Descriptor (RFC 8878, 3.1.1.1.1): bit 2 is Content_Checksum_flag.
        let descriptor = rest.get(4).copied().unwrap_or_default();
        assert!(descriptor & 0b100 != 0, "frame {n} has no checksum");
        let content = zstd::zstd_safe::get_frame_content_size(rest)
            .unwrap_or_else(|e| panic!("frame {n} at byte {at}: {e:?}"))
            .unwrap_or_else(|| panic!("frame {n} at byte {at} has no content size"));
        let len = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap_or_else(|e| {
            panic!(
                "frame {n} at byte {at}: {}",
                zstd::zstd_safe::get_error_name(e)
            )
        });
        let data = zstd::bulk::decompress(&rest[..len], content as usize)
            .unwrap_or_else(|e| panic!("frame {n} at byte {at} does not decode alone: {e}"));
        assert_eq!(data.len() as u64, content, "frame {n}");
        assert!(data.ends_with(b"\n"), "frame {n} ends inside a line");
        jsonl.extend_from_slice(&data);
        frames.push(Frame {
            bytes: len,
            content,
        });
        at += len;
    }
    if let Some((_, whole)) = frames.split_last() {
        for (i, frame) in whole.iter().enumerate() {
            assert!(
                FRAME_CONTENT.contains(&frame.content),
                "frame {} holds {} bytes of JSON Lines: {frames:?}",
                i + 1,
                frame.content
            );
        }
    }
    (frames, jsonl)
}

/// The zstd frames of `object` ([`zstd_frames`]) and its JSON Lines, which the zstd
/// crate's streaming decoder (reading frame after frame, as one stream) gives too.
fn unzstd(object: &[u8]) -> (Vec<Frame>, Vec<u8>) {
    let (frames, jsonl) = zstd_frames(object);
    let streamed = zstd::stream::decode_all(object).expect("zstd decodes");
    assert!(streamed == jsonl, "the stream differs from its frames");
    (frames, jsonl)
}

/// The JSON Lines of an object in `compression` (zstd by [`unzstd`]).
fn jsonl_of(compression: Compression, object: &[u8]) -> Vec<u8> {
    match compression {
        Compression::Zstd => unzstd(object).1,
        Compression::None => object.to_vec(),
        Compression::Gzip => crate::harness::gunzip(object),
    }
}

// ------------------------------------------------------------------------------ S3 HEAD --

/// The headers of the object at `key` on `s3`, which must exist.
async fn head(s3: &S3Server, key: &str) -> HeaderMap {
    s3.head_object(key)
        .await
        .unwrap_or_else(|| panic!("{}: no object at {key}", s3.name))
}

/// A header's value, if there is one.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("an ASCII header"))
}

// ------------------------------------------------------------------------------ readers --

/// Runs the `zstd` command-line tool; fails, saying how to get it, when it is not on `PATH`.
fn zstd_cli(args: &[&OsStr]) -> Output {
    match Command::new("zstd").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "the zstd command-line tool is not on PATH: the format tests read landed objects \
             with it. Install it (Debian, Ubuntu: `apt-get install zstd`, as .ci/run does; \
             macOS: `brew install zstd`)"
        ),
        Err(e) => panic!("running zstd: {e}"),
    }
}

/// Checks a zstd object at `path` with the `zstd` CLI: `zstd -t` passes, `zstd -lv` counts
/// `frames` frames with XXH64 checks and the size of `jsonl`, and `zstd -dc` writes exactly
/// `jsonl`.
fn check_with_zstd_cli(path: &Path, jsonl: &[u8], frames: usize) {
    let test = zstd_cli(&["-t".as_ref(), "-q".as_ref(), path.as_os_str()]);
    assert!(
        test.status.success(),
        "zstd -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let list = zstd_cli(&["-lv".as_ref(), path.as_os_str()]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "zstd -lv: {listed}");
    assert!(
        listed.contains(&format!("# Zstandard Frames: {frames}\n")),
        "{listed}"
    );
    assert!(listed.contains("Check: XXH64"), "{listed}");
    // Only when every frame says its content size does zstd know the whole size.
    assert!(
        listed.contains("Decompressed Size: ") && listed.contains(&format!("({} B)", jsonl.len())),
        "{listed}"
    );
    let decoded = zstd_cli(&["-dc".as_ref(), path.as_os_str()]);
    assert!(
        decoded.status.success(),
        "zstd -dc: {}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    assert_eq!(
        decoded.stdout.iter().filter(|&&b| b == b'\n').count(),
        jsonl.iter().filter(|&&b| b == b'\n').count(),
        "zstd -dc lines"
    );
    assert!(
        decoded.stdout == jsonl,
        "zstd -dc differs from the JSON Lines"
    );
}

/// `LANDLINE_TEST_PYTHON`, which has `zstandard`, `duckdb` and `pandas`.
fn python_exe() -> String {
    std::env::var("LANDLINE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "LANDLINE_TEST_PYTHON is not set: the format tests read landed objects with Python's \
             zstandard, duckdb and pandas, which scripts/test.sh installs into moto's \
             virtualenv and exports. Run them with `scripts/test.sh -E 'test(formats::)'`"
        )
    })
}

/// Runs `script` with `LANDLINE_TEST_PYTHON` on `path`; it prints one JSON value.
fn python(script: &str, path: &Path) -> Value {
    let python = python_exe();
    let output = Command::new(&python)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("ModuleNotFoundError") {
        panic!(
            "{python} lacks a reader: {stderr}\nscripts/test.sh installs zstandard, duckdb and \
             pandas into moto's virtualenv (a virtualenv from before them is rebuilt)"
        );
    }
    assert!(output.status.success(), "{python}: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{python} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// What the Python scripts say of the bytes they decode.
fn facts(bytes: &[u8]) -> Value {
    serde_json::json!({
        "bytes": bytes.len(),
        "lines": bytes.iter().filter(|&&b| b == b'\n').count(),
        "sha256": landline::sink::digest::hex(&Sha256::digest(bytes)),
    })
}

const PYTHON_FACTS: &str = "import hashlib\n\
    def facts(b):\n    \
        return {'bytes': len(b), 'lines': b.count(b'\\n'), 'sha256': hashlib.sha256(b).hexdigest()}\n";

/// Checks a zstd object at `path` with Python's `zstandard`, as its docs read multi-frame
/// data: `zstandard.open(path).read()` and `ZstdDecompressor().stream_reader(f).read()`
/// give exactly `jsonl`.
fn check_with_python_zstandard(path: &Path, jsonl: &[u8]) {
    let script = format!(
        "{PYTHON_FACTS}import json, sys, zstandard\n\
         with zstandard.open(sys.argv[1], 'rb') as f:\n    opened = f.read()\n\
         with open(sys.argv[1], 'rb') as f:\n    \
             streamed = zstandard.ZstdDecompressor().stream_reader(f).read()\n\
         print(json.dumps({{'open': facts(opened), 'stream_reader': facts(streamed)}}))\n"
    );
    let got = python(&script, path);
    let want = facts(jsonl);
    assert_eq!(got["open"], want, "zstandard.open(path).read()");
    assert_eq!(
        got["stream_reader"], want,
        "ZstdDecompressor().stream_reader(f).read()"
    );
}

/// Reads the JSON Lines object at `path` (zstd or plain, by its extension) with DuckDB's
/// `read_json_auto` and pandas' `read_json(lines=True)`, and checks that both find the
/// records `0..records` of the API, in order, by their ids.
fn check_with_duckdb_and_pandas(path: &Path, records: u64) {
    let script = "import json, sys\n\
        import duckdb, pandas\n\
        path = sys.argv[1]\n\
        table = \"read_json_auto('%s')\" % path.replace(\"'\", \"''\")\n\
        db = duckdb.connect()\n\
        count, total = db.execute('SELECT count(*), sum(id) FROM ' + table).fetchone()\n\
        ids = [row[0] for row in db.execute('SELECT id FROM ' + table).fetchall()]\n\
        frame = pandas.read_json(path, lines=True)\n\
        print(json.dumps({'duckdb': {'count': count, 'sum': int(total), 'ids': ids},\n\
                          'pandas': {'rows': len(frame), 'ids': [int(i) for i in frame['id']]}}))\n";
    let got = python(script, path);
    let ids: Vec<u64> = (0..records).map(|i| ID_BASE + i).collect();
    let sum: u64 = ids.iter().sum();
    assert_eq!(got["duckdb"]["count"], records, "DuckDB count(*)");
    assert_eq!(got["duckdb"]["sum"], sum, "DuckDB sum(id)");
    assert_eq!(got["duckdb"]["ids"], serde_json::json!(ids), "DuckDB ids");
    assert_eq!(got["pandas"]["rows"], records, "pandas rows");
    assert_eq!(got["pandas"]["ids"], serde_json::json!(ids), "pandas ids");
}

/// Writes `bytes` to `name` in `dir`.
fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("writing the object");
    path
}

// -------------------------------------------------------------------------------- tests --

/// Records of the zstd multipart test: the mock API's records compress 28 times at level 1,
/// so 11,500 records (310 MiB of JSON Lines, 11 MiB of zstd) make three 5 MiB parts.
const ZSTD_RECORDS: u64 = 11_500;
/// Records of the plain multipart tests: three 5 MiB parts and a bit.
const PLAIN_RECORDS: u64 = 650;

/// One run into `s3` of `records` of `data`, named `name`, its format checked end to end:
/// the report, the object's `Content-Type`, the records, the manifest and `landline verify`.
/// Returns the object, its JSON Lines, its zstd frames (none for other formats) and the
/// report.
async fn land_and_check(
    s3: &S3Server,
    api: &str,
    data: &DataConfig,
    name: &str,
    extra: &str,
    compression: Compression,
    content_type: &str,
) -> (Vec<u8>, Vec<u8>, Vec<Frame>, RunReport) {
    let prefix = s3.unique_prefix(&format!("formats-{compression}"));
    let text = pipeline_text(
        &Style::Token.source(api, 100),
        &sink(s3, &prefix, name, extra),
    );
    let report = run_on(&text, s3, RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
    let key = key(&prefix, name);
    assert_eq!(report.objects, [format!("s3://{}/{key}", s3.bucket)]);
    assert_eq!(report.compression, compression, "{}", s3.name);
    let headers = head(s3, &key).await;
    assert_eq!(
        header(&headers, "content-type"),
        Some(content_type),
        "{}: {headers:?}",
        s3.name
    );
    assert_eq!(
        header(&headers, "content-encoding"),
        None,
        "{}: {headers:?}",
        s3.name
    );
    let object = object(s3, &key).await;
    assert_eq!(object.len() as u64, report.bytes_written, "{}", s3.name);
    let (frames, jsonl) = match compression {
        Compression::Zstd => unzstd(&object),
        _ => (Vec::new(), jsonl_of(compression, &object)),
    };
    verify(&jsonl, data, &report, 97);
    let manifest = manifest_of(s3, &report).await;
    check_manifest(s3, &manifest, &report, &object);
    let verified = landline_verify(s3, &report, &manifest).await;
    assert_eq!(verified.zstd_frames, frames.len() as u64, "{}", s3.name);
    if s3.supports_list_multipart_uploads {
        assert!(s3.list_multipart_uploads(&prefix).await.is_empty());
    }
    (object, jsonl, frames, report)
}

/// A `.jsonl.zst` object lands in several parts on both servers as zstd frames of about
/// 1 MiB each (with content size and checksum, each decoding alone), `Content-Type:
/// application/zstd`, `compression = zstd` in the report and the manifest, and passes
/// `landline verify` against its manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zstd_object_lands_in_parts_as_frames_with_its_content_type() {
    let data = data(ZSTD_RECORDS);
    let server = mock(data.clone(), |_| {}).await;
    for s3 in s3::servers() {
        let (object, jsonl, frames, report) = land_and_check(
            &s3,
            &server.base_url(),
            &data,
            "variants.jsonl.zst",
            "compression_level = 1\n",
            Compression::Zstd,
            "application/zstd",
        )
        .await;
        let what = format!(
            "{}: {} parts, {} frames, {} bytes of JSON Lines in {} of zstd",
            s3.name,
            report.parts,
            frames.len(),
            jsonl.len(),
            object.len()
        );
        assert!(report.parts >= 3, "{what}");
        // About 1 MiB of JSON Lines a frame: some 300 frames.
        assert!(
            frames.len() as u64 >= report.bytes_uncompressed / (1024 * 1024),
            "{what}"
        );
        assert_eq!(frames.iter().map(|f| f.bytes).sum::<usize>(), object.len());
    }
    server.shutdown().await;
}

/// A `.jsonl` object lands in several parts on both servers as the JSON Lines themselves,
/// `Content-Type: application/x-ndjson`, `compression = none` in the report and the
/// manifest, and passes `landline verify` against its manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_object_lands_in_parts_as_json_lines_with_its_content_type() {
    let data = data(PLAIN_RECORDS);
    let server = mock(data.clone(), |_| {}).await;
    for s3 in s3::servers() {
        let (object, jsonl, frames, report) = land_and_check(
            &s3,
            &server.base_url(),
            &data,
            "variants.jsonl",
            "",
            Compression::None,
            "application/x-ndjson",
        )
        .await;
        assert!(report.parts >= 3, "{}: {} parts", s3.name, report.parts);
        assert!(object == jsonl);
        assert!(frames.is_empty());
        assert_eq!(report.bytes_written, report.bytes_uncompressed);
    }
    server.shutdown().await;
}

/// With `[sink] content_encoding = true`, objects are stored as encoded JSON Lines:
/// `Content-Type: application/x-ndjson` with `Content-Encoding: zstd` (or `gzip`); plain
/// JSON Lines get no encoding. Both moto and s3s-fs keep the two headers of the multipart
/// upload and serve them on `HEAD`, and store the bytes as written (neither decodes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_encoding_stores_encoded_json_lines() {
    let data = data(120);
    let server = mock(data.clone(), |_| {}).await;
    let cases = [
        ("variants.jsonl.zst", Compression::Zstd),
        ("variants.jsonl.gz", Compression::Gzip),
        ("variants.jsonl", Compression::None),
    ];
    for s3 in s3::servers() {
        for (name, compression) in cases {
            let prefix = s3.unique_prefix("formats-content-encoding");
            let text = pipeline_text(
                &Style::Token.source(&server.base_url(), 50),
                &sink(&s3, &prefix, name, "content_encoding = true\n"),
            );
            let report = run_on(&text, &s3, RunOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
            assert_eq!(report.compression, compression);
            let key = key(&prefix, name);
            let headers = head(&s3, &key).await;
            let what = format!("{}, {compression}: {headers:?}", s3.name);
            assert_eq!(
                header(&headers, "content-type"),
                Some("application/x-ndjson"),
                "{what}"
            );
            assert_eq!(
                header(&headers, "content-encoding"),
                compression.content_encoding(),
                "{what}"
            );
            let object = object(&s3, &key).await;
            assert_eq!(object.len() as u64, report.bytes_written, "{what}");
            verify(&jsonl_of(compression, &object), &data, &report, 1);
            let manifest = manifest_of(&s3, &report).await;
            assert_eq!(
                manifest.object.as_ref().map(|o| o.compression),
                Some(compression)
            );
            landline::verify::verify(
                &report.objects[0],
                &VerifyOptions::default(),
                s3.env(),
                Some(&manifest),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
    server.shutdown().await;
}

/// Records of the readers' object: about 10 MiB of JSON Lines, ten frames.
const READER_RECORDS: u64 = 360;

/// Lands the records of `data` as `name` on s3s-fs (in the format its extension names) and
/// downloads the object to `dir`.
async fn land_for_readers(
    data: &DataConfig,
    name: &str,
    dir: &tempfile::TempDir,
) -> (std::path::PathBuf, Vec<u8>, RunReport) {
    let server = mock(data.clone(), |_| {}).await;
    let s3 = s3::s3s();
    let prefix = s3.unique_prefix("formats-readers");
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 40),
        &sink(&s3, &prefix, name, ""),
    );
    let report = run_on(&text, &s3, RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
    server.shutdown().await;
    let object = object(&s3, &key(&prefix, name)).await;
    (file(dir, name, &object), object, report)
}

/// A landed multi-frame zstd object, downloaded, is read whole by the `zstd` CLI (`-t`,
/// `-lv`, `-dc`), by Python's `zstandard` (`open`, `stream_reader`), by DuckDB's
/// `read_json_auto` and by pandas' `read_json(lines=True)`: every record, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multi_frame_zstd_object_is_read_whole_by_the_zstd_cli_python_duckdb_and_pandas() {
    let data = data(READER_RECORDS);
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, object, report) = land_for_readers(&data, "variants.jsonl.zst", &dir).await;
    let (frames, jsonl) = unzstd(&object);
    verify(&jsonl, &data, &report, 1);
    assert!(frames.len() >= 5, "{} frames", frames.len());
    check_with_zstd_cli(&path, &jsonl, frames.len());
    check_with_python_zstandard(&path, &jsonl);
    check_with_duckdb_and_pandas(&path, READER_RECORDS);
}

/// A landed `.jsonl` object, downloaded, is read by DuckDB and pandas: every record, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_object_is_read_by_duckdb_and_pandas() {
    let data = data(READER_RECORDS);
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, object, report) = land_for_readers(&data, "variants.jsonl", &dir).await;
    assert_eq!(report.compression, Compression::None);
    verify(&object, &data, &report, 1);
    check_with_duckdb_and_pandas(&path, READER_RECORDS);
}

/// Python `zstandard`'s one-shot `ZstdDecompressor().decompress(data)` reads the FIRST frame
/// only (and refuses `read_across_frames=True`, "not yet implemented"): on a landline zstd
/// object it returns the first frame's JSON Lines and silently drops the rest. This is the
/// README's warning; the day `zstandard` reads across frames, this test says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_zstandard_one_shot_decompress_reads_only_the_first_frame() {
    let data = data(READER_RECORDS);
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, object, _) = land_for_readers(&data, "variants.jsonl.zst", &dir).await;
    let (frames, jsonl) = zstd_frames(&object);
    assert!(frames.len() > 1, "{} frames", frames.len());
    let first = &jsonl[..frames[0].content as usize];
    let script = format!(
        "{PYTHON_FACTS}import json, sys, zstandard\n\
         data = open(sys.argv[1], 'rb').read()\n\
         one_shot = zstandard.ZstdDecompressor().decompress(data)\n\
         try:\n    \
             zstandard.ZstdDecompressor().decompress(data, read_across_frames=True)\n    \
             across = None\n\
         except zstandard.ZstdError as e:\n    \
             across = str(e)\n\
         print(json.dumps({{'one_shot': facts(one_shot), 'read_across_frames': across}}))\n"
    );
    let got = python(&script, &path);
    assert_eq!(
        got["one_shot"],
        facts(first),
        "decompress(data): the first frame"
    );
    assert_ne!(got["one_shot"], facts(&jsonl));
    let across = got["read_across_frames"].as_str().unwrap_or_default();
    assert!(across.contains("not yet implemented"), "{got}");
}

/// Records of the resumed zstd run: three 5 MiB parts at level 1 (12 MiB), so three
/// processes, one part uploading at a time, each process stopping at its first checkpoint.
const RESUMED_ZSTD_RECORDS: u64 = 12_500;
/// Uncompressed: four 5 MiB parts and a bit, so five processes.
const RESUMED_PLAIN_RECORDS: u64 = 800;

/// A run cut into processes by its time limit (`max_duration`), each resuming from the
/// last one's checkpoint, lands the object of an uncut run in `compression`: every record
/// once, in order, readable by `landline verify` (and, for zstd, by the `zstd` CLI and
/// Python, in several frames, each process's frames starting where the last one's ended).
/// One part uploads at a time (`max_parts_in_flight = 1`), so that a process stops after
/// one part (with two in flight, a checkpoint may cover both), and the API holds the last
/// page back for 2 s, so that no process that has a checkpoint to stop at gets to the end
/// of the data first.
async fn resumed_run_lands_every_record(
    name: &str,
    extra: &str,
    records: u64,
    page: u64,
    compression: Compression,
) {
    let data = data(records);
    let server = mock(data.clone(), |c| {
        c.faults.rules = vec![Fault::new(
            When::Page(records.div_ceil(page)),
            Action::Delay(Duration::from_secs(2)),
            Times::Forever,
        )];
    })
    .await;
    let s3 = s3::moto();
    let prefix = s3.unique_prefix(&format!("formats-resumed-{compression}"));
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), page),
        &sink(
            &s3,
            &prefix,
            name,
            &format!("max_parts_in_flight = 1\n{extra}"),
        ),
    );
    let (report, processes) = run_in_processes(&text, &s3).await;
    assert!(
        processes >= 3,
        "{compression}: {processes} processes for {} parts",
        report.parts
    );
    assert_eq!(report.compression, compression);
    let object = object(&s3, &key(&prefix, name)).await;
    assert_eq!(object.len() as u64, report.bytes_written);
    let (frames, jsonl) = match compression {
        Compression::Zstd => unzstd(&object),
        _ => (Vec::new(), jsonl_of(compression, &object)),
    };
    verify(&jsonl, &data, &report, 7);
    let manifest = manifest_of(&s3, &report).await;
    check_manifest(&s3, &manifest, &report, &object);
    let verified = landline_verify(&s3, &report, &manifest).await;
    assert_eq!(verified.zstd_frames, frames.len() as u64);
    if compression == Compression::Zstd {
        assert!(frames.len() > 1, "{} frames", frames.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(&dir, name, &object);
        check_with_zstd_cli(&path, &jsonl, frames.len());
        check_with_python_zstandard(&path, &jsonl);
    }
    assert!(s3.list_multipart_uploads(&prefix).await.is_empty());
    let mut state = s3.list_keys(&format!("{prefix}/_landline")).await;
    state.retain(|key| !key.contains("/_landline/manifests/"));
    assert!(state.is_empty(), "checkpoints left: {state:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zstd_run_cut_into_processes_resumes_to_every_record_in_frames() {
    resumed_run_lands_every_record(
        "variants.jsonl.zst",
        "compression_level = 1\n",
        RESUMED_ZSTD_RECORDS,
        100,
        Compression::Zstd,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_run_cut_into_processes_resumes_to_every_record() {
    resumed_run_lands_every_record(
        "variants.jsonl",
        "",
        RESUMED_PLAIN_RECORDS,
        20,
        Compression::None,
    )
    .await;
}

/// A key whose extension names no format (`.csv`) is refused, naming `sink.url`, unless
/// `[sink] compression` names one: then the same key lands a zstd object. A destination
/// that only the run's own variables make unknown is refused when the run starts, before
/// anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_extension_is_refused_unless_compression_names_the_format() {
    let data = data(200);
    let server = mock(data.clone(), |_| {}).await;
    let s3 = s3::moto();
    let prefix = s3.unique_prefix("formats-csv");
    let source = Style::Token.source(&server.base_url(), 50);
    let refused = pipeline_text(&source, &sink(&s3, &prefix, "variants.csv", ""));
    let err = PipelineFile::parse(&refused, "test.toml")
        .and_then(|f| f.validate(&|_| None))
        .expect_err("a .csv key without [sink] compression");
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "sink.url"),
        "{err}"
    );
    assert!(err.to_string().contains("[sink] compression"), "{err}");

    // The extension of the run's own destination decides: refused when the run starts.
    let by_var = format!(
        "[vars]\nobject = \"variants.jsonl.zst\"\n{}",
        pipeline_text(&source, &sink(&s3, &prefix, "{object}", ""))
    );
    let options = RunOptions {
        vars: [("object".to_owned(), "variants.csv".to_owned())].into(),
        ..RunOptions::default()
    };
    let err = run_on(&by_var, &s3, options)
        .await
        .expect_err("a .csv destination without [sink] compression");
    assert!(
        matches!(&err, RunError::Config(ConfigError::Invalid { key, .. }) if key == "sink.url"),
        "{err}"
    );
    assert!(err.to_string().contains("variants.csv"), "{err}");
    assert!(
        s3.list_keys(&prefix).await.is_empty(),
        "{:?}",
        s3.list_keys(&prefix).await
    );
    assert!(s3.list_multipart_uploads(&prefix).await.is_empty());

    let named = pipeline_text(
        &source,
        &sink(&s3, &prefix, "variants.csv", "compression = \"zstd\"\n"),
    );
    let report = run_on(&named, &s3, RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.compression, Compression::Zstd);
    let key = key(&prefix, "variants.csv");
    let headers = head(&s3, &key).await;
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/zstd"),
        "{headers:?}"
    );
    let object = object(&s3, &key).await;
    assert!(object.starts_with(&ZSTD_MAGIC));
    verify(&jsonl_of(Compression::Zstd, &object), &data, &report, 1);
    let manifest = manifest_of(&s3, &report).await;
    check_manifest(&s3, &manifest, &report, &object);
    landline_verify(&s3, &report, &manifest).await;
    server.shutdown().await;
}
