//! What the server demands of a request ([`Auth`]), and the OAuth2 token endpoint
//! ([`OAuth2Server`]): the checks, the tokens issued, and their counters.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

use super::sigv4::{self, SigV4Key, SignedRequest, ct_eq};
use super::{JSON, ceil_secs, error, param};

/// The path of the OAuth2 token endpoint ([`Auth::OAuth2`]); `POST` only.
pub const TOKEN_PATH: &str = "/oauth/token";

/// The realm named in `WWW-Authenticate` challenges.
const REALM: &str = "landline-mockapi";

/// Largest token request body read.
const MAX_TOKEN_BODY: usize = 64 * 1024;

/// What every request but `/healthz` (and [`TOKEN_PATH`]) must present
/// ([`MockConfig::auth`](crate::MockConfig::auth)). A request without it answers 401 with a
/// JSON `{"error":"…"}` naming what was missing or did not match (never a secret) and a
/// `WWW-Authenticate` challenge, and counts in [`Stats::unauthorized`](crate::Stats).
///
/// Its `Debug` output leaves the secrets out.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No auth: every request is answered.
    #[default]
    None,
    /// `Authorization: Bearer <this>` (the scheme in any case). Challenge: `Bearer`.
    Bearer(String),
    /// HTTP Basic (RFC 7617): `Authorization: Basic base64(user:password)`, the user being
    /// what precedes the first `:`. Challenge: `Basic realm="landline-mockapi",
    /// charset="UTF-8"`.
    Basic {
        /// The user id.
        user: String,
        /// The password.
        password: String,
    },
    /// An API key in a request header, e.g. `X-API-Key: <key>`. Challenge: `ApiKey
    /// realm="landline-mockapi", header="<name>"`.
    ApiKeyHeader {
        /// The header's name (any case).
        name: String,
        /// Its value.
        key: String,
    },
    /// An API key in a query parameter, e.g. `?api_key=<key>` (percent-decoded before it is
    /// compared; the data endpoints ignore the parameter). Challenge: `ApiKey
    /// realm="landline-mockapi", query="<param>"`.
    ApiKeyQuery {
        /// The parameter's name.
        param: String,
        /// Its value, decoded.
        key: String,
    },
    /// OAuth2 bearer access tokens issued by this server's token endpoint, `POST`
    /// [`TOKEN_PATH`]; see [`OAuth2Server`].
    OAuth2(OAuth2Server),
    /// AWS Signature Version 4, header form, verified on every request; see the
    /// [module docs](crate::server).
    SigV4 {
        /// The access key id of `Credential=`.
        access_key_id: String,
        /// The secret access key the signature is computed with.
        secret_access_key: String,
        /// When set, `X-Amz-Security-Token` must be sent and equal it.
        session_token: Option<String>,
        /// The region of the credential scope, e.g. `us-east-1`.
        region: String,
        /// The service of the credential scope, e.g. `execute-api`.
        service: String,
    },
}

impl fmt::Debug for Auth {
    /// The kind and the names, not the secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HIDDEN: &str = "<redacted>";
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.debug_tuple("Bearer").field(&HIDDEN).finish(),
            Auth::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &HIDDEN)
                .finish(),
            Auth::ApiKeyHeader { name, .. } => f
                .debug_struct("ApiKeyHeader")
                .field("name", name)
                .field("key", &HIDDEN)
                .finish(),
            Auth::ApiKeyQuery { param, .. } => f
                .debug_struct("ApiKeyQuery")
                .field("param", param)
                .field("key", &HIDDEN)
                .finish(),
            Auth::OAuth2(server) => f.debug_tuple("OAuth2").field(server).finish(),
            Auth::SigV4 {
                access_key_id,
                session_token,
                region,
                service,
                ..
            } => f
                .debug_struct("SigV4")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &HIDDEN)
                .field("session_token", &session_token.as_ref().map(|_| HIDDEN))
                .field("region", region)
                .field("service", service)
                .finish(),
        }
    }
}

/// The OAuth2 authorization server of [`Auth::OAuth2`]: its token endpoint, `POST`
/// [`TOKEN_PATH`], issues bearer access tokens that the other paths then require.
///
/// The endpoint takes an `application/x-www-form-urlencoded` body with `grant_type`
/// `client_credentials` (RFC 6749 §4.4) or `refresh_token` (§6, with `refresh_token`), an
/// optional `scope` (space-separated), and the [`required_fields`](Self::required_fields).
/// The client authenticates on both grants, with `client_id` and `client_secret` form fields or
/// HTTP Basic (§2.3.1: the id and secret form-urlencoded, then base64), not both. It answers
/// `200 {"access_token":"…","token_type":"Bearer","expires_in":N,"refresh_token":"…",
/// "scope":"…"}` (`refresh_token` and `scope` only when there is one; `expires_in` is
/// [`token_ttl`](Self::token_ttl) in whole seconds, rounded up) with `Cache-Control:
/// no-store`, or an RFC 6749 §5.2 error `{"error":"<code>","error_description":"…"}`:
/// `400 invalid_request` (no or a repeated parameter, a required field missing or different, a
/// body that is not a form), `401 invalid_client` (no, unknown or wrong client credentials;
/// with `WWW-Authenticate: Basic`), `400 unsupported_grant_type`, `400 invalid_scope` (a
/// scope not in [`scopes`](Self::scopes), or on a refresh not granted before), `400
/// invalid_grant` (an unknown, used or rotated-away refresh token). Each answer counts in
/// [`Stats`](crate::Stats) and each token issued in [`MockApi::issued_tokens`](crate::MockApi::issued_tokens).
///
/// Its `Debug` output leaves the secrets out.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth2Server {
    /// The client's id.
    pub client_id: String,
    /// The client's secret.
    pub client_secret: String,
    /// The scopes a client may ask for; a request naming another answers `invalid_scope`. A
    /// request without `scope` is granted all of them (a refresh: those granted before). The
    /// scope granted is recorded with the token and sent as `scope` when not empty.
    pub scopes: Vec<String>,
    /// How long an access token is accepted after it was issued; a request with an expired
    /// one answers 401 with `WWW-Authenticate: Bearer error="invalid_token", …`.
    pub token_ttl: Duration,
    /// Whether a `client_credentials` grant also returns a refresh token (RFC 6749 says it
    /// should not, many servers do).
    pub issue_refresh_tokens: bool,
    /// Whether each refresh returns a new refresh token, the old one then answering
    /// `invalid_grant`. Without rotation a refresh returns no `refresh_token` and the one used
    /// stays valid.
    pub rotate_refresh_tokens: bool,
    /// A refresh token valid from the start (granted all [`scopes`](Self::scopes)), for a client
    /// configured with a refresh token only.
    pub initial_refresh_token: Option<String>,
    /// Form fields every token request must carry with these values, e.g. `("audience",
    /// "https://api.example.com")`; missing or different: `invalid_request`.
    pub required_fields: Vec<(String, String)>,
    /// When set, an access token is refused (401 `invalid_token`, as if the server revoked
    /// it) once it has been accepted on this many data requests, even before it expires.
    pub revoke_after_requests: Option<u32>,
}

impl OAuth2Server {
    /// A server for the client `client_id` with `client_secret`: no scopes, tokens valid for an
    /// hour, refresh tokens issued and not rotated, no initial refresh token, no required
    /// fields, no revocation.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> OAuth2Server {
        OAuth2Server {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scopes: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            issue_refresh_tokens: true,
            rotate_refresh_tokens: false,
            initial_refresh_token: None,
            required_fields: Vec::new(),
            revoke_after_requests: None,
        }
    }
}

impl Default for OAuth2Server {
    /// [`OAuth2Server::new`]`("landline", "landline-secret")`.
    fn default() -> Self {
        OAuth2Server::new("landline", "landline-secret")
    }
}

impl fmt::Debug for OAuth2Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HIDDEN: &str = "<redacted>";
        f.debug_struct("OAuth2Server")
            .field("client_id", &self.client_id)
            .field("client_secret", &HIDDEN)
            .field("scopes", &self.scopes)
            .field("token_ttl", &self.token_ttl)
            .field("issue_refresh_tokens", &self.issue_refresh_tokens)
            .field("rotate_refresh_tokens", &self.rotate_refresh_tokens)
            .field(
                "initial_refresh_token",
                &self.initial_refresh_token.as_ref().map(|_| HIDDEN),
            )
            .field("required_fields", &self.required_fields)
            .field("revoke_after_requests", &self.revoke_after_requests)
            .finish()
    }
}

/// The grant an access token was issued by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grant {
    /// `grant_type=client_credentials` (RFC 6749 §4.4).
    ClientCredentials,
    /// `grant_type=refresh_token` (RFC 6749 §6).
    RefreshToken,
}

/// An access token the token endpoint issued, with its use so far
/// ([`MockApi::issued_tokens`](crate::MockApi::issued_tokens)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token, as issued.
    pub access_token: String,
    /// The grant that issued it.
    pub grant: Grant,
    /// The scope granted, space-separated (empty: none).
    pub scope: String,
    /// When it was issued.
    pub issued_at: Instant,
    /// When it stops being accepted (`None`: a TTL too long for an `Instant`, never).
    pub expires_at: Option<Instant>,
    /// Data requests it was accepted on (those answered in any way after the auth check).
    pub data_requests: u64,
}

/// The tokens a server issued.
#[derive(Default)]
struct Tokens {
    /// In the order issued.
    issued: Vec<IssuedToken>,
    /// Access token → index in `issued`.
    by_token: HashMap<String, usize>,
    /// Valid refresh tokens → the scope they were granted.
    refresh: HashMap<String, String>,
}

/// The auth side of a running server: tokens and counters.
pub(super) struct AuthState {
    tokens: Mutex<Tokens>,
    pub(super) unauthorized: AtomicU64,
    pub(super) client_credentials_grants: AtomicU64,
    pub(super) refresh_grants: AtomicU64,
    pub(super) token_errors: AtomicU64,
}

impl AuthState {
    pub(super) fn new(auth: &Auth) -> AuthState {
        let mut tokens = Tokens::default();
        if let Auth::OAuth2(server) = auth
            && let Some(initial) = &server.initial_refresh_token
        {
            tokens
                .refresh
                .insert(initial.clone(), server.scopes.join(" "));
        }
        AuthState {
            tokens: Mutex::new(tokens),
            unauthorized: AtomicU64::new(0),
            client_credentials_grants: AtomicU64::new(0),
            refresh_grants: AtomicU64::new(0),
            token_errors: AtomicU64::new(0),
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The access tokens issued so far, in order.
    pub(super) fn issued(&self) -> Vec<IssuedToken> {
        self.tokens().issued.clone()
    }

    /// `None` if the request presents what `auth` demands (`data`: it is a data request, which
    /// OAuth2 tokens count); else the 401 to answer, counted.
    pub(super) fn refusal(&self, auth: &Auth, req: &Request, data: bool) -> Option<Response> {
        let result = self.verdict(auth, req.method().as_str(), req.uri(), req.headers(), data);
        result.err().map(|refusal| {
            self.unauthorized.fetch_add(1, Relaxed);
            refusal.response()
        })
    }

    fn verdict(
        &self,
        auth: &Auth,
        method: &str,
        uri: &Uri,
        headers: &HeaderMap,
        data: bool,
    ) -> Result<(), Refusal> {
        match auth {
            Auth::None => Ok(()),
            Auth::Bearer(expected) => match credentials(headers, "Bearer") {
                Some(token) if ct_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
                _ => Err(Refusal::new(
                    "Bearer".into(),
                    "missing or wrong bearer token",
                )),
            },
            Auth::Basic { user, password } => {
                let challenge = format!(r#"Basic realm="{REALM}", charset="UTF-8""#);
                let refuse = |message: &str| Err(Refusal::new(challenge.clone(), message));
                let Some(encoded) = credentials(headers, "Basic") else {
                    return refuse("missing Authorization: Basic credentials");
                };
                let (got_user, got_password) = match basic_pair(encoded) {
                    Ok(pair) => pair,
                    Err(message) => return refuse(&message),
                };
                // Both compared, whichever differs.
                let user_ok = ct_eq(&got_user, user.as_bytes());
                let password_ok = ct_eq(&got_password, password.as_bytes());
                if user_ok & password_ok {
                    Ok(())
                } else {
                    refuse("wrong user or password")
                }
            }
            Auth::ApiKeyHeader { name, key } => {
                let challenge = format!(r#"ApiKey realm="{REALM}", header="{name}""#);
                match headers.get(name.as_str()) {
                    None => Err(Refusal::new(challenge, &format!("missing {name} header"))),
                    Some(value) if ct_eq(value.as_bytes(), key.as_bytes()) => Ok(()),
                    Some(_) => Err(Refusal::new(challenge, &format!("wrong {name} header"))),
                }
            }
            Auth::ApiKeyQuery { param: name, key } => {
                let challenge = format!(r#"ApiKey realm="{REALM}", query="{name}""#);
                let query = uri.query().unwrap_or("");
                match param(query, name) {
                    None => Err(Refusal::new(
                        challenge,
                        &format!("missing {name} query parameter"),
                    )),
                    Some(raw) => match percent_decoded(raw) {
                        Some(value) if ct_eq(value.as_bytes(), key.as_bytes()) => Ok(()),
                        _ => Err(Refusal::new(
                            challenge,
                            &format!("wrong {name} query parameter"),
                        )),
                    },
                }
            }
            Auth::OAuth2(server) => self.access_token(server, headers, data, Instant::now()),
            Auth::SigV4 {
                access_key_id,
                secret_access_key,
                session_token,
                region,
                service,
            } => {
                let key = SigV4Key {
                    access_key_id,
                    secret_access_key,
                    session_token: session_token.as_deref(),
                    region,
                    service,
                };
                let request = SignedRequest {
                    method,
                    path: uri.path(),
                    query: uri.query().unwrap_or(""),
                    headers,
                };
                sigv4::verify(&key, &request, SystemTime::now())
                    .map_err(|message| Refusal::new("AWS4-HMAC-SHA256".into(), &message))
            }
        }
    }

    /// The OAuth2 check: a token this server issued, not expired, not revoked; a data request
    /// counts on it.
    fn access_token(
        &self,
        server: &OAuth2Server,
        headers: &HeaderMap,
        data: bool,
        now: Instant,
    ) -> Result<(), Refusal> {
        let invalid = |why: &str| {
            let challenge = format!(
                r#"Bearer realm="{REALM}", error="invalid_token", error_description="{why}""#
            );
            Refusal::new(challenge, why)
        };
        let Some(token) = credentials(headers, "Bearer") else {
            let challenge = format!(r#"Bearer realm="{REALM}""#);
            return Err(Refusal::new(challenge, "missing bearer access token"));
        };
        let mut tokens = self.tokens();
        let Some(&index) = tokens.by_token.get(token) else {
            return Err(invalid("unknown access token"));
        };
        let issued = &mut tokens.issued[index];
        if issued.expires_at.is_some_and(|end| now >= end) {
            return Err(invalid("the access token expired"));
        }
        if let Some(limit) = server.revoke_after_requests
            && issued.data_requests >= u64::from(limit)
        {
            return Err(invalid(&format!(
                "the access token was revoked after {limit} data requests"
            )));
        }
        if data {
            issued.data_requests += 1;
        }
        Ok(())
    }

    /// `POST` [`TOKEN_PATH`].
    pub(super) async fn token_endpoint(&self, server: &OAuth2Server, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let form = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| {
                media
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let result = if !form {
            Err(OAuthError::request(
                "the body must be application/x-www-form-urlencoded",
            ))
        } else {
            match axum::body::to_bytes(body, MAX_TOKEN_BODY).await {
                Ok(bytes) => self.grant(server, &parts.headers, &bytes, Instant::now()),
                Err(_) => Err(OAuthError::request(
                    "the body could not be read, or is over 64 KiB",
                )),
            }
        };
        match result {
            Ok(body) => {
                let mut response = (StatusCode::OK, [(CONTENT_TYPE, JSON)], body).into_response();
                no_store(response.headers_mut());
                response
            }
            Err(failure) => {
                self.token_errors.fetch_add(1, Relaxed);
                failure.response()
            }
        }
    }

    /// A token request's answer: the JSON of the tokens issued, or the error.
    fn grant(
        &self,
        server: &OAuth2Server,
        headers: &HeaderMap,
        body: &[u8],
        now: Instant,
    ) -> Result<String, OAuthError> {
        let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        for (i, (name, _)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(OAuthError::request(&format!("parameter {name} repeated")));
            }
        }
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };

        // Client authentication (RFC 6749 §2.3.1): HTTP Basic or the form, not both.
        let (client_id, client_secret) = match credentials(headers, "Basic") {
            Some(encoded) => {
                if field("client_secret").is_some() {
                    return Err(OAuthError::request(
                        "client authenticated twice: HTTP Basic and client_secret",
                    ));
                }
                let (id, secret) = basic_pair(encoded).map_err(|m| OAuthError::client(&m))?;
                // Each part is form-urlencoded before base64 (RFC 6749 §2.3.1).
                let decode = |part: &[u8]| -> String {
                    form_urlencoded::parse(&[b"x=", part].concat())
                        .next()
                        .map(|(_, value)| value.into_owned())
                        .unwrap_or_default()
                };
                let (id, secret) = (decode(&id), decode(&secret));
                if field("client_id").is_some_and(|form_id| form_id != id) {
                    return Err(OAuthError::request(
                        "client_id differs from the HTTP Basic user",
                    ));
                }
                (id, secret)
            }
            None => match (field("client_id"), field("client_secret")) {
                (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
                _ => {
                    return Err(OAuthError::client(
                        "no client authentication: send client_id and client_secret, or HTTP Basic",
                    ));
                }
            },
        };
        let id_ok = ct_eq(client_id.as_bytes(), server.client_id.as_bytes());
        let secret_ok = ct_eq(client_secret.as_bytes(), server.client_secret.as_bytes());
        if !(id_ok & secret_ok) {
            return Err(OAuthError::client(
                "unknown client_id or wrong client_secret",
            ));
        }

        let grant = match field("grant_type") {
            None => return Err(OAuthError::request("missing grant_type")),
            Some("client_credentials") => Grant::ClientCredentials,
            Some("refresh_token") => Grant::RefreshToken,
            Some(other) => {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    &format!(
                        "grant_type {other:?} is not supported (client_credentials, refresh_token)"
                    ),
                ));
            }
        };
        for (name, value) in &server.required_fields {
            match field(name) {
                None => return Err(OAuthError::request(&format!("missing {name}"))),
                Some(sent) if sent != value => {
                    return Err(OAuthError::request(&format!("wrong {name}")));
                }
                Some(_) => {}
            }
        }

        let mut tokens = self.tokens();
        let (refresh_used, allowed) = match grant {
            Grant::ClientCredentials => (None, None),
            Grant::RefreshToken => {
                let Some(refresh) = field("refresh_token") else {
                    return Err(OAuthError::request("missing refresh_token"));
                };
                let Some(scope) = tokens.refresh.get(refresh) else {
                    return Err(OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "unknown, used or revoked refresh_token",
                    ));
                };
                (Some(refresh.to_owned()), Some(scope.clone()))
            }
        };
        let scope = granted_scope(server, field("scope"), allowed.as_deref())?;

        let access_token = format!("at_{:032x}", rand::random::<u128>());
        let refresh_token = match grant {
            Grant::ClientCredentials => server.issue_refresh_tokens,
            Grant::RefreshToken => server.rotate_refresh_tokens,
        }
        .then(|| format!("rt_{:032x}", rand::random::<u128>()));
        if server.rotate_refresh_tokens
            && let Some(used) = &refresh_used
        {
            tokens.refresh.remove(used);
        }
        if let Some(refresh) = &refresh_token {
            tokens.refresh.insert(refresh.clone(), scope.clone());
        }
        let index = tokens.issued.len();
        tokens.by_token.insert(access_token.clone(), index);
        tokens.issued.push(IssuedToken {
            access_token: access_token.clone(),
            grant,
            scope: scope.clone(),
            issued_at: now,
            expires_at: now.checked_add(server.token_ttl),
            data_requests: 0,
        });
        drop(tokens);
        match grant {
            Grant::ClientCredentials => &self.client_credentials_grants,
            Grant::RefreshToken => &self.refresh_grants,
        }
        .fetch_add(1, Relaxed);

        let mut answer = serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ceil_secs(server.token_ttl),
        });
        if let Some(refresh) = refresh_token {
            answer["refresh_token"] = refresh.into();
        }
        if !scope.is_empty() {
            answer["scope"] = scope.into();
        }
        Ok(answer.to_string())
    }
}

/// The scope granted for the `requested` one (`None`: not asked), each of whose scopes must
/// be one of the server's and, on a refresh, one `allowed` before.
fn granted_scope(
    server: &OAuth2Server,
    requested: Option<&str>,
    allowed: Option<&str>,
) -> Result<String, OAuthError> {
    let Some(requested) = requested else {
        return Ok(allowed.map_or_else(|| server.scopes.join(" "), str::to_owned));
    };
    let invalid =
        |message: String| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", &message);
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !server.scopes.iter().any(|s| s == scope) {
            return Err(invalid(format!("scope {scope:?} is not accepted")));
        }
        if allowed.is_some_and(|allowed| !allowed.split(' ').any(|s| s == scope)) {
            return Err(invalid(format!(
                "scope {scope:?} was not granted to this refresh_token"
            )));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}

/// The credentials after `Authorization: <scheme> ` (the scheme in any case), if that is the
/// scheme.
fn credentials<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim_matches(' '))
}

/// Standard base64, padded or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The `user` and `password` bytes of Basic credentials `base64(user:password)`.
fn basic_pair(encoded: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let decoded = BASE64
        .decode(encoded)
        .map_err(|_| "malformed Basic credentials: not base64".to_owned())?;
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return Err("malformed Basic credentials: no ':' between user and password".into());
    };
    Ok((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// A query value percent-decoded (`+` stays `+`), if it is UTF-8.
pub(super) fn percent_decoded(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, as RFC 6749 §5.1 wants on token answers.
fn no_store(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A 401 of the auth check.
struct Refusal {
    challenge: String,
    message: String,
}

impl Refusal {
    fn new(challenge: String, message: &str) -> Refusal {
        Refusal {
            challenge,
            message: message.to_owned(),
        }
    }

    fn response(self) -> Response {
        let mut response = error(StatusCode::UNAUTHORIZED, &self.message);
        let challenge = HeaderValue::try_from(self.challenge)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        response
    }
}

/// An RFC 6749 §5.2 error of the token endpoint.
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: &str) -> OAuthError {
        OAuthError {
            status,
            code,
            description: description.to_owned(),
        }
    }

    /// `400 invalid_request`.
    fn request(description: &str) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// `401 invalid_client`.
    fn client(description: &str) -> OAuthError {
        OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    fn response(self) -> Response {
        let body = serde_json::json!({
            "error": self.code,
            "error_description": self.description,
        })
        .to_string();
        let mut response = (self.status, [(CONTENT_TYPE, JSON)], body).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = format!(r#"Basic realm="{REALM}", charset="UTF-8""#);
            if let Ok(challenge) = HeaderValue::try_from(challenge) {
                headers.insert(WWW_AUTHENTICATE, challenge);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for &(name, value) in pairs {
            headers.append(name, HeaderValue::try_from(value).expect("a header value"));
        }
        headers
    }

    fn verdict(auth: &Auth, uri: &str, headers: &[(&'static str, &str)]) -> Result<(), String> {
        let uri: Uri = uri.parse().expect("a URI");
        AuthState::new(auth)
            .verdict(auth, "GET", &uri, &header_map(headers), true)
            .map_err(|refusal| refusal.message)
    }

    #[test]
    fn basic_credentials_are_decoded_and_compared() {
        let auth = Auth::Basic {
            user: "ann".into(),
            password: "pa:ss wörd".into(),
        };
        let basic = |user_pass: &str| {
            format!(
                "Basic {}",
                base64::prelude::BASE64_STANDARD.encode(user_pass)
            )
        };
        assert_eq!(
            verdict(&auth, "/v", &[("authorization", &basic("ann:pa:ss wörd"))]),
            Ok(())
        );
        // Without padding, and the scheme in another case.
        let unpadded = basic("ann:pa:ss wörd")
            .trim_end_matches('=')
            .replace("Basic", "bAsIc");
        assert_eq!(
            verdict(&auth, "/v", &[("authorization", &unpadded)]),
            Ok(())
        );
        for (header, expected) in [
            (basic("ann:wrong"), "wrong user or password"),
            (basic("bob:pa:ss wörd"), "wrong user or password"),
            (basic("annpass"), "no ':'"),
            ("Basic !!!not base64".into(), "not base64"),
            ("Basic".into(), "missing"),
            ("Bearer abc".into(), "missing"),
        ] {
            let error = verdict(&auth, "/v", &[("authorization", &header)]).expect_err(&header);
            assert!(error.contains(expected), "{header}: {error}");
        }
        assert!(verdict(&auth, "/v", &[]).is_err());
        let debug = format!("{auth:?}");
        assert!(debug.contains("ann") && !debug.contains("wörd"), "{debug}");
    }

    #[test]
    fn api_keys_in_headers_and_queries() {
        let header = Auth::ApiKeyHeader {
            name: "X-API-Key".into(),
            key: "k3y".into(),
        };
        assert_eq!(verdict(&header, "/v", &[("x-api-key", "k3y")]), Ok(()));
        assert_eq!(
            verdict(&header, "/v", &[("x-api-key", "K3Y")]),
            Err("wrong X-API-Key header".into())
        );
        assert_eq!(
            verdict(&header, "/v?X-API-Key=k3y", &[]),
            Err("missing X-API-Key header".into())
        );
        let query = Auth::ApiKeyQuery {
            param: "api_key".into(),
            key: "a+b/c=".into(),
        };
        assert_eq!(
            verdict(&query, "/v?count=5&api_key=a%2Bb%2Fc%3D", &[]),
            Ok(())
        );
        assert_eq!(verdict(&query, "/v?api_key=a+b/c=&count=5", &[]), Ok(()));
        assert_eq!(
            verdict(&query, "/v?api_key=a%20b/c=", &[]),
            Err("wrong api_key query parameter".into())
        );
        assert_eq!(
            verdict(&query, "/v?api_key=%FF", &[]),
            Err("wrong api_key query parameter".into())
        );
        assert_eq!(
            verdict(&query, "/v?count=5", &[]),
            Err("missing api_key query parameter".into())
        );
    }

    #[test]
    fn scopes_granted() {
        let server = OAuth2Server {
            scopes: vec!["read".into(), "write".into()],
            ..OAuth2Server::default()
        };
        let grant = |requested, allowed| {
            granted_scope(&server, requested, allowed).map_err(|e| (e.code, e.description))
        };
        assert_eq!(grant(None, None), Ok("read write".into()));
        assert_eq!(grant(None, Some("read")), Ok("read".into()));
        assert_eq!(
            grant(Some("write  read write"), None),
            Ok("write read".into())
        );
        assert_eq!(grant(Some(""), None), Ok(String::new()));
        assert!(matches!(
            grant(Some("admin"), None),
            Err(("invalid_scope", _))
        ));
        assert!(matches!(
            grant(Some("write"), Some("read")),
            Err(("invalid_scope", _))
        ));
        let debug = format!("{:?}", Auth::OAuth2(server));
        assert!(!debug.contains("landline-secret"), "{debug}");
    }
}
