//! Google Cloud Storage through object_store's GCS client, against GCS's XML API as a
//! second moto serves it (`scripts/test.sh` starts it without authentication).
//!
//! GCS's XML API is S3's protocol: a multipart upload is `POST ?uploads`, a part
//! `PUT ?partNumber&uploadId`, the completion `POST ?uploadId`, an abort `DELETE ?uploadId`,
//! and a listing `GET ?list-type=2`; object_store's GCS client makes exactly these calls.
//! No GCS emulator that installs from the package registries implements them (see the
//! README's *Object storage*), so these tests run the client against an S3 server. landline
//! is configured the standard way: `GOOGLE_SERVICE_ACCOUNT` names a service-account key file
//! (made by `scripts/test.sh`, whose `gcs_base_url` is that server), with which the client
//! signs its own bearer token (a JWT, sent but not checked here). What landed is read back
//! with S3 requests.
//!
//! What this does not cover: GCS's own authentication, its preconditions
//! (`x-goog-if-generation-match`, which the incremental lock would use) and its ETags.

use std::time::Duration;

use landline::compress::Compression;
use landline::report::RunStatus;
use landline::verify::VerifyOptions;
use landline::{RunOptions, RunReport};
use landline_mockapi::{Action, DataConfig, Fault, Times, When};

use crate::harness::{
    IN_PARTS, Style, TestStore, data, gunzip, key, land_in_parts, mock, pipeline_text, run_on,
    sink, verify,
};
use crate::s3::S3Server;

/// The GCS XML API `scripts/test.sh` serves, and the S3 client that reads it back.
struct Gcs {
    /// The same server as S3, for the tests' own reads (it takes any signature).
    s3: S3Server,
    /// The service-account key file `GOOGLE_SERVICE_ACCOUNT` names.
    service_account: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the GCS tests need the server for GCS's XML API that \
             scripts/test.sh starts. Run them with `scripts/test.sh -E 'test(gcs::)'`, or \
             with `scripts/test.sh --servers-only -- cargo test -p landline --test it gcs::`"
        )
    })
}

fn gcs() -> Gcs {
    let endpoint = var("LANDLINE_TEST_GCS_ENDPOINT");
    Gcs {
        s3: S3Server {
            name: "moto (GCS XML API)",
            endpoint: endpoint
                .parse()
                .unwrap_or_else(|e| panic!("bad GCS endpoint {endpoint:?}: {e}")),
            access_key_id: "unused".into(),
            secret_access_key: "unused".into(),
            region: var("LANDLINE_TEST_REGION"),
            bucket: var("LANDLINE_TEST_GCS_BUCKET"),
            supports_list_multipart_uploads: true,
        },
        service_account: var("LANDLINE_TEST_GCS_SERVICE_ACCOUNT"),
    }
}

impl TestStore for Gcs {
    fn root(&self) -> String {
        format!("gs://{}", self.s3.bucket)
    }
    /// `GOOGLE_SERVICE_ACCOUNT` (the key file) and `GOOGLE_ALLOW_HTTP=true` (object_store
    /// wants it for `http://`): nothing else, the key file names the server.
    fn store_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "GOOGLE_SERVICE_ACCOUNT".to_owned(),
                self.service_account.clone(),
            ),
            ("GOOGLE_ALLOW_HTTP".to_owned(), "true".to_owned()),
        ]
    }
}

impl Gcs {
    fn url(&self, key: &str) -> String {
        format!("gs://{}/{key}", self.s3.bucket)
    }

    /// What is left under `prefix`: the objects, besides manifests, and the open uploads.
    async fn left(&self, prefix: &str) -> (Vec<String>, Vec<(String, String)>) {
        let mut objects = self.s3.list_keys(prefix).await;
        objects.retain(|k| !k.contains("/_landline/manifests/"));
        (objects, self.s3.list_multipart_uploads(prefix).await)
    }

    /// Checks the object `report` landed at `key`: the report's bytes, the records the API
    /// served, the format's Content-Type, a manifest that describes it and `landline verify`
    /// against it, and nothing else under `prefix` (no checkpoint, no upload).
    async fn check_landed(
        &self,
        prefix: &str,
        key: &str,
        data: &DataConfig,
        report: &RunReport,
        compression: Compression,
    ) {
        assert_eq!(report.objects, [self.url(key)]);
        let object = self
            .s3
            .get_object(key)
            .await
            .unwrap_or_else(|| panic!("no object at {key}"));
        assert_eq!(object.len() as u64, report.bytes_written, "{key}");
        let jsonl = match compression {
            Compression::Gzip => gunzip(&object),
            Compression::Zstd => zstd::stream::decode_all(&object[..]).expect("zstd decodes"),
            Compression::None => object.clone(),
        };
        verify(&jsonl, data, report, 97);
        let head = self.s3.head_object(key).await.expect("the object");
        assert_eq!(
            head.get("content-type").and_then(|v| v.to_str().ok()),
            Some(compression.content_type())
        );

        let manifest_url = report.manifest.as_deref().expect("a manifest");
        assert!(
            manifest_url.starts_with(&self.url(&format!("{prefix}/_landline/manifests/"))),
            "{manifest_url}"
        );
        let env = self.store_env();
        let manifest = landline::manifest::read(manifest_url, &Default::default(), env.clone())
            .await
            .unwrap_or_else(|e| panic!("reading {manifest_url}: {e}"))
            .unwrap_or_else(|| panic!("no manifest at {manifest_url}"));
        assert_eq!(manifest.records, data.total);
        let verified = landline::verify::verify(
            &report.objects[0],
            &VerifyOptions::default(),
            env,
            Some(&manifest),
        )
        .await
        .unwrap_or_else(|e| panic!("landline verify {}: {e}", report.objects[0]));
        assert!(verified.compared_with_manifest);
        assert_eq!(verified.records, data.total);
        assert_eq!(report.sha256.as_deref(), Some(verified.sha256.as_str()));
        assert_eq!(self.left(prefix).await, (vec![key.to_owned()], vec![]));
    }
}

/// A gzip run and a zstd run each land an object of several parts through GCS's XML
/// multipart upload: every record as the API served it, the format's Content-Type, the
/// manifest beside it, `landline verify` passing, no checkpoint and no upload left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_gzip_and_zstd_objects_land_in_parts_and_verify() {
    let gcs = gcs();
    for case in IN_PARTS {
        let (compression, name, ..) = case;
        let prefix = gcs.s3.unique_prefix("gcs-formats");
        let (data, report) = land_in_parts(&gcs, &prefix, case).await;
        gcs.check_landed(&prefix, &key(&prefix, name), &data, &report, compression)
            .await;
    }
}

/// The API fails for good at page 40, after several parts were uploaded: the run fails
/// naming the page, and its upload is aborted (`DELETE ?uploadId`): no object, no upload
/// and no checkpoint are left under the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_run_failing_midway_aborts_its_upload() {
    let gcs = gcs();
    let server = mock(data(1_500), |c| {
        c.faults.rules = vec![Fault::new(
            When::Page(40),
            Action::status(400),
            Times::Forever,
        )];
    })
    .await;
    let prefix = gcs.s3.unique_prefix("gcs-fails");
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 20),
        &sink(
            &gcs,
            &prefix,
            "variants.jsonl.gz",
            "compression_level = 0\n",
        ),
    );
    let err = run_on(&text, &gcs, RunOptions::default())
        .await
        .expect_err("the run must fail");
    assert!(err.to_string().contains("page 40"), "{err}");
    assert_eq!(gcs.left(&prefix).await, (vec![], vec![]), "after {err}");
    server.shutdown().await;
}

/// A run cut by a time limit into processes, each continuing the same multipart upload from
/// the checkpoint the one before it left in the bucket: one object with every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_run_cut_into_processes_resumes_to_the_same_object() {
    let gcs = gcs();
    let data = data(1_500);
    let server = mock(data.clone(), |_| {}).await;
    let prefix = gcs.s3.unique_prefix("gcs-resume");
    let name = "variants.jsonl.gz";
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 20),
        &sink(&gcs, &prefix, name, "compression_level = 0\n"),
    );
    let limit = || RunOptions {
        max_duration: Some(Duration::from_millis(1)),
        ..RunOptions::default()
    };
    let mut report = run_on(&text, &gcs, limit()).await.expect("process 1");
    let mut processes = 1;
    while report.status == RunStatus::Continue {
        let url = report.checkpoint.clone().expect("a checkpoint");
        let cp = landline::pipeline::read_checkpoint(&url, &Default::default(), gcs.store_env())
            .await
            .expect("reading the checkpoint")
            .expect("the checkpoint exists");
        assert!(!cp.upload.upload_id.is_empty(), "{:?}", cp.upload);
        let options = RunOptions {
            resume: Some(cp),
            ..limit()
        };
        report = run_on(&text, &gcs, options)
            .await
            .unwrap_or_else(|e| panic!("process {}: {e}", processes + 1));
        processes += 1;
        assert!(processes < 100, "no end in sight");
    }
    assert!(processes >= 3, "{processes} processes");
    gcs.check_landed(
        &prefix,
        &key(&prefix, name),
        &data,
        &report,
        Compression::Gzip,
    )
    .await;
    server.shutdown().await;
}
