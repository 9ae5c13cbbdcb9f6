//! Authentication of the API's requests (`[source.auth]`).
//!
//! [`Auth`] is what a pipeline asks for, validated; the `Authenticator` applies it to each
//! request of a run. The static kinds set a header (`bearer`, `basic`, `api_key` in a header)
//! or a query parameter (`api_key` in the query, which the redactor then hides). OAuth2
//! (RFC 6749) fetches an access token before the first page, shares it between the pages in
//! flight, fetches the next one `refresh_before` ahead of its expiry, and once more when the
//! API answers 401 with it; a refresh token the server rotates is kept for the rest of the
//! run (in memory only: never in a log, an error, a checkpoint or a manifest). `aws_sigv4`
//! signs each request (each attempt, so a retry has a fresh `X-Amz-Date`) with credentials
//! from [`crate::aws::AwsCredentials`].
//!
//! Every secret is a [`Secret`] (its `Debug` masks it) and every header carrying one is marked
//! sensitive; the token endpoint's errors are reported with its `error` and
//! `error_description` only, never its body.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use super::redact::{RedactedUrl, Redactor};
use super::retry::{self, RetryPolicy};
use crate::secret::Secret;

/// Default [`OAuth2::refresh_before`]: an access token is replaced this long before it
/// expires.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(60);

/// How the API's requests are authenticated.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No authentication (headers in `[source] headers` still apply).
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// `Authorization: Basic base64(user:password)` (RFC 7617).
    Basic {
        /// The user name.
        user: Secret,
        /// The password.
        password: Secret,
    },
    /// An API key in a header (`X-API-Key: …`).
    ApiKeyHeader {
        /// The header.
        name: HeaderName,
        /// The key.
        key: Secret,
    },
    /// An API key in a query parameter (`?api_key=…`), added to every request's URL.
    ApiKeyQuery {
        /// The parameter, which messages redact.
        param: String,
        /// The key.
        key: Secret,
    },
    /// An OAuth2 access token, fetched and refreshed at a token endpoint.
    OAuth2(OAuth2),
    /// AWS Signature Version 4 in header form, with credentials from the AWS CLI's chain
    /// (cached, refreshed before they expire).
    AwsSigV4 {
        /// The credentials that sign.
        credentials: crate::aws::AwsCredentials,
        /// The region of the signature's scope.
        region: String,
        /// The service of the signature's scope (`execute-api`).
        service: String,
    },
}

/// OAuth2 settings (RFC 6749).
#[derive(Debug, Clone)]
pub struct OAuth2 {
    /// The token endpoint.
    pub token_url: Url,
    /// How access tokens are obtained.
    pub grant: Grant,
    /// The client's id.
    pub client_id: Secret,
    /// The client's secret, if it has one.
    pub client_secret: Option<Secret>,
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuth,
    /// Scopes asked for (none: the server's default).
    pub scopes: Vec<String>,
    /// Further form fields sent with every token request (`audience`, `resource`, …).
    pub extra: Vec<(String, Secret)>,
    /// An access token is replaced this long before it expires.
    pub refresh_before: Duration,
}

/// The grant an [`OAuth2`] source uses.
#[derive(Debug, Clone)]
pub enum Grant {
    /// Client credentials (RFC 6749 §4.4): every token is asked for with the client's own.
    ClientCredentials,
    /// A refresh token (§6): this one first, then whichever the server last returned.
    RefreshToken(Secret),
}

/// How a client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (what the RFC says servers must support).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token endpoint refused the request.
    #[error(
        "OAuth2 token endpoint {url}: HTTP {status}{}",
        oauth_error(.error, .description)
    )]
    Refused {
        /// The endpoint, redacted.
        url: RedactedUrl,
        /// The status.
        status: u16,
        /// The `error` code of the answer (`invalid_client`, `invalid_grant`, …), if any.
        error: Option<String>,
        /// Its `error_description`, if any (at most 200 characters).
        description: Option<String>,
    },
    /// The token endpoint could not be reached, after retries.
    #[error("OAuth2 token endpoint {url}: {cause} after {attempts} attempt(s)")]
    Transport {
        /// The endpoint, redacted.
        url: RedactedUrl,
        /// Attempts made.
        attempts: u32,
        /// What went wrong.
        cause: String,
    },
    /// AWS credentials could not be had, or the request could not be signed.
    #[error("AWS SigV4: {0}")]
    Aws(#[from] crate::aws::AwsError),
    /// The token endpoint's answer is not a usable token.
    #[error("OAuth2 token endpoint {url}: {reason}")]
    BadToken {
        /// The endpoint, redacted.
        url: RedactedUrl,
        /// What is wrong with it.
        reason: String,
    },
}

fn oauth_error(error: &Option<String>, description: &Option<String>) -> String {
    match (error, description) {
        (Some(e), Some(d)) => format!(": {e} ({d})"),
        (Some(e), None) => format!(": {e}"),
        (None, Some(d)) => format!(": {d}"),
        (None, None) => String::new(),
    }
}

/// The token a request was sent with, to say which one the API refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenGeneration(u64);

/// Applies a run's [`Auth`] to its requests; shared by every page in flight.
#[derive(Debug)]
pub(crate) struct Authenticator {
    auth: Auth,
    tokens: Option<TokenCache>,
    /// Access tokens fetched so far.
    pub(crate) fetched: AtomicU64,
}

#[derive(Debug)]
struct TokenCache {
    state: tokio::sync::Mutex<TokenState>,
}

#[derive(Debug, Default)]
struct TokenState {
    current: Option<Token>,
    /// The refresh token to use next: the configured one, then the last one returned.
    refresh_token: Option<Secret>,
    generation: u64,
}

#[derive(Debug)]
struct Token {
    /// The `Authorization` value, marked sensitive.
    header: HeaderValue,
    /// When it stops being used (its expiry less the refresh margin), if it expires.
    renew_at: Option<Instant>,
    generation: u64,
}

/// What the token endpoint answers (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
}

/// An error answer (§5.2).
#[derive(Deserialize)]
struct TokenErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
}

impl Authenticator {
    pub(crate) fn new(auth: Auth) -> Authenticator {
        let tokens = match &auth {
            Auth::OAuth2(oauth) => Some(TokenCache {
                state: tokio::sync::Mutex::new(TokenState {
                    refresh_token: match &oauth.grant {
                        Grant::RefreshToken(token) => Some(token.clone()),
                        Grant::ClientCredentials => None,
                    },
                    ..TokenState::default()
                }),
            }),
            _ => None,
        };
        Authenticator {
            auth,
            tokens,
            fetched: AtomicU64::new(0),
        }
    }

    /// The URL a request for `url` goes to: with the API key, if it travels in the query.
    pub(crate) fn url<'u>(&self, url: &'u Url) -> Cow<'u, Url> {
        match &self.auth {
            Auth::ApiKeyQuery { param, key } => {
                let mut url = url.clone();
                let others: Vec<(String, String)> = url
                    .query_pairs()
                    .filter(|(name, _)| name != param.as_str())
                    .map(|(n, v)| (n.into_owned(), v.into_owned()))
                    .collect();
                url.query_pairs_mut()
                    .clear()
                    .extend_pairs(others)
                    .append_pair(param, key.expose());
                Cow::Owned(url)
            }
            _ => Cow::Borrowed(url),
        }
    }

    /// `request` with its credentials, fetching an access token first if one is due; the
    /// token's generation, to pass to [`Authenticator::rejected`] on a 401.
    pub(crate) async fn authorize(
        &self,
        client: &reqwest::Client,
        request: RequestBuilder,
        policy: &RetryPolicy,
        redactor: &Redactor,
    ) -> Result<(RequestBuilder, Option<TokenGeneration>), AuthError> {
        Ok(match &self.auth {
            Auth::None | Auth::ApiKeyQuery { .. } => (request, None),
            Auth::Bearer { token } => (
                sensitive(
                    request,
                    AUTHORIZATION,
                    &format!("Bearer {}", token.expose()),
                ),
                None,
            ),
            Auth::Basic { user, password } => (
                request.basic_auth(user.expose(), Some(password.expose())),
                None,
            ),
            Auth::ApiKeyHeader { name, key } => {
                (sensitive(request, name.clone(), key.expose()), None)
            }
            Auth::AwsSigV4 {
                credentials,
                region,
                service,
            } => {
                let credentials = credentials.credentials().await?;
                let (client, built) = request.build_split();
                let mut built = built.map_err(|e| {
                    crate::aws::AwsError::Sign(crate::errors::one_line(&e.without_url()))
                })?;
                crate::aws::sign(
                    &mut built,
                    &credentials,
                    region,
                    service,
                    std::time::SystemTime::now(),
                )?;
                (RequestBuilder::from_parts(client, built), None)
            }
            Auth::OAuth2(oauth) => {
                let Some(cache) = &self.tokens else {
                    return Ok((request, None));
                };
                let mut state = cache.state.lock().await;
                let due = match &state.current {
                    None => true,
                    Some(token) => token.renew_at.is_some_and(|at| Instant::now() >= at),
                };
                if due {
                    let token = self
                        .fetch_token(client, oauth, &mut state, policy, redactor)
                        .await?;
                    state.current = Some(token);
                }
                match &state.current {
                    Some(token) => (
                        request_with(request, AUTHORIZATION, token.header.clone()),
                        Some(TokenGeneration(token.generation)),
                    ),
                    None => (request, None),
                }
            }
        })
    }

    /// The API refused a request sent with token `generation`: it is not used again (a
    /// request in flight with a newer token keeps that one).
    pub(crate) async fn rejected(&self, generation: TokenGeneration) {
        if let Some(cache) = &self.tokens {
            let mut state = cache.state.lock().await;
            if state
                .current
                .as_ref()
                .is_some_and(|t| t.generation == generation.0)
            {
                state.current = None;
            }
        }
    }

    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        oauth: &OAuth2,
        state: &mut TokenState,
        policy: &RetryPolicy,
        redactor: &Redactor,
    ) -> Result<Token, AuthError> {
        let url = || redactor.url(&oauth.token_url);
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            match &state.refresh_token {
                Some(refresh) => {
                    form.append_pair("grant_type", "refresh_token");
                    form.append_pair("refresh_token", refresh.expose());
                }
                None => {
                    form.append_pair("grant_type", "client_credentials");
                }
            }
            if !oauth.scopes.is_empty() {
                form.append_pair("scope", &oauth.scopes.join(" "));
            }
            for (name, value) in &oauth.extra {
                form.append_pair(name, value.expose());
            }
            if oauth.client_auth == ClientAuth::Body {
                form.append_pair("client_id", oauth.client_id.expose());
                if let Some(secret) = &oauth.client_secret {
                    form.append_pair("client_secret", secret.expose());
                }
            }
            Secret::new(form.finish())
        };
        let mut attempt = 0;
        let answer = loop {
            attempt += 1;
            let mut request = client
                .post(oauth.token_url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(ACCEPT, "application/json")
                .body(body.expose().to_owned());
            if oauth.client_auth == ClientAuth::Basic {
                // RFC 6749 §2.3.1: both form-urlencoded before they are joined.
                let encode = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(
                    encode(oauth.client_id.expose()),
                    oauth.client_secret.as_ref().map(|s| encode(s.expose())),
                );
            }
            let (retryable, retry_after, failure) = match request.send().await {
                Ok(response) if response.status().is_success() => break response,
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()));
                    let answer: Option<TokenErrorAnswer> = response
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    let (error, description) = answer
                        .map(|a| (a.error, a.error_description))
                        .unwrap_or_default();
                    let failure = AuthError::Refused {
                        url: url(),
                        status,
                        error: error.map(|e| excerpt(&e)),
                        description: description.map(|d| excerpt(&d)),
                    };
                    (retry::is_retryable_status(status), retry_after, failure)
                }
                Err(e) => {
                    let certificate = crate::errors::is_certificate_error(&e);
                    let failure = AuthError::Transport {
                        url: url(),
                        attempts: attempt,
                        cause: crate::errors::one_line(&e.without_url()),
                    };
                    (!certificate, None, failure)
                }
            };
            if !retryable || attempt >= policy.max_attempts {
                return Err(failure);
            }
            let delay = policy.delay(attempt - 1, retry_after, &mut rand::rng());
            tracing::warn!(url = %url(), attempt, cause = %failure, retry_in_ms = delay.as_millis() as u64, "retrying the token request");
            tokio::time::sleep(delay).await;
        };
        let bad = |reason: &str| AuthError::BadToken {
            url: url(),
            reason: reason.to_owned(),
        };
        let bytes = answer
            .bytes()
            .await
            .map_err(|_| bad("the answer broke off"))?;
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|_| bad("the answer is not a JSON object with an access_token"))?;
        if let Some(kind) = &answer.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(bad(&format!(
                "token_type {:?} is not Bearer",
                excerpt(kind)
            )));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
            .map_err(|_| bad("the access token is not a valid header value"))?;
        header.set_sensitive(true);
        let expires_in = match &answer.expires_in {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => {
                Some(seconds(value).ok_or_else(|| bad("expires_in is not a number of seconds"))?)
            }
        };
        match (&oauth.grant, answer.refresh_token) {
            // The next token is asked for with the newest refresh token (rotation).
            (Grant::RefreshToken(_), Some(rotated)) => {
                state.refresh_token = Some(Secret::new(rotated));
            }
            // A client with credentials asks with them again, whatever the server offers.
            (Grant::ClientCredentials, _) | (_, None) => {}
        }
        let now = Instant::now();
        let renew_at = expires_in.map(|life| {
            // A token shorter-lived than the margin is used for half its life.
            let margin = oauth.refresh_before.min(life / 2);
            now + (life - margin)
        });
        state.generation += 1;
        let fetched = self.fetched.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            url = %url(),
            fetched,
            expires_in_secs = expires_in.map(|d| d.as_secs_f64()),
            "OAuth2 access token fetched"
        );
        Ok(Token {
            header,
            renew_at,
            generation: state.generation,
        })
    }
}

fn request_with(request: RequestBuilder, name: HeaderName, value: HeaderValue) -> RequestBuilder {
    request.header(name, value)
}

/// `request` with header `name` set to `value`, marked sensitive. Validation refused values
/// that are not valid header values, so none is dropped here.
fn sensitive(request: RequestBuilder, name: HeaderName, value: &str) -> RequestBuilder {
    match HeaderValue::from_str(value) {
        Ok(mut value) => {
            value.set_sensitive(true);
            request_with(request, name, value)
        }
        Err(_) => request,
    }
}

/// `expires_in`: a number of seconds, or a string holding one (some servers quote it).
fn seconds(value: &serde_json::Value) -> Option<Duration> {
    let secs = match value {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

/// At most 200 characters of a server's text, without control characters.
fn excerpt(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_read_as_seconds() {
        assert_eq!(
            seconds(&serde_json::json!(3600)),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            seconds(&serde_json::json!("90")),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            seconds(&serde_json::json!(0.5)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(seconds(&serde_json::json!(-1)), None);
        assert_eq!(seconds(&serde_json::json!("soon")), None);
        assert_eq!(seconds(&serde_json::json!({})), None);
    }

    #[test]
    fn an_api_key_in_the_query_replaces_one_already_there() {
        let auth = Authenticator::new(Auth::ApiKeyQuery {
            param: "api_key".into(),
            key: Secret::new("k&1"),
        });
        let url = Url::parse("http://h/p?count=5&api_key=old").unwrap();
        assert_eq!(auth.url(&url).as_str(), "http://h/p?count=5&api_key=k%261");
        let none = Authenticator::new(Auth::None);
        assert!(matches!(none.url(&url), Cow::Borrowed(_)));
    }

    #[test]
    fn errors_show_the_servers_code_but_no_secret() {
        let e = AuthError::Refused {
            url: Redactor::default().url(&Url::parse("https://id/token?client_secret=x").unwrap()),
            status: 401,
            error: Some("invalid_client".into()),
            description: None,
        };
        let text = e.to_string();
        assert!(text.contains("HTTP 401: invalid_client"), "{text}");
        assert!(!text.contains("=x"), "{text}");
    }
}
