//! `[source.auth]`: how the API's requests are authenticated.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{Checker, ConfigError, invalid};
use crate::secret::Secret;
use crate::source::auth::DEFAULT_REFRESH_BEFORE;
use crate::source::{Auth, ClientAuth, Grant, OAuth2, Redactor};

/// `[source.auth]`, by `type`. Every value may hold `${VAR}` references (expanded during
/// validation, never logged).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthSection {
    /// `Authorization: Bearer <token>`.
    Bearer(BearerSection),
    /// HTTP Basic (RFC 7617).
    Basic(BasicSection),
    /// An API key in a header or a query parameter.
    ApiKey(ApiKeySection),
    /// OAuth2 client credentials (RFC 6749 §4.4).
    Oauth2ClientCredentials(OAuth2Section),
    /// OAuth2 with a refresh token (RFC 6749 §6).
    Oauth2RefreshToken(OAuth2Section),
    /// AWS Signature Version 4 (API Gateway with IAM auth, Lambda function URLs, …).
    #[serde(rename = "aws_sigv4")]
    AwsSigv4(AwsSigV4Section),
}

/// `type = "aws_sigv4"`: requests signed with the AWS CLI's credentials (see [`crate::aws`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSigV4Section {
    /// The service of the signature's scope: `execute-api` (API Gateway, the default),
    /// `lambda` (function URLs), `es` (OpenSearch)…
    pub service: Option<String>,
    /// The region of the signature's scope; by default `AWS_REGION`, `AWS_DEFAULT_REGION`,
    /// else the profile's `region`.
    pub region: Option<String>,
    /// The AWS profile whose credentials sign (as the AWS CLI's `--profile`); by default
    /// `AWS_PROFILE`, else the environment's keys, else the `default` profile and the rest of
    /// the chain.
    pub profile: Option<String>,
}

/// `type = "bearer"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerSection {
    /// The token, usually `"${API_TOKEN}"`.
    pub token: String,
}

/// `type = "basic"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicSection {
    /// The user name.
    pub user: String,
    /// The password, usually `"${API_PASSWORD}"`.
    pub password: String,
}

/// `type = "api_key"`: `header` or `param`, not both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySection {
    /// The key, usually `"${API_KEY}"`.
    pub key: String,
    /// The header that carries it (`X-API-Key`).
    pub header: Option<String>,
    /// The query parameter that carries it (`api_key`); messages redact it.
    pub param: Option<String>,
}

/// `type = "oauth2_client_credentials"` and `type = "oauth2_refresh_token"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Section {
    /// The token endpoint (`https://…`; `http://` only on loopback).
    pub token_url: String,
    /// The client's id.
    pub client_id: String,
    /// The client's secret (optional for public clients of the refresh-token grant).
    pub client_secret: Option<String>,
    /// The refresh token to start with (`oauth2_refresh_token` only).
    pub refresh_token: Option<String>,
    /// Scopes to ask for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How the client authenticates: `"basic"` (default) or `"body"`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Further form fields of every token request (`audience`, `resource`).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    /// Seconds before its expiry at which an access token is replaced (default 60).
    pub refresh_before_secs: Option<f64>,
}

/// Form fields the token request sets itself.
const OWN_FIELDS: &[&str] = &[
    "grant_type",
    "refresh_token",
    "scope",
    "client_id",
    "client_secret",
];

impl AuthSection {
    /// Checked, with `${VAR}` expanded; `redactor` learns an API key's query parameter.
    pub(crate) fn validate(
        &self,
        check: &Checker<'_>,
        redactor: &mut Redactor,
    ) -> Result<Auth, ConfigError> {
        let secret = |key: &str, text: &str| -> Result<Secret, ConfigError> {
            let value = check.expand(&format!("source.auth.{key}"), text)?;
            if value.is_empty() {
                return Err(invalid(format!("source.auth.{key}"), "is empty"));
            }
            Ok(Secret::new(value))
        };
        Ok(match self {
            AuthSection::Bearer(b) => {
                let token = secret("token", &b.token)?;
                header_value("token", &format!("Bearer {}", token.expose()))?;
                Auth::Bearer { token }
            }
            AuthSection::Basic(b) => Auth::Basic {
                user: secret("user", &b.user)?,
                password: secret("password", &b.password)?,
            },
            AuthSection::ApiKey(a) => {
                let key = secret("key", &a.key)?;
                match (&a.header, &a.param) {
                    (Some(name), None) => {
                        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                            .map_err(|_| {
                                invalid("source.auth.header", "not a valid header name")
                            })?;
                        header_value("key", key.expose())?;
                        Auth::ApiKeyHeader { name, key }
                    }
                    (None, Some(param)) if !param.is_empty() => {
                        redactor.add(param);
                        Auth::ApiKeyQuery {
                            param: param.clone(),
                            key,
                        }
                    }
                    (None, Some(_)) => return Err(invalid("source.auth.param", "is empty")),
                    _ => {
                        return Err(invalid(
                            "source.auth",
                            "type = \"api_key\" needs either header or param",
                        ));
                    }
                }
            }
            AuthSection::Oauth2ClientCredentials(o) => {
                if o.refresh_token.is_some() {
                    return Err(invalid(
                        "source.auth.refresh_token",
                        "not used by type = \"oauth2_client_credentials\" (use \"oauth2_refresh_token\")",
                    ));
                }
                if o.client_secret.is_none() {
                    return Err(invalid(
                        "source.auth.client_secret",
                        "required for type = \"oauth2_client_credentials\"",
                    ));
                }
                Auth::OAuth2(o.validate(check, Grant::ClientCredentials)?)
            }
            AuthSection::Oauth2RefreshToken(o) => {
                let token = o.refresh_token.as_deref().ok_or_else(|| {
                    invalid(
                        "source.auth.refresh_token",
                        "required for type = \"oauth2_refresh_token\"",
                    )
                })?;
                let grant = Grant::RefreshToken(secret("refresh_token", token)?);
                Auth::OAuth2(o.validate(check, grant)?)
            }
            AuthSection::AwsSigv4(a) => a.validate(check)?,
        })
    }
}

impl OAuth2Section {
    fn validate(&self, check: &Checker<'_>, grant: Grant) -> Result<OAuth2, ConfigError> {
        let key = |name: &str| format!("source.auth.{name}");
        let token_url = check.expand(&key("token_url"), &self.token_url)?;
        let token_url = Url::parse(&token_url)
            .map_err(|e| invalid(key("token_url"), format!("not a valid URL: {e}")))?;
        match token_url.scheme() {
            "https" => {}
            "http" if is_loopback(&token_url) => {}
            _ => {
                return Err(invalid(
                    key("token_url"),
                    "must be an https:// URL (http:// only on loopback): it carries the client's secret",
                ));
            }
        }
        let mut extra = Vec::new();
        for (name, value) in &self.extra {
            if OWN_FIELDS.contains(&name.as_str()) {
                return Err(invalid(
                    key(&format!("extra.{name}")),
                    "is set by landline itself",
                ));
            }
            extra.push((
                name.clone(),
                Secret::new(check.expand(&key(&format!("extra.{name}")), value)?),
            ));
        }
        for scope in &self.scopes {
            if scope.is_empty() || scope.contains(' ') {
                return Err(invalid(
                    key("scopes"),
                    format!("{scope:?} is not a scope (one word each)"),
                ));
            }
        }
        let refresh_before = match self.refresh_before_secs {
            None => DEFAULT_REFRESH_BEFORE,
            Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Duration::from_secs_f64(s),
            Some(_) => {
                return Err(invalid(
                    key("refresh_before_secs"),
                    "must be a number of seconds between 0 and 86400",
                ));
            }
        };
        Ok(OAuth2 {
            token_url,
            grant,
            client_id: Secret::new(check.expand(&key("client_id"), &self.client_id)?),
            client_secret: self
                .client_secret
                .as_deref()
                .map(|s| check.expand(&key("client_secret"), s).map(Secret::new))
                .transpose()?,
            client_auth: self.client_auth,
            scopes: self.scopes.clone(),
            extra,
            refresh_before,
        })
    }
}

impl AwsSigV4Section {
    fn validate(&self, check: &Checker<'_>) -> Result<Auth, ConfigError> {
        let key = |name: &str| format!("source.auth.{name}");
        let word = |name: &str, value: &str| -> Result<String, ConfigError> {
            let value = check.expand(&key(name), value)?;
            let plain = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if plain {
                Ok(value)
            } else {
                Err(invalid(
                    key(name),
                    format!("{value:?} is not a {name} name"),
                ))
            }
        };
        let service = word("service", self.service.as_deref().unwrap_or("execute-api"))?;
        let profile = self
            .profile
            .as_deref()
            .map(|p| word("profile", p))
            .transpose()?;
        // The variables the AWS CLI's chain reads, from the environment validation reads.
        let env: Vec<(String, String)> = crate::aws::CHAIN_ENV_VARS
            .iter()
            .filter_map(|name| check.env_var(name).map(|v| ((*name).to_owned(), v)))
            .collect();
        let region = match &self.region {
            Some(region) => word("region", region)?,
            None => {
                let from_env = ["AWS_REGION", "AWS_DEFAULT_REGION"]
                    .iter()
                    .find_map(|name| env.iter().find(|(n, v)| n == name && !v.is_empty()))
                    .map(|(_, v)| v.clone());
                let from_profile = || {
                    crate::aws::profile_region(profile.as_deref(), &env)
                        .map_err(|e| invalid(key("profile"), e))
                };
                match from_env {
                    Some(region) => region,
                    None => from_profile()?.ok_or_else(|| {
                        invalid(
                            key("region"),
                            "required: AWS_REGION, AWS_DEFAULT_REGION and the profile name none",
                        )
                    })?,
                }
            }
        };
        Ok(Auth::AwsSigV4 {
            credentials: crate::aws::AwsCredentials::new(profile.as_deref(), env)
                .with_region(region.clone()),
            region,
            service,
        })
    }
}

/// Checks that `value` can be sent in a header, without showing it.
fn header_value(key: &str, value: &str) -> Result<(), ConfigError> {
    reqwest::header::HeaderValue::from_str(value)
        .map(drop)
        .map_err(|_| {
            invalid(
                format!("source.auth.{key}"),
                "the value (not shown) is not a valid header value",
            )
        })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
