//! The drift alarm: this run's manifest against the one of the same pipeline's latest
//! earlier run, so that a change in the data's shape is said on the first day it happens.
//!
//! Compared: the record count, the average record width, the compressed size, and per
//! top-level field whether it came or went, its JSON types and its average width. A change
//! past its threshold (`[drift]`; by default ±25 % for the figures and any field added,
//! removed or retyped) is a [`DriftChange`]; the run's report and manifest list them, the log
//! warns of each, and with `--fail-on-drift` the run fails after its object has landed.
//!
//! The incident this exists for: the same 83,688 records, 50 % wider, one morning.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::transform::{FieldInventory, FieldStats};

/// `[drift]` as written: thresholds as fractions (`0.25` is ±25 %); `false` or a negative
/// number switches a check off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSection {
    /// Compare with the previous run at all (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Relative change of the record count (default 0.25).
    #[serde(default)]
    pub records: Option<f64>,
    /// Relative change of the average record width (default 0.25).
    #[serde(default)]
    pub record_width: Option<f64>,
    /// Relative change of the compressed size (default 0.25).
    #[serde(default)]
    pub compressed_bytes: Option<f64>,
    /// Relative change of a field's average width (default 0.25); fields in fewer than
    /// [`MIN_FIELD_RECORDS`] records of either run are not compared.
    #[serde(default)]
    pub field_width: Option<f64>,
    /// A field appears that the previous run did not have (default true).
    #[serde(default)]
    pub fields_added: Option<bool>,
    /// A field of the previous run is gone (default true).
    #[serde(default)]
    pub fields_removed: Option<bool>,
    /// A field's JSON types changed (default true; `null` coming or going does not count).
    #[serde(default)]
    pub fields_retyped: Option<bool>,
}

/// Fields in fewer records than this (in either run) have no width compared: a width
/// averaged over a handful of values says little.
pub const MIN_FIELD_RECORDS: u64 = 10;

/// Default threshold of the relative checks.
pub const DEFAULT_THRESHOLD: f64 = 0.25;

/// `[drift]`, validated: `None` for a check that is off.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftThresholds {
    /// Whether runs are compared at all.
    pub enabled: bool,
    /// Record count.
    pub records: Option<f64>,
    /// Average record width.
    pub record_width: Option<f64>,
    /// Compressed size.
    pub compressed_bytes: Option<f64>,
    /// A field's average width.
    pub field_width: Option<f64>,
    /// Fields added.
    pub fields_added: bool,
    /// Fields removed.
    pub fields_removed: bool,
    /// Fields retyped.
    pub fields_retyped: bool,
}

impl Default for DriftThresholds {
    fn default() -> Self {
        DriftThresholds {
            enabled: true,
            records: Some(DEFAULT_THRESHOLD),
            record_width: Some(DEFAULT_THRESHOLD),
            compressed_bytes: Some(DEFAULT_THRESHOLD),
            field_width: Some(DEFAULT_THRESHOLD),
            fields_added: true,
            fields_removed: true,
            fields_retyped: true,
        }
    }
}

impl DriftSection {
    /// Checks the values.
    pub fn validate(&self) -> Result<DriftThresholds, ConfigError> {
        let d = DriftThresholds::default();
        let threshold = |key: &str, v: Option<f64>, default: Option<f64>| match v {
            None => Ok(default),
            Some(v) if v.is_nan() || v.is_infinite() => Err(ConfigError::Invalid {
                key: format!("drift.{key}"),
                message: "must be a number (a fraction: 0.25 is 25 %)".into(),
            }),
            Some(v) if v < 0.0 => Ok(None),
            Some(v) => Ok(Some(v)),
        };
        Ok(DriftThresholds {
            enabled: self.enabled.unwrap_or(d.enabled),
            records: threshold("records", self.records, d.records)?,
            record_width: threshold("record_width", self.record_width, d.record_width)?,
            compressed_bytes: threshold(
                "compressed_bytes",
                self.compressed_bytes,
                d.compressed_bytes,
            )?,
            field_width: threshold("field_width", self.field_width, d.field_width)?,
            fields_added: self.fields_added.unwrap_or(d.fields_added),
            fields_removed: self.fields_removed.unwrap_or(d.fields_removed),
            fields_retyped: self.fields_retyped.unwrap_or(d.fields_retyped),
        })
    }
}

/// What two runs are compared on: a manifest's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures<'a> {
    /// Records written.
    pub records: u64,
    /// JSON Lines bytes per record.
    pub average_record_bytes: f64,
    /// Compressed bytes written.
    pub compressed_bytes: u64,
    /// The fields, when they were counted.
    pub fields: Option<&'a FieldInventory>,
}

/// One change past its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DriftChange {
    /// The record count changed.
    Records {
        /// Before.
        before: u64,
        /// Now.
        after: u64,
    },
    /// The average record width changed.
    RecordWidth {
        /// Before, in bytes.
        before: f64,
        /// Now, in bytes.
        after: f64,
    },
    /// The compressed size changed.
    CompressedBytes {
        /// Before.
        before: u64,
        /// Now.
        after: u64,
    },
    /// A field appeared.
    FieldAdded {
        /// The field.
        field: String,
        /// Records that have it now.
        records: u64,
        /// Its types now.
        types: Vec<String>,
    },
    /// A field is gone.
    FieldRemoved {
        /// The field.
        field: String,
        /// Records that had it before.
        records: u64,
    },
    /// A field's types changed.
    FieldRetyped {
        /// The field.
        field: String,
        /// Its types before.
        before: Vec<String>,
        /// Its types now.
        after: Vec<String>,
    },
    /// A field's average width changed.
    FieldWidth {
        /// The field.
        field: String,
        /// Before, in bytes of JSON text.
        before: f64,
        /// Now.
        after: f64,
    },
}

fn percent(before: f64, after: f64) -> String {
    if before == 0.0 {
        return "from nothing".into();
    }
    format!("{:+.0} %", (after / before - 1.0) * 100.0)
}

impl std::fmt::Display for DriftChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriftChange::Records { before, after } => write!(
                f,
                "record count {before} -> {after} ({})",
                percent(*before as f64, *after as f64)
            ),
            DriftChange::RecordWidth { before, after } => write!(
                f,
                "average record width {before:.0} -> {after:.0} bytes ({})",
                percent(*before, *after)
            ),
            DriftChange::CompressedBytes { before, after } => write!(
                f,
                "compressed size {before} -> {after} bytes ({})",
                percent(*before as f64, *after as f64)
            ),
            DriftChange::FieldAdded {
                field,
                records,
                types,
            } => write!(
                f,
                "new field {field:?} ({}) in {records} records",
                types.join("|")
            ),
            DriftChange::FieldRemoved { field, records } => {
                write!(f, "field {field:?} is gone (it was in {records} records)")
            }
            DriftChange::FieldRetyped {
                field,
                before,
                after,
            } => write!(
                f,
                "field {field:?} changed type: {} -> {}",
                before.join("|"),
                after.join("|")
            ),
            DriftChange::FieldWidth {
                field,
                before,
                after,
            } => write!(
                f,
                "field {field:?} average width {before:.0} -> {after:.0} bytes ({})",
                percent(*before, *after)
            ),
        }
    }
}

/// The drift section of a report and manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// The manifest compared with.
    pub compared_with: String,
    /// Its run's `{ingest_date}`.
    pub previous_ingest_date: String,
    /// The changes past their thresholds (empty: no drift).
    pub changes: Vec<DriftChange>,
    /// Fields left out of the comparison because one run had more than the inventory holds.
    #[serde(default)]
    pub fields_not_compared: bool,
}

impl DriftReport {
    /// Whether any change passed its threshold.
    pub fn drifted(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// Whether `after` differs from `before` by more than `threshold` of `before`.
fn beyond(before: f64, after: f64, threshold: Option<f64>) -> bool {
    let Some(t) = threshold else {
        return false;
    };
    if before == 0.0 {
        return after != 0.0;
    }
    ((after - before) / before).abs() > t
}

/// The changes from `before` to `after` past `t`'s thresholds.
pub fn compare(before: &Figures<'_>, after: &Figures<'_>, t: &DriftThresholds) -> Vec<DriftChange> {
    let mut changes = Vec::new();
    if beyond(before.records as f64, after.records as f64, t.records) {
        changes.push(DriftChange::Records {
            before: before.records,
            after: after.records,
        });
    }
    // Widths and sizes of an empty run say nothing beyond its count.
    if before.records > 0 && after.records > 0 {
        if beyond(
            before.average_record_bytes,
            after.average_record_bytes,
            t.record_width,
        ) {
            changes.push(DriftChange::RecordWidth {
                before: before.average_record_bytes,
                after: after.average_record_bytes,
            });
        }
        if beyond(
            before.compressed_bytes as f64,
            after.compressed_bytes as f64,
            t.compressed_bytes,
        ) {
            changes.push(DriftChange::CompressedBytes {
                before: before.compressed_bytes,
                after: after.compressed_bytes,
            });
        }
    }
    if let (Some(b), Some(a)) = (before.fields, after.fields)
        && before.records > 0
        && after.records > 0
    {
        compare_fields(b, a, t, &mut changes);
    }
    changes
}

fn names(f: &FieldStats) -> Vec<String> {
    f.type_names().into_iter().map(str::to_owned).collect()
}

/// `null` is the absence of a value more than a type: it coming or going is no retyping.
const NULL_BIT: u8 = 32;

fn compare_fields(
    before: &FieldInventory,
    after: &FieldInventory,
    t: &DriftThresholds,
    changes: &mut Vec<DriftChange>,
) {
    for a in after.fields() {
        match before.field(&a.name) {
            None if t.fields_added && before.other_values() == 0 => {
                changes.push(DriftChange::FieldAdded {
                    field: a.name.clone(),
                    records: a.records,
                    types: names(a),
                })
            }
            None => {}
            Some(b) => {
                let (types_now, types_before) = (a.types & !NULL_BIT, b.types & !NULL_BIT);
                // A field that was (or is now) only ever null has no type to change.
                let retyped = types_now != types_before && types_now != 0 && types_before != 0;
                if t.fields_retyped && retyped {
                    changes.push(DriftChange::FieldRetyped {
                        field: a.name.clone(),
                        before: names(b),
                        after: names(a),
                    });
                }
                if a.records >= MIN_FIELD_RECORDS
                    && b.records >= MIN_FIELD_RECORDS
                    && beyond(b.average_bytes(), a.average_bytes(), t.field_width)
                {
                    changes.push(DriftChange::FieldWidth {
                        field: a.name.clone(),
                        before: b.average_bytes(),
                        after: a.average_bytes(),
                    });
                }
            }
        }
    }
    if t.fields_removed && after.other_values() == 0 {
        for b in before.fields() {
            if after.field(&b.name).is_none() {
                changes.push(DriftChange::FieldRemoved {
                    field: b.name.clone(),
                    records: b.records,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(fields: &[(&str, &[u8], u64)]) -> FieldInventory {
        let mut inv = FieldInventory::default();
        for (i, (name, value, n)) in fields.iter().enumerate() {
            for _ in 0..*n {
                inv.add(i, format!("{name:?}").as_bytes(), value);
            }
        }
        inv
    }

    fn figures(records: u64, width: f64, bytes: u64, fields: &FieldInventory) -> Figures<'_> {
        Figures {
            records,
            average_record_bytes: width,
            compressed_bytes: bytes,
            fields: Some(fields),
        }
    }

    #[test]
    fn the_same_shape_is_no_drift_and_small_changes_stay_quiet() {
        let f = inventory(&[("id", b"1", 100), ("name", b"\"abc\"", 100)]);
        let g = inventory(&[("id", b"2", 110), ("name", b"\"abcd\"", 110)]);
        let t = DriftThresholds::default();
        assert!(
            compare(
                &figures(100, 100.0, 50, &f),
                &figures(100, 100.0, 50, &f),
                &t
            )
            .is_empty()
        );
        // +10 % records, +20 % width: under 25 %.
        assert!(
            compare(
                &figures(100, 100.0, 50, &f),
                &figures(110, 120.0, 55, &g),
                &t
            )
            .is_empty()
        );
    }

    #[test]
    fn the_incident_is_drift_wider_records_and_new_fields() {
        let day1 = inventory(&[("id", b"1", 100), ("blob", b"\"aaaa\"", 100)]);
        let day2 = inventory(&[
            ("id", b"1", 100),
            ("blob", b"\"aaaaaaaa\"", 100),
            ("extra", b"{}", 100),
        ]);
        let t = DriftThresholds::default();
        let changes = compare(
            &figures(100, 1000.0, 50_000, &day1),
            &figures(100, 1500.0, 75_000, &day2),
            &t,
        );
        let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "average record width 1000 -> 1500 bytes (+50 %)",
                "compressed size 50000 -> 75000 bytes (+50 %)",
                "field \"blob\" average width 6 -> 10 bytes (+67 %)",
                "new field \"extra\" (object) in 100 records",
            ],
        );
    }

    #[test]
    fn fields_gone_retyped_and_count_changes() {
        let day1 = inventory(&[("id", b"1", 100), ("old", b"1", 100), ("n", b"null", 5)]);
        let day2 = inventory(&[("id", b"\"1\"", 10), ("n", b"2", 5)]);
        let t = DriftThresholds::default();
        let changes = compare(
            &figures(100, 10.0, 9, &day1),
            &figures(10, 10.0, 9, &day2),
            &t,
        );
        assert!(changes.contains(&DriftChange::Records {
            before: 100,
            after: 10
        }));
        assert!(
            changes
                .iter()
                .any(|c| matches!(c, DriftChange::FieldRetyped { field, .. } if field == "id"))
        );
        assert!(
            changes
                .iter()
                .any(|c| matches!(c, DriftChange::FieldRemoved { field, .. } if field == "old"))
        );
        // null -> number is not a retyping.
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, DriftChange::FieldRetyped { field, .. } if field == "n"))
        );
    }

    #[test]
    fn thresholds_are_configurable_and_checks_can_be_off() {
        let section: DriftSection =
            toml::from_str("records = 0.5\nrecord_width = -1\nfields_added = false").unwrap();
        let t = section.validate().unwrap();
        assert_eq!(t.records, Some(0.5));
        assert_eq!(t.record_width, None);
        assert!(!t.fields_added);
        let a = inventory(&[("id", b"1", 100)]);
        let b = inventory(&[("id", b"1", 100), ("new", b"1", 100)]);
        assert!(compare(&figures(100, 10.0, 9, &a), &figures(140, 30.0, 9, &b), &t).is_empty());
        let bad: DriftSection = toml::from_str("records = nan").unwrap();
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<DriftSection>("recrods = 1").is_err());
    }
}
