//! The object stores other than S3, against local emulators that `scripts/test.sh` starts.
//!
//! - **Azure Blob Storage**: Azurite's blob service (npm `azurite`), which checks every
//!   request's Shared Key signature. landline is given the account, its key and the
//!   endpoint the standard way, as `AZURE_STORAGE_*` variables in its store environment;
//!   what it wrote is read back here with requests of our own, signed with the same key.
//!   Objects land through object_store's block lists (a part is a Put Block, the completion
//!   a Put Block List); an abort is a no-op there, and the blocks of an upload never
//!   completed stay uncommitted, out of every listing, until the service drops them.
//! - **Google Cloud Storage** has no emulator here (none that installs from the package
//!   registries implements the XML API calls object_store's GCS client makes); `gcs.rs`
//!   runs that client against GCS's XML API as an S3 server serves it.
//!
//! A test that finds no emulator fails, saying how to start one; it never skips.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit as _, Mac as _};
use landline::compress::Compression;
use landline::report::RunStatus;
use landline::verify::VerifyOptions;
use landline::{RunOptions, RunReport};
use landline_mockapi::{Action, DataConfig, Fault, Times, When};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use sha2::Sha256;
use url::Url;

use crate::harness::{
    IN_PARTS, PART, Style, TestStore, data, gunzip, key, land_in_parts, mock, pipeline_text,
    run_on, sink, verify,
};

// ------------------------------------------------------------------------------ Azurite --

/// The Azurite blob service `scripts/test.sh` starts, with its account and the container
/// every test shares (each under its own [`unique_prefix`]).
#[derive(Debug, Clone)]
struct Azurite {
    /// The account's URL, path-style as Azurite serves it: `http://127.0.0.1:PORT/ACCOUNT`.
    endpoint: Url,
    account: String,
    /// The account key, base64 as Azure prints it.
    key: String,
    container: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the Azure tests need the Azurite blob service that \
             scripts/test.sh installs (npm azurite) and starts. Run them with \
             `scripts/test.sh -E 'test(stores::)'`, or with \
             `scripts/test.sh --servers-only -- cargo test -p landline --test it stores::`"
        )
    })
}

impl TestStore for Azurite {
    fn root(&self) -> String {
        format!("az://{}", self.container)
    }
    fn store_env(&self) -> Vec<(String, String)> {
        self.env()
    }
}

fn azurite() -> Azurite {
    let endpoint = var("LANDLINE_TEST_AZURITE_ENDPOINT");
    Azurite {
        endpoint: endpoint
            .parse()
            .unwrap_or_else(|e| panic!("bad Azurite endpoint {endpoint:?}: {e}")),
        account: var("LANDLINE_TEST_AZURITE_ACCOUNT"),
        key: var("LANDLINE_TEST_AZURITE_KEY"),
        container: var("LANDLINE_TEST_AZURITE_CONTAINER"),
    }
}

/// A key prefix no other test (or run) uses: `test` and 16 random hex digits.
fn unique_prefix(test: &str) -> String {
    format!("{test}-{:016x}", rand::random::<u64>())
}

/// The answer to a request: its status, headers and body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Azurite {
    /// What a landline process needs to reach the container the standard way:
    /// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_ENDPOINT` (the
    /// account's URL) and `AZURE_ALLOW_HTTP=true` (object_store wants it for `http://`).
    fn env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_STORAGE_ACCOUNT_NAME", self.account.as_str()),
            ("AZURE_STORAGE_ACCOUNT_KEY", self.key.as_str()),
            (
                "AZURE_STORAGE_ENDPOINT",
                self.endpoint.as_str().trim_end_matches('/'),
            ),
            ("AZURE_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `az://CONTAINER/key`.
    fn url(&self, key: &str) -> String {
        format!("az://{}/{key}", self.container)
    }

    /// The URL of `key` in the container (of the container with `None`), with `query`.
    fn blob_url(&self, key: Option<&str>, query: &[(&str, &str)]) -> Url {
        let mut url = self.endpoint.clone();
        {
            let mut segments = url.path_segments_mut().expect("an http URL");
            segments.pop_if_empty().push(&self.container);
            if let Some(key) = key {
                segments.extend(key.split('/'));
            }
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends `method url` with `body` and `headers`, signed with the account key (Shared Key,
    /// as the Blob service defines it).
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
            .collect();
        all.push(("x-ms-date".into(), date));
        all.push(("x-ms-version".into(), "2021-08-06".into()));
        let header = |name: &str| {
            all.iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let length = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let mut ms: Vec<&(String, String)> =
            all.iter().filter(|(k, _)| k.starts_with("x-ms-")).collect();
        ms.sort();
        let canonical_headers: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            params
                .entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.into_owned());
        }
        let mut resource = format!("/{}{}", self.account, url.path());
        for (k, values) in &params {
            resource.push_str(&format!("\n{k}:{}", values.join(",")));
        }
        let string_to_sign = format!(
            "{method}\n{}\n{}\n{length}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n{canonical_headers}{resource}",
            header("content-encoding"),
            header("content-language"),
            header("content-md5"),
            header("content-type"),
            header("if-modified-since"),
            header("if-match"),
            header("if-none-match"),
            header("if-unmodified-since"),
            header("range"),
        );
        let key = BASE64.decode(&self.key).expect("the account key is base64");
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
        mac.update(string_to_sign.as_bytes());
        let signature = BASE64.encode(mac.finalize().into_bytes());

        let mut request = reqwest::Client::new()
            .request(method.clone(), url.clone())
            .header(
                "authorization",
                format!("SharedKey {}:{signature}", self.account),
            )
            .body(body);
        for (k, v) in &all {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("Azurite: {method} {url}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("Azurite: {method} {url}: reading the body: {e}"))
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The blob `key`, or `None` if there is none (uncommitted blocks are not a blob).
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let answer = self
            .send(Method::GET, self.blob_url(Some(key), &[]), &[], Vec::new())
            .await;
        match answer.status {
            StatusCode::NOT_FOUND => None,
            s if s.is_success() => Some(answer.body),
            s => panic!("Azurite: GET {key}: {s}: {}", answer.text()),
        }
    }

    /// The headers of the blob `key` (Get Blob Properties); `None` if there is none.
    async fn properties(&self, key: &str) -> Option<HeaderMap> {
        let answer = self
            .send(Method::HEAD, self.blob_url(Some(key), &[]), &[], Vec::new())
            .await;
        match answer.status {
            StatusCode::NOT_FOUND => None,
            s if s.is_success() => Some(answer.headers),
            s => panic!("Azurite: HEAD {key}: {s}"),
        }
    }

    /// Writes the block blob `key`.
    async fn put(&self, key: &str, bytes: impl Into<Vec<u8>>) {
        let answer = self
            .send(
                Method::PUT,
                self.blob_url(Some(key), &[]),
                &[
                    ("x-ms-blob-type", "BlockBlob"),
                    ("content-type", "application/octet-stream"),
                ],
                bytes.into(),
            )
            .await;
        assert!(
            answer.status.is_success(),
            "Azurite: PUT {key}: {}: {}",
            answer.status,
            answer.text()
        );
    }

    /// The blobs whose name starts with `prefix`, sorted (100 a page, following the
    /// markers).
    async fn list(&self, prefix: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("prefix", prefix),
                ("maxresults", "100"),
            ];
            if !marker.is_empty() {
                query.push(("marker", marker.as_str()));
            }
            let answer = self
                .send(Method::GET, self.blob_url(None, &query), &[], Vec::new())
                .await;
            let xml = answer.text();
            assert!(
                answer.status.is_success(),
                "Azurite: List Blobs {prefix}: {}: {xml}",
                answer.status
            );
            names.extend(xml_all(&xml, "Name"));
            marker = xml_all(&xml, "NextMarker").pop().unwrap_or_default();
            if marker.is_empty() {
                return names;
            }
        }
    }

    /// The uncommitted blocks of `key` (Get Block List), as (block id, size): what an upload
    /// that was never completed leaves behind on Azure.
    async fn uncommitted_blocks(&self, key: &str) -> Vec<(String, u64)> {
        let url = self.blob_url(
            Some(key),
            &[("comp", "blocklist"), ("blocklisttype", "uncommitted")],
        );
        let answer = self.send(Method::GET, url, &[], Vec::new()).await;
        if answer.status == StatusCode::NOT_FOUND {
            return Vec::new();
        }
        let xml = answer.text();
        assert!(
            answer.status.is_success(),
            "Azurite: Get Block List {key}: {}: {xml}",
            answer.status
        );
        let names = xml_all(&xml, "Name");
        let sizes = xml_all(&xml, "Size");
        names
            .into_iter()
            .zip(sizes)
            .map(|(name, size)| (name, size.parse().expect("a block size")))
            .collect()
    }
}

/// The unescaped text of every `<tag>…</tag>` of `xml`, in order.
fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(len) = after.find(&close) else { break };
        found.push(
            after[..len]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[len + close.len()..];
    }
    found
}

// ------------------------------------------------------------------------------ helpers --

/// The JSON Lines of an object in `compression`: gzip through the single-member reader
/// (every record must be in its one member), zstd through the streaming decoder.
fn jsonl_of(compression: Compression, object: &[u8]) -> Vec<u8> {
    match compression {
        Compression::Gzip => gunzip(object),
        Compression::Zstd => zstd::stream::decode_all(object).expect("zstd decodes"),
        Compression::None => object.to_vec(),
    }
}

/// The checkpoints (and anything else but manifests) left under `prefix/_landline/`.
async fn state_left(az: &Azurite, prefix: &str) -> Vec<String> {
    let mut left = az.list(&format!("{prefix}/_landline/")).await;
    left.retain(|name| !name.contains("/_landline/manifests/"));
    left
}

/// Checks the object `report` landed at `key`: its bytes are the report's, its records those
/// the API served (`data`), its manifest (under `prefix/_landline/`, in the same container)
/// describes it, and `landline verify` passes against that manifest.
async fn check_landed(
    az: &Azurite,
    prefix: &str,
    key: &str,
    data: &DataConfig,
    report: &RunReport,
    compression: Compression,
) {
    assert_eq!(report.objects, [az.url(key)]);
    assert_eq!(report.compression, compression);
    let object = az
        .get(key)
        .await
        .unwrap_or_else(|| panic!("no blob at {key}"));
    assert_eq!(object.len() as u64, report.bytes_written, "{key}");
    verify(&jsonl_of(compression, &object), data, report, 97);

    let manifest_url = report
        .manifest
        .as_deref()
        .expect("the run wrote a manifest");
    assert!(
        manifest_url.starts_with(&az.url(&format!("{prefix}/_landline/manifests/"))),
        "{manifest_url}"
    );
    let manifest = landline::manifest::read(manifest_url, &Default::default(), az.env())
        .await
        .unwrap_or_else(|e| panic!("reading {manifest_url}: {e}"))
        .unwrap_or_else(|| panic!("no manifest at {manifest_url}"));
    let facts = manifest.object.as_ref().expect("the object's facts");
    assert_eq!(facts.size, object.len() as u64);
    assert_eq!(facts.parts, report.parts);
    assert_eq!(facts.compression, compression);
    assert_eq!(manifest.records, data.total);

    let verified = landline::verify::verify(
        &report.objects[0],
        &VerifyOptions::default(),
        az.env(),
        Some(&manifest),
    )
    .await
    .unwrap_or_else(|e| panic!("landline verify {}: {e}", report.objects[0]));
    assert!(verified.compared_with_manifest);
    assert_eq!(verified.records, data.total);
    assert_eq!(verified.size, report.bytes_written);
    assert_eq!(report.sha256.as_deref(), Some(verified.sha256.as_str()));
    assert_eq!(verified.compression, compression);
    assert_eq!(
        verified.gzip_members,
        u64::from(compression == Compression::Gzip)
    );

    assert!(
        state_left(az, prefix).await.is_empty(),
        "a checkpoint is left: {:?}",
        state_left(az, prefix).await
    );
    assert!(
        az.uncommitted_blocks(key).await.is_empty(),
        "the completed blob keeps uncommitted blocks"
    );
}

// -------------------------------------------------------------------------------- tests --

/// Records of the gzip runs at level 0: 20 to a page, about eight 5 MiB parts.
const STORED_RECORDS: u64 = 1_500;

/// A gzip run and a zstd run each land a blob of several parts (blocks): every record as
/// the API served it, the manifest beside it in the container, `landline verify` passing,
/// no checkpoint and no uncommitted block left. The blob's `Content-Type` is Azure's
/// default (see `AzureBlocks` in src/sink/mod.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_gzip_and_zstd_objects_land_in_parts_and_verify() {
    let az = azurite();
    for case in IN_PARTS {
        let (compression, name, ..) = case;
        let prefix = unique_prefix("azure-formats");
        let (data, report) = land_in_parts(&az, &prefix, case).await;
        let key = key(&prefix, name);
        check_landed(&az, &prefix, &key, &data, &report, compression).await;
        // object_store's block-list completion sets no attributes: the blob has the
        // service's default type, not the format's (application/gzip, application/zstd).
        let properties = az.properties(&key).await.expect("the blob");
        assert_eq!(
            properties.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/octet-stream")
        );
    }
}

/// The API fails for good at page 40, after several parts were uploaded: the run fails
/// naming the page, no blob appears at the key, no checkpoint is left, and nothing else is
/// under the prefix. The parts stay as uncommitted blocks (Azure has no abort), which no
/// listing shows and no reader sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_run_failing_midway_leaves_no_blob_and_no_checkpoint() {
    let az = azurite();
    let server = mock(data(STORED_RECORDS), |c| {
        c.faults.rules = vec![Fault::new(
            When::Page(40),
            Action::status(400),
            Times::Forever,
        )];
    })
    .await;
    let prefix = unique_prefix("azure-fails");
    let name = "variants.jsonl.gz";
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 20),
        &sink(&az, &prefix, name, "compression_level = 0\n"),
    );
    let err = run_on(&text, &az, RunOptions::default())
        .await
        .expect_err("the run must fail");
    assert!(err.to_string().contains("page 40"), "{err}");
    let key = key(&prefix, name);
    assert_eq!(az.get(&key).await, None, "a blob landed after {err}");
    assert!(az.properties(&key).await.is_none());
    assert!(
        az.list(&prefix).await.is_empty(),
        "left under the prefix: {:?}",
        az.list(&prefix).await
    );
    // What the failed run uploaded: several blocks of at least 5 MiB, never committed. A
    // block whose upload the failure cut off may be kept by Azurite as far as it got.
    let blocks = az.uncommitted_blocks(&key).await;
    let whole = blocks.iter().filter(|(_, size)| *size >= PART).count();
    assert!(whole >= 3, "uncommitted blocks: {blocks:?}");
    server.shutdown().await;
}

/// A run cut by a time limit into processes, each continuing the same block list from the
/// last one's checkpoint (read from the container): the blob holds every record once, in one
/// gzip member, and verifies against its manifest; no checkpoint is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_run_cut_into_processes_resumes_to_the_same_object() {
    let az = azurite();
    let data = data(STORED_RECORDS);
    let server = mock(data.clone(), |_| {}).await;
    let prefix = unique_prefix("azure-resume");
    let name = "variants.jsonl.gz";
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 20),
        &sink(&az, &prefix, name, "compression_level = 0\n"),
    );
    let limit = || RunOptions {
        max_duration: Some(Duration::from_millis(1)),
        ..RunOptions::default()
    };
    let mut report = run_on(&text, &az, limit()).await.expect("process 1");
    let mut records_seen = vec![report.records];
    while report.status == RunStatus::Continue {
        let url = report
            .checkpoint
            .clone()
            .expect("a continue report names its checkpoint");
        assert!(
            url.starts_with(&az.url(&format!("{prefix}/_landline/checkpoints/"))),
            "{url}"
        );
        let cp = landline::pipeline::read_checkpoint(&url, &Default::default(), az.env())
            .await
            .expect("reading the checkpoint")
            .expect("the checkpoint exists");
        assert_eq!(cp.counters.records, report.records);
        assert!(!cp.upload.upload_id.is_empty(), "{:?}", cp.upload);
        let options = RunOptions {
            resume: Some(cp),
            ..limit()
        };
        report = run_on(&text, &az, options)
            .await
            .unwrap_or_else(|e| panic!("process {}: {e}", records_seen.len() + 1));
        records_seen.push(report.records);
        assert!(
            records_seen.len() < 100,
            "no end in sight: {records_seen:?}"
        );
    }
    assert!(records_seen.len() >= 3, "{records_seen:?}");
    assert!(
        records_seen.windows(2).all(|w| w[0] < w[1]),
        "every process lands something: {records_seen:?}"
    );
    check_landed(
        &az,
        &prefix,
        &key(&prefix, name),
        &data,
        &report,
        Compression::Gzip,
    )
    .await;
    server.shutdown().await;
}

/// A second run for the same date replaces the blob whole: a run of eight parts, then one
/// of a single smaller part, leaves exactly the second run's object (none of the first's
/// blocks), and a manifest of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_rerun_for_the_same_date_replaces_the_object() {
    let az = azurite();
    let prefix = unique_prefix("azure-rerun");
    let name = "variants.jsonl.gz";
    let key = key(&prefix, name);
    let mut sizes = Vec::new();
    for records in [STORED_RECORDS, 100] {
        let data = data(records);
        let server = mock(data.clone(), |_| {}).await;
        let text = pipeline_text(
            &Style::Token.source(&server.base_url(), 20),
            &sink(&az, &prefix, name, "compression_level = 0\n"),
        );
        let report = run_on(&text, &az, RunOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{records} records: {e}"));
        check_landed(&az, &prefix, &key, &data, &report, Compression::Gzip).await;
        sizes.push((report.parts, report.bytes_written));
        server.shutdown().await;
    }
    assert!(sizes[0].0 >= 3 && sizes[1].0 == 1, "{sizes:?}");
    assert!(sizes[1].1 < sizes[0].1, "{sizes:?}");
    assert_eq!(
        az.list(&format!("{prefix}/date=")).await,
        [key.as_str()],
        "the data prefix holds the one blob"
    );
}

/// The test client itself: Azurite checks Shared Key signatures (a wrong key is refused
/// with 403), and a blob written, listed and read back is the same.
#[tokio::test]
async fn azure_support_azurite_checks_signatures() {
    let az = azurite();
    let prefix = unique_prefix("azure-support");
    let key = format!("{prefix}/date=2026-01-01/a b+c.jsonl.gz");
    az.put(&key, b"hello".to_vec()).await;
    assert_eq!(az.get(&key).await.as_deref(), Some(&b"hello"[..]));
    assert_eq!(az.list(&prefix).await, [key.as_str()]);
    let wrong = Azurite {
        key: BASE64.encode(b"not the account key"),
        ..az.clone()
    };
    let answer = wrong
        .send(
            Method::GET,
            wrong.blob_url(Some(&key), &[]),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
}

/// A wrong account key fails the run at its first request to the container (the first
/// checkpoint: on Azure, starting an upload makes no request), with the service's 403, and
/// neither key in the message; nothing lands and the API is hardly read.
#[tokio::test]
async fn azure_wrong_account_key_fails_the_run_at_once() {
    let az = azurite();
    let server = mock(data(STORED_RECORDS), |_| {}).await;
    let prefix = unique_prefix("azure-bad-key");
    let wrong = Azurite {
        key: BASE64.encode(b"definitely-not-the-account-key"),
        ..az.clone()
    };
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 20),
        &sink(&az, &prefix, "variants.jsonl.gz", "compression_level = 0\n"),
    );
    let err = run_on(&text, &wrong, RunOptions::default())
        .await
        .expect_err("must fail");
    let message = err.to_string();
    assert!(
        message.contains("403") && message.contains("AuthorizationFailure"),
        "{message}"
    );
    assert!(
        !message.contains(&wrong.key) && !message.contains(&az.key),
        "{message}"
    );
    assert!(server.stats().pages_served <= 1, "streamed before failing");
    assert!(az.list(&prefix).await.is_empty());
    eprintln!("{message}");
    server.shutdown().await;
}

/// `[sink.retry]` and the timeouts apply to Azure as to S3: a blob endpoint where nothing
/// listens fails the run after the 2 attempts asked for, where object_store's own defaults
/// would retry 10 times.
#[tokio::test]
async fn azure_takes_the_sinks_retries_and_timeouts() {
    let az = azurite();
    let server = mock(data(STORED_RECORDS), |_| {}).await;
    let prefix = unique_prefix("azure-retries");
    // A port that was free a moment ago: connections to it are refused.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        drop(listener);
        let mut endpoint = az.endpoint.clone();
        endpoint
            .set_port(Some(port))
            .expect("an http URL takes a port");
        Azurite {
            endpoint,
            ..az.clone()
        }
    };
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 20),
        &format!(
            "{}connect_timeout_secs = 2\n[sink.retry]\nmax_attempts = 2\ninitial_backoff_ms = 10\n\
             max_backoff_ms = 20\n",
            sink(&az, &prefix, "variants.jsonl.gz", "compression_level = 0\n")
                .split("[state]")
                .next()
                .expect("the [sink] lines")
        ),
    );
    let err = run_on(&text, &dead, RunOptions::default())
        .await
        .expect_err("nothing listens");
    let message = err.to_string();
    // object_store says how it was configured: 1 retry (2 attempts), not its default 10.
    assert!(
        message.contains("max_retries: 1,") && message.contains("Connection refused"),
        "{message}"
    );
    server.shutdown().await;
}
