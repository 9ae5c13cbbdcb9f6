//! Manifests and the drift alarm against the real S3 servers: the manifest lands in the state
//! location with the object's size and SHA-256 (checked against the object's own bytes) and
//! the field inventory (checked against its lines), and the next day's run compares itself
//! with it: quiet for the same data, loud for the incident (the same count, records 1.5×
//! wider, new fields).

use std::collections::BTreeMap;
use std::time::Duration;

use landline::drift::DriftChange;
use landline::manifest::Manifest;
use landline::{RunOptions, RunReport};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::harness::{INGEST_DATE, Style, data, gunzip, mock, pipeline, pipeline_text};
use crate::s3::{self, S3Server};

/// Per field: records, JSON types, total bytes and widest value, worked out from the lines.
type Inventory = BTreeMap<String, (u64, Vec<&'static str>, u64, u64)>;

fn inventory_of(jsonl: &[u8]) -> Inventory {
    let mut found: BTreeMap<String, (u64, u8, u64, u64)> = BTreeMap::new();
    for line in jsonl.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let entries: BTreeMap<String, &RawValue> = serde_json::from_slice(line).expect("a line");
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
            let e = found.entry(key).or_default();
            e.0 += 1;
            e.1 |= bit;
            e.2 += width;
            e.3 = e.3.max(width);
        }
    }
    let names = ["object", "array", "string", "number", "boolean", "null"];
    found
        .into_iter()
        .map(|(k, (n, bits, total, max))| {
            let types = (0..6).filter(|i| bits & (1 << i) != 0).map(|i| names[i]);
            (k, (n, types.collect(), total, max))
        })
        .collect()
}

fn inventory_in(manifest: &Manifest) -> Inventory {
    let fields = manifest
        .fields
        .as_ref()
        .expect("the manifest has the fields");
    fields
        .fields()
        .iter()
        .map(|f| {
            let types = f.type_names();
            (
                f.name.clone(),
                (f.records, types, f.total_bytes, f.largest_bytes),
            )
        })
        .collect()
}

/// The `[sink]` and `[state]` of a run into `prefix`; `state` adds to `[state]`.
fn sink(s3: &S3Server, prefix: &str, sink: &str, state: &str) -> String {
    format!(
        "url = \"s3://{b}/{prefix}/date={{ingest_date}}/variants.jsonl.gz\"\n{sink}\
         [state]\nurl = \"s3://{b}/{prefix}/_landline/\"\n{state}",
        b = s3.bucket
    )
}

async fn run_on(text: &str, s3: &S3Server, date: &str, options: RunOptions) -> RunReport {
    let options = RunOptions {
        ingest_date: Some(date.parse().expect("date")),
        store_env: s3.env().into(),
        ..options
    };
    landline::run(&pipeline(text), options, std::future::pending())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name))
}

async fn manifest_at(s3: &S3Server, prefix: &str, date: &str) -> (Vec<u8>, Manifest) {
    let key = format!("{prefix}/_landline/manifests/test/{date}.json");
    let bytes = s3
        .get_object(&key)
        .await
        .unwrap_or_else(|| panic!("{}: no manifest at {key}", s3.name));
    let manifest = landline::manifest::parse(&bytes, &key).expect("a manifest");
    (bytes, manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_leaves_a_manifest_with_the_objects_sha256_and_its_fields() {
    let data = data(900);
    let server = mock(data.clone(), |_| {}).await;
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("manifest");
        let text = pipeline_text(
            &Style::Token.source(&server.base_url(), 50),
            &sink(&s3, &prefix, "", ""),
        );
        let report = run_on(&text, &s3, INGEST_DATE, RunOptions::default()).await;
        let object = s3
            .get_object(&format!("{prefix}/date={INGEST_DATE}/variants.jsonl.gz"))
            .await
            .expect("the object");
        let sha256 = landline::sink::digest::hex(&Sha256::digest(&object));
        assert_eq!(
            report.sha256.as_deref(),
            Some(sha256.as_str()),
            "{}",
            s3.name
        );
        let (raw, manifest) = manifest_at(&s3, &prefix, INGEST_DATE).await;
        assert!(
            report
                .manifest
                .as_deref()
                .is_some_and(|m| m.ends_with(&format!(
                    "{prefix}/_landline/manifests/test/{INGEST_DATE}.json"
                ))),
            "{:?}",
            report.manifest
        );
        let facts = manifest.object.as_ref().expect("the object's facts");
        assert_eq!(facts.sha256.as_deref(), Some(sha256.as_str()));
        assert_eq!(facts.size, object.len() as u64);
        assert_eq!(facts.gzip_members, 1);
        assert_eq!(facts.e_tag, report.e_tag);
        assert_eq!(manifest.records, 900);
        assert_eq!(manifest.pipeline, "test");
        assert_eq!(manifest.ingest_date, INGEST_DATE);
        assert_eq!(manifest.landline_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(manifest.report["records"], 900);
        assert!(manifest.drift.is_none(), "no earlier run to compare with");
        let jsonl = gunzip(&object);
        assert_eq!(inventory_in(&manifest), inventory_of(&jsonl), "{}", s3.name);
        // Added and normalised fields are counted as written.
        let fields = manifest.fields.as_ref().expect("fields");
        assert_eq!(
            fields.field("ingest_date").expect("ingest_date").records,
            900
        );
        assert_eq!(
            fields.field("created_at").expect("created_at").type_names(),
            ["string"]
        );
        // The manifest is the only state left, and it holds no secret of the store.
        let state = s3.list_keys(&format!("{prefix}/_landline")).await;
        assert_eq!(state.len(), 1, "{}: {state:?}", s3.name);
        let text = String::from_utf8_lossy(&raw);
        for (name, value) in s3.env() {
            if name.contains("SECRET") {
                assert!(
                    !text.contains(&value),
                    "{}: a secret in the manifest",
                    s3.name
                );
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_run_hashes_and_counts_the_whole_object() {
    let data = data(1_200);
    let server = mock(data.clone(), |_| {}).await;
    let moto = s3::moto();
    let prefix = moto.unique_prefix("manifest-resumed");
    // Stored gzip, 20 records a page: several parts, each a checkpoint to stop at.
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 20),
        &sink(&moto, &prefix, "compression_level = 0\n", ""),
    );
    let limit = || RunOptions {
        max_duration: Some(Duration::from_millis(1)),
        ..RunOptions::default()
    };
    let mut report = run_on(&text, &moto, INGEST_DATE, limit()).await;
    let mut processes = 1;
    while report.status == landline::report::RunStatus::Continue {
        let url = report.checkpoint.clone().expect("a checkpoint");
        let cp = landline::pipeline::read_checkpoint(&url, &Default::default(), moto.env())
            .await
            .expect("read")
            .expect("the checkpoint exists");
        assert!(
            cp.upload.sha256.is_some(),
            "the hash state is in the checkpoint"
        );
        assert!(
            cp.fields.is_some() || cp.counters.records == 0,
            "and the fields"
        );
        let options = RunOptions {
            resume: Some(cp),
            ..limit()
        };
        report = run_on(&text, &moto, INGEST_DATE, options).await;
        processes += 1;
        assert!(processes < 100, "no end in sight");
    }
    assert!(processes >= 3, "{processes} processes");
    let object = moto
        .get_object(&format!("{prefix}/date={INGEST_DATE}/variants.jsonl.gz"))
        .await
        .expect("the object");
    let sha256 = landline::sink::digest::hex(&Sha256::digest(&object));
    assert_eq!(report.sha256.as_deref(), Some(sha256.as_str()));
    let (_, manifest) = manifest_at(&moto, &prefix, INGEST_DATE).await;
    assert_eq!(manifest.object.expect("object").sha256, Some(sha256));
    assert_eq!(manifest.records, 1_200);
    let jsonl = gunzip(&object);
    let (_, manifest) = manifest_at(&moto, &prefix, INGEST_DATE).await;
    assert_eq!(inventory_in(&manifest), inventory_of(&jsonl));
    server.shutdown().await;
}

/// The day before [`INGEST_DATE`].
const DAY_ONE: &str = "2026-11-24";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_day_records_get_wider_and_gain_fields_is_drift_and_a_quiet_day_is_not() {
    let day_one = data(600);
    let day_two = landline_mockapi::DataConfig {
        target_bytes: day_one.target_bytes * 3 / 2,
        extra_fields: 2,
        ..day_one.clone()
    };
    let first = mock(day_one.clone(), |_| {}).await;
    let second = mock(day_two, |_| {}).await;
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("drift");
        let text =
            |api: &str| pipeline_text(&Style::Token.source(api, 100), &sink(&s3, &prefix, "", ""));
        let report = run_on(
            &text(&first.base_url()),
            &s3,
            DAY_ONE,
            RunOptions::default(),
        )
        .await;
        assert!(report.drift.is_none());
        // The same data the next day: compared, no drift.
        let quiet = run_on(
            &text(&first.base_url()),
            &s3,
            INGEST_DATE,
            RunOptions::default(),
        )
        .await;
        let drift = quiet.drift.as_ref().expect("compared with day one");
        assert_eq!(drift.previous_ingest_date, DAY_ONE);
        assert!(drift.changes.is_empty(), "{}: {:?}", s3.name, drift.changes);
        assert!(
            quiet
                .to_string()
                .contains("no drift since the run of 2026-11-24")
        );
        // The incident, as a rerun of the same date: still compared with day one.
        let loud = run_on(
            &text(&second.base_url()),
            &s3,
            INGEST_DATE,
            RunOptions::default(),
        )
        .await;
        assert_eq!(loud.records, report.records, "the same count");
        let drift = loud.drift.as_ref().expect("compared with day one");
        assert_eq!(drift.previous_ingest_date, DAY_ONE);
        let changes = &drift.changes;
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, DriftChange::Records { .. })),
            "{changes:?}"
        );
        let wider = changes.iter().find_map(|c| match c {
            DriftChange::RecordWidth { before, after } => Some(after / before),
            _ => None,
        });
        assert!(
            wider.is_some_and(|r| (1.4..1.6).contains(&r)),
            "{}: {changes:?}",
            s3.name
        );
        for extra in ["extra_1", "extra_2"] {
            assert!(
                changes.iter().any(
                    |c| matches!(c, DriftChange::FieldAdded { field, records: 600, .. } if field == extra)
                ),
                "{}: {extra} in {changes:?}",
                s3.name
            );
        }
        let text = loud.to_string();
        assert!(text.contains("DRIFT since the run of 2026-11-24"), "{text}");
        assert!(
            text.contains("new field \"extra_1\" (object) in 600 records"),
            "{text}"
        );
        // The manifest of the drifted run says so too, and the object landed.
        let (_, manifest) = manifest_at(&s3, &prefix, INGEST_DATE).await;
        assert_eq!(manifest.drift.as_ref(), loud.drift.as_ref());
        assert!(manifest.object.is_some());
    }
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifests_can_be_switched_off() {
    let server = mock(data(100), |_| {}).await;
    let s3 = s3::s3s();
    let prefix = s3.unique_prefix("no-manifest");
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 50),
        &sink(&s3, &prefix, "", "manifests = false\n"),
    );
    let report = run_on(&text, &s3, INGEST_DATE, RunOptions::default()).await;
    assert!(report.manifest.is_none());
    assert!(
        report.sha256.is_some(),
        "the object's hash is reported all the same"
    );
    assert!(
        s3.list_keys(&format!("{prefix}/_landline"))
            .await
            .is_empty()
    );
    server.shutdown().await;
}
