//! AWS credentials the AWS CLI's way, for S3 destinations and SigV4-signed API sources.
//!
//! [`AwsCredentials`] is the `aws-config` crate's default credential chain: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then the selected
//! profile of `~/.aws/config` and `~/.aws/credentials` (or `AWS_CONFIG_FILE` and
//! `AWS_SHARED_CREDENTIALS_FILE`) with its static keys, `credential_process`, SSO sessions,
//! `role_arn` with `source_profile` or `credential_source` (roles assumed through STS, chained),
//! or `web_identity_token_file`; then web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` with
//! `AWS_ROLE_ARN`), the ECS/EKS container endpoint, and EC2 instance metadata (IMDS). The
//! profile is the one named explicitly (`[sink] profile`), else `AWS_PROFILE`, else `default`.
//!
//! **The environment is the one given**, never the process's behind the caller's back: every
//! variable the chain reads (`HOME` for `~/.aws` included) comes from the `env` passed to
//! [`AwsCredentials::new`] (through aws-config's `ConfigLoader::env`). Two things do come from
//! the process: a `credential_process` command runs with the process's environment (as the
//! AWS CLI runs it), and the HTTP client's proxy settings (`HTTPS_PROXY`, `NO_PROXY`).
//!
//! Credentials are cached, and fetched again from the chain shortly before they expire: five
//! minutes before, or halfway through the lifetime of shorter-lived ones. A refresh that fails
//! while the credentials in hand are still valid keeps them (and tries again ten seconds
//! later). No secret is ever in an error or in `Debug` output.
//!
//! [`sign`] signs a `reqwest` request with SigV4 in header form, for APIs behind AWS
//! authentication (API Gateway with IAM auth, OpenSearch, Lambda function URLs).
//!
//! The chain's HTTPS client (STS, SSO, ECS, IMDS) is hyper with rustls on ring, like every
//! other TLS client of landline (see [`crate::tls::crypto`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials as _, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_types::os_shim_internal::{Env, Fs};
use aws_types::region::Region;
use object_store::aws::AwsCredential;

/// The environment variables the AWS CLI's credential chain reads: what a SigV4-signed source
/// ([`crate::source::Auth::AwsSigV4`]) takes from the environment its pipeline was validated
/// with. (An S3 destination's chain reads every variable of the store's environment.)
pub const CHAIN_ENV_VARS: &[&str] = &[
    "HOME",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_SSO",
    "AWS_ENDPOINT_URL_SSO_OIDC",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
];

/// How long before its expiry a credential is refreshed (at most; see [`refresh_time`]).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// How long a failed refresh waits before the next try, while the old credentials last.
const RETRY_FAILED_REFRESH: Duration = Duration::from_secs(10);

/// The region when neither the environment nor the profile names one.
const DEFAULT_REGION: &str = "us-east-1";

/// Why AWS credentials could not be had, or a request could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// No source of the chain had credentials.
    #[error("no AWS credentials found for profile {profile:?}; looked in: {tried}")]
    NoCredentials {
        /// The profile the chain looked for.
        profile: String,
        /// The places tried, in order, with what was missing in each.
        tried: String,
    },
    /// A source of the chain failed (an invalid profile, a `credential_process` that failed,
    /// STS or SSO refusing, an expired SSO session).
    #[error("getting AWS credentials for profile {profile:?}: {cause}")]
    Provider {
        /// The profile the chain looked for.
        profile: String,
        /// What failed, on one line.
        cause: String,
    },
    /// The profile files could not be read or parsed.
    #[error("reading the AWS profile files for profile {profile:?}: {cause}")]
    Profile {
        /// The profile.
        profile: String,
        /// What failed, on one line.
        cause: String,
    },
    /// The chain's HTTPS client could not be configured (an unusable CA bundle).
    #[error("configuring the HTTPS client of the AWS credential chain: {0}")]
    Client(String),
    /// A request could not be signed.
    #[error("SigV4 signing: {0}")]
    Sign(String),
}

/// Cached AWS credentials from the AWS CLI's default chain, for one profile and one
/// environment. Cheap to clone: clones share the chain and the cache.
#[derive(Clone)]
pub struct AwsCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    /// The profile named explicitly (else the chain selects `AWS_PROFILE` or `default`).
    profile: Option<String>,
    env: HashMap<String, String>,
    /// The region of STS calls (role assumption); else resolved from `env` and the profile.
    region: Option<String>,
    /// Extra trusted CA certificates (PEM) for the chain's HTTPS client.
    ca_pem: Option<Vec<u8>>,
    chain: tokio::sync::OnceCell<SharedCredentialsProvider>,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

struct Cached {
    credentials: Credentials,
    /// The same, as object_store's type, built once per refresh.
    s3: Arc<AwsCredential>,
    /// When to fetch again; `None`: never (credentials without expiry).
    refresh_at: Option<SystemTime>,
}

impl std::fmt::Debug for AwsCredentials {
    // The environment may hold secrets: only the names of the profile and region are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("profile", &self.profile_name())
            .field("region", &self.inner.region)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// The default chain for `profile` (else `AWS_PROFILE` of `env`, else `default`), reading
    /// its variables from `env` only. A profile named here wins over keys in `env`, as the
    /// AWS CLI's `--profile` does; `AWS_PROFILE` does not (the environment's keys come first
    /// in the chain). Nothing is read or fetched until
    /// [`AwsCredentials::credentials`] is first called.
    pub fn new(
        profile: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> AwsCredentials {
        let profile = profile.filter(|p| !p.is_empty()).map(str::to_owned);
        let mut env: HashMap<String, String> = env.into_iter().collect();
        if profile.is_some() {
            // As the AWS CLI's --profile: a profile named explicitly wins over keys in the
            // environment (AWS_PROFILE does not).
            for name in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
            ] {
                env.remove(name);
            }
        }
        AwsCredentials {
            inner: Arc::new(Inner {
                profile,
                env,
                region: None,
                ca_pem: None,
                chain: tokio::sync::OnceCell::new(),
                cache: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The region for the chain's own calls (STS for roles); by default `AWS_REGION`,
    /// `AWS_DEFAULT_REGION`, the profile's `region`, else `us-east-1`. Call before the first
    /// [`AwsCredentials::credentials`].
    pub fn with_region(self, region: impl Into<String>) -> AwsCredentials {
        self.map_inner(|inner| inner.region = Some(region.into()))
    }

    /// CA certificates (PEM) that the chain's HTTPS client trusts besides the system's
    /// (a private STS or SSO endpoint). Call before the first [`AwsCredentials::credentials`].
    pub fn with_ca_pem(self, pem: Vec<u8>) -> AwsCredentials {
        self.map_inner(|inner| inner.ca_pem = Some(pem))
    }

    fn map_inner(self, change: impl FnOnce(&mut Inner)) -> AwsCredentials {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            // Shared: a fresh chain and cache with the same settings.
            Err(shared) => Inner {
                profile: shared.profile.clone(),
                env: shared.env.clone(),
                region: shared.region.clone(),
                ca_pem: shared.ca_pem.clone(),
                chain: tokio::sync::OnceCell::new(),
                cache: tokio::sync::Mutex::new(None),
            },
        };
        change(&mut inner);
        AwsCredentials {
            inner: Arc::new(inner),
        }
    }

    /// The profile the chain reads: the one named, else `AWS_PROFILE`, else `default`.
    pub fn profile_name(&self) -> &str {
        self.inner
            .profile
            .as_deref()
            .or_else(|| {
                self.inner
                    .env
                    .get("AWS_PROFILE")
                    .map(String::as_str)
                    .filter(|p| !p.is_empty())
            })
            .unwrap_or("default")
    }

    /// The credentials, from the cache while they are fresh, else from the chain.
    pub async fn credentials(&self) -> Result<Credentials, AwsError> {
        Ok(self.cached().await?.0)
    }

    /// The credentials as object_store's type (see [`S3CredentialProvider`]).
    async fn s3_credential(&self) -> Result<Arc<AwsCredential>, AwsError> {
        Ok(self.cached().await?.1)
    }

    async fn cached(&self) -> Result<(Credentials, Arc<AwsCredential>), AwsError> {
        // Held across the refresh: concurrent requests wait for one fetch, not one each.
        let mut cache = self.inner.cache.lock().await;
        let now = SystemTime::now();
        if let Some(cached) = cache.as_ref()
            && cached.refresh_at.is_none_or(|at| now < at)
        {
            return Ok((cached.credentials.clone(), Arc::clone(&cached.s3)));
        }
        match self.fetch().await {
            Ok(credentials) => {
                let s3 = Arc::new(AwsCredential {
                    key_id: credentials.access_key_id().to_owned(),
                    secret_key: credentials.secret_access_key().to_owned(),
                    token: credentials.session_token().map(str::to_owned),
                });
                let refresh_at = credentials.expiry().map(|e| refresh_time(now, e));
                tracing::debug!(
                    profile = self.profile_name(),
                    access_key_id = credentials.access_key_id(),
                    expires_in_secs = credentials
                        .expiry()
                        .map(|e| e.duration_since(now).unwrap_or_default().as_secs()),
                    "fetched AWS credentials"
                );
                *cache = Some(Cached {
                    credentials: credentials.clone(),
                    s3: Arc::clone(&s3),
                    refresh_at,
                });
                Ok((credentials, s3))
            }
            Err(error) => match cache.as_mut() {
                Some(old) if old.credentials.expiry().is_none_or(|e| now < e) => {
                    tracing::warn!(
                        profile = self.profile_name(),
                        "refreshing AWS credentials failed; the current ones are still valid: {error}"
                    );
                    old.refresh_at = Some(now + RETRY_FAILED_REFRESH);
                    Ok((old.credentials.clone(), Arc::clone(&old.s3)))
                }
                _ => Err(error),
            },
        }
    }

    /// Credentials from the chain, which is built on the first call.
    async fn fetch(&self) -> Result<Credentials, AwsError> {
        let chain = self
            .inner
            .chain
            .get_or_try_init(|| self.load_chain())
            .await?;
        chain
            .provide_credentials()
            .await
            .map_err(|e| self.chain_error(&e))
    }

    async fn load_chain(&self) -> Result<SharedCredentialsProvider, AwsError> {
        crate::tls::crypto();
        let env = Env::from(self.inner.env.clone());
        let mut trust = TrustStore::default();
        if let Some(pem) = &self.inner.ca_pem {
            trust = trust.with_pem_certificate(pem.clone());
        }
        let context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| AwsError::Client(crate::errors::one_line(&e)))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .tls_context(context)
            .build_https();
        let region = match &self.inner.region {
            Some(region) => region.clone(),
            None => self.default_region(&env).await?,
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .env(env)
            .fs(Fs::real())
            .http_client(http)
            // Set, so that loading never asks IMDS for a region.
            .region(Region::new(region));
        if let Some(profile) = &self.inner.profile {
            loader = loader.profile_name(profile);
        }
        let config = loader.load().await;
        config
            .credentials_provider()
            .ok_or_else(|| AwsError::Provider {
                profile: self.profile_name().to_owned(),
                cause: "aws-config built no credential provider".into(),
            })
    }

    /// `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's region, or `us-east-1`.
    async fn default_region(&self, env: &Env) -> Result<String, AwsError> {
        for name in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            if let Some(region) = self.inner.env.get(name).filter(|r| !r.is_empty()) {
                return Ok(region.clone());
            }
        }
        let region = load_profile_region(self.inner.profile.as_deref(), env).await?;
        Ok(region.unwrap_or_else(|| DEFAULT_REGION.to_owned()))
    }

    fn chain_error(&self, error: &CredentialsError) -> AwsError {
        let profile = self.profile_name().to_owned();
        match error {
            CredentialsError::CredentialsNotLoaded(_) => AwsError::NoCredentials {
                tried: self.places_tried(&profile),
                profile,
            },
            other => AwsError::Provider {
                profile,
                cause: crate::errors::one_line(other),
            },
        }
    }

    /// The places the default chain looks in, in its order, with what each lacked.
    fn places_tried(&self, profile: &str) -> String {
        let env = &self.inner.env;
        let set = |name: &str| env.get(name).is_some_and(|v| !v.is_empty());
        let unset = |names: &[&str]| {
            let missing: Vec<&str> = names.iter().copied().filter(|n| !set(n)).collect();
            if missing.is_empty() {
                String::new()
            } else {
                format!(" ({} not set)", missing.join(", "))
            }
        };
        let file = |var: &str, name: &str| match env.get(var).filter(|v| !v.is_empty()) {
            Some(path) => format!("{path} ({var})"),
            None => match env.get("HOME").filter(|h| !h.is_empty()) {
                Some(home) => format!("{}/.aws/{name}", home.trim_end_matches('/')),
                None => format!("~/.aws/{name} (HOME not set)"),
            },
        };
        let imds = if env
            .get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            " (disabled by AWS_EC2_METADATA_DISABLED)"
        } else {
            ""
        };
        let container = if set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        {
            ""
        } else {
            " (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, AWS_CONTAINER_CREDENTIALS_FULL_URI not set)"
        };
        format!(
            "the environment{}; profile {profile:?} in the config file {} and the credentials \
             file {} (static keys, credential_process, SSO, role_arn with source_profile or \
             credential_source, web_identity_token_file); web identity{}; the ECS/EKS \
             container endpoint{container}; EC2 instance metadata (IMDS){imds}. Give \
             credentials in one of these, or select a profile that has them ([sink] profile \
             or AWS_PROFILE)",
            unset(&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
            file("AWS_CONFIG_FILE", "config"),
            file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            unset(&["AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"]),
        )
    }
}

/// When credentials fetched at `fetched` and expiring at `expiry` are fetched again:
/// [`REFRESH_BEFORE_EXPIRY`] before they expire, or halfway through their lifetime if that
/// is shorter.
pub fn refresh_time(fetched: SystemTime, expiry: SystemTime) -> SystemTime {
    let lifetime = expiry.duration_since(fetched).unwrap_or_default();
    expiry
        .checked_sub(REFRESH_BEFORE_EXPIRY.min(lifetime / 2))
        .unwrap_or(fetched)
}

/// The `region` of the selected profile (`profile`, else `AWS_PROFILE`, else `default`) in
/// the config files that `env` names (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, else
/// under `HOME`), if it has one. Synchronous: it only reads those local files.
pub fn profile_region(
    profile: Option<&str>,
    env: &[(String, String)],
) -> Result<Option<String>, AwsError> {
    let env = Env::from(env.iter().cloned().collect::<HashMap<_, _>>());
    // aws-config's file system shim reads with std::fs: the future completes without waiting.
    futures::executor::block_on(load_profile_region(profile, &env))
}

async fn load_profile_region(profile: Option<&str>, env: &Env) -> Result<Option<String>, AwsError> {
    let profile = profile.filter(|p| !p.is_empty()).map(str::to_owned);
    let profiles = aws_config::profile::load(
        &Fs::real(),
        env,
        &Default::default(),
        profile.clone().map(Cow::Owned),
    )
    .await
    .map_err(|e| AwsError::Profile {
        profile: profile
            .clone()
            .or_else(|| env.get("AWS_PROFILE").ok())
            .unwrap_or_else(|| "default".into()),
        cause: crate::errors::one_line(&e),
    })?;
    Ok(profiles
        .get_profile(profiles.selected_profile())
        .and_then(|p| p.get("region"))
        .filter(|r| !r.is_empty())
        .map(str::to_owned))
}

/// SigV4-signs `request` in header form at `now`, for `service` in `region`: sets
/// `authorization`, `x-amz-date` and, with session credentials, `x-amz-security-token`.
/// aws-sigv4's default settings: the path percent-encoded twice, the payload's SHA-256 (of
/// the body, or of nothing) signed but not sent as a header. A streaming body cannot be
/// signed. Headers already on the request are signed with it, so set them first.
pub fn sign(
    request: &mut reqwest::Request,
    credentials: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), AwsError> {
    let sign_error = |e: &dyn std::error::Error| AwsError::Sign(e.to_string());
    let body: &[u8] = match request.body() {
        None => &[],
        Some(body) => body.as_bytes().ok_or_else(|| {
            AwsError::Sign("a streaming request body cannot be signed; give it as bytes".into())
        })?,
    };
    let mut headers = Vec::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let value = value.to_str().map_err(|_| {
            AwsError::Sign(format!(
                "header {name} is not visible ASCII, so cannot be signed"
            ))
        })?;
        headers.push((name.as_str(), value));
    }
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| sign_error(&e))?
        .into();
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.url().as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| sign_error(&e))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| sign_error(&e))?
        .into_parts();
    let (signed_headers, _params) = instructions.into_parts();
    for header in signed_headers {
        let name = reqwest::header::HeaderName::from_bytes(header.name().as_bytes())
            .map_err(|e| sign_error(&e))?;
        let mut value =
            reqwest::header::HeaderValue::from_str(header.value()).map_err(|e| sign_error(&e))?;
        // The signature and the session token are credentials whatever the signer says.
        value.set_sensitive(
            header.sensitive() || matches!(header.name(), "authorization" | "x-amz-security-token"),
        );
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

/// [`AwsCredentials`] as object_store's credential provider: the S3 client asks it before
/// each request and gets the cached credentials.
#[derive(Debug, Clone)]
pub struct S3CredentialProvider(pub AwsCredentials);

#[async_trait::async_trait]
impl object_store::CredentialProvider for S3CredentialProvider {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.0
            .s3_credential()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .expect("a valid time")
            .into()
    }

    fn example_credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        )
    }

    /// The example of the AWS documentation ("Create a signed AWS API request", the IAM
    /// ListUsers request of the SigV4 test suite).
    #[test]
    fn signs_the_documented_example() {
        let client = reqwest::Client::new();
        let mut request = client
            .get("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08")
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .build()
            .unwrap();
        let now = at("2015-08-30T12:36:00Z");
        sign(
            &mut request,
            &example_credentials(None),
            "us-east-1",
            "iam",
            now,
        )
        .unwrap();
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(header("x-amz-date").as_deref(), Some("20150830T123600Z"));
        assert_eq!(
            header("authorization").as_deref(),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            )
        );
        // Not S3: no payload hash header.
        assert_eq!(header("x-amz-content-sha256"), None);
        assert_eq!(header("x-amz-security-token"), None);
        assert!(request.headers()["authorization"].is_sensitive());
    }

    #[test]
    fn signs_the_session_token_and_the_body() {
        let client = reqwest::Client::new();
        let build = |body: &'static str| {
            client
                .post("https://abc.execute-api.eu-west-3.amazonaws.com/prod/items")
                .body(body)
                .build()
                .unwrap()
        };
        let now = at("2026-01-02T03:04:05Z");
        let credentials = example_credentials(Some("the-session-token"));
        let mut one = build("{}");
        sign(&mut one, &credentials, "eu-west-3", "execute-api", now).unwrap();
        assert_eq!(one.headers()["x-amz-security-token"], "the-session-token");
        let authorization = one.headers()["authorization"].to_str().unwrap().to_owned();
        assert!(
            authorization.contains("SignedHeaders=host;x-amz-date;x-amz-security-token"),
            "{authorization}"
        );
        assert!(
            authorization.contains("/20260102/eu-west-3/execute-api/aws4_request"),
            "{authorization}"
        );
        // Another body, another signature.
        let mut two = build("{\"a\":1}");
        sign(&mut two, &credentials, "eu-west-3", "execute-api", now).unwrap();
        assert_ne!(
            two.headers()["authorization"],
            one.headers()["authorization"]
        );
    }

    #[test]
    fn refuses_streaming_bodies() {
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("x"))]);
        let mut request = reqwest::Client::new()
            .post("https://example.com/")
            .body(reqwest::Body::wrap_stream(stream))
            .build()
            .unwrap();
        let err = sign(
            &mut request,
            &example_credentials(None),
            "us-east-1",
            "execute-api",
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("streaming"), "{err}");
    }

    #[test]
    fn refreshes_before_expiry() {
        let t0 = at("2026-01-01T00:00:00Z");
        let hour = Duration::from_secs(3600);
        // An hour-long session: five minutes before its end.
        assert_eq!(
            refresh_time(t0, t0 + hour),
            t0 + hour - REFRESH_BEFORE_EXPIRY
        );
        // Short-lived: halfway.
        assert_eq!(
            refresh_time(t0, t0 + Duration::from_secs(4)),
            t0 + Duration::from_secs(2)
        );
        // Already expired: now.
        assert_eq!(refresh_time(t0, t0 - hour), t0 - hour);
    }

    #[test]
    fn debug_shows_no_environment() {
        let credentials = AwsCredentials::new(
            Some("dev"),
            [
                (
                    "AWS_SECRET_ACCESS_KEY".to_owned(),
                    "s3cr3t-value".to_owned(),
                ),
                ("AWS_PROFILE".to_owned(), "other".to_owned()),
            ],
        );
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("s3cr3t-value"), "{debug}");
        assert!(debug.contains("\"dev\""), "{debug}");
        // The secret is masked in the credentials' own Debug too.
        let debug = format!("{:?}", example_credentials(Some("tok3n")));
        assert!(
            !debug.contains("EXAMPLEKEY") && !debug.contains("tok3n"),
            "{debug}"
        );
    }

    #[test]
    fn selects_the_profile() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            AwsCredentials::new(None, env(&[])).profile_name(),
            "default"
        );
        assert_eq!(
            AwsCredentials::new(None, env(&[("AWS_PROFILE", "p")])).profile_name(),
            "p"
        );
        assert_eq!(
            AwsCredentials::new(Some("x"), env(&[("AWS_PROFILE", "p")])).profile_name(),
            "x"
        );
    }

    #[test]
    fn reads_the_region_of_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "[default]\nregion = us-west-2\n[profile paris]\nregion = eu-west-3\n[profile none]\n",
        )
        .unwrap();
        let env = vec![
            (
                "AWS_CONFIG_FILE".to_owned(),
                config.to_string_lossy().into_owned(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
                dir.path().join("missing").to_string_lossy().into_owned(),
            ),
        ];
        let region = |profile| profile_region(profile, &env).unwrap();
        assert_eq!(region(None).as_deref(), Some("us-west-2"));
        assert_eq!(region(Some("paris")).as_deref(), Some("eu-west-3"));
        assert_eq!(region(Some("none")), None);
        assert_eq!(region(Some("absent")), None);
        let mut with_env_profile = env.clone();
        with_env_profile.push(("AWS_PROFILE".to_owned(), "paris".to_owned()));
        assert_eq!(
            profile_region(None, &with_env_profile).unwrap().as_deref(),
            Some("eu-west-3")
        );
    }
}
