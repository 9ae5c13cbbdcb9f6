//! Shards of a run for fan-out: the invocation event of the Lambda function (and of the Step
//! Functions state machine in `deploy/` that maps over them), and `landline plan`, which
//! splits a run into one event per shard: by ingest date (`date:FIRST..LAST`), by the values
//! of one of the pipeline's template variables (`values:NAME=a,b,c`), or by several of these
//! at once (every combination).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::config::{PipelineFile, check_var_value};
use crate::template::{Scope, Template};

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
    /// Values of the pipeline's own template variables (`[vars]`), over their defaults.
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
    /// `--split-by` is not understood, or does not fit the pipeline.
    #[error("--split-by {given:?}: {reason}")]
    Split {
        /// As given.
        given: String,
        /// What is wrong.
        reason: String,
    },
    /// A fixed variable (`--var`) does not fit the pipeline.
    #[error("--var {name}: {reason}")]
    Var {
        /// The variable.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// One way to split a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// One shard per ingest date, both days included.
    Dates {
        /// The first day.
        first: NaiveDate,
        /// The last day.
        last: NaiveDate,
    },
    /// One shard per value of a `[vars]` variable (`None`: the pipeline's only one).
    Values {
        /// The variable.
        var: Option<String>,
        /// Its values, in order.
        values: Vec<String>,
    },
}

const SPLIT_FORMS: &str = "expected date:YYYY-MM-DD..YYYY-MM-DD or values:NAME=a,b,c";

impl Split {
    /// Parses `date:FIRST..LAST`, `values:NAME=a,b,c` or `values:a,b,c`.
    pub fn parse(given: &str) -> Result<Split, PlanError> {
        let bad = |reason: &str| PlanError::Split {
            given: given.to_owned(),
            reason: reason.to_owned(),
        };
        let (kind, rest) = given.split_once(':').ok_or_else(|| bad(SPLIT_FORMS))?;
        match kind {
            "date" => {
                let (first, last) = rest.split_once("..").ok_or_else(|| bad(SPLIT_FORMS))?;
                let day = |s: &str| {
                    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                        .map_err(|e| bad(&format!("{s:?}: {e}")))
                };
                let (first, last) = (day(first)?, day(last)?);
                if last < first {
                    return Err(bad("the last day is before the first"));
                }
                Ok(Split::Dates { first, last })
            }
            "values" => {
                let (var, list) = match rest.split_once('=') {
                    Some((name, list)) if crate::template::valid_var_name(name) => {
                        (Some(name.to_owned()), list)
                    }
                    _ => (None, rest),
                };
                let values: Vec<String> = list.split(',').map(str::to_owned).collect();
                if values.iter().any(String::is_empty) {
                    return Err(bad("a value is empty (values are separated by commas)"));
                }
                for (i, v) in values.iter().enumerate() {
                    if values[..i].contains(v) {
                        return Err(bad(&format!("{v:?} is given twice")));
                    }
                }
                Ok(Split::Values { var, values })
            }
            _ => Err(bad(SPLIT_FORMS)),
        }
    }

    /// The variable this split sets, given the pipeline's declared variables.
    fn var<'a>(&'a self, declared: &'a [String]) -> Result<&'a str, String> {
        match self {
            Split::Dates { .. } => Ok("ingest_date"),
            Split::Values { var: Some(v), .. } => {
                if declared.contains(v) {
                    Ok(v)
                } else {
                    Err(format!(
                        "the pipeline has no variable {v:?} (declare it in [vars]; declared: {})",
                        list(declared)
                    ))
                }
            }
            Split::Values { var: None, .. } => match declared {
                [only] => Ok(only),
                _ => Err(format!(
                    "name the variable, as values:NAME=a,b,c (declared: {})",
                    list(declared)
                )),
            },
        }
    }

    fn len(&self) -> usize {
        match self {
            Split::Dates { first, last } => (*last - *first).num_days() as usize + 1,
            Split::Values { values, .. } => values.len(),
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// One event per shard: every combination of the `splits` (each as given to `--split-by`),
/// each with `pipeline`, the fixed `vars` and no checkpoint. `file` is the pipeline file (its
/// `${VAR}`s need not be resolvable here): every variable a split or `vars` sets must be
/// declared in it, and every split's variable must be in its `[sink] url`, or every shard
/// would write the same object.
pub fn plan(
    pipeline: &PipelineSource,
    file: &PipelineFile,
    splits: &[String],
    vars: &BTreeMap<String, String>,
) -> Result<Vec<Event>, PlanError> {
    let declared: Vec<String> = file.vars.keys().cloned().collect();
    let sink = Template::parse_in(
        &file.sink.url,
        Scope {
            vars: &declared,
            env: None,
        },
    );
    for (name, value) in vars {
        let reason = if !declared.contains(name) {
            Some(format!(
                "the pipeline has no such variable (declared: {})",
                list(&declared)
            ))
        } else {
            check_var_value(name, value).err().map(|e| e.to_string())
        };
        if let Some(reason) = reason {
            return Err(PlanError::Var {
                name: name.clone(),
                reason,
            });
        }
    }
    let mut axes: Vec<(String, Split)> = Vec::new();
    let mut shards = 1usize;
    for given in splits {
        let bad = |reason: String| PlanError::Split {
            given: given.clone(),
            reason,
        };
        let split = Split::parse(given)?;
        let var = split.var(&declared).map_err(bad)?.to_owned();
        if axes.iter().any(|(v, _)| *v == var) || vars.contains_key(&var) {
            return Err(bad(format!("{{{var}}} is set twice")));
        }
        match &sink {
            Ok(t) if !t.uses(&var) => {
                return Err(bad(format!(
                    "[sink] url does not use {{{var}}}: every shard would write the same object"
                )));
            }
            Err(e) => return Err(bad(format!("[sink] url: {e}"))),
            Ok(_) => {}
        }
        if let Split::Values { values, .. } = &split {
            for v in values {
                check_var_value(&var, v).map_err(|e| bad(e.to_string()))?;
            }
        }
        shards = shards.saturating_mul(split.len());
        if shards > MAX_SHARDS {
            return Err(bad(format!(
                "{shards} shards or more; at most {MAX_SHARDS} in one plan"
            )));
        }
        axes.push((var, split));
    }
    // Every combination, the first split outermost.
    let mut events = vec![Event {
        pipeline: pipeline.clone(),
        ingest_date: None,
        vars: vars.clone(),
        checkpoint: None,
    }];
    for (var, split) in &axes {
        let mut next = Vec::with_capacity(events.len() * split.len());
        for event in &events {
            match split {
                Split::Dates { first, .. } => {
                    next.extend(first.iter_days().take(split.len()).map(|day| Event {
                        ingest_date: Some(day),
                        ..event.clone()
                    }));
                }
                Split::Values { values, .. } => {
                    next.extend(values.iter().map(|value| {
                        let mut e = event.clone();
                        e.vars.insert(var.clone(), value.clone());
                        e
                    }));
                }
            }
        }
        events = next;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[vars]
region = "eu"
tier = "gold"
[source]
url = "http://127.0.0.1:1/{region}/variants"
records = "/variants"
[sink]
url = "s3://b/v/region={region}/date={ingest_date}/v.jsonl.gz"
"#;

    fn file(text: &str) -> PipelineFile {
        PipelineFile::parse(text, "v.toml").unwrap()
    }

    fn splits(given: &[&str]) -> Vec<String> {
        given.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_date_range_is_one_event_a_day() {
        let p = PipelineSource::Url("s3://b/pipelines/v.toml".into());
        let f = file(FILE);
        let none = BTreeMap::new();
        let events = plan(&p, &f, &splits(&["date:2024-01-30..2024-02-02"]), &none).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            serde_json::to_string(&events[3]).unwrap(),
            r#"{"pipeline":{"url":"s3://b/pipelines/v.toml"},"ingest_date":"2024-02-02","checkpoint":null}"#
        );
        let back: Event =
            serde_json::from_str(&serde_json::to_string(&events[0]).unwrap()).unwrap();
        assert_eq!(back, events[0]);
        let one = plan(&p, &f, &splits(&["date:2024-01-01..2024-01-01"]), &none).unwrap();
        assert_eq!(one.len(), 1);
        for bad in [
            "date:2024-01-02..2024-01-01",
            "date:2024-01-01",
            "day:2024-01-01..2024-01-02",
            "date:2020-01-01..2029-01-01",
            "date:2024-13-01..2024-13-02",
        ] {
            assert!(plan(&p, &f, &splits(&[bad]), &none).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_and_dates_make_every_combination() {
        let p = PipelineSource::Toml(FILE.into());
        let f = file(FILE);
        let fixed = BTreeMap::from([("tier".to_owned(), "silver".to_owned())]);
        let events = plan(
            &p,
            &f,
            &splits(&["date:2024-01-01..2024-01-02", "values:region=eu,us,ap"]),
            &fixed,
        )
        .unwrap();
        let shards: Vec<(String, String, String)> = events
            .iter()
            .map(|e| {
                (
                    e.ingest_date.unwrap().to_string(),
                    e.vars["region"].clone(),
                    e.vars["tier"].clone(),
                )
            })
            .collect();
        assert_eq!(shards.len(), 6);
        assert_eq!(
            shards[0],
            ("2024-01-01".into(), "eu".into(), "silver".into())
        );
        assert_eq!(
            shards[2],
            ("2024-01-01".into(), "ap".into(), "silver".into())
        );
        assert_eq!(
            shards[5],
            ("2024-01-02".into(), "ap".into(), "silver".into())
        );
        assert_eq!(
            serde_json::to_string(&events[1]).unwrap(),
            r#"{"pipeline":{"toml":"#.to_owned()
                + &serde_json::to_string(FILE).unwrap()
                + r#"},"ingest_date":"2024-01-01","vars":{"region":"us","tier":"silver"},"checkpoint":null}"#
        );
        // With one declared variable, its name may be left out.
        let single = FILE.replace("tier = \"gold\"\n", "");
        let events = plan(
            &p,
            &file(&single),
            &splits(&["values:a,b"]),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(events[1].vars["region"], "b");
        assert_eq!(events[1].ingest_date, None);
    }

    #[test]
    fn splits_that_do_not_fit_the_pipeline_are_refused() {
        let p = PipelineSource::Toml(String::new());
        let f = file(FILE);
        let none = BTreeMap::new();
        let refused = |given: &[&str], vars: &BTreeMap<String, String>, says: &str| {
            let err = plan(&p, &f, &splits(given), vars).unwrap_err().to_string();
            assert!(err.contains(says), "{given:?}: {err}");
        };
        refused(&["values:a,b"], &none, "name the variable");
        refused(&["values:zone=a,b"], &none, "no variable \"zone\"");
        refused(
            &["values:tier=a,b"],
            &none,
            "does not use {tier}: every shard would write the same object",
        );
        refused(&["values:region=a,,b"], &none, "empty");
        refused(&["values:region=a,b,a"], &none, "given twice");
        refused(&["values:region=a", "values:region=b"], &none, "set twice");
        let fixed = BTreeMap::from([("region".to_owned(), "eu".to_owned())]);
        refused(&["values:region=a"], &fixed, "set twice");
        let unknown = BTreeMap::from([("zone".to_owned(), "x".to_owned())]);
        refused(
            &[],
            &unknown,
            "--var zone: the pipeline has no such variable",
        );
        let many: String = (0..40)
            .map(|i| format!("r{i}"))
            .collect::<Vec<_>>()
            .join(",");
        refused(
            &[
                "date:2024-01-01..2024-01-31",
                &format!("values:region={many}"),
            ],
            &none,
            "at most 1000",
        );
        // A sink without {ingest_date} cannot be split by date.
        let undated = file(&FILE.replace("/date={ingest_date}", ""));
        let err = plan(
            &p,
            &undated,
            &splits(&["date:2024-01-01..2024-01-02"]),
            &none,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("does not use {ingest_date}"),
            "{err}"
        );
    }
}
