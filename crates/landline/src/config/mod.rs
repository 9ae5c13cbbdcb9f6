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

use crate::sink::Destination;
use crate::template::{
    BUILTIN_VARS, EnvLookup, MAX_VAR_NAME_CHARS, RunVars, Scope, Template, TemplateError,
    expand_env, valid_var_name,
};
use crate::tls::CaBundle;

mod auth;
mod sink;
mod source;
mod transform;

pub use auth::{
    ApiKeySection, AuthSection, AwsSigV4Section, BasicSection, BearerSection, OAuth2Section,
};
pub use sink::{MAX_PARTS_IN_FLIGHT, MIN_OBJECT_BYTES, SinkRetrySection, SinkSection, SinkSpec};
pub use source::{
    IncrementalSection, MAX_REQUESTS_PER_SECOND, MIN_PAGE_BUFFER_BYTES, PaginationKind,
    PaginationSection, RateLimitSection, RetrySection, SourceSection, SourceSpec,
};
pub use transform::{TransformSection, TransformSpec};

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
        let vars = self.declared_vars()?;
        let check = Checker::new(env, &vars);
        let source = self
            .source
            .as_ref()
            .map(|s| s.validate(&check))
            .transpose()?;
        let max_record_bytes = self
            .source
            .as_ref()
            .map_or(DEFAULT_MAX_RECORD_BYTES, |s| s.max_record_bytes);
        let transform = self.transform.validate(&check, max_record_bytes)?;
        let sink = self.sink.validate(&check)?;
        Ok(Pipeline {
            name: self.pipeline_name()?,
            vars,
            identity: self.identity.clone(),
            state: self.state.validate(self.sink.fixed_part_size)?,
            drift: self.drift.validate()?,
            source,
            transform,
            sink,
        })
    }
}

/// The longest timeout of either section, in seconds: a day.
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// What every section's validation shares: the environment `${VAR}` references are expanded
/// from, the declared `[vars]`, and an example run's values, with which every template is
/// rendered once.
pub(crate) struct Checker<'a> {
    env: EnvLookup<'a>,
    names: Vec<String>,
    pub(crate) example: RunVars,
}

impl<'a> Checker<'a> {
    fn new(env: EnvLookup<'a>, vars: &BTreeMap<String, String>) -> Checker<'a> {
        Checker {
            env,
            names: vars.keys().cloned().collect(),
            example: RunVars {
                ingest_date: "2026-01-01".into(),
                ingest_ts: "2026-01-01T00:00:00.000Z".into(),
                vars: vars.clone(),
            },
        }
    }

    /// The same checker, with `name` a template variable too (`example` its value in the
    /// example run).
    pub(crate) fn with_var(&self, name: &str, example: &str) -> Checker<'a> {
        let mut names = self.names.clone();
        names.push(name.to_owned());
        let mut vars = self.example.clone();
        vars.vars.insert(name.to_owned(), example.to_owned());
        Checker {
            env: self.env,
            names,
            example: vars,
        }
    }

    /// The value of environment variable `name`, if it is set.
    pub(crate) fn env_var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// `text` with its `${VAR}` references expanded.
    pub(crate) fn expand(&self, key: &str, text: &str) -> Result<String, ConfigError> {
        expand_env(text, self.env).map_err(|e: TemplateError| invalid(key, e))
    }

    /// A template of `{variables}`; with `env`, `${VAR}` references are expanded in it too.
    pub(crate) fn template(
        &self,
        key: &str,
        text: &str,
        env: bool,
    ) -> Result<Template, ConfigError> {
        let scope = Scope {
            vars: &self.names,
            env: env.then_some(self.env),
        };
        Template::parse_in(text, scope).map_err(|e| invalid(key, e))
    }

    /// The CA bundle at `path` (`${VAR}` expanded), loaded.
    pub(crate) fn ca_bundle(
        &self,
        key: &str,
        path: Option<&str>,
    ) -> Result<Option<CaBundle>, ConfigError> {
        path.map(|p| CaBundle::load(self.expand(key, p)?).map_err(|e| invalid(key, e)))
            .transpose()
    }
}

/// A number of seconds above 0 and at most [`MAX_TIMEOUT_SECS`].
pub(crate) fn secs(key: &str, v: f64) -> Result<Duration, ConfigError> {
    if v.is_finite() && v > 0.0 && v <= MAX_TIMEOUT_SECS {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(invalid(
            key,
            format!("must be a number of seconds between 0 and {MAX_TIMEOUT_SECS}"),
        ))
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
mod tests;
