//! `[source.auth]` against the mock API demanding each kind: the run lands every record when
//! the credentials are right, fails at once and names the page when they are wrong, and no
//! secret appears in an error. OAuth2 tokens expire and are revoked in the middle of runs.

use std::time::Duration;

use landline::config::PipelineFile;
use landline::source::{AuthError, SourceError};
use landline::{Pipeline, RunError};
use landline_mockapi::{Auth, Grant, MockServer, OAuth2Server};

use crate::harness::{INGEST_DATE, Style, data, gunzip, mock, pipeline_text, run, verify};

const RECORDS: u64 = 600;
const SECRETS: &[&str] = &[
    "tok-3141",
    "pw-2718",
    "key-1618",
    "client-secret-577",
    "refresh-0-1414",
];

/// The environment the pipeline's `${VAR}` references read.
fn env(name: &str) -> Option<String> {
    let value = match name {
        "API_TOKEN" => "tok-3141",
        "API_PASSWORD" => "pw-2718",
        "API_KEY" => "key-1618",
        "CLIENT_SECRET" => "client-secret-577",
        "REFRESH_TOKEN" => "refresh-0-1414",
        _ => return None,
    };
    Some(value.to_owned())
}

fn pipeline_with(server: &MockServer, auth: &str, dir: &tempfile::TempDir) -> Pipeline {
    let source = format!(
        "{}[source.retry]\nmax_attempts = 3\ninitial_backoff_ms = 1\nmax_backoff_ms = 5\n[source.auth]\n{auth}",
        Style::Token.source(&server.base_url(), 50)
    );
    let target = dir.path().join("date={ingest_date}/variants.jsonl.gz");
    let text = pipeline_text(
        &source,
        &format!("url = {:?}", target.display().to_string()),
    );
    PipelineFile::parse(&text, "auth.toml")
        .and_then(|f| f.validate(&env))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Runs the pipeline and checks every record of the object.
async fn lands_everything(server: &MockServer, auth: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = pipeline_with(server, auth, &dir);
    let report = run(&pipeline, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{auth}: {e}"));
    let object = dir
        .path()
        .join(format!("date={INGEST_DATE}/variants.jsonl.gz"));
    let bytes = std::fs::read(object).expect("the object landed");
    verify(&gunzip(&bytes), &data(RECORDS), &report, 7);
    let shown = format!(
        "{report:?}{}",
        serde_json::to_string(&report).expect("json")
    );
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{secret} in the report");
    }
}

/// Runs the pipeline, which must fail; the error, with no secret in it.
async fn fails(server: &MockServer, auth: &str) -> RunError {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = pipeline_with(server, auth, &dir);
    let err = run(&pipeline, Vec::new())
        .await
        .expect_err("the run must fail");
    let shown = format!("{err} {err:?}");
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(
        !dir.path().join(format!("date={INGEST_DATE}")).exists(),
        "nothing is left of a failed run"
    );
    err
}

fn is_401_at_page_1(err: &RunError) -> bool {
    matches!(
        err,
        RunError::Source(SourceError::Status {
            status: 401,
            page: 1,
            attempts: 1,
            ..
        })
    )
}

#[tokio::test]
async fn static_credentials_of_every_kind_are_sent_and_wrong_ones_fail_at_once() {
    let kinds = [
        (
            Auth::Bearer("tok-3141".into()),
            "type = \"bearer\"\ntoken = \"${API_TOKEN}\"\n",
            "type = \"bearer\"\ntoken = \"${API_KEY}\"\n",
        ),
        (
            Auth::Basic {
                user: "ana".into(),
                password: "pw-2718".into(),
            },
            "type = \"basic\"\nuser = \"ana\"\npassword = \"${API_PASSWORD}\"\n",
            "type = \"basic\"\nuser = \"bob\"\npassword = \"${API_PASSWORD}\"\n",
        ),
        (
            Auth::ApiKeyHeader {
                name: "X-API-Key".into(),
                key: "key-1618".into(),
            },
            "type = \"api_key\"\nheader = \"X-API-Key\"\nkey = \"${API_KEY}\"\n",
            "type = \"api_key\"\nheader = \"X-Other-Key\"\nkey = \"${API_KEY}\"\n",
        ),
        (
            Auth::ApiKeyQuery {
                param: "access_key".into(),
                key: "key-1618".into(),
            },
            "type = \"api_key\"\nparam = \"access_key\"\nkey = \"${API_KEY}\"\n",
            "type = \"api_key\"\nparam = \"access_key\"\nkey = \"${API_TOKEN}\"\n",
        ),
    ];
    for (demanded, right, wrong) in kinds {
        let server = mock(data(RECORDS), |c| c.auth = demanded.clone()).await;
        lands_everything(&server, right).await;
        let err = fails(&server, wrong).await;
        assert!(is_401_at_page_1(&err), "{right}: {err}");
        // A key in the query is added to each request, never to the URL a message shows.
        if right.contains("param") {
            assert!(!err.to_string().contains("access_key="), "{err}");
        }
    }
}

fn oauth(tweak: impl FnOnce(&mut OAuth2Server)) -> Auth {
    let mut server = OAuth2Server::new("landline-client", "client-secret-577");
    tweak(&mut server);
    Auth::OAuth2(server)
}

fn client_credentials(api: &MockServer, client_auth: &str, extra: &str) -> String {
    format!(
        "type = \"oauth2_client_credentials\"\ntoken_url = \"{}/oauth/token\"\n\
         client_id = \"landline-client\"\nclient_secret = \"${{CLIENT_SECRET}}\"\n\
         client_auth = \"{client_auth}\"\n{extra}",
        api.base_url()
    )
}

/// Tokens living 1 s, pages answered after 80 ms: the run outlives a token, which is replaced
/// before it expires (at half its life, the margin being longer than the life), so the API
/// never sees an expired one (a request would have to wait half a second between the
/// client's check and the server's to arrive late).
#[tokio::test]
async fn oauth2_tokens_are_fetched_shared_and_replaced_before_they_expire() {
    for client_auth in ["basic", "body"] {
        let server = mock(data(RECORDS), |c| {
            c.latency = Duration::from_millis(80);
            c.auth = oauth(|o| {
                o.token_ttl = Duration::from_secs(1);
                o.scopes = vec!["variants:read".into(), "other".into()];
                o.required_fields = vec![("audience".into(), "https://api.test".into())];
            });
        })
        .await;
        let auth = client_credentials(
            &server,
            client_auth,
            "scopes = [\"variants:read\"]\nextra = { audience = \"https://api.test\" }\n",
        );
        lands_everything(&server, &auth).await;
        let tokens = server.api().issued_tokens();
        assert!(tokens.len() >= 2, "{client_auth}: {} tokens", tokens.len());
        assert!(
            tokens
                .iter()
                .all(|t| t.grant == Grant::ClientCredentials && t.scope == "variants:read"),
            "{tokens:?}"
        );
        let refused = server
            .request_log()
            .iter()
            .filter(|r| r.status == 401)
            .count();
        assert_eq!(
            refused, 0,
            "{client_auth}: no request went with an expired token"
        );
    }
}

/// The server revokes each token after 4 requests: the page that meets the 401 fetches a
/// fresh token at once and goes on.
#[tokio::test]
async fn a_revoked_oauth2_token_is_replaced_once_on_a_401() {
    let server = mock(data(RECORDS), |c| {
        c.auth = oauth(|o| o.revoke_after_requests = Some(4));
    })
    .await;
    lands_everything(&server, &client_credentials(&server, "basic", "")).await;
    let tokens = server.api().issued_tokens();
    let pages = RECORDS / 50 + 1;
    assert!(tokens.len() as u64 >= pages / 4, "{} tokens", tokens.len());
    assert!(tokens.iter().all(|t| t.data_requests <= 5), "{tokens:?}");
}

/// A token the API refuses however fresh: one new token, then a clear failure.
#[tokio::test]
async fn an_api_refusing_fresh_tokens_fails_after_one_refresh() {
    let server = mock(data(RECORDS), |c| {
        c.auth = oauth(|o| o.revoke_after_requests = Some(0));
    })
    .await;
    let err = fails(&server, &client_credentials(&server, "basic", "")).await;
    assert!(is_401_at_page_1(&err), "{err}");
    assert!(
        err.to_string()
            .contains("refused again with a fresh OAuth2 access token"),
        "{err}"
    );
    assert_eq!(server.api().issued_tokens().len(), 2);
}

/// A refresh-token client with rotation: each refresh uses the token the last one returned
/// (the server refuses a used one), for a run longer than several access tokens (13 pages
/// of 80 ms at least, tokens replaced every 150 ms).
#[tokio::test]
async fn oauth2_refresh_tokens_rotate_through_a_run() {
    let server = mock(data(RECORDS), |c| {
        c.latency = Duration::from_millis(80);
        c.auth = oauth(|o| {
            o.token_ttl = Duration::from_millis(300);
            o.initial_refresh_token = Some("refresh-0-1414".into());
            o.rotate_refresh_tokens = true;
        });
    })
    .await;
    let auth = format!(
        "type = \"oauth2_refresh_token\"\ntoken_url = \"{}/oauth/token\"\n\
         client_id = \"landline-client\"\nclient_secret = \"${{CLIENT_SECRET}}\"\n\
         refresh_token = \"${{REFRESH_TOKEN}}\"\n",
        server.base_url()
    );
    lands_everything(&server, &auth).await;
    let tokens = server.api().issued_tokens();
    assert!(tokens.len() >= 3, "{} tokens", tokens.len());
    assert!(tokens.iter().all(|t| t.grant == Grant::RefreshToken));
}

/// The token endpoint's refusals are named with its error code, before any page is fetched.
#[tokio::test]
async fn token_endpoint_refusals_are_reported_with_their_oauth2_error() {
    let server = mock(data(RECORDS), |c| {
        c.auth = oauth(|o| o.scopes = vec!["variants:read".into()]);
    })
    .await;
    let wrong_secret =
        client_credentials(&server, "basic", "").replace("${CLIENT_SECRET}", "${API_PASSWORD}");
    let wrong_scope = client_credentials(&server, "body", "scopes = [\"admin\"]\n");
    for (auth, code) in [
        (wrong_secret, "invalid_client"),
        (wrong_scope, "invalid_scope"),
    ] {
        let err = fails(&server, &auth).await;
        let RunError::Source(SourceError::Auth {
            page: 1,
            source: AuthError::Refused { error, .. },
            ..
        }) = &err
        else {
            panic!("{err}")
        };
        assert_eq!(error.as_deref(), Some(code), "{err}");
        assert!(err.to_string().contains(code), "{err}");
    }
    assert_eq!(server.stats().pages_served, 0);
}

#[test]
fn auth_sections_are_checked_before_any_request() {
    let cases = [
        ("type = \"api_key\"\nkey = \"k\"\n", "source.auth"),
        (
            "type = \"api_key\"\nkey = \"k\"\nheader = \"X\"\nparam = \"p\"\n",
            "source.auth",
        ),
        (
            "type = \"bearer\"\ntoken = \"${NOPE}\"\n",
            "source.auth.token",
        ),
        (
            "type = \"oauth2_client_credentials\"\ntoken_url = \"http://idp.example.com/t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
            "source.auth.token_url",
        ),
        (
            "type = \"oauth2_client_credentials\"\ntoken_url = \"https://idp/t\"\nclient_id = \"c\"\n",
            "source.auth.client_secret",
        ),
        (
            "type = \"oauth2_refresh_token\"\ntoken_url = \"https://idp/t\"\nclient_id = \"c\"\n",
            "source.auth.refresh_token",
        ),
        (
            "type = \"oauth2_client_credentials\"\ntoken_url = \"https://idp/t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nextra = { grant_type = \"password\" }\n",
            "source.auth.extra.grant_type",
        ),
        ("type = \"kerberos\"\n", "kerberos"),
        (
            "type = \"bearer\"\ntoken = \"t\"\nheader = \"X\"\n",
            "header",
        ),
    ];
    for (auth, named) in cases {
        let text = pipeline_text(
            &format!(
                "{}[source.auth]\n{auth}",
                Style::Token.source("http://127.0.0.1:9", 50)
            ),
            "url = \"out.jsonl.gz\"",
        );
        let err = PipelineFile::parse(&text, "auth.toml")
            .and_then(|f| f.validate(&env))
            .expect_err(auth);
        assert!(err.to_string().contains(named), "{auth}: {err}");
    }
}
