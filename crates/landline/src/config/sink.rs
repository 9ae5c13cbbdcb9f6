//! `[sink]`: the destination, its parts, compression and the store's client.

use std::time::Duration;

use serde::Deserialize;

use super::source::default_connect_timeout_secs;
use super::{
    Checker, ConfigError, DEFAULT_PART_SIZE, DEFAULT_PARTS_IN_FLIGHT, MAX_COMPRESSION_THREADS,
    invalid, secs,
};
use crate::compress::Compression;
use crate::sink::{Destination, MIN_PART_SIZE, PartSizer, StoreOptions, StoreRetry};
use crate::template::Template;

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
    /// The objects' format: `gzip`, `zstd` or `none`; unset, the destination's extension
    /// says (`.gz`, `.zst`, `.jsonl`/`.ndjson`/`.json`).
    #[serde(default)]
    pub compression: Option<Compression>,
    /// The format's level: gzip 0–9 (default 6), zstd 1–19 (default 3).
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Store objects as encoded JSON Lines (`Content-Type: application/x-ndjson` with
    /// `Content-Encoding: gzip` or `zstd`) rather than as compressed files
    /// (`application/gzip`, `application/zstd`), the default. HTTP clients then decompress
    /// them on download, and GCS serves them decompressed to clients that do not ask for the
    /// encoding.
    #[serde(default)]
    pub content_encoding: bool,
    /// Cut the run's output into objects of at most this many compressed bytes (at least
    /// 1 MiB), numbered by `{part}` in the URL.
    #[serde(default)]
    pub max_object_bytes: Option<u64>,
    /// Cut the run's output into objects of at most this many records, numbered by
    /// `{part}` in the URL.
    #[serde(default)]
    pub max_object_records: Option<u64>,
    /// With `{record:...}` in the URL: partitions open at once (default 16); opening one
    /// more completes the least recently used.
    #[serde(default)]
    pub max_open_partitions: Option<usize>,
    /// With `{record:...}` in the URL: the partition of records without a usable value
    /// (unset: such a record fails the run).
    #[serde(default)]
    pub default_partition: Option<String>,
    /// Compression threads; 0 (the default) means one per core.
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
    /// The AWS profile for an `s3://` destination (S3 only), as the AWS CLI's `--profile`: its
    /// credentials (static keys, SSO, `credential_process`, `role_arn` + `source_profile`...)
    /// and its `region` from `~/.aws/config` and `~/.aws/credentials` (or `AWS_CONFIG_FILE`,
    /// `AWS_SHARED_CREDENTIALS_FILE`). Wins over `AWS_PROFILE` and over keys in the
    /// environment. Unset: `AWS_PROFILE`, else the environment's keys, else the `default`
    /// profile and the rest of the AWS chain (see [`crate::aws`]).
    pub profile: Option<String>,
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
    /// The format: `[sink] compression`, else the one the destination's extension names
    /// (with the example run's values; each run's own destination decides,
    /// [`SinkSpec::compression_of`]).
    pub compression: Compression,
    /// Whether `[sink] compression` was set (rather than the extension saying).
    pub compression_set: bool,
    /// The format's level, when set; otherwise the format's default.
    pub compression_level: Option<i32>,
    /// Objects stored as encoded JSON Lines (`[sink] content_encoding`).
    pub content_encoding: bool,
    /// Where objects end (`max_object_bytes`, `max_object_records`).
    pub limits: crate::encode::ObjectLimits,
    /// Whether the URL numbers objects with `{part}`: the run writes a sequence of objects.
    pub numbered: bool,
    /// Partitions from the records (`{record:...}` in the URL).
    pub partition: Option<crate::partition::PartitionSpec>,
    /// Compression threads (resolved: at least 1).
    pub compression_threads: usize,
    /// Timeouts, retries and CAs of the store's client.
    pub store: StoreOptions,
}

/// Most `[sink] max_parts_in_flight`.
pub const MAX_PARTS_IN_FLIGHT: usize = 64;
/// The smallest `[sink] max_object_bytes`.
pub const MIN_OBJECT_BYTES: u64 = 1024 * 1024;

impl SinkSpec {
    /// The URL of object `n` (from 1) of a run with `vars`: `{part}` is `n` in five digits
    /// (`00001`), more when it needs them.
    pub fn object_url(&self, vars: &crate::template::RunVars, n: u64) -> String {
        self.object_url_in(vars, None, n)
    }

    /// The URL of object `n` of `partition` (escaped, see [`crate::partition::escape`]), for
    /// a URL with `{record:...}`; without a partition, `{record:...}` stays as it is.
    pub fn object_url_in(
        &self,
        vars: &crate::template::RunVars,
        partition: Option<&str>,
        n: u64,
    ) -> String {
        if !self.numbered && partition.is_none() {
            return self.url.render(vars);
        }
        let mut vars = vars.clone();
        if self.numbered {
            vars.vars.insert("part".to_owned(), format!("{n:05}"));
        }
        if let Some(partition) = partition {
            vars.vars.insert(
                crate::partition::RECORD_VAR.to_owned(),
                partition.to_owned(),
            );
        }
        self.url.render(&vars)
    }

    /// The format of the object at `url` and its level: `[sink] compression`, else the one
    /// its extension names, at `compression_level` (checked against that format) or the
    /// format's default. The error says which key is wrong, and why.
    pub fn compression_of(&self, url: &str) -> Result<(Compression, i32), ConfigError> {
        let set = self.compression_set.then_some(self.compression);
        resolve(set, self.compression_level, url)
    }
}

/// The format of `url` (`set` when `[sink] compression` names one) and its level.
fn resolve(
    set: Option<Compression>,
    level: Option<i32>,
    url: &str,
) -> Result<(Compression, i32), ConfigError> {
    let compression = match set {
        Some(c) => c,
        None => {
            Compression::from_key(url.split(['?', '#']).next().unwrap_or(url)).ok_or_else(|| {
                invalid(
                    "sink.url",
                    format!(
                        "`{url}` ends in none of .gz, .zst, .jsonl, .ndjson or .json: name the \
                         format with [sink] compression = \"gzip\", \"zstd\" or \"none\""
                    ),
                )
            })?
        }
    };
    let Some(level) = level else {
        return Ok((compression, compression.default_level()));
    };
    if compression == Compression::None {
        return Err(invalid(
            "sink.compression_level",
            format!("`{url}` is uncompressed JSON Lines, which have no level: remove it"),
        ));
    }
    let levels = compression.levels();
    if !levels.contains(&level) {
        return Err(invalid(
            "sink.compression_level",
            format!(
                "must be between {} and {} for {compression} (`{url}`)",
                levels.start(),
                levels.end()
            ),
        ));
    }
    Ok((compression, level))
}

impl SinkSection {
    /// `[sink]`, checked; the destination is rendered once with the example run's values.
    pub(crate) fn validate(&self, check: &Checker<'_>) -> Result<SinkSpec, ConfigError> {
        // `{part}` numbers the objects of a run, and `{record:...}` names a record's
        // partition, in the URL only.
        let (text, field) =
            crate::partition::split_template(&self.url).map_err(|e| invalid("sink.url", e))?;
        let check = &check
            .with_var("part", "00001")
            .with_var(crate::partition::RECORD_VAR, "partition");
        let url = check.template("sink.url", &text, false)?;
        Destination::check(&url.render(&check.example)).map_err(|e| invalid("sink.url", e))?;
        let numbered = url.uses("part");
        let partition = match field {
            Some((field, date)) => {
                let prefix = text.split("{record:}").next().unwrap_or_default();
                let in_path = match prefix.split_once("://") {
                    Some((_, rest)) => rest.contains('/'),
                    None => true,
                };
                if !in_path {
                    return Err(invalid(
                        "sink.url",
                        "{record:...} must be in the object's key, after the bucket",
                    ));
                }
                // Partitions hold records of many runs' dates: without a value of the run in
                // its key, a run would replace the objects an earlier one wrote there.
                if !url
                    .var_names()
                    .any(|n| n != "part" && n != crate::partition::RECORD_VAR)
                {
                    return Err(invalid(
                        "sink.url",
                        "with {record:...}, the key must also use {ingest_date}, {ingest_ts} or \
                         a [vars] variable (e.g. .../date={record:/created_at:date}/\
                         run={ingest_date}-{part}.jsonl.gz): otherwise each run replaces the \
                         objects earlier runs wrote in the same partitions",
                    ));
                }
                let spec = crate::partition::PartitionSpec::new(
                    &field,
                    date,
                    self.default_partition.as_deref(),
                    self.max_open_partitions
                        .unwrap_or(crate::partition::DEFAULT_MAX_OPEN_PARTITIONS),
                )
                .map_err(|e| invalid("sink.url", e))?;
                Some(spec)
            }
            None => {
                for (key, set) in [
                    (
                        "sink.max_open_partitions",
                        self.max_open_partitions.is_some(),
                    ),
                    ("sink.default_partition", self.default_partition.is_some()),
                ] {
                    if set {
                        return Err(invalid(
                            key,
                            "only applies to partitions from the records: put {record:/field} \
                             or {record:/field:date} in [sink] url",
                        ));
                    }
                }
                None
            }
        };
        let limits = crate::encode::ObjectLimits {
            records: self.max_object_records,
            bytes: self.max_object_bytes,
        };
        if limits.any() && !numbered {
            return Err(invalid(
                "sink.url",
                "max_object_bytes and max_object_records cut the output into several objects: \
                 number them with {part} in the URL (e.g. .../part-{part}.jsonl.gz)",
            ));
        }
        if self.max_object_records == Some(0) {
            return Err(invalid("sink.max_object_records", "must be at least 1"));
        }
        if self.max_object_bytes.is_some_and(|b| b < MIN_OBJECT_BYTES) {
            return Err(invalid(
                "sink.max_object_bytes",
                format!("must be at least {MIN_OBJECT_BYTES} (1 MiB)"),
            ));
        }
        if self.part_size_bytes < MIN_PART_SIZE {
            return Err(invalid(
                "sink.part_size_bytes",
                format!("must be at least {MIN_PART_SIZE} (5 MiB, S3's minimum part size)"),
            ));
        }
        if self.part_size_bytes > crate::sink::multipart::MAX_PART_SIZE {
            return Err(invalid("sink.part_size_bytes", "must be at most 5 GiB"));
        }
        if !(1..=MAX_PARTS_IN_FLIGHT).contains(&self.max_parts_in_flight) {
            return Err(invalid(
                "sink.max_parts_in_flight",
                format!("must be between 1 and {MAX_PARTS_IN_FLIGHT}"),
            ));
        }
        let (compression, _) = resolve(
            self.compression,
            self.compression_level,
            &url.render(&check.example),
        )?;
        if self.compression_threads > MAX_COMPRESSION_THREADS {
            return Err(invalid(
                "sink.compression_threads",
                format!("must be between 0 (one per core) and {MAX_COMPRESSION_THREADS}"),
            ));
        }
        let compression_threads = match self.compression_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().min(MAX_COMPRESSION_THREADS)),
            n => n,
        };
        let store = StoreOptions {
            timeout: secs("sink.timeout_secs", self.timeout_secs)?,
            connect_timeout: secs("sink.connect_timeout_secs", self.connect_timeout_secs)?,
            retry: self.retry.validate()?,
            ca_bundle: check.ca_bundle("sink.ca_bundle", self.ca_bundle.as_deref())?,
            part_checksums: self.part_checksums.unwrap_or(true),
            profile: self.profile.clone().filter(|p| !p.is_empty()),
        };
        Ok(SinkSpec {
            url,
            parts: PartSizer::new(self.part_size_bytes, self.fixed_part_size),
            part_size_bytes: self.part_size_bytes,
            max_parts_in_flight: self.max_parts_in_flight,
            compression,
            compression_set: self.compression.is_some(),
            compression_level: self.compression_level,
            content_encoding: self.content_encoding,
            limits,
            numbered,
            partition,
            compression_threads,
            store,
        })
    }
}

impl SinkRetrySection {
    fn validate(&self) -> Result<StoreRetry, ConfigError> {
        if self.max_attempts == 0 {
            return Err(invalid("sink.retry.max_attempts", "must be at least 1"));
        }
        Ok(StoreRetry {
            max_attempts: self.max_attempts,
            initial_backoff: Duration::from_millis(self.initial_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            timeout: secs("sink.retry.timeout_secs", self.timeout_secs)?,
        })
    }
}
