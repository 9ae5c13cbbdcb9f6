//! landline streams records from paged HTTP APIs into object storage as JSON Lines (gzip,
//! zstd or plain), in memory bounded by configuration, never by the amount of data.
//!
//! ```text
//!  HTTP API ─pages─▶ source ─records─▶ transform ─lines─▶ encode ─chunks─▶ compress ─parts─▶ sink
//!                   (paging,          (add fields,        (JSON Lines     (gzip, zstd      (multipart
//!                    retries,          timestamps,         chunks)         or plain)        upload,
//!                    page guard)       raw pass-through)                                    abort)
//! ```
//!
//! | stage | module | job |
//! |---|---|---|
//! | configuration | [`config`], [`template`], [`pointer`](mod@pointer) | pipeline file → validated [`Pipeline`] |
//! | source | [`source`] | fetch pages ([`source::HttpSource`], [`source::fetch`]), decode them ([`source::decode`]), split them as they arrive ([`source::page`]), paging ([`source::paginate`]), rate limits ([`source::rate`]); [`source::Source`], the trait a library's own source implements ([`source::paged`]) |
//! | transform | [`transform`] | added fields, timestamp normalisation, raw pass-through of everything else |
//! | encode | [`encode`] | JSON Lines into chunks for the compressor |
//! | compress | [`compress`] | the object's format ([`compress::Compression`]: one gzip member, zstd frames or plain JSON Lines) on every core, cut into parts. Columnar formats (Parquet) would be record-level encoders at the [`source::page::RecordSink`] seam, not another [`compress::Compression`]: they need records, not lines |
//! | AWS credentials | [`aws`] | the AWS CLI's credential chain (profiles, SSO, `credential_process`, roles), cached and refreshed, for S3 and SigV4-signed sources ([`aws::sign`]) |
//! | sink | [`sink`] | destination URLs, [`sink::ObjectWriter`] (multipart upload as plain data, bounded, abort) |
//! | upload | [`upload`] | [`upload::CompressedUpload`]: compressor threads + upload task + part slots, one cleanup |
//! | run state | [`checkpoint`] | checkpoints under `_landline/`, written after parts that end a page |
//! | run | [`pipeline`], [`report`] | [`pipeline::run`] wires the stages for the pipeline's HTTP API, [`pipeline::run_source`] for a [`source::Source`]; [`report::RunReport`] sums up |
//!
//! **Push, not pull.** Each stage pushes its output into the next through a bounded channel
//! or a blocking call. A stage that is full makes the one before it wait, which is how memory
//! stays bounded: a few pages' bodies as received (never a whole decoded page), a few 256 KiB
//! chunks, the part being filled and the parts in flight. Pull (iterators/streams) would hide the same bounds inside adaptors; push keeps
//! each bound visible where the buffer lives.
//!
//! From a pipeline file's text to a run, with every input explicit: the pipeline's `${VAR}`
//! references are looked up through the closure given to [`PipelineFile::validate`], and the
//! object store's settings come from [`RunOptions::store_env`], never from the process
//! environment behind the caller's back ([`Pipeline::load`] is the shortcut that uses it).
//!
//! ```no_run
//! use landline::{PipelineFile, RunOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let text = r#"
//!     [source]
//!     url = "https://api.example.com/variants"
//!     headers = { Authorization = "Bearer ${API_TOKEN}" }
//!     records = "/variants"
//!     [source.pagination]
//!     type = "token"
//!     next = "/next_token"
//!     param = "token"
//!     [sink]
//!     url = "s3://my-bucket/variants/date={ingest_date}/variants.jsonl.gz"
//! "#;
//! // `origin` names the text in errors.
//! let file = PipelineFile::parse(text, "variants.toml")?;
//! // The one secret the file refers to, from wherever the caller keeps it.
//! let token = std::env::var("VARIANTS_API_TOKEN")?;
//! let pipeline = file.validate(&|name| (name == "API_TOKEN").then(|| token.clone()))?;
//! let options = RunOptions {
//!     // Region, endpoint and credentials of the object store.
//!     store_env: std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).collect(),
//!     ..Default::default()
//! };
//! // Ctrl-C cancels the run, which aborts its upload.
//! let cancel = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! let report = landline::run(&pipeline, options, cancel).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod aws;
pub mod check;
pub mod checkpoint;
pub mod compress;
pub mod config;
pub mod drift;
pub mod encode;
mod errors;
pub mod incremental;
mod left;
pub mod manifest;
mod pages;
pub mod partition;
pub mod pipeline;
pub mod plan;
pub mod pointer;
pub mod report;
pub mod secret;
pub mod sink;
pub mod source;
pub mod template;
pub mod tls;
pub mod transform;
pub mod upload;
pub mod verify;

pub use config::{ConfigError, Pipeline, PipelineFile};
pub use pipeline::{RunError, RunOptions, run};
pub use report::RunReport;

/// Crate-internal items for the benchmarks, with the `internals` feature (off by default,
/// enabled for this crate's own benches and tests through its dev-dependency on itself).
/// Not part of the public API: no documentation, no semver promise.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod __internals {
    pub use crate::compress::block::{BlockDeflater, DICTIONARY_BYTES, gzip_blocks};
    pub use crate::compress::zstd::zstd_blocks;
}
