//! AWS credentials the AWS CLI's way, with real files: a temporary `~/.aws` with profiles, a
//! `credential_process` script whose credentials expire during the run, a role assumed through
//! moto's STS, and the error that lists the places tried. For S3 destinations (moto and
//! s3s-fs) and for `aws_sigv4` API sources (the mock API verifying signatures).
//!
//! No test reaches an address but loopback: the environments given to the chain disable
//! instance metadata (and point its endpoint at 127.0.0.1), set no container credential
//! variables unless a test serves them itself, and name their own `HOME`.

use std::path::Path;
use std::time::Duration;

use landline::RunError;
use landline::config::PipelineFile;
use landline_mockapi::{Auth, MockServer};

use crate::harness::{INGEST_DATE, Style, data, gunzip, mock, pipeline_text, run, verify};
use crate::s3;

const RECORDS: u64 = 600;
const REGION: &str = "eu-west-3";
const SIGV4_KEY_ID: &str = "AKIDLANDLINETEST";
const SIGV4_SECRET: &str = "sigv4-secret-2236";

/// The variables every test's chain sees: its own `HOME`, no instance metadata.
fn base_env(home: &Path) -> Vec<(String, String)> {
    [
        ("HOME", home.to_string_lossy().as_ref()),
        (
            "AWS_CONFIG_FILE",
            &home.join(".aws/config").to_string_lossy(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            &home.join(".aws/credentials").to_string_lossy(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Writes `~/.aws/config` and `~/.aws/credentials` under `home`.
fn aws_files(home: &Path, config: &str, credentials: &str) {
    let dir = home.join(".aws");
    std::fs::create_dir_all(&dir).expect("mkdir .aws");
    std::fs::write(dir.join("config"), config).expect("write config");
    std::fs::write(dir.join("credentials"), credentials).expect("write credentials");
}

fn sigv4_api(session_token: Option<&str>) -> Auth {
    Auth::SigV4 {
        access_key_id: SIGV4_KEY_ID.into(),
        secret_access_key: SIGV4_SECRET.into(),
        session_token: session_token.map(str::to_owned),
        region: REGION.into(),
        service: "execute-api".into(),
    }
}

/// A pipeline from `server` with `auth` into a local file under `out`, validated with `env`.
fn sigv4_pipeline(
    server: &MockServer,
    auth: &str,
    out: &Path,
    env: &[(String, String)],
) -> Result<landline::Pipeline, landline::config::ConfigError> {
    let source = format!(
        "{}[source.retry]\nmax_attempts = 2\ninitial_backoff_ms = 1\nmax_backoff_ms = 5\n[source.auth]\n{auth}",
        Style::Token.source(&server.base_url(), 50)
    );
    let target = out.join("date={ingest_date}/variants.jsonl.gz");
    let text = pipeline_text(
        &source,
        &format!("url = {:?}", target.display().to_string()),
    );
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    PipelineFile::parse(&text, "sigv4.toml").and_then(|f| f.validate(&lookup))
}

fn landed(out: &Path) -> Vec<u8> {
    let object = out.join(format!("date={INGEST_DATE}/variants.jsonl.gz"));
    gunzip(&std::fs::read(object).expect("the object landed"))
}

#[tokio::test]
async fn a_sigv4_source_signs_with_the_environments_keys_and_fails_clearly_with_wrong_ones() {
    let server = mock(data(RECORDS), |c| c.auth = sigv4_api(None)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(home.path());
    env.push(("AWS_ACCESS_KEY_ID".into(), SIGV4_KEY_ID.into()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), SIGV4_SECRET.into()));
    env.push(("AWS_REGION".into(), REGION.into()));
    let out = tempfile::tempdir().expect("tempdir");
    let pipeline = sigv4_pipeline(&server, "type = \"aws_sigv4\"\n", out.path(), &env)
        .expect("a valid pipeline");
    let report = run(&pipeline, Vec::new()).await.expect("the run lands");
    verify(&landed(out.path()), &data(RECORDS), &report, 7);
    assert_eq!(server.stats().unauthorized, 0);

    // A wrong secret: the API refuses the first page, and the message holds no secret.
    env.push(("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret-7".into()));
    let out = tempfile::tempdir().expect("tempdir");
    let pipeline = sigv4_pipeline(&server, "type = \"aws_sigv4\"\n", out.path(), &env)
        .expect("a valid pipeline");
    let err = run(&pipeline, Vec::new()).await.expect_err("refused");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("HTTP 401"), "{shown}");
    assert!(!shown.contains("not-the-secret-7") && !shown.contains(SIGV4_SECRET));

    // Another region than the API's: refused too (the scope is signed).
    let out = tempfile::tempdir().expect("tempdir");
    let pipeline = sigv4_pipeline(
        &server,
        "type = \"aws_sigv4\"\nregion = \"us-west-2\"\n",
        out.path(),
        &env,
    )
    .expect("a valid pipeline");
    assert!(run(&pipeline, Vec::new()).await.is_err());
}

/// A profile whose `credential_process` hands out session credentials living 4 s: a run of
/// about 4 s (13 pages of 300 ms) fetches them again before they expire, and the API, which
/// checks the session token, sees no request it refuses.
#[tokio::test]
async fn credential_process_credentials_are_refreshed_during_a_run() {
    let server = mock(data(RECORDS), |c| {
        c.auth = sigv4_api(Some("session-from-process"));
        c.latency = Duration::from_millis(300);
    })
    .await;
    let home = tempfile::tempdir().expect("tempdir");
    let calls = home.path().join("calls");
    let script = home.path().join("credentials.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho call >> '{}'\nexpires=$(date -u -d '+4 seconds' +%Y-%m-%dT%H:%M:%SZ)\n\
             printf '{{\"Version\": 1, \"AccessKeyId\": \"{SIGV4_KEY_ID}\", \"SecretAccessKey\": \
             \"{SIGV4_SECRET}\", \"SessionToken\": \"session-from-process\", \"Expiration\": \
             \"%s\"}}\\n' \"$expires\"\n",
            calls.display()
        ),
    )
    .expect("write the script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    aws_files(
        home.path(),
        &format!(
            "[profile api]\nregion = {REGION}\ncredential_process = {}\n",
            script.display()
        ),
        "",
    );
    let mut env = base_env(home.path());
    // Keys in the environment lose to a profile named in the pipeline, as with --profile.
    env.push(("AWS_ACCESS_KEY_ID".into(), "AKIDWRONG".into()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), "wrong".into()));
    let out = tempfile::tempdir().expect("tempdir");
    let pipeline = sigv4_pipeline(
        &server,
        "type = \"aws_sigv4\"\nprofile = \"api\"\n",
        out.path(),
        &env,
    )
    .expect("the region comes from the profile");
    let report = run(&pipeline, Vec::new()).await.expect("the run lands");
    verify(&landed(out.path()), &data(RECORDS), &report, 7);
    let calls = std::fs::read_to_string(&calls).expect("the process ran");
    assert!(
        calls.lines().count() >= 2,
        "credential_process ran {calls:?}"
    );
    assert_eq!(
        server.stats().unauthorized,
        0,
        "no request went with expired credentials"
    );
}

#[test]
fn a_sigv4_source_without_a_region_is_refused_naming_the_key() {
    let home = tempfile::tempdir().expect("tempdir");
    aws_files(home.path(), "[default]\n", "");
    let server_url = "http://127.0.0.1:9";
    let text = pipeline_text(
        &format!(
            "{}[source.auth]\ntype = \"aws_sigv4\"\n",
            Style::Token.source(server_url, 50)
        ),
        "url = \"out.jsonl.gz\"",
    );
    let env = base_env(home.path());
    let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let err = PipelineFile::parse(&text, "sigv4.toml")
        .and_then(|f| f.validate(&lookup))
        .expect_err("no region");
    assert!(
        err.to_string().starts_with("source.auth.region: required"),
        "{err}"
    );
}

/// The store environment of `server` without its keys: endpoint and HTTP only.
fn endpoint_only(server: &s3::S3Server, home: &Path) -> Vec<(String, String)> {
    let mut env = base_env(home);
    env.extend(
        server
            .env()
            .into_iter()
            .filter(|(k, _)| matches!(k.as_str(), "AWS_ENDPOINT_URL" | "AWS_ALLOW_HTTP")),
    );
    env
}

/// Lands a small run into `server` with `sink_extra` in `[sink]` and the store environment
/// `env`; the object's key, or the run's error.
async fn land_in(
    server: &s3::S3Server,
    test: &str,
    sink_extra: &str,
    env: Vec<(String, String)>,
) -> Result<String, RunError> {
    let api = mock(data(200), |_| {}).await;
    let key = format!("{}/variants.jsonl.gz", server.unique_prefix(test));
    let text = pipeline_text(
        &Style::Token.source(&api.base_url(), 50),
        &format!("url = \"s3://{}/{key}\"\n{sink_extra}", server.bucket),
    );
    let pipeline = crate::harness::pipeline(&text);
    let report = run(&pipeline, env).await?;
    let object = server.get_object(&key).await.expect("the object landed");
    verify(&gunzip(&object), &data(200), &report, 1);
    Ok(key)
}

#[tokio::test]
async fn an_s3_destination_takes_its_keys_and_region_from_a_profile() {
    for server in s3::servers() {
        let home = tempfile::tempdir().expect("tempdir");
        aws_files(
            home.path(),
            &format!("[profile lander]\nregion = {}\n", server.region),
            &format!(
                "[lander]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                server.access_key_id, server.secret_access_key
            ),
        );
        // [sink] profile, over wrong keys in the environment.
        let mut env = endpoint_only(&server, home.path());
        env.push(("AWS_ACCESS_KEY_ID".into(), "AKIDWRONG".into()));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), "wrong".into()));
        land_in(&server, "profile", "profile = \"lander\"", env)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", server.name));
        // AWS_PROFILE, with no keys in the environment.
        let mut env = endpoint_only(&server, home.path());
        env.push(("AWS_PROFILE".into(), "lander".into()));
        land_in(&server, "aws-profile", "", env)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", server.name));
    }
}

/// `role_arn` + `source_profile`: the base profile's keys sign STS AssumeRole at moto, and the
/// role's session credentials write the object.
#[tokio::test]
async fn a_role_assumed_through_sts_writes_to_s3() {
    let server = s3::moto();
    let role_arn = std::env::var("LANDLINE_TEST_MOTO_ROLE_ARN")
        .expect("LANDLINE_TEST_MOTO_ROLE_ARN: run the tests with scripts/test.sh");
    let home = tempfile::tempdir().expect("tempdir");
    aws_files(
        home.path(),
        &format!(
            "[profile base]\nregion = {r}\n[profile writer]\nrole_arn = {role_arn}\n\
             source_profile = base\nrole_session_name = landline-test\nregion = {r}\n",
            r = server.region
        ),
        &format!(
            "[base]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            server.access_key_id, server.secret_access_key
        ),
    );
    // AWS_ENDPOINT_URL serves STS too (moto answers every service on one port).
    let env = endpoint_only(&server, home.path());
    land_in(&server, "role", "profile = \"writer\"", env)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn without_any_credentials_the_error_lists_the_places_tried() {
    let server = s3::s3s();
    let home = tempfile::tempdir().expect("tempdir");
    let env = endpoint_only(&server, home.path());
    let err = land_in(&server, "none", "", env)
        .await
        .expect_err("no credentials");
    let text = err.to_string();
    for part in [
        "no AWS credentials found for profile \"default\"",
        "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY not set)",
        "/.aws/config (AWS_CONFIG_FILE)",
        "credential_process",
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN not set)",
        "EC2 instance metadata (IMDS) (disabled by AWS_EC2_METADATA_DISABLED)",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
}

/// Serves HTTP on loopback, answering every request with the JSON `body()` gives; returns
/// `http://127.0.0.1:PORT`, and the request lines received.
async fn json_endpoint(
    body: impl Fn() -> String + Send + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = vec![0u8; 16384];
            let n = socket.read(&mut request).await.unwrap_or(0);
            let text = String::from_utf8_lossy(&request[..n]).into_owned();
            if let Ok(mut log) = log.lock() {
                log.push(text.lines().next().unwrap_or_default().to_owned());
            }
            let body = body();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (base, received)
}

/// The ECS/EKS container credentials endpoint: session credentials expiring in an hour.
async fn container_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (base, received) = json_endpoint(|| {
        let expiration =
            (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
        format!(
            "{{\"AccessKeyId\":\"{SIGV4_KEY_ID}\",\"SecretAccessKey\":\"{SIGV4_SECRET}\",\
             \"Token\":\"session-from-container\",\"Expiration\":\"{expiration}\"}}"
        )
    })
    .await;
    (format!("{base}/v2/credentials/test"), received)
}

/// No keys and no profile: the chain reaches the container endpoint (served on loopback), and
/// its session credentials sign every request, fetched once for the run.
#[tokio::test]
async fn container_credentials_sign_a_sigv4_source() {
    let server = mock(data(RECORDS), |c| {
        c.auth = sigv4_api(Some("session-from-container"))
    })
    .await;
    let (endpoint, served) = container_endpoint().await;
    let home = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(home.path());
    env.push(("AWS_CONTAINER_CREDENTIALS_FULL_URI".into(), endpoint));
    env.push(("AWS_REGION".into(), REGION.into()));
    let out = tempfile::tempdir().expect("tempdir");
    let pipeline = sigv4_pipeline(&server, "type = \"aws_sigv4\"\n", out.path(), &env)
        .expect("a valid pipeline");
    let report = run(&pipeline, Vec::new()).await.expect("the run lands");
    verify(&landed(out.path()), &data(RECORDS), &report, 7);
    assert_eq!(server.stats().unauthorized, 0);
    assert_eq!(
        served.lock().expect("log").len(),
        1,
        "fetched once, then cached"
    );
}

/// `aws sso login` done: a profile of an `sso-session`, its token in `~/.aws/sso/cache`, and
/// the SSO portal (`AWS_ENDPOINT_URL_SSO`, served on loopback) handing out role credentials.
#[tokio::test]
async fn an_sso_profile_signs_with_the_portals_role_credentials() {
    use sha1::Digest as _;
    let server = mock(data(RECORDS), |c| {
        c.auth = sigv4_api(Some("session-from-sso"))
    })
    .await;
    let (portal, received) = json_endpoint(|| {
        let expiration = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_millis();
        format!(
            "{{\"roleCredentials\":{{\"accessKeyId\":\"{SIGV4_KEY_ID}\",\
             \"secretAccessKey\":\"{SIGV4_SECRET}\",\"sessionToken\":\"session-from-sso\",\
             \"expiration\":{expiration}}}}}"
        )
    })
    .await;
    let home = tempfile::tempdir().expect("tempdir");
    aws_files(
        home.path(),
        &format!(
            "[profile reader]\nsso_session = corp\nsso_account_id = 111122223333\n\
             sso_role_name = Reader\nregion = {REGION}\n\
             [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n\
             sso_region = {REGION}\n"
        ),
        "",
    );
    let cache = home.path().join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).expect("mkdir");
    let name: String = sha1::Sha1::digest(b"corp")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(
        cache.join(format!("{name}.json")),
        format!(
            "{{\"accessToken\":\"sso-access-token-31\",\"expiresAt\":\"2099-01-01T00:00:00Z\",\
             \"region\":\"{REGION}\",\"startUrl\":\"https://corp.awsapps.com/start\"}}"
        ),
    )
    .expect("write the token cache");
    let mut env = base_env(home.path());
    env.push(("AWS_ENDPOINT_URL_SSO".into(), portal));
    let out = tempfile::tempdir().expect("tempdir");
    let pipeline = sigv4_pipeline(
        &server,
        "type = \"aws_sigv4\"\nprofile = \"reader\"\n",
        out.path(),
        &env,
    )
    .expect("the region comes from the profile");
    let report = run(&pipeline, Vec::new()).await.expect("the run lands");
    verify(&landed(out.path()), &data(RECORDS), &report, 7);
    let received = received.lock().expect("log").clone();
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(
        received[0].contains("/federation/credentials")
            && received[0].contains("account_id=111122223333")
            && received[0].contains("role_name=Reader"),
        "{received:?}"
    );
}
