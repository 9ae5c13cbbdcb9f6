//! landline as an AWS Lambda function: one invocation runs (or continues) one pipeline run
//! and stops at a checkpoint before its deadline.
//!
//! The event ([`Event`]) names the pipeline (an `s3://` URL of a pipeline file, or the file
//! inline), optionally the `ingest_date` and values of the pipeline's `[vars]`, and
//! optionally the checkpoint to continue from (whose run's values are then used). The
//! answer is the run report as JSON, whose `status` is `complete` or `continue`; with
//! `continue`, `checkpoint` is the URL to invoke again with (the Step Functions state machine
//! in `deploy/` loops on it). The deadline comes from the invocation context: the run is
//! given the time left minus [`margin`], and it stops at its last checkpoint that leaves time
//! for one more part.
//!
//! Nothing is written to `/tmp`: the pipeline file is read from the store into memory, and
//! the run streams as everywhere else. Secrets (`${VAR}`) come from the function's
//! environment. Memory settings follow the function's size ([`fit_to_memory`]).

use std::time::Duration;

use landline::config::PipelineFile;
use landline::report::RunReport;
use landline::sink::{Destination, StoreOptions};
use landline::{Pipeline, RunError, RunOptions};

pub use landline::plan::{Event, PipelineSource};

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The event does not say what to run.
    #[error("invalid event: {0}")]
    Event(String),
    /// The pipeline file could not be read or is invalid.
    #[error("pipeline {origin}: {reason}")]
    Pipeline {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The run failed (its upload was aborted).
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Time kept back from the deadline: what stopping takes after the last checkpoint (parts
/// still uploading are given up to 10 s to end) plus the answer, at least 15 s, or a tenth of
/// the time for long invocations.
pub fn margin(time_left: Duration) -> Duration {
    Duration::from_secs(15).max(time_left / 10)
}

/// Adapts memory settings to a function of `memory_mb`: Lambda gives a function one vCPU per
/// 1,769 MB, so deflate threads follow that (at least one), and below 512 MB one part is
/// uploaded at a time.
pub fn fit_to_memory(pipeline: &mut Pipeline, memory_mb: u64) {
    let vcpus = (memory_mb / 1769).max(1) as usize;
    pipeline.sink.compression_threads = pipeline.sink.compression_threads.min(vcpus).max(1);
    if memory_mb < 512 {
        pipeline.sink.max_parts_in_flight = 1;
    }
}

/// Runs (or continues) the run `event` describes, with `time_left` until the deadline and
/// `env` as the environment (secrets, AWS credentials, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
pub async fn handle(
    event: Event,
    time_left: Duration,
    env: Vec<(String, String)>,
) -> Result<RunReport, HandlerError> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (text, origin) = match &event.pipeline {
        PipelineSource::Toml(text) => (text.clone(), "event.toml".to_owned()),
        PipelineSource::Url(url) => {
            let bytes =
                get_bytes(url, env.clone())
                    .await
                    .map_err(|reason| HandlerError::Pipeline {
                        origin: url.clone(),
                        reason,
                    })?;
            let text = String::from_utf8(bytes).map_err(|_| HandlerError::Pipeline {
                origin: url.clone(),
                reason: "not UTF-8 text".into(),
            })?;
            (text, url.rsplit('/').next().unwrap_or(url).to_owned())
        }
    };
    let bad = |e: landline::ConfigError| HandlerError::Pipeline {
        origin: origin.clone(),
        reason: e.to_string(),
    };
    let mut pipeline = PipelineFile::parse(&text, &origin)
        .map_err(bad)?
        .validate(&lookup)
        .map_err(bad)?;
    // The event's variables must be the pipeline's, before anything is read or written.
    pipeline
        .run_vars(String::new(), String::new(), &event.vars)
        .map_err(|e| HandlerError::Event(e.to_string()))?;
    if let Some(mb) = lookup("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|v| v.parse().ok()) {
        fit_to_memory(&mut pipeline, mb);
    }
    let resume = match &event.checkpoint {
        None => None,
        Some(url) => Some(
            landline::pipeline::read_checkpoint(url, &pipeline.sink.store, env.clone())
                .await?
                .ok_or_else(|| {
                    HandlerError::Event(format!(
                        "checkpoint: nothing at {url} (the run may have completed or been aborted)"
                    ))
                })?,
        ),
    };
    let budget = time_left.saturating_sub(margin(time_left));
    let options = RunOptions {
        ingest_date: event.ingest_date,
        vars: event.vars.clone(),
        store_env: env.clone().into(),
        resume,
        max_duration: Some(budget.max(Duration::from_millis(1))),
        pipeline_file: match &event.pipeline {
            PipelineSource::Url(url) => Some(url.clone()),
            PipelineSource::Toml(_) => None,
        },
        ..RunOptions::default()
    };
    Ok(landline::run(&pipeline, options, std::future::pending()).await?)
}

/// The bytes of the object at `url` (a pipeline file); the error says why not.
async fn get_bytes(url: &str, env: Vec<(String, String)>) -> Result<Vec<u8>, String> {
    let at = Destination::open(url, &StoreOptions::default(), env).map_err(|e| e.to_string())?;
    at.read_whole().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_unknown_keys_are_refused() {
        let e: Event = serde_json::from_str(
            r#"{"pipeline":{"url":"s3://b/p/v.toml"},"ingest_date":"2024-01-02","checkpoint":null}"#,
        )
        .unwrap();
        assert!(matches!(e.pipeline, PipelineSource::Url(ref u) if u == "s3://b/p/v.toml"));
        assert_eq!(
            e.ingest_date.map(|d| d.to_string()).as_deref(),
            Some("2024-01-02")
        );
        let e: Event = serde_json::from_str(r#"{"pipeline":{"toml":"[source]"}}"#).unwrap();
        assert!(matches!(e.pipeline, PipelineSource::Toml(_)));
        assert!(serde_json::from_str::<Event>(r#"{"pipeline":{"toml":""},"extra":1}"#).is_err());
        assert!(serde_json::from_str::<Event>(r#"{"pipeline":{"file":"x"}}"#).is_err());
    }

    #[test]
    fn the_margin_covers_stopping() {
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_secs(15));
        assert_eq!(margin(Duration::from_secs(900)), Duration::from_secs(90));
    }
}
