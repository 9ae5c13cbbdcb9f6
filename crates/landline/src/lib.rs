//! landline streams records from paged HTTP APIs into object storage as gzipped JSON Lines,
//! in memory bounded by configuration, never by the amount of data.
//!
//! ```text
//!  HTTP API ─pages─▶ source ─records─▶ transform ─lines─▶ encode ─chunks─▶ compress ─parts─▶ sink
//!                   (paging,          (add fields,        (JSON Lines     (one gzip        (multipart
//!                    retries,          timestamps,         chunks)         member)          upload,
//!                    page guard)       raw pass-through)                                    abort)
//! ```
//!
//! | stage | module | job |
//! |---|---|---|
//! | configuration | [`config`], [`template`], [`pointer`](mod@pointer) | pipeline file → validated [`Pipeline`] |
//! | source | [`source`] | fetch pages ([`source::HttpSource`], [`source::fetch`]), decode them ([`source::decode`]), split them as they arrive ([`source::page`]), paging ([`source::paginate`]), rate limits ([`source::rate`]) |
//! | transform | [`transform`] | added fields, timestamp normalisation, raw pass-through of everything else |
//! | encode | [`encode`] | JSON Lines into chunks for the compressor |
//! | compress | [`compress`] | single-member gzip on its own thread, cut into parts |
//! | sink | [`sink`] | destination URLs, [`sink::ObjectWriter`] (multipart upload as plain data, bounded, abort) |
//! | upload | [`upload`] | [`upload::CompressedUpload`]: compressor threads + upload task + part slots, one cleanup |
//! | run state | [`checkpoint`] | checkpoints under `_landline/`, written after parts that end a page |
//! | run | [`pipeline`], [`report`] | [`pipeline::run`] wires the stages; [`report::RunReport`] sums up |
//!
//! **Push, not pull.** Each stage pushes its output into the next through a bounded channel
//! or a blocking call. A stage that is full makes the one before it wait, which is how memory
//! stays bounded: a few pages' bodies as received (never a whole decoded page), a few 256 KiB
//! chunks, the part being filled and the parts in flight. Pull (iterators/streams) would hide the same bounds inside adaptors; push keeps
//! each bound visible where the buffer lives.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = landline::Pipeline::load("variants.toml".as_ref())?;
//! let options = landline::pipeline::RunOptions {
//!     store_env: std::env::vars().collect(),
//!     ..Default::default()
//! };
//! let report = landline::pipeline::run(&pipeline, options, std::future::pending()).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

pub mod checkpoint;
pub mod compress;
pub mod config;
pub mod encode;
mod errors;
mod pages;
pub mod pipeline;
pub mod plan;
pub mod pointer;
pub mod report;
pub mod sink;
pub mod source;
pub mod template;
pub mod tls;
pub mod transform;
pub mod upload;

pub use config::{ConfigError, Pipeline, PipelineFile};
pub use pipeline::{RunError, RunOptions, run};
pub use report::RunReport;
