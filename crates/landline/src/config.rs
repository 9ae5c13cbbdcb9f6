//! Pipeline files: TOML → [`PipelineFile`] (unknown keys rejected) → [`PipelineFile::validate`]
//! → [`Pipeline`], with every URL, pointer, template and limit checked before any request.
//!
//! Environment variables (`${VAR}`) are expanded during validation, so a missing secret fails
//! the run before it starts, naming the key that needs it. Template variables
//! (`{ingest_date}`, and the pipeline's own from `[vars]`) stay templates until a run renders
//! them ([`Pipeline::run_vars`], [`SourceSpec::config`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::pointer::JsonPointer;
use crate::secret::Secret;
use crate::sink::{Destination, MIN_PART_SIZE, PartSizer, StoreOptions, StoreRetry};
use crate::source::{Pagination, Redactor, RetryPolicy, SourceConfig, Total};
use crate::template::{
    BUILTIN_VARS, EnvLookup, MAX_VAR_NAME_CHARS, RunVars, Scope, Template, TemplateError,
    expand_env, valid_var_name,
};
use crate::tls::CaBundle;
use crate::transform::{OnInvalidTimestamp, TimeZone, Transform, TransformBuildError};

const MIB: usize = 1024 * 1024;

/// Default `[source] max_pages`.
pub const DEFAULT_MAX_PAGES: u64 = 10_000;
/// The smallest `[source] max_page_bytes` (a guard that would refuse every real page is a
/// mistake, not a setting).
pub const MIN_MAX_PAGE_BYTES: usize = 1024;
/// Most `[source] concurrency`.
pub const MAX_CONCURRENCY: usize = 64;
/// Default `[source] max_record_bytes`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 * MIB;
/// Default `[sink] part_size_bytes`: the first 1,000 parts' size, in compressed bytes.
pub const DEFAULT_PART_SIZE: usize = 5 * MIB;
/// Default `[sink] max_parts_in_flight`.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;
/// Most `[sink] compression_threads`.
pub const MAX_COMPRESSION_THREADS: usize = 64;
/// Default `[sink] compression_level` (gzip's own default).
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 6;

/// Why a pipeline file was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not valid TOML for a pipeline (syntax, unknown key, wrong type).
    #[error("{0}")]
    Toml(String),
    /// A value is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, as `section.key`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.to_string(),
    }
}

/// A pipeline file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// `name`: names the pipeline in checkpoint, manifest and state keys; by default the
    /// file's name without its extension.
    #[serde(default)]
    pub name: Option<String>,
    /// `[vars]`: the pipeline's own template variables, each with its default value.
    #[serde(default)]
    pub vars: BTreeMap<String, Scalar>,
    /// `[source]`: the HTTP API. A pipeline without one lands a library
    /// [`Source`](crate::source::Source) ([`run_source`](crate::pipeline::run_source)).
    #[serde(default)]
    pub source: Option<SourceSection>,
    /// `[transform]`.
    #[serde(default)]
    pub transform: TransformSection,
    /// `[sink]`.
    pub sink: SinkSection,
    /// `[state]`.
    #[serde(default)]
    pub state: StateSection,
    /// `[drift]`: when a run's data differs enough from the previous run's to warn.
    #[serde(default)]
    pub drift: crate::drift::DriftSection,
    /// A hash of the file as written (`${VAR}` references unexpanded, so no secret enters
    /// it), in a canonical form: what a checkpoint is checked against.
    #[serde(skip)]
    pub identity: String,
    /// The file's name without its extension, when it came from a file.
    #[serde(skip)]
    pub file_stem: Option<String>,
}

/// `[state]`: where run state (checkpoints) lives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// A prefix URL (`s3://bucket/prefix/`, a directory); by default `_landline/` at the root
    /// of the destination bucket, or, for a local destination, beside the first directory of
    /// its path that holds a `{variable}`.
    #[serde(default)]
    pub url: Option<String>,
    /// Write a checkpoint after every uploaded part that ends a page (default true, except
    /// with `[sink] fixed_part_size`, whose equal parts cannot end at page ends).
    #[serde(default)]
    pub checkpoints: Option<bool>,
    /// Write a manifest after each run that completes (default true): the run's report, the
    /// object's size and SHA-256, and the records' field inventory, which the next run's
    /// drift alarm compares with.
    #[serde(default)]
    pub manifests: Option<bool>,
}

/// The longest pipeline name: it is part of object keys.
pub const MAX_NAME_CHARS: usize = 128;
/// The longest value of a `[vars]` variable, in bytes.
pub const MAX_VAR_VALUE_BYTES: usize = 1024;

/// A scalar TOML value used as a query parameter or added field.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

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
fn default_connect_timeout_secs() -> f64 {
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

fn default_attempts() -> u32 {
    5
}
fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_max_retry_after_secs() -> u64 {
    120
}

/// `[transform]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSection {
    /// Fields added to every record; string values are `{template variable}` templates.
    #[serde(default)]
    pub add: BTreeMap<String, Scalar>,
    /// Top-level fields whose timestamps are normalised, when present.
    #[serde(default)]
    pub timestamps: Vec<String>,
    /// The zone of naive timestamps (default UTC).
    pub timezone: Option<String>,
    /// What to do with a timestamp that cannot be parsed.
    #[serde(default)]
    pub on_invalid_timestamp: OnInvalidTimestamp,
}

/// `[sink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// Destination URL or path; `{template variable}` template.
    pub url: String,
    /// Size of the first 1,000 parts in compressed bytes (≥ 5 MiB for object stores).
    #[serde(default = "default_part_size")]
    pub part_size_bytes: usize,
    /// Keep every part the same size (Cloudflare R2), capping objects at 10,000 parts.
    #[serde(default)]
    pub fixed_part_size: bool,
    /// Send each part with its SHA-256 (S3's `x-amz-checksum-sha256`), so that the store
    /// refuses a part corrupted on the way (default true; S3 only). Off for S3-compatible
    /// stores that refuse checksum headers.
    #[serde(default)]
    pub part_checksums: Option<bool>,
    /// Parts uploading at once.
    #[serde(default = "default_in_flight")]
    pub max_parts_in_flight: usize,
    /// gzip level, 0–9.
    #[serde(default = "default_level")]
    pub compression_level: u32,
    /// Deflate threads; 0 (the default) means one per core.
    #[serde(default)]
    pub compression_threads: usize,
    /// Limit for one request to the store (a part upload included), in seconds.
    #[serde(default = "default_store_timeout_secs")]
    pub timeout_secs: f64,
    /// Limit for connecting to the store, in seconds.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
    /// A PEM file of CA certificates trusted besides the system's (S3; else `AWS_CA_BUNDLE`).
    pub ca_bundle: Option<String>,
    /// `[sink.retry]`.
    #[serde(default)]
    pub retry: SinkRetrySection,
}

/// `[sink.retry]`: retries of each request to the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkRetrySection {
    /// Attempts per request, the first included.
    #[serde(default = "default_store_attempts")]
    pub max_attempts: u32,
    /// First backoff, in milliseconds (doubles per retry, with jitter).
    #[serde(default = "default_store_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Largest backoff, in milliseconds.
    #[serde(default = "default_store_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// No retry of a request starts later than this after its first attempt, in seconds.
    #[serde(default = "default_store_retry_timeout_secs")]
    pub timeout_secs: f64,
}

impl Default for SinkRetrySection {
    fn default() -> Self {
        SinkRetrySection {
            max_attempts: default_store_attempts(),
            initial_backoff_ms: default_store_initial_backoff_ms(),
            max_backoff_ms: default_store_max_backoff_ms(),
            timeout_secs: default_store_retry_timeout_secs(),
        }
    }
}

fn default_store_timeout_secs() -> f64 {
    StoreOptions::default().timeout.as_secs_f64()
}
fn default_store_attempts() -> u32 {
    StoreRetry::default().max_attempts
}
fn default_store_initial_backoff_ms() -> u64 {
    StoreRetry::default().initial_backoff.as_millis() as u64
}
fn default_store_max_backoff_ms() -> u64 {
    StoreRetry::default().max_backoff.as_millis() as u64
}
fn default_store_retry_timeout_secs() -> f64 {
    StoreRetry::default().timeout.as_secs_f64()
}

fn default_part_size() -> usize {
    DEFAULT_PART_SIZE
}
fn default_in_flight() -> usize {
    DEFAULT_PARTS_IN_FLIGHT
}
fn default_level() -> u32 {
    DEFAULT_COMPRESSION_LEVEL
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The HTTP source: its requests as templates, everything else checked. `None` for a
    /// pipeline without `[source]`, which only [`run_source`](crate::pipeline::run_source)
    /// runs.
    pub source: Option<SourceSpec>,
    /// `[vars]`: the pipeline's own template variables and their default values.
    pub vars: BTreeMap<String, String>,
    /// The transform, before run variables are known.
    pub transform: TransformSpec,
    /// The sink.
    pub sink: SinkSpec,
    /// The pipeline's name (`[A-Za-z0-9._-]`, at most [`MAX_NAME_CHARS`]).
    pub name: String,
    /// A hash of the pipeline file as written, without secrets (see [`PipelineFile::identity`]).
    pub identity: String,
    /// `[state]`, validated.
    pub state: StateSpec,
    /// `[drift]`, validated.
    pub drift: crate::drift::DriftThresholds,
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

impl Pipeline {
    /// The template variables of one run: `ingest_date` and `ingest_ts` as given, and every
    /// `[vars]` variable, `overrides` before its default. An override of a variable the
    /// pipeline does not declare, or a value that is too long or holds control characters,
    /// is an error.
    pub fn run_vars(
        &self,
        ingest_date: String,
        ingest_ts: String,
        overrides: &BTreeMap<String, String>,
    ) -> Result<RunVars, ConfigError> {
        for (name, value) in overrides {
            let key = format!("vars.{name}");
            if !self.vars.contains_key(name) {
                let declared = if self.vars.is_empty() {
                    "the pipeline declares none".to_owned()
                } else {
                    format!(
                        "declared: {}",
                        self.vars.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                return Err(invalid(
                    key,
                    format!(
                        "not a variable of this pipeline ({declared}; add it to [vars] with a default value)"
                    ),
                ));
            }
            check_var_value(&key, value)?;
        }
        let vars = self
            .vars
            .iter()
            .map(|(name, default)| {
                let value = overrides.get(name).unwrap_or(default);
                (name.clone(), value.clone())
            })
            .collect();
        Ok(RunVars {
            ingest_date,
            ingest_ts,
            vars,
        })
    }
}

/// Checks a value of a template variable (`key` names it in the error).
pub(crate) fn check_var_value(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.len() > MAX_VAR_VALUE_BYTES {
        return Err(invalid(
            key,
            format!("longer than {MAX_VAR_VALUE_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(key, "holds a control character"));
    }
    Ok(())
}

/// `[state]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSpec {
    /// The state prefix, ending in `/`; `None` for the default next to the destination.
    pub url: Option<String>,
    /// Whether runs write checkpoints.
    pub checkpoints: bool,
    /// Whether runs write manifests.
    pub manifests: bool,
}

/// `[transform]`, validated.
#[derive(Debug, Clone)]
pub struct TransformSpec {
    added: Vec<(String, AddedValue)>,
    timestamps: Vec<String>,
    timezone: TimeZone,
    on_invalid: OnInvalidTimestamp,
    max_record_bytes: usize,
}

#[derive(Debug, Clone)]
enum AddedValue {
    Template(Template),
    Json(String),
}

impl TransformSpec {
    /// The longest record line accepted (`[source] max_record_bytes`).
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// The transform for one run.
    pub fn build(&self, vars: &RunVars) -> Result<Transform, TransformBuildError> {
        let added = self
            .added
            .iter()
            .map(|(k, v)| {
                let json = match v {
                    AddedValue::Template(t) => {
                        serde_json::Value::String(t.render(vars)).to_string()
                    }
                    AddedValue::Json(j) => j.clone(),
                };
                (k.clone(), json)
            })
            .collect();
        Transform::new(
            added,
            self.timestamps.clone(),
            self.timezone,
            self.on_invalid,
            self.max_record_bytes,
        )
    }
}

/// `[sink]`, validated.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// The destination template.
    pub url: Template,
    /// Part sizes.
    pub parts: PartSizer,
    /// The configured first part size.
    pub part_size_bytes: usize,
    /// Parts uploading at once.
    pub max_parts_in_flight: usize,
    /// gzip level.
    pub compression_level: u32,
    /// Deflate threads (resolved: at least 1).
    pub compression_threads: usize,
    /// Timeouts, retries and CAs of the store's client.
    pub store: StoreOptions,
}

impl PipelineFile {
    /// Parses a pipeline file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PipelineFile, ConfigError> {
        let toml_error = |e: toml::de::Error| ConfigError::Toml(format!("{origin}: {e}"));
        let mut file: PipelineFile = toml::from_str(text).map_err(toml_error)?;
        // The same values give the same identity, however the file is spaced or commented.
        let table: toml::Table = toml::from_str(text).map_err(toml_error)?;
        let canonical = toml::to_string(&table).unwrap_or_else(|_| text.to_owned());
        file.identity = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(canonical.as_bytes()));
        file.file_stem = std::path::Path::new(origin)
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned());
        Ok(file)
    }

    /// Checks every value and expands `${VAR}` references with `env`.
    ///
    /// ```no_run
    /// # fn example(text: &str, token: String) -> Result<(), landline::ConfigError> {
    /// use landline::PipelineFile;
    /// // Secrets come from wherever the caller keeps them, not only the process environment.
    /// let env = |name: &str| (name == "API_TOKEN").then(|| token.clone());
    /// let pipeline = PipelineFile::parse(text, "variants.toml")?.validate(&env)?;
    /// println!("{} writes {}", pipeline.name, pipeline.sink.url);
    /// # Ok(())
    /// # }
    /// ```
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Pipeline, ConfigError> {
        let expand = |key: &str, text: &str| {
            expand_env(text, env).map_err(|e: TemplateError| invalid(key, e))
        };
        let vars = self.declared_vars()?;
        let names: Vec<String> = vars.keys().cloned().collect();
        let template = |key: &str, text: &str, env: Option<EnvLookup<'_>>| {
            Template::parse_in(text, Scope { vars: &names, env }).map_err(|e| invalid(key, e))
        };
        // Every template is checked once with an example run's values.
        let example = RunVars {
            ingest_date: "2026-01-01".into(),
            ingest_ts: "2026-01-01T00:00:00.000Z".into(),
            vars: vars.clone(),
        };
        let secs = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(invalid(
                    key,
                    "must be a number of seconds between 0 and 86400",
                ))
            }
        };
        let ca_bundle = |key: &str, path: &Option<String>| {
            path.as_deref()
                .map(|p| CaBundle::load(expand(key, p)?).map_err(|e| invalid(key, e)))
                .transpose()
        };
        let (source, max_record_bytes) = match &self.source {
            None => (None, default_max_record_bytes()),
            Some(s) => {
                let url = template("source.url", &s.url, Some(env))?;
                let mut query = Vec::new();
                for (name, value) in &s.query {
                    let key = format!("source.query.{name}");
                    query.push((
                        name.clone(),
                        match value {
                            Scalar::String(v) => {
                                QueryValue::Template(template(&key, v, Some(env))?)
                            }
                            Scalar::Integer(i) => QueryValue::Plain(i.to_string()),
                            Scalar::Float(f) => QueryValue::Plain(f.to_string()),
                            Scalar::Bool(b) => QueryValue::Plain(b.to_string()),
                        },
                    ));
                }
                let mut header_templates = Vec::new();
                for (name, value) in &s.headers {
                    let key = format!("source.headers.{name}");
                    reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| invalid(&key, "not a valid header name"))?;
                    header_templates.push((name.clone(), template(&key, value, Some(env))?));
                }
                let records =
                    JsonPointer::parse(&s.records).map_err(|e| invalid("source.records", e))?;
                let pagination = pagination(&s.pagination, &records)?;
                if s.max_pages == 0 {
                    return Err(invalid("source.max_pages", "must be at least 1"));
                }
                if s.max_page_bytes.is_some_and(|m| m < MIN_MAX_PAGE_BYTES) {
                    return Err(invalid(
                        "source.max_page_bytes",
                        format!("must be at least {MIN_MAX_PAGE_BYTES}"),
                    ));
                }
                if !(1..=MAX_CONCURRENCY).contains(&s.concurrency) {
                    return Err(invalid(
                        "source.concurrency",
                        format!("must be between 1 and {MAX_CONCURRENCY}"),
                    ));
                }
                if s.page_buffer_bytes < 1024 {
                    return Err(invalid("source.page_buffer_bytes", "must be at least 1024"));
                }
                let error = s
                    .error
                    .as_deref()
                    .map(|text| {
                        let error =
                            JsonPointer::parse(text).map_err(|e| invalid("source.error", e))?;
                        if error.is_prefix_of(&records) || records.is_prefix_of(&error) {
                            return Err(invalid("source.error", "must not overlap source.records"));
                        }
                        Ok(error)
                    })
                    .transpose()?;
                let rate_limit = s
                    .rate_limit
                    .as_ref()
                    .map(|r| {
                        let rps = r.requests_per_second;
                        if !(rps.is_finite() && rps > 0.0 && rps <= 1e6) {
                            return Err(invalid(
                                "source.rate_limit.requests_per_second",
                                "must be a number above 0 (at most 1000000)",
                            ));
                        }
                        if r.burst == 0 {
                            return Err(invalid("source.rate_limit.burst", "must be at least 1"));
                        }
                        Ok(crate::source::RateLimitConfig {
                            requests_per_second: rps,
                            burst: r.burst,
                        })
                    })
                    .transpose()?;
                let total = total(&s.pagination, &records)?;
                if s.max_record_bytes == 0 {
                    return Err(invalid("source.max_record_bytes", "must be at least 1"));
                }
                let r = &s.retry;
                if r.max_attempts == 0 {
                    return Err(invalid("source.retry.max_attempts", "must be at least 1"));
                }
                let retry = RetryPolicy {
                    max_attempts: r.max_attempts,
                    initial_backoff: Duration::from_millis(r.initial_backoff_ms),
                    max_backoff: Duration::from_millis(r.max_backoff_ms),
                    max_retry_after: Duration::from_secs(r.max_retry_after_secs),
                };
                let redactor = match &s.redact_params {
                    Some(list) => Redactor::new(list.iter().cloned()),
                    None => Redactor::default(),
                };
                let placeholder = SourceConfig {
                    ca_bundle: ca_bundle("source.ca_bundle", &s.ca_bundle)?,
                    url: Url::parse("http://placeholder.invalid/")
                        .map_err(|e| invalid("source.url", e))?,
                    headers: Vec::new(),
                    pagination,
                    total,
                    error,
                    max_pages: s.max_pages,
                    max_page_bytes: s.max_page_bytes.unwrap_or(usize::MAX),
                    timeout: secs("source.timeout_secs", s.timeout_secs)?,
                    connect_timeout: secs("source.connect_timeout_secs", s.connect_timeout_secs)?,
                    retry,
                    redactor,
                    compression: s.compression,
                    concurrency: s.concurrency,
                    page_buffer_bytes: s.page_buffer_bytes,
                    rate_limit,
                };
                let mut source = SourceSpec {
                    settings: placeholder,
                    url,
                    query,
                    headers: header_templates,
                    records,
                };
                source.settings = source.config(&example)?;
                (Some(source), s.max_record_bytes)
            }
        };

        let t = &self.transform;
        let mut added = Vec::new();
        for (name, value) in &t.add {
            let key = format!("transform.add.{name}");
            let value = match value {
                Scalar::String(text) => AddedValue::Template(template(&key, text, None)?),
                Scalar::Integer(i) => AddedValue::Json(i.to_string()),
                Scalar::Float(f) => AddedValue::Json(
                    serde_json::Number::from_f64(*f)
                        .ok_or_else(|| invalid(&key, "not a finite number"))?
                        .to_string(),
                ),
                Scalar::Bool(b) => AddedValue::Json(b.to_string()),
            };
            added.push((name.clone(), value));
        }
        let timezone = match &t.timezone {
            Some(tz) => tz
                .parse::<TimeZone>()
                .map_err(|e| invalid("transform.timezone", e))?,
            None => TimeZone::Utc,
        };
        let transform = TransformSpec {
            added,
            timestamps: t.timestamps.clone(),
            timezone,
            on_invalid: t.on_invalid_timestamp,
            max_record_bytes,
        };
        // Check the combination once with the example values.
        transform
            .build(&example)
            .map_err(|e| invalid("transform", e))?;

        let k = &self.sink;
        let sink_url = template("sink.url", &k.url, None)?;
        Destination::check(&sink_url.render(&example)).map_err(|e| invalid("sink.url", e))?;
        if k.part_size_bytes < MIN_PART_SIZE {
            return Err(invalid(
                "sink.part_size_bytes",
                format!("must be at least {MIN_PART_SIZE} (5 MiB, S3's minimum part size)"),
            ));
        }
        if k.part_size_bytes > crate::sink::multipart::MAX_PART_SIZE {
            return Err(invalid("sink.part_size_bytes", "must be at most 5 GiB"));
        }
        if k.max_parts_in_flight == 0 || k.max_parts_in_flight > 64 {
            return Err(invalid(
                "sink.max_parts_in_flight",
                "must be between 1 and 64",
            ));
        }
        if k.compression_level > 9 {
            return Err(invalid("sink.compression_level", "must be between 0 and 9"));
        }
        if k.compression_threads > MAX_COMPRESSION_THREADS {
            return Err(invalid(
                "sink.compression_threads",
                format!("must be between 0 (one per core) and {MAX_COMPRESSION_THREADS}"),
            ));
        }
        let compression_threads = match k.compression_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().min(MAX_COMPRESSION_THREADS)),
            n => n,
        };
        let parts = PartSizer::new(k.part_size_bytes, k.fixed_part_size);
        let r = &k.retry;
        if r.max_attempts == 0 {
            return Err(invalid("sink.retry.max_attempts", "must be at least 1"));
        }
        let store = StoreOptions {
            timeout: secs("sink.timeout_secs", k.timeout_secs)?,
            connect_timeout: secs("sink.connect_timeout_secs", k.connect_timeout_secs)?,
            retry: StoreRetry {
                max_attempts: r.max_attempts,
                initial_backoff: Duration::from_millis(r.initial_backoff_ms),
                max_backoff: Duration::from_millis(r.max_backoff_ms),
                timeout: secs("sink.retry.timeout_secs", r.timeout_secs)?,
            },
            ca_bundle: ca_bundle("sink.ca_bundle", &k.ca_bundle)?,
            part_checksums: k.part_checksums.unwrap_or(true),
        };
        let name = self.pipeline_name()?;
        let state = self.state.validate(k.fixed_part_size)?;
        Ok(Pipeline {
            name,
            vars,
            identity: self.identity.clone(),
            state,
            drift: self.drift.validate()?,
            source,
            transform,
            sink: SinkSpec {
                url: sink_url,
                parts,
                part_size_bytes: k.part_size_bytes,
                max_parts_in_flight: k.max_parts_in_flight,
                compression_level: k.compression_level,
                compression_threads,
                store,
            },
        })
    }
}

impl PipelineFile {
    /// `[vars]`, checked: names a template can use, values as text.
    fn declared_vars(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut vars = BTreeMap::new();
        for (name, value) in &self.vars {
            let key = format!("vars.{name}");
            if BUILTIN_VARS.contains(&name.as_str()) {
                return Err(invalid(
                    key,
                    "is set by every run (--ingest-date), not declared",
                ));
            }
            if !valid_var_name(name) {
                return Err(invalid(
                    key,
                    format!(
                        "a variable's name is lower-case letters, digits and '_', starting with a letter (at most {MAX_VAR_NAME_CHARS})"
                    ),
                ));
            }
            let value = match value {
                Scalar::String(v) => v.clone(),
                Scalar::Integer(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            check_var_value(&key, &value)?;
            vars.insert(name.clone(), value);
        }
        Ok(vars)
    }

    /// `name`, or the file's name without its extension, checked for use in keys.
    fn pipeline_name(&self) -> Result<String, ConfigError> {
        let name = match (&self.name, &self.file_stem) {
            (Some(name), _) => name.clone(),
            (None, Some(stem)) => stem.clone(),
            (None, None) => "pipeline".to_owned(),
        };
        let usable = !name.is_empty()
            && name.chars().count() <= MAX_NAME_CHARS
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if usable {
            Ok(name)
        } else {
            let key = if self.name.is_some() {
                "name"
            } else {
                "name (from the file name)"
            };
            Err(invalid(
                key,
                format!(
                    "{name:?} cannot be used in object keys: use letters, digits, '.', '_' and '-' (at most {MAX_NAME_CHARS}, not starting with '.')"
                ),
            ))
        }
    }
}

impl StateSection {
    fn validate(&self, fixed_part_size: bool) -> Result<StateSpec, ConfigError> {
        if fixed_part_size && self.checkpoints == Some(true) {
            return Err(invalid(
                "state.checkpoints",
                "cannot be used with [sink] fixed_part_size: checkpointed parts end at page ends, so they are not all the same size",
            ));
        }
        let url = match &self.url {
            None => None,
            Some(url) if url.is_empty() => return Err(invalid("state.url", "is empty")),
            Some(url) => {
                let prefix = if url.ends_with('/') {
                    url.clone()
                } else {
                    format!("{url}/")
                };
                // The form of an object under it, as the sink checks a destination.
                Destination::check(&format!("{prefix}checkpoint.json"))
                    .map_err(|e| invalid("state.url", e))?;
                Some(prefix)
            }
        };
        Ok(StateSpec {
            url,
            checkpoints: self.checkpoints.unwrap_or(!fixed_part_size),
            manifests: self.manifests.unwrap_or(true),
        })
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

impl Pipeline {
    /// Reads, parses and validates a pipeline file with the process environment (see
    /// [`PipelineFile::validate`] to give another one).
    pub fn load(path: &std::path::Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Toml(format!("{}: {e}", path.display())))?;
        PipelineFile::parse(&text, &path.display().to_string())?
            .validate(&|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[source]
url = "http://127.0.0.1:18080/variants"
query = { count = "200" }
headers = { Authorization = "Bearer ${API_TOKEN}" }
records = "/variants"
max_pages = 450
[source.pagination]
type = "token"
next = "/next_token"
param = "token"
[transform]
add = { ingest_date = "{ingest_date}", ingest_ts = "{ingest_ts}" }
timestamps = ["created_at", "updated_at", "published_at"]
[sink]
url = "s3://bench/variants/date={ingest_date}/variants.jsonl.gz"
"#;

    fn env(name: &str) -> Option<String> {
        (name == "API_TOKEN").then(|| "s3cr3t".to_owned())
    }

    fn validate(text: &str) -> Result<Pipeline, ConfigError> {
        PipelineFile::parse(text, "p.toml")?.validate(&env)
    }

    #[test]
    fn names_identity_and_state() {
        let p = validate(EXAMPLE).unwrap();
        assert_eq!(p.name, "p");
        assert!(p.state.checkpoints);
        assert_eq!(p.state.url, None);
        // The identity is of the file as written: spacing and comments do not count, values
        // do, and the secret's value is not in it (the reference is hashed unexpanded).
        let spaced = EXAMPLE.replace("max_pages = 450", "max_pages   =   450 # comment");
        assert_eq!(validate(&spaced).unwrap().identity, p.identity);
        let other = EXAMPLE.replace("max_pages = 450", "max_pages = 451");
        assert_ne!(validate(&other).unwrap().identity, p.identity);
        let other_secret = PipelineFile::parse(EXAMPLE, "p.toml")
            .unwrap()
            .validate(&|_| Some("another".to_owned()))
            .unwrap();
        assert_eq!(other_secret.identity, p.identity);

        let named = format!(
            "name = \"variants-v2\"\n{EXAMPLE}[state]\nurl = \"s3://state-bucket/run-state\"\n"
        );
        let p = validate(&named).unwrap();
        assert_eq!(p.name, "variants-v2");
        assert_eq!(p.state.url.as_deref(), Some("s3://state-bucket/run-state/"));

        for (text, key) in [
            (format!("name = \"a/b\"\n{EXAMPLE}"), "name"),
            (format!("name = \"\"\n{EXAMPLE}"), "name"),
            (format!("name = \".hidden\"\n{EXAMPLE}"), "name"),
            (format!("{EXAMPLE}[state]\nurl = \"\"\n"), "state.url"),
            (
                format!("{EXAMPLE}[state]\nurl = \"ftp://x/\"\n"),
                "state.url",
            ),
            (
                format!("{EXAMPLE}fixed_part_size = true\n[state]\ncheckpoints = true\n"),
                "state.checkpoints",
            ),
        ] {
            let err = validate(&text).unwrap_err().to_string();
            assert!(err.starts_with(key), "{key}: {err}");
        }
        let fixed = validate(&format!("{EXAMPLE}fixed_part_size = true\n")).unwrap();
        assert!(
            !fixed.state.checkpoints,
            "equal parts cannot end at page ends"
        );
        let err = PipelineFile::parse(EXAMPLE, "bad name.toml")
            .unwrap()
            .validate(&env)
            .unwrap_err();
        assert!(err.to_string().contains("from the file name"), "{err}");
    }

    #[test]
    fn the_documented_example_validates() {
        let p = validate(EXAMPLE).unwrap();
        let vars = p
            .run_vars(
                "2026-11-25".into(),
                "2026-11-25T00:00:00.000Z".into(),
                &BTreeMap::new(),
            )
            .unwrap();
        let source = p.source.as_ref().unwrap().config(&vars).unwrap();
        assert_eq!(
            source.url.as_str(),
            "http://127.0.0.1:18080/variants?count=200"
        );
        assert_eq!(
            source.headers,
            [("Authorization".to_owned(), Secret::new("Bearer s3cr3t"))]
        );
        assert_eq!(source.max_pages, 450);
        assert!(matches!(source.pagination, Pagination::Token { .. }));
        // Debug shows no secret.
        let debug = format!("{p:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert_eq!(
            p.sink.url.render(&vars),
            "s3://bench/variants/date=2026-11-25/variants.jsonl.gz"
        );
        assert_eq!(p.sink.part_size_bytes, DEFAULT_PART_SIZE);
    }

    #[test]
    fn template_variables_render_in_source_transform_and_sink() {
        let text = format!(
            "[vars]\nregion = \"eu west\"\nshard = 3\n{}",
            EXAMPLE
                .replace(
                    "url = \"http://127.0.0.1:18080/variants\"",
                    "url = \"http://127.0.0.1:18080/{region}/variants\""
                )
                .replace(
                    "query = { count = \"200\" }",
                    "query = { count = \"200\", day = \"{ingest_date}\", s = \"{shard}/{{x}}\" }"
                )
                .replace(
                    "headers = { Authorization = \"Bearer ${API_TOKEN}\" }",
                    "headers = { Authorization = \"Bearer ${API_TOKEN}\", X-Region = \"{region}\" }"
                )
                .replace("date={ingest_date}/", "region={region}/date={ingest_date}/")
                .replace(
                    "ingest_ts = \"{ingest_ts}\"",
                    "ingest_ts = \"{ingest_ts}\", shard = \"{shard}\""
                )
        );
        let p = validate(&text).unwrap();
        assert_eq!(p.vars.get("shard").map(String::as_str), Some("3"));
        assert!(
            p.source.as_ref().unwrap().uses("region")
                && p.source.as_ref().unwrap().uses("ingest_date")
                && !p.source.as_ref().unwrap().uses("ingest_ts")
        );
        let overrides = BTreeMap::from([("region".to_owned(), "us/east?x=1".to_owned())]);
        let vars = p
            .run_vars(
                "2024-02-03".into(),
                "2024-02-03T00:00:00.000Z".into(),
                &overrides,
            )
            .unwrap();
        let source = p.source.as_ref().unwrap().config(&vars).unwrap();
        // A value in the URL is percent-encoded: it cannot add a path segment or a query.
        assert_eq!(
            source.url.as_str(),
            "http://127.0.0.1:18080/us%2Feast%3Fx%3D1/variants?count=200&day=2024-02-03&s=3%2F%7Bx%7D"
        );
        assert!(
            source
                .headers
                .contains(&("X-Region".to_owned(), Secret::new("us/east?x=1")))
        );
        assert_eq!(
            p.sink.url.render(&vars),
            "s3://bench/variants/region=us/east?x=1/date=2024-02-03/variants.jsonl.gz"
        );
        let defaults = p
            .run_vars("2024-02-03".into(), "t".into(), &BTreeMap::new())
            .unwrap();
        assert_eq!(defaults.vars["region"], "eu west");
        assert!(
            p.source
                .as_ref()
                .unwrap()
                .config(&defaults)
                .unwrap()
                .url
                .as_str()
                .contains("/eu%20west/")
        );
        let debug = format!("{:?}", p.source);
        assert!(
            !debug.contains("s3cr3t") && debug.contains("\"region\""),
            "{debug}"
        );

        // Overrides must be declared, and plain.
        for (name, value, says) in [
            (
                "zone",
                "a",
                "not a variable of this pipeline (declared: region, shard",
            ),
            ("region", "a\nb", "control character"),
            (
                "region",
                &"x".repeat(MAX_VAR_VALUE_BYTES + 1),
                "longer than",
            ),
        ] {
            let overrides = BTreeMap::from([(name.to_owned(), value.to_owned())]);
            let err = p
                .run_vars("d".into(), "t".into(), &overrides)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("vars.{name}: ")) && err.contains(says),
                "{err}"
            );
        }
        let err = validate(EXAMPLE)
            .unwrap()
            .run_vars("d".into(), "t".into(), &overrides)
            .unwrap_err();
        assert!(
            err.to_string().contains("the pipeline declares none"),
            "{err}"
        );

        // Declarations and uses are checked.
        for (bad, key) in [
            ("[vars]\ningest_date = \"x\"\n", "vars.ingest_date"),
            ("[vars]\nRegion = \"x\"\n", "vars.Region"),
            ("[vars]\n\"a-b\" = \"x\"\n", "vars.a-b"),
            ("[vars]\nregion = \"a\\u0007\"\n", "vars.region"),
        ] {
            let err = validate(&format!("{bad}{EXAMPLE}"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(key), "{bad}: {err}");
        }
        let undeclared = EXAMPLE.replace("date={ingest_date}/", "region={region}/");
        let err = validate(&undeclared).unwrap_err().to_string();
        assert!(
            err.starts_with("sink.url: unknown template variable {region}")
                && err.contains("[vars]"),
            "{err}"
        );
        // A header value's secret may hold braces: it is never read as a template.
        let braces = |name: &str| (name == "API_TOKEN").then(|| "a{b}c".to_owned());
        let p = PipelineFile::parse(EXAMPLE, "p.toml")
            .unwrap()
            .validate(&braces)
            .unwrap();
        let source = p.source.as_ref().unwrap().config(&defaults_of(&p)).unwrap();
        assert_eq!(source.headers[0].1.expose(), "Bearer a{b}c");
    }

    fn defaults_of(p: &Pipeline) -> RunVars {
        p.run_vars("2024-01-01".into(), "t".into(), &BTreeMap::new())
            .unwrap()
    }

    /// Each invalid file and the key its error must name.
    #[test]
    fn invalid_files_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "url = \"http://127.0.0.1:18080/variants\"",
                "url = \"not a url\"",
                "source.url",
            ),
            (
                "url = \"http://127.0.0.1:18080/variants\"",
                "url = \"ftp://h/x\"",
                "source.url",
            ),
            ("${API_TOKEN}", "${NOPE}", "source.headers.Authorization"),
            (
                "records = \"/variants\"",
                "records = \"variants\"",
                "source.records",
            ),
            (
                "type = \"token\"",
                "type = \"cursor\"",
                "unknown variant `cursor`",
            ),
            (
                "next = \"/next_token\"",
                "next = \"next_token\"",
                "source.pagination.next",
            ),
            ("param = \"token\"", "", "source.pagination.param"),
            ("max_pages = 450", "max_pages = 0", "source.max_pages"),
            (
                "max_pages = 450",
                "max_pages = 450\nmax_pagez = 1",
                "unknown field `max_pagez`",
            ),
            (
                "[sink]",
                "[sink]\npart_size_bytes = 5000000",
                "sink.part_size_bytes",
            ),
            (
                "[sink]",
                "[sink]\ncompression_level = 10",
                "sink.compression_level",
            ),
            (
                "[sink]",
                "[sink]\nmax_parts_in_flight = 0",
                "sink.max_parts_in_flight",
            ),
            (
                "\"{ingest_date}\", ingest_ts",
                "\"{today}\", ingest_ts",
                "transform.add.ingest_date",
            ),
            (
                "[transform]",
                "[transform]\ntimezone = \"Mars/Olympus\"",
                "transform.timezone",
            ),
            (
                "[transform]",
                "[transform]\nextra = 1",
                "unknown field `extra`",
            ),
            ("variants.jsonl.gz\"", "{x}.gz\"", "sink.url"),
            // Every value is checked, and each error names its key.
            (
                "url = \"http://127.0.0.1:18080/variants\"",
                "url = \"http://${NOPE}/variants\"",
                "source.url",
            ),
            (
                "query = { count = \"200\" }",
                "query = { count = \"${NOPE}\" }",
                "source.query.count",
            ),
            (
                "records = \"/variants\"",
                "records = \"/vari~2ants\"",
                "source.records",
            ),
            (
                "max_pages = 450",
                "max_pages = \"many\"",
                "max_pages = \"many\"",
            ),
            ("max_pages = 450", "max_pages = -1", "max_pages = -1"),
            (
                "max_pages = 450",
                "max_page_bytes = 10",
                "source.max_page_bytes",
            ),
            (
                "max_pages = 450",
                "max_record_bytes = 0",
                "source.max_record_bytes",
            ),
            ("max_pages = 450", "timeout_secs = 0", "source.timeout_secs"),
            (
                "max_pages = 450",
                "timeout_secs = nan",
                "source.timeout_secs",
            ),
            (
                "max_pages = 450",
                "connect_timeout_secs = -1.5",
                "source.connect_timeout_secs",
            ),
            (
                "max_pages = 450",
                "ca_bundle = \"/nonexistent/ca.pem\"",
                "source.ca_bundle",
            ),
            (
                "[transform]",
                "[source.retry]\nmax_attempts = 0\n[transform]",
                "source.retry.max_attempts",
            ),
            (
                "[transform]",
                "[source.retry]\nmax_attemps = 3\n[transform]",
                "unknown field `max_attemps`",
            ),
            (
                "[transform]",
                "[transform]\non_invalid_timestamp = \"explode\"",
                "unknown variant `explode`",
            ),
            (
                "ingest_ts = \"{ingest_ts}\" }",
                "ingest_ts = \"{ingest_ts}\", ratio = nan }",
                "transform.add.ratio",
            ),
            (
                "[sink]",
                "[sink]\npart_size_bytes = 5368709121",
                "sink.part_size_bytes",
            ),
            (
                "[sink]",
                "[sink]\ncompression_threads = 1000",
                "sink.compression_threads",
            ),
            ("[sink]", "[sink]\ntimeout_secs = 0", "sink.timeout_secs"),
            (
                "[sink]",
                "[sink]\nca_bundle = \"/nonexistent/ca.pem\"",
                "sink.ca_bundle",
            ),
            (
                "[sink]",
                "[sink.retry]\nmax_attempts = 0\n[sink]",
                "sink.retry.max_attempts",
            ),
            (
                "[sink]",
                "[sink.retry]\ntimeout_secs = -1\n[sink]",
                "sink.retry.timeout_secs",
            ),
            (
                "url = \"s3://bench/variants/date={ingest_date}/variants.jsonl.gz\"",
                "url = \"s3://bench/\"",
                "sink.url",
            ),
            (
                "url = \"s3://bench/variants/date={ingest_date}/variants.jsonl.gz\"",
                "url = \"ftp://bench/x.gz\"",
                "sink.url",
            ),
            (
                "url = \"s3://bench/variants/date={ingest_date}/variants.jsonl.gz\"",
                "url = \"out/\"",
                "sink.url",
            ),
            ("records = \"/variants\"\n", "", "missing field `records`"),
            ("[sink]\nurl", "[sinks]\nurl", "unknown field `sinks`"),
        ];
        for (from, to, want) in cases {
            assert!(EXAMPLE.contains(from), "{from}");
            let text = EXAMPLE.replacen(from, to, 1);
            let err = validate(&text).expect_err(to).to_string();
            assert!(err.contains(want), "{to}: {err}");
        }
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let text = EXAMPLE.replace("max_pages = 450", "max_pages = 450\nbogus = true");
        let err = validate(&text).unwrap_err().to_string();
        assert!(err.contains("line 8"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn secrets_are_not_in_errors() {
        let text = EXAMPLE.replace("Bearer ${API_TOKEN}", "Bearer ${API_TOKEN}\n");
        let err = validate(&text).unwrap_err().to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn pagination_kinds_validate() {
        let base = "[source]\nurl = \"http://h/x\"\nrecords = \"/r\"\n[sink]\nurl = \"out.gz\"\n";
        let ok = [
            "[source.pagination]\ntype = \"none\"",
            "[source.pagination]\ntype = \"link_header\"",
            "[source.pagination]\ntype = \"next_url\"\nnext = \"/links/next\"",
            "[source.pagination]\ntype = \"offset\"\nparam = \"offset\"\nlimit_param = \"limit\"\nlimit = 100",
            "[source.pagination]\ntype = \"page\"\nparam = \"page\"\nstart = 0",
        ];
        for section in ok {
            let text = base.replace("[sink]", &format!("{section}\n[sink]"));
            validate(&text).unwrap_or_else(|e| panic!("{section}: {e}"));
        }
        let bad = [
            (
                "[source.pagination]\ntype = \"offset\"\nparam = \"o\"\nlimit = 5",
                "limit_param",
            ),
            (
                "[source.pagination]\ntype = \"link_header\"\nnext = \"/n\"",
                "source.pagination.next",
            ),
            (
                "[source.pagination]\ntype = \"next_url\"\nnext = \"/r/0\"",
                "must not overlap",
            ),
        ];
        for (section, want) in bad {
            let text = base.replace("[sink]", &format!("{section}\n[sink]"));
            let err = validate(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{section}: {err}");
        }
    }
}
