//! `[transform]`: what is done to each record.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Checker, ConfigError, Scalar, invalid};
use crate::template::{RunVars, Template};
use crate::transform::{
    OnInvalidTimestamp, TimeZone, TimestampPrecision, Transform, TransformBuildError,
    TransformRules,
};

/// `[transform]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSection {
    /// Fields added to every record (replaced in place when present); string values are
    /// `{template variable}` templates. Keys are paths, as in all of `[transform]`: a
    /// top-level key, or a JSON pointer into nested objects when it starts with `/`
    /// (`"/meta/source"`; missing parent objects are created).
    #[serde(default)]
    pub add: BTreeMap<String, Scalar>,
    /// Fields whose timestamps are normalised to RFC 3339 UTC, when present.
    #[serde(default)]
    pub timestamps: Vec<String>,
    /// Fields whose dates or timestamps are normalised to `YYYY-MM-DD` (the date in
    /// `timezone` for an instant), when present.
    #[serde(default)]
    pub dates: Vec<String>,
    /// Fields left out of every record, when present.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Fields renamed, when present: path = new name (a key of the same object, or a
    /// pointer to one). A record whose object already has the new name is refused.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// The fractional digits of normalised timestamps: `ms` (3), `us` (6) or `ns` (9). By
    /// default, those the value gave rounded up to a group of three, at least three.
    pub timestamp_precision: Option<TimestampPrecision>,
    /// The zone of naive timestamps (default UTC).
    pub timezone: Option<String>,
    /// What to do with a timestamp that cannot be parsed.
    #[serde(default)]
    pub on_invalid_timestamp: OnInvalidTimestamp,
}

/// `[transform]`, validated.
#[derive(Debug, Clone)]
pub struct TransformSpec {
    added: Vec<(String, AddedValue)>,
    timestamps: Vec<String>,
    dates: Vec<String>,
    drop: Vec<String>,
    rename: Vec<(String, String)>,
    precision: Option<TimestampPrecision>,
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
        Transform::from_rules(TransformRules {
            add: added,
            timestamps: self.timestamps.clone(),
            dates: self.dates.clone(),
            drop: self.drop.clone(),
            rename: self.rename.clone(),
            timezone: self.timezone,
            timestamp_precision: self.precision,
            on_invalid: self.on_invalid,
            max_record_bytes: self.max_record_bytes,
        })
    }
}

impl TransformSection {
    /// `[transform]`, checked, and built once with the example run's values to catch
    /// combinations that cannot work.
    pub(crate) fn validate(
        &self,
        check: &Checker<'_>,
        max_record_bytes: usize,
    ) -> Result<TransformSpec, ConfigError> {
        let mut added = Vec::new();
        for (name, value) in &self.add {
            let key = format!("transform.add.{name}");
            let value = match value {
                Scalar::String(text) => AddedValue::Template(check.template(&key, text, false)?),
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
        let timezone = match &self.timezone {
            Some(tz) => tz
                .parse::<TimeZone>()
                .map_err(|e| invalid("transform.timezone", e))?,
            None => TimeZone::Utc,
        };
        let transform = TransformSpec {
            added,
            timestamps: self.timestamps.clone(),
            dates: self.dates.clone(),
            drop: self.drop.clone(),
            rename: self.rename.clone().into_iter().collect(),
            precision: self.timestamp_precision,
            timezone,
            on_invalid: self.on_invalid_timestamp,
            max_record_bytes,
        };
        transform.build(&check.example).map_err(|e| match e {
            TransformBuildError::Rule(rule) => {
                invalid(format!("transform.{}", rule.key), rule.message)
            }
            e => invalid("transform", e),
        })?;
        Ok(transform)
    }
}
