//! `[source]`: the HTTP API's requests, paging, limits and retries.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::auth::AuthSection;
use super::{
    Checker, ConfigError, DEFAULT_MAX_PAGES, DEFAULT_MAX_RECORD_BYTES, MAX_CONCURRENCY,
    MIN_MAX_PAGE_BYTES, Scalar, invalid, secs,
};
use crate::incremental::{IncrementalSpec, SINCE_VAR};
use crate::pointer::JsonPointer;
use crate::secret::Secret;
use crate::source::{Auth, Pagination, Redactor, RetryPolicy, SourceConfig, Total};
use crate::template::{RunVars, Template};

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// The first page's URL; `${VAR}` and `{template variables}` allowed (their values are
    /// percent-encoded).
    pub url: String,
    /// Static query parameters; `${VAR}` and `{template variables}` allowed in values.
    #[serde(default)]
    pub query: BTreeMap<String, Scalar>,
    /// Request headers; `${VAR}` and `{template variables}` allowed in values (they are never
    /// logged).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON pointer to the array of records in each page.
    pub records: String,
    /// More pages than this is an error.
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
    /// A page body larger than this (decoded) is an error; no limit by default, since a
    /// page's size does not set landline's memory.
    pub max_page_bytes: Option<usize>,
    /// A record larger than this (as written) is an error.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Limit for one whole request, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Limit for connecting, in seconds.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
    /// Query parameters hidden in messages (replaces the default list).
    #[serde(default)]
    pub redact_params: Option<Vec<String>>,
    /// A PEM file of CA certificates trusted besides the system's.
    pub ca_bundle: Option<String>,
    /// Ask for compressed responses (gzip, br, zstd, deflate); on by default.
    #[serde(default = "default_true")]
    pub compression: bool,
    /// Pages fetched at once for offset (with a page size) and page pagination.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Body bytes, as received, buffered per page in flight.
    #[serde(default = "default_page_buffer_bytes")]
    pub page_buffer_bytes: usize,
    /// JSON pointer to a value whose presence in a 200 body means the page failed.
    pub error: Option<String>,
    /// `[source.rate_limit]`.
    pub rate_limit: Option<RateLimitSection>,
    /// `[source.auth]`: how requests are authenticated (none by default).
    pub auth: Option<AuthSection>,
    /// `[source.incremental]`: ask only for the records changed since the previous run.
    pub incremental: Option<IncrementalSection>,
    /// `[source.pagination]`.
    #[serde(default)]
    pub pagination: PaginationSection,
    /// `[source.retry]`.
    #[serde(default)]
    pub retry: RetrySection,
}

fn default_max_pages() -> u64 {
    DEFAULT_MAX_PAGES
}
fn default_true() -> bool {
    true
}
fn default_concurrency() -> usize {
    crate::source::DEFAULT_CONCURRENCY
}
fn default_page_buffer_bytes() -> usize {
    crate::source::DEFAULT_PAGE_BUFFER_BYTES
}

/// `[source.rate_limit]`: a token bucket shared by every request of the run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Requests per second, on average.
    pub requests_per_second: f64,
    /// Requests that may go at once after a quiet spell (default 1).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}
fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}
fn default_timeout_secs() -> f64 {
    120.0
}
pub(super) fn default_connect_timeout_secs() -> f64 {
    10.0
}

/// The kinds of pagination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaginationKind {
    /// Token in the body, sent back as a query parameter.
    Token,
    /// URL in the body.
    NextUrl,
    /// RFC 8288 Link header.
    LinkHeader,
    /// Record offset.
    Offset,
    /// Page number.
    Page,
    /// One request.
    #[default]
    None,
}

/// `[source.pagination]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationSection {
    /// The kind.
    #[serde(rename = "type", default)]
    pub kind: PaginationKind,
    /// token, next_url: JSON pointer to the cursor in the body.
    pub next: Option<String>,
    /// token, offset, page: the query parameter that carries the cursor.
    pub param: Option<String>,
    /// offset, page: the page-size query parameter.
    pub limit_param: Option<String>,
    /// offset, page: the page size.
    pub limit: Option<u64>,
    /// offset (default 0), page (default 1): the first value.
    pub start: Option<u64>,
    /// offset, page: JSON pointer to the total record count in the body.
    pub total: Option<String>,
    /// offset, page: the response header with the total record count.
    pub total_header: Option<String>,
}

/// `[source.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts per page, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff, in milliseconds (doubles per retry, with jitter).
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Largest backoff, in milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Largest `Retry-After` honoured, in seconds.
    #[serde(default = "default_max_retry_after_secs")]
    pub max_retry_after_secs: u64,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            max_attempts: default_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_retry_after_secs: default_max_retry_after_secs(),
        }
    }
}

// One source of truth for the defaults: the policy's own.
fn default_attempts() -> u32 {
    RetryPolicy::default().max_attempts
}
fn default_initial_backoff_ms() -> u64 {
    RetryPolicy::default().initial_backoff.as_millis() as u64
}
fn default_max_backoff_ms() -> u64 {
    RetryPolicy::default().max_backoff.as_millis() as u64
}
fn default_max_retry_after_secs() -> u64 {
    RetryPolicy::default().max_retry_after.as_secs()
}

/// `[source]`, validated: the first request's URL, query and headers as templates, and the
/// rest of the source's settings, ready.
#[derive(Clone)]
pub struct SourceSpec {
    /// Everything but the URL and headers, which are those of the example run validation
    /// rendered.
    settings: SourceConfig,
    url: Template,
    query: Vec<(String, QueryValue)>,
    headers: Vec<(String, Template)>,
    /// Where the records are in each page.
    pub records: JsonPointer,
    /// `[source.incremental]`, if the source is read incrementally.
    pub incremental: Option<IncrementalSpec>,
}

/// `[source.incremental]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalSection {
    /// The field whose highest value is the cursor (a top-level key, or a JSON pointer), as
    /// the record is written (after the transform).
    pub field: String,
    /// The query parameter the cursor is sent in (`updated_since`); or leave it out and write
    /// `{incremental_since}` where the value goes in the URL, a query value or a header.
    pub param: Option<String>,
    /// The cursor of the first run: a timestamp, a number or text; it sets how values compare.
    pub start: Scalar,
    /// How far before the cursor each run asks from (`"1h"`, `"90s"`; timestamps only).
    pub lookback: Option<String>,
}

impl IncrementalSection {
    fn validate(
        &self,
        query: &[(String, QueryValue)],
        templated: bool,
    ) -> Result<IncrementalSpec, ConfigError> {
        let key = |name: &str| format!("source.incremental.{name}");
        match (&self.param, templated) {
            (Some(_), true) => {
                return Err(invalid(
                    key("param"),
                    format!(
                        "the source also uses {{{SINCE_VAR}}}: send the value one way, not both"
                    ),
                ));
            }
            (Some(param), _) if query.iter().any(|(name, _)| name == param) => {
                return Err(invalid(
                    key("param"),
                    format!("{param:?} is also in [source] query: the cursor sets it"),
                ));
            }
            (None, false) => {
                return Err(invalid(
                    key("param"),
                    format!(
                        "required, unless {{{SINCE_VAR}}} is in the source's URL, a query value or a header"
                    ),
                ));
            }
            _ => {}
        }
        let start = match &self.start {
            Scalar::String(s) => serde_json::Value::from(s.clone()),
            Scalar::Integer(i) => serde_json::Value::from(*i),
            Scalar::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .ok_or_else(|| invalid(key("start"), "is not a finite number"))?,
            Scalar::Bool(_) => {
                return Err(invalid(
                    key("start"),
                    "must be a timestamp, a number or text",
                ));
            }
        };
        let lookback = self
            .lookback
            .as_deref()
            .map(|text| {
                humantime::parse_duration(text).map_err(|e| {
                    invalid(key("lookback"), format!("{text:?} is not a duration: {e}"))
                })
            })
            .transpose()?;
        IncrementalSpec::new(&self.field, self.param.as_deref(), start, lookback)
            .map_err(|e| invalid(key(e.key), e.message))
    }
}

#[derive(Clone)]
enum QueryValue {
    Template(Template),
    Plain(String),
}

impl std::fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values and the URL's text may hold expanded secrets: only the settings
        // (whose Debug redacts) and the variables used are shown.
        let mut used: Vec<&str> = Vec::new();
        let templates = std::iter::once(&self.url)
            .chain(self.query.iter().filter_map(|(_, v)| match v {
                QueryValue::Template(t) => Some(t),
                QueryValue::Plain(_) => None,
            }))
            .chain(self.headers.iter().map(|(_, t)| t));
        for name in templates.flat_map(Template::var_names) {
            if !used.contains(&name) {
                used.push(name);
            }
        }
        f.debug_struct("SourceSpec")
            .field("settings", &self.settings)
            .field("vars_used", &used)
            .finish()
    }
}

/// Characters of a template value kept as they are in a source URL: RFC 3986's unreserved
/// ones.
const URL_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl SourceSpec {
    /// The configuration of an incremental run that asks from `since`: `{incremental_since}`
    /// rendered as `since`, or `param = since` added to the query.
    pub fn config_since(&self, vars: &RunVars, since: &str) -> Result<SourceConfig, ConfigError> {
        let Some(incremental) = &self.incremental else {
            return self.config(vars);
        };
        let mut vars = vars.clone();
        vars.vars.insert(SINCE_VAR.to_owned(), since.to_owned());
        let mut config = self.config(&vars)?;
        if let Some(param) = &incremental.param {
            config.url.query_pairs_mut().append_pair(param, since);
        }
        Ok(config)
    }

    /// The source's configuration for one run: URL, query and headers rendered with `vars`.
    /// Values put into the URL are percent-encoded; query values are encoded as query values.
    pub fn config(&self, vars: &RunVars) -> Result<SourceConfig, ConfigError> {
        let text = self.url.render_with(vars, |value, out| {
            out.extend(percent_encoding::utf8_percent_encode(value, URL_VALUE));
        });
        let mut url = Url::parse(&text)
            .map_err(|e| invalid("source.url", format!("not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("source.url", "must be an http:// or https:// URL"));
        }
        if !self.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &self.query {
                match value {
                    QueryValue::Template(t) => pairs.append_pair(name, &t.render(vars)),
                    QueryValue::Plain(v) => pairs.append_pair(name, v),
                };
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let value = value.render(vars);
            reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                invalid(
                    format!("source.headers.{name}"),
                    "the value (not shown) is not a valid header value",
                )
            })?;
            headers.push((name.clone(), Secret::new(value)));
        }
        Ok(SourceConfig {
            url,
            headers,
            ..self.settings.clone()
        })
    }

    /// The settings every run shares (everything but the first URL and the headers, which
    /// [`SourceSpec::config`] renders).
    pub fn settings(&self) -> &SourceConfig {
        &self.settings
    }

    /// Whether the URL, a query value or a header value uses variable `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.url.uses(name)
            || self
                .query
                .iter()
                .any(|(_, v)| matches!(v, QueryValue::Template(t) if t.uses(name)))
            || self.headers.iter().any(|(_, t)| t.uses(name))
    }
}

fn pagination(p: &PaginationSection, records: &JsonPointer) -> Result<Pagination, ConfigError> {
    let key = |name: &str| format!("source.pagination.{name}");
    let required = |name: &str, v: &Option<String>| {
        v.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            invalid(
                key(name),
                format!("required for type = {:?}", kind_name(p.kind)),
            )
        })
    };
    let unused = |names: &[(&str, bool)]| {
        for (name, present) in names {
            if *present {
                return Err(invalid(
                    key(name),
                    format!("not used by type = {:?}", kind_name(p.kind)),
                ));
            }
        }
        Ok(())
    };
    let pointer = |text: String| {
        let next = JsonPointer::parse(&text).map_err(|e| invalid(key("next"), e))?;
        if next.is_prefix_of(records) || records.is_prefix_of(&next) {
            return Err(invalid(key("next"), "must not overlap source.records"));
        }
        Ok(next)
    };
    let limit = || match (&p.limit_param, p.limit) {
        (Some(param), Some(limit)) if limit > 0 => Ok(Some((param.clone(), limit))),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(invalid(key("limit"), "must be at least 1")),
        (Some(_), None) => Err(invalid(key("limit"), "required with limit_param")),
        (None, Some(_)) => Err(invalid(key("limit_param"), "required with limit")),
    };
    let has_limit = p.limit.is_some() || p.limit_param.is_some();
    Ok(match p.kind {
        PaginationKind::Token => {
            unused(&[("limit", has_limit), ("start", p.start.is_some())])?;
            Pagination::Token {
                next: pointer(required("next", &p.next)?)?,
                param: required("param", &p.param)?,
            }
        }
        PaginationKind::NextUrl => {
            unused(&[
                ("param", p.param.is_some()),
                ("limit", has_limit),
                ("start", p.start.is_some()),
            ])?;
            Pagination::NextUrl {
                next: pointer(required("next", &p.next)?)?,
            }
        }
        PaginationKind::LinkHeader | PaginationKind::None => {
            unused(&[
                ("next", p.next.is_some()),
                ("param", p.param.is_some()),
                ("limit", has_limit),
                ("start", p.start.is_some()),
            ])?;
            if p.kind == PaginationKind::None {
                Pagination::None
            } else {
                Pagination::LinkHeader
            }
        }
        PaginationKind::Offset => {
            unused(&[("next", p.next.is_some())])?;
            Pagination::Offset {
                param: required("param", &p.param)?,
                limit: limit()?,
                start: p.start.unwrap_or(0),
            }
        }
        PaginationKind::Page => {
            unused(&[("next", p.next.is_some())])?;
            Pagination::Page {
                param: required("param", &p.param)?,
                limit: limit()?,
                start: p.start.unwrap_or(1),
            }
        }
    })
}

/// `total` and `total_header` of `[source.pagination]`: offset and page pagination only.
fn total(p: &PaginationSection, records: &JsonPointer) -> Result<Option<Total>, ConfigError> {
    let key = |name: &str| format!("source.pagination.{name}");
    let counted = matches!(p.kind, PaginationKind::Offset | PaginationKind::Page);
    match (&p.total, &p.total_header) {
        (None, None) => Ok(None),
        _ if !counted => {
            let name = if p.total.is_some() {
                "total"
            } else {
                "total_header"
            };
            Err(invalid(
                key(name),
                format!("not used by type = {:?}", kind_name(p.kind)),
            ))
        }
        (Some(_), Some(_)) => Err(invalid(
            key("total_header"),
            "give either total (in the body) or total_header, not both",
        )),
        (Some(text), None) => {
            let total = JsonPointer::parse(text).map_err(|e| invalid(key("total"), e))?;
            if total.is_prefix_of(records) || records.is_prefix_of(&total) {
                return Err(invalid(key("total"), "must not overlap source.records"));
            }
            Ok(Some(Total::Body(total)))
        }
        (None, Some(name)) => reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map(|h| Some(Total::Header(h)))
            .map_err(|_| invalid(key("total_header"), "not a valid header name")),
    }
}

fn kind_name(kind: PaginationKind) -> &'static str {
    match kind {
        PaginationKind::Token => "token",
        PaginationKind::NextUrl => "next_url",
        PaginationKind::LinkHeader => "link_header",
        PaginationKind::Offset => "offset",
        PaginationKind::Page => "page",
        PaginationKind::None => "none",
    }
}

/// The smallest `[source] page_buffer_bytes`.
pub const MIN_PAGE_BUFFER_BYTES: usize = 1024;
/// The highest `[source.rate_limit] requests_per_second`.
pub const MAX_REQUESTS_PER_SECOND: f64 = 1e6;

impl SourceSection {
    /// `[source]`, checked, with its requests as templates rendered once with the example
    /// run's values.
    pub(crate) fn validate(&self, check: &Checker<'_>) -> Result<SourceSpec, ConfigError> {
        let records =
            JsonPointer::parse(&self.records).map_err(|e| invalid("source.records", e))?;
        self.check_limits()?;
        let beside_records = |key: &str, text: &str| {
            let pointer = JsonPointer::parse(text).map_err(|e| invalid(key, e))?;
            if pointer.is_prefix_of(&records) || records.is_prefix_of(&pointer) {
                return Err(invalid(key, "must not overlap source.records"));
            }
            Ok(pointer)
        };
        let error = self
            .error
            .as_deref()
            .map(|text| beside_records("source.error", text))
            .transpose()?;
        let mut redactor = match &self.redact_params {
            Some(list) => Redactor::new(list.iter().cloned()),
            None => Redactor::default(),
        };
        let auth = match &self.auth {
            Some(section) => section.validate(check, &mut redactor)?,
            None => Auth::None,
        };
        let settings = SourceConfig {
            ca_bundle: check.ca_bundle("source.ca_bundle", self.ca_bundle.as_deref())?,
            url: Url::parse("http://placeholder.invalid/").map_err(|e| invalid("source.url", e))?,
            headers: Vec::new(),
            auth,
            pagination: pagination(&self.pagination, &records)?,
            total: total(&self.pagination, &records)?,
            error,
            max_pages: self.max_pages,
            max_page_bytes: self.max_page_bytes.unwrap_or(usize::MAX),
            timeout: secs("source.timeout_secs", self.timeout_secs)?,
            connect_timeout: secs("source.connect_timeout_secs", self.connect_timeout_secs)?,
            retry: self.retry.validate()?,
            redactor,
            compression: self.compression,
            concurrency: self.concurrency,
            page_buffer_bytes: self.page_buffer_bytes,
            rate_limit: self
                .rate_limit
                .as_ref()
                .map(RateLimitSection::validate)
                .transpose()?,
        };
        // {incremental_since} is a template variable of an incremental source's requests.
        let with_since;
        let check = match &self.incremental {
            Some(_) => {
                with_since = check.with_var(SINCE_VAR, "2026-01-01T00:00:00Z");
                &with_since
            }
            None => check,
        };
        let query = self.query_templates(check)?;
        let mut source = SourceSpec {
            settings,
            url: check.template("source.url", &self.url, true)?,
            query,
            headers: self.header_templates(check)?,
            records,
            incremental: None,
        };
        source.incremental = self
            .incremental
            .as_ref()
            .map(|section| section.validate(&source.query, source.uses(SINCE_VAR)))
            .transpose()?;
        source.settings = source.config(&check.example)?;
        Ok(source)
    }

    /// The limits that stand alone.
    fn check_limits(&self) -> Result<(), ConfigError> {
        if self.max_pages == 0 {
            return Err(invalid("source.max_pages", "must be at least 1"));
        }
        if self.max_page_bytes.is_some_and(|m| m < MIN_MAX_PAGE_BYTES) {
            return Err(invalid(
                "source.max_page_bytes",
                format!("must be at least {MIN_MAX_PAGE_BYTES}"),
            ));
        }
        if self.max_record_bytes == 0 {
            return Err(invalid("source.max_record_bytes", "must be at least 1"));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(invalid(
                "source.concurrency",
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
        if self.page_buffer_bytes < MIN_PAGE_BUFFER_BYTES {
            return Err(invalid(
                "source.page_buffer_bytes",
                format!("must be at least {MIN_PAGE_BUFFER_BYTES}"),
            ));
        }
        Ok(())
    }

    fn query_templates(
        &self,
        check: &Checker<'_>,
    ) -> Result<Vec<(String, QueryValue)>, ConfigError> {
        self.query
            .iter()
            .map(|(name, value)| {
                let key = format!("source.query.{name}");
                let value = match value {
                    Scalar::String(v) => QueryValue::Template(check.template(&key, v, true)?),
                    Scalar::Integer(i) => QueryValue::Plain(i.to_string()),
                    Scalar::Float(f) => QueryValue::Plain(f.to_string()),
                    Scalar::Bool(b) => QueryValue::Plain(b.to_string()),
                };
                Ok((name.clone(), value))
            })
            .collect()
    }

    fn header_templates(
        &self,
        check: &Checker<'_>,
    ) -> Result<Vec<(String, Template)>, ConfigError> {
        self.headers
            .iter()
            .map(|(name, value)| {
                let key = format!("source.headers.{name}");
                reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid(&key, "not a valid header name"))?;
                Ok((name.clone(), check.template(&key, value, true)?))
            })
            .collect()
    }
}

impl RateLimitSection {
    fn validate(&self) -> Result<crate::source::RateLimitConfig, ConfigError> {
        let rps = self.requests_per_second;
        if !(rps.is_finite() && rps > 0.0 && rps <= MAX_REQUESTS_PER_SECOND) {
            return Err(invalid(
                "source.rate_limit.requests_per_second",
                format!("must be a number above 0 (at most {MAX_REQUESTS_PER_SECOND})"),
            ));
        }
        if self.burst == 0 {
            return Err(invalid("source.rate_limit.burst", "must be at least 1"));
        }
        Ok(crate::source::RateLimitConfig {
            requests_per_second: rps,
            burst: self.burst,
        })
    }
}

impl RetrySection {
    fn validate(&self) -> Result<RetryPolicy, ConfigError> {
        if self.max_attempts == 0 {
            return Err(invalid("source.retry.max_attempts", "must be at least 1"));
        }
        Ok(RetryPolicy {
            max_attempts: self.max_attempts,
            initial_backoff: Duration::from_millis(self.initial_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            max_retry_after: Duration::from_secs(self.max_retry_after_secs),
        })
    }
}
