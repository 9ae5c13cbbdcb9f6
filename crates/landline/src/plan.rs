//! Shards of a run for fan-out: the invocation event of the Lambda function (and of the Step
//! Functions state machine in `deploy/` that maps over them), and `landline plan`, which
//! splits a run by ingest date into one event per shard.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// The most shards one plan makes (the state machine's input holds the whole list, and Step
/// Functions limits an execution's input to 256 KiB).
pub const MAX_SHARDS: usize = 1_000;

/// One invocation's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The pipeline file.
    pub pipeline: PipelineSource,
    /// The run's `{ingest_date}` (YYYY-MM-DD); today in UTC by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_date: Option<NaiveDate>,
    /// Template values for the pipeline (reserved: a pipeline file has no such variables
    /// yet, so any value here is refused rather than ignored).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The checkpoint to continue from (a `continue` answer's `checkpoint`).
    #[serde(default)]
    pub checkpoint: Option<String>,
}

/// Where the pipeline file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PipelineSource {
    /// `{"url": "s3://bucket/pipelines/variants.toml"}`: read from the store.
    Url(String),
    /// `{"toml": "…"}`: the file itself.
    Toml(String),
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// `--split-by` is not understood.
    #[error("--split-by {given:?}: {reason}")]
    Split {
        /// As given.
        given: String,
        /// What is wrong.
        reason: String,
    },
}

/// One event per shard of `split` (`date:FIRST..LAST`, both days included), each with
/// `pipeline` and no checkpoint.
pub fn plan(pipeline: &PipelineSource, split: &str) -> Result<Vec<Event>, PlanError> {
    let bad = |reason: &str| PlanError::Split {
        given: split.to_owned(),
        reason: reason.to_owned(),
    };
    let (kind, range) = split
        .split_once(':')
        .ok_or_else(|| bad("expected date:YYYY-MM-DD..YYYY-MM-DD"))?;
    match kind {
        "date" => {}
        "values" => {
            return Err(bad(
                "pipeline files have no template variables besides {ingest_date} and {ingest_ts} yet; split by date",
            ));
        }
        _ => return Err(bad("expected date:YYYY-MM-DD..YYYY-MM-DD")),
    }
    let (first, last) = range
        .split_once("..")
        .ok_or_else(|| bad("expected date:YYYY-MM-DD..YYYY-MM-DD"))?;
    let day = |s: &str| {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|e| bad(&format!("{s:?}: {e}")))
    };
    let (first, last) = (day(first)?, day(last)?);
    if last < first {
        return Err(bad("the last day is before the first"));
    }
    let days = (last - first).num_days() as usize + 1;
    if days > MAX_SHARDS {
        return Err(bad(&format!(
            "{days} shards; at most {MAX_SHARDS} in one plan"
        )));
    }
    Ok(first
        .iter_days()
        .take(days)
        .map(|date| Event {
            pipeline: pipeline.clone(),
            ingest_date: Some(date),
            vars: BTreeMap::new(),
            checkpoint: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_range_is_one_event_a_day() {
        let p = PipelineSource::Url("s3://b/pipelines/v.toml".into());
        let events = plan(&p, "date:2024-01-30..2024-02-02").unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            serde_json::to_string(&events[3]).unwrap(),
            r#"{"pipeline":{"url":"s3://b/pipelines/v.toml"},"ingest_date":"2024-02-02","checkpoint":null}"#
        );
        let back: Event =
            serde_json::from_str(&serde_json::to_string(&events[0]).unwrap()).unwrap();
        assert_eq!(back, events[0]);
        assert_eq!(plan(&p, "date:2024-01-01..2024-01-01").unwrap().len(), 1);
        for bad in [
            "date:2024-01-02..2024-01-01",
            "date:2024-01-01",
            "day:2024-01-01..2024-01-02",
            "values:a,b",
            "date:2020-01-01..2029-01-01",
            "date:2024-13-01..2024-13-02",
        ] {
            assert!(plan(&p, bad).is_err(), "{bad}");
        }
    }
}
