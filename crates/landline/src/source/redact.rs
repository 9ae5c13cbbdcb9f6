//! URLs safe to print: credentials and secret-looking query parameters replaced.
//!
//! Every URL that reaches a log line, an error or a report goes through [`RedactedUrl`].
//! Header values never do: they are not printed at all.

use std::fmt;
use std::sync::Arc;

use url::Url;

/// Query parameters redacted when no list is configured (compared case-insensitively).
pub const DEFAULT_SECRET_PARAMS: &[&str] = &[
    "token",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "signature",
    "sig",
    "key",
    "secret",
    "client_secret",
    "password",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// The placeholder written instead of a secret.
pub const REDACTED: &str = "REDACTED";

/// Which query parameters are secret.
#[derive(Debug, Clone)]
pub struct Redactor {
    params: Arc<[String]>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(DEFAULT_SECRET_PARAMS.iter().map(|s| s.to_string()))
    }
}

impl Redactor {
    /// Redacts the given parameter names (case-insensitive).
    pub fn new(params: impl IntoIterator<Item = String>) -> Self {
        Redactor {
            params: params.into_iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    }

    /// Redacts `param` too (case-insensitive), if it is not already.
    pub fn add(&mut self, param: &str) {
        if !self.is_secret(param) {
            let mut params = self.params.to_vec();
            params.push(param.to_ascii_lowercase());
            self.params = params.into();
        }
    }

    /// Whether `name` is a secret parameter.
    pub fn is_secret(&self, name: &str) -> bool {
        self.params.iter().any(|p| p.eq_ignore_ascii_case(name))
    }

    /// A printable copy of `url`.
    pub fn url(&self, url: &Url) -> RedactedUrl {
        let mut shown = url.clone();
        if !shown.username().is_empty() {
            let _ = shown.set_username(REDACTED);
        }
        if shown.password().is_some() {
            let _ = shown.set_password(Some(REDACTED));
        }
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if self.is_secret(&k) {
                        REDACTED.to_owned()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        RedactedUrl(shown.to_string())
    }
}

/// A URL with its secrets replaced by `REDACTED`, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RedactedUrl {
    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secrets_only() {
        let r = Redactor::default();
        let cases = [
            (
                "https://api.example.com/v?count=200&token=abc&api_key=k",
                "https://api.example.com/v?count=200&token=REDACTED&api_key=REDACTED",
            ),
            (
                "https://user:pw@h.example/x?Access_Token=t",
                "https://REDACTED:REDACTED@h.example/x?Access_Token=REDACTED",
            ),
            ("http://127.0.0.1:8080/v", "http://127.0.0.1:8080/v"),
            ("http://h/v?page=2", "http://h/v?page=2"),
        ];
        for (input, want) in cases {
            let shown = r.url(&Url::parse(input).unwrap());
            assert_eq!(shown.as_str(), want);
        }
    }

    #[test]
    fn custom_lists_replace_the_default() {
        let r = Redactor::new(["cursor".to_string()]);
        let shown = r.url(&Url::parse("http://h/v?cursor=c&token=t").unwrap());
        assert_eq!(shown.as_str(), "http://h/v?cursor=REDACTED&token=t");
    }
}
