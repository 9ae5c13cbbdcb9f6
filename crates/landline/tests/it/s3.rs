//! Test support: the two S3 servers that `scripts/test.sh` starts, and a small
//! S3 client to check what landline wrote to them.
//!
//! - moto, with IAM authentication on, so that it verifies every signature;
//! - s3s-fs, storing into a temporary directory.
//!
//! Both have the bucket `LANDLINE_TEST_BUCKET`, shared by all the tests, which
//! keep apart with [`S3Server::unique_prefix`].
//!
//! rusty-s3 builds the URLs and parses the responses, but requests are signed
//! here, with AWS Signature Version 4 in the `Authorization` header: moto's
//! IAM authentication only reads that header, so it answers a presigned URL
//! (which is all rusty-s3 signs) with a 500.

// Each test binary uses part of this module; `pub` is for readability.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use hmac::{KeyInit as _, Mac as _};
use reqwest::StatusCode;
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, S3Action, UrlStyle};
use sha2::{Digest as _, Sha256};
use url::Url;

/// An S3 server started by `scripts/test.sh`, with its credentials.
#[derive(Debug, Clone)]
pub struct S3Server {
    /// `"moto"` or `"s3s-fs"`.
    pub name: &'static str,
    /// Like `http://127.0.0.1:PORT/`.
    pub endpoint: Url,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// The bucket every test shares, under a [`S3Server::unique_prefix`].
    pub bucket: String,
    /// Whether [`S3Server::list_multipart_uploads`] works: s3s-fs lacks it.
    pub supports_list_multipart_uploads: bool,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the integration tests need the S3 servers that scripts/test.sh \
             starts. Run them with `scripts/test.sh` (select tests with \
             `scripts/test.sh -E 'test(NAME)'`), or with \
             `scripts/test.sh --servers-only -- cargo test -p landline --test it NAME`"
        )
    })
}

fn server(name: &'static str, var_prefix: &str, supports_list_multipart_uploads: bool) -> S3Server {
    let endpoint = var(&format!("LANDLINE_TEST_{var_prefix}_ENDPOINT"));
    S3Server {
        name,
        endpoint: endpoint
            .parse()
            .unwrap_or_else(|e| panic!("bad {name} endpoint {endpoint:?}: {e}")),
        access_key_id: var(&format!("LANDLINE_TEST_{var_prefix}_ACCESS_KEY_ID")),
        secret_access_key: var(&format!("LANDLINE_TEST_{var_prefix}_SECRET_ACCESS_KEY")),
        region: var("LANDLINE_TEST_REGION"),
        bucket: var("LANDLINE_TEST_BUCKET"),
        supports_list_multipart_uploads,
    }
}

/// moto, which checks signatures and IAM permissions.
pub fn moto() -> S3Server {
    server("moto", "MOTO", true)
}

/// s3s-fs, which checks signatures.
pub fn s3s() -> S3Server {
    server("s3s-fs", "S3S", false)
}

/// Both servers: most S3 tests should run against each.
pub fn servers() -> Vec<S3Server> {
    vec![moto(), s3s()]
}

impl S3Server {
    /// A key prefix for `test` which no other test (or run) uses: `test`,
    /// with characters other than `[A-Za-z0-9_.-]` replaced by `-`, then `-`
    /// and 16 random hex digits. No trailing `/`.
    pub fn unique_prefix(&self, test: &str) -> String {
        let test: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("{test}-{:016x}", rand::random::<u64>())
    }

    /// The environment a landline process (or its config) needs to reach
    /// this server: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (no trailing `/`), and
    /// `AWS_ALLOW_HTTP=true` (which object_store wants for `http://`).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.as_str()),
            ("AWS_REGION", self.region.as_str()),
            ("AWS_DEFAULT_REGION", self.region.as_str()),
            (
                "AWS_ENDPOINT_URL",
                self.endpoint.as_str().trim_end_matches('/'),
            ),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The shared bucket, with path-style URLs, to build rusty-s3 actions
    /// for [`S3Server::send`]. Pass `None` as their credentials.
    pub fn bucket(&self) -> Bucket {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            self.bucket.clone(),
            self.region.clone(),
        )
        .expect("a valid bucket URL")
    }

    /// The object `key`, or `None` if there is none. Panics on other errors.
    pub async fn get_object(&self, key: &str) -> Option<Vec<u8>> {
        let bucket = self.bucket();
        let (status, body) = self.send(bucket.get_object(None, key), Vec::new()).await;
        match status {
            StatusCode::NOT_FOUND => None,
            s if s.is_success() => Some(body),
            s => panic!(
                "{}: GET {key}: {s}: {}",
                self.name,
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Writes the object `key`. Panics on errors.
    pub async fn put_object(&self, key: &str, bytes: impl Into<Vec<u8>>) {
        let bucket = self.bucket();
        self.execute(bucket.put_object(None, key), bytes.into())
            .await;
    }

    /// The keys which start with `prefix`, sorted.
    pub async fn list_keys(&self, prefix: &str) -> Vec<String> {
        self.list_keys_paged(prefix, None).await
    }

    async fn list_keys_paged(&self, prefix: &str, page_size: Option<usize>) -> Vec<String> {
        let bucket = self.bucket();
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let mut action = bucket.list_objects_v2(None);
            // s3s-fs echoes `encoding-type=url` without encoding the keys,
            // and then rusty-s3 decodes a `+` in them into a space.
            action.query_mut().remove("encoding-type");
            action.with_prefix(prefix);
            if let Some(n) = page_size {
                action.with_max_keys(n);
            }
            if let Some(token) = token.take() {
                action.with_continuation_token(token);
            }
            let body = self.execute(action, Vec::new()).await;
            let page = ListObjectsV2::parse_response(&String::from_utf8_lossy(&body))
                .unwrap_or_else(|e| panic!("{}: bad ListObjectsV2 response: {e}", self.name));
            keys.extend(page.contents.into_iter().map(|o| o.key));
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return keys,
            }
        }
    }

    /// The multipart uploads in progress whose key starts with `prefix`, as
    /// `(key, upload id)`. Panics if the server doesn't support listing them
    /// ([`S3Server::supports_list_multipart_uploads`]).
    pub async fn list_multipart_uploads(&self, prefix: &str) -> Vec<(String, String)> {
        assert!(
            self.supports_list_multipart_uploads,
            "{} doesn't implement ListMultipartUploads",
            self.name
        );
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = self.bucket().base_url().clone();
            url.query_pairs_mut()
                .append_pair("uploads", "")
                .append_pair("prefix", prefix);
            if let Some((key, upload_id)) = markers.take() {
                url.query_pairs_mut()
                    .append_pair("key-marker", &key)
                    .append_pair("upload-id-marker", &upload_id);
            }
            let (status, body) = self.send_url("GET", url, Vec::new()).await;
            let xml = String::from_utf8_lossy(&body);
            assert!(
                status.is_success(),
                "{}: ListMultipartUploads: {status}: {xml}",
                self.name
            );
            for upload in xml.split("<Upload>").skip(1) {
                let field = |tag| {
                    xml_text(upload, tag)
                        .unwrap_or_else(|| panic!("{}: no <{tag}> in <Upload>: {xml}", self.name))
                };
                uploads.push((field("Key"), field("UploadId")));
            }
            if xml_text(&xml, "IsTruncated").as_deref() != Some("true") {
                return uploads;
            }
            let next = |tag| xml_text(&xml, tag).unwrap_or_default();
            markers = Some((next("NextKeyMarker"), next("NextUploadIdMarker")));
        }
    }

    /// Starts a multipart upload of `key` and returns its upload id.
    pub async fn create_multipart_upload(&self, key: &str) -> String {
        let bucket = self.bucket();
        let body = self
            .execute(bucket.create_multipart_upload(None, key), Vec::new())
            .await;
        let response = CreateMultipartUpload::parse_response(&String::from_utf8_lossy(&body))
            .unwrap_or_else(|e| panic!("{}: bad CreateMultipartUpload response: {e}", self.name));
        response.upload_id().to_owned()
    }

    /// Aborts the multipart upload `upload_id` of `key`.
    pub async fn abort_multipart_upload(&self, key: &str, upload_id: &str) {
        let bucket = self.bucket();
        self.execute(
            bucket.abort_multipart_upload(None, key, upload_id),
            Vec::new(),
        )
        .await;
    }

    /// Like [`S3Server::send`], but panics unless the status is a success,
    /// and returns the body.
    pub async fn execute<'a, A: S3Action<'a>>(&self, action: A, body: Vec<u8>) -> Vec<u8> {
        let url = action.sign(Duration::from_secs(60));
        let url_str = url.to_string();
        let (status, body) = self.send_url(A::METHOD.to_str(), url, body).await;
        assert!(
            status.is_success(),
            "{}: {} {url_str}: {status}: {}",
            self.name,
            A::METHOD.to_str(),
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// Sends the request of `action`, which must have been built without
    /// credentials (then rusty-s3 doesn't presign it), signed with the
    /// credentials of this server. Returns the status and the body.
    pub async fn send<'a, A: S3Action<'a>>(
        &self,
        action: A,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        // Without credentials, `sign` only adds the query of the action.
        let url = action.sign(Duration::from_secs(60));
        self.send_url(A::METHOD.to_str(), url, body).await
    }

    /// Sends `method url` with `body`, signed with AWS Signature Version 4
    /// in the `Authorization` header. The query of `url` is re-encoded the
    /// way the signature needs it.
    async fn send_url(&self, method: &str, url: Url, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let (status, _, body) = self.send_signed(method, url, body).await;
        (status, body)
    }

    /// The headers of the object at `key` (a signed HEAD); `None` when there is none.
    pub async fn head_object(&self, key: &str) -> Option<reqwest::header::HeaderMap> {
        let url = self
            .bucket()
            .head_object(None, key)
            .sign(Duration::from_secs(60));
        let (status, headers, _) = self.send_signed("HEAD", url, Vec::new()).await;
        match status {
            StatusCode::NOT_FOUND => None,
            s if s.is_success() => Some(headers),
            s => panic!("{}: HEAD {key}: {s}", self.name),
        }
    }

    /// [`send_url`](Self::send_url), with the response's headers.
    async fn send_signed(
        &self,
        method: &str,
        mut url: Url,
        body: Vec<u8>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let mut query: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
            .collect();
        query.sort();
        let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let query = query.join("&");
        url.set_query(Some(&query).filter(|q| !q.is_empty()).map(String::as_str));

        let host = url.host_str().expect("the endpoint has a host");
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let scope = format!("{}/{}/s3/aws4_request", &date[..8], self.region);
        let payload_hash = hex(&Sha256::digest(&body));
        let signed_headers = "host;x-amz-content-sha256;x-amz-date";
        let canonical_request = format!(
            "{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:{payload_hash}\n\
             x-amz-date:{date}\n\n{signed_headers}\n{payload_hash}",
            path = url.path(),
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = format!("AWS4{}", self.secret_access_key).into_bytes();
        // The signing key is derived from the secret, then signs `string_to_sign`.
        for part in [
            &date[..8],
            self.region.as_str(),
            "s3",
            "aws4_request",
            &string_to_sign,
        ] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={}",
            self.access_key_id,
            hex(&key)
        );

        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let response = reqwest::Client::new()
            .request(method.clone(), url.clone())
            .header("x-amz-date", date)
            .header("x-amz-content-sha256", payload_hash)
            .header("authorization", authorization)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {method} {url}: {e}", self.name));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{}: {method} {url}: reading the body: {e}", self.name));
        (status, headers, body.to_vec())
    }
}

/// Percent-encodes all but the unreserved characters of RFC 3986, as SigV4 wants.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The unescaped text of the first `<tag>` of `xml`, enough for S3's answers.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..start + len]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[tokio::test]
async fn s3_support_round_trip() {
    for server in servers() {
        let prefix = server.unique_prefix("s3_support_round_trip");
        // Characters which URLs and signatures must encode.
        let keys: Vec<String> = (0..5)
            .map(|i| format!("{prefix}/date=2024-01-0{i}/part {i}+ü.jsonl.gz"))
            .collect();
        assert_eq!(server.get_object(&keys[0]).await, None, "{}", server.name);
        for (i, key) in keys.iter().enumerate() {
            let bytes: Vec<u8> = (0..=255u8).cycle().skip(i).take(1000 + i).collect();
            server.put_object(key, bytes.clone()).await;
            assert_eq!(
                server.get_object(key).await,
                Some(bytes),
                "{} {key}",
                server.name
            );
        }
        assert_eq!(server.list_keys(&prefix).await, keys, "{}", server.name);
        assert_eq!(
            server.list_keys_paged(&prefix, Some(2)).await,
            keys,
            "{}: paginated",
            server.name
        );
        let none = server.list_keys(&format!("{prefix}/nothing")).await;
        assert!(none.is_empty(), "{}: {none:?}", server.name);
    }
}

#[tokio::test]
async fn s3_support_multipart_uploads_on_moto() {
    let server = moto();
    let prefix = server.unique_prefix("s3_support_multipart_uploads_on_moto");
    let key = format!("{prefix}/a & b.jsonl.gz");
    let upload_id = server.create_multipart_upload(&key).await;
    let other = server.unique_prefix("s3_support_multipart_uploads_on_moto");
    let other_id = server.create_multipart_upload(&format!("{other}/x")).await;

    let uploads = server.list_multipart_uploads(&prefix).await;
    assert_eq!(uploads, vec![(key.clone(), upload_id.clone())]);

    server.abort_multipart_upload(&key, &upload_id).await;
    assert_eq!(server.list_multipart_uploads(&prefix).await, vec![]);
    server
        .abort_multipart_upload(&format!("{other}/x"), &other_id)
        .await;
    assert!(!s3s().supports_list_multipart_uploads);
}

#[tokio::test]
async fn s3_support_servers_check_signatures() {
    for server in servers() {
        let (status, body) = server
            .send(server.bucket().list_objects_v2(None), Vec::new())
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}: {}",
            server.name,
            String::from_utf8_lossy(&body)
        );

        let wrong = S3Server {
            secret_access_key: format!("{}x", server.secret_access_key),
            ..server.clone()
        };
        let (status, body) = wrong
            .send(wrong.bucket().list_objects_v2(None), Vec::new())
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{}: {}",
            server.name,
            String::from_utf8_lossy(&body)
        );
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("SignatureDoesNotMatch"),
            "{}: {body}",
            server.name
        );
    }
}

/// `env()` is enough for an AWS SDK in a child process (boto3 here), and
/// `LANDLINE_TEST_PYTHON` can read gzipped objects.
#[tokio::test]
async fn s3_support_env_for_child_processes() {
    use std::io::Write as _;

    for server in servers() {
        let key = format!("{}/lines.jsonl.gz", server.unique_prefix("s3_support_env"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"a\":1}\n{\"a\":2}\n").expect("gzip");
        server.put_object(&key, gz.finish().expect("gzip")).await;

        let script = "import boto3, gzip, sys\n\
            from botocore.config import Config\n\
            s3 = boto3.client('s3', config=Config(s3={'addressing_style': 'path'}))\n\
            body = s3.get_object(Bucket=sys.argv[1], Key=sys.argv[2])['Body'].read()\n\
            sys.stdout.buffer.write(gzip.decompress(body))\n";
        let output = std::process::Command::new(var("LANDLINE_TEST_PYTHON"))
            .args(["-c", script, &server.bucket, &key])
            .envs(server.env())
            .output()
            .expect("running LANDLINE_TEST_PYTHON");
        assert!(
            output.status.success(),
            "{}: {}",
            server.name,
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.stdout, b"{\"a\":1}\n{\"a\":2}\n", "{}", server.name);
    }
}
