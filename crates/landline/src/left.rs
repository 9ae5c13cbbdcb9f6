//! The objects a failed run of several objects completed and left in place.
//!
//! A run writing a sequence (`{part}`) or partitions (`{record:…}`) that fails keeps the
//! objects it completed (its error names them). It records them under the state prefix,
//! `_landline/left/NAME/DATE.json`, beside checkpoints and manifests and never in a data
//! prefix, so that the next complete run of that date deletes the ones it did not write
//! again: their records are in its own objects, and objects under keys it does not write
//! (another `{ingest_ts}`, a partition the data no longer has) would otherwise stay beside
//! them, landing records twice. A second failed run adds its objects to the same record.
//!
//! Recording and clearing are best effort: a failure is a warning, since the run's own
//! outcome is already decided.

use serde::{Deserialize, Serialize};

use crate::secret::EnvVars;
use crate::sink::{Destination, StoreOptions};

/// The record's `format`.
const FORMAT: &str = "landline-left/1";

/// Larger than this is not a record of ours.
const MAX_BYTES: u64 = 64 << 20;

/// The record: which pipeline's run of which date left which objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Left {
    format: String,
    pipeline: String,
    ingest_date: String,
    /// Object URLs, each once, in the order the runs left them.
    objects: Vec<String>,
}

/// The record at `url`, opened with `options` and `env`.
pub(crate) struct Record {
    at: Destination,
}

impl Record {
    /// The record at `url`; `None` (with a warning) if its store cannot be configured.
    pub(crate) fn open(url: &str, options: &StoreOptions, env: &EnvVars) -> Option<Self> {
        match Destination::open(url, options, env.clone()) {
            Ok(at) => Some(Self { at }),
            Err(e) => {
                tracing::warn!(record = url, error = %e, "the record of objects left by failed runs cannot be reached");
                None
            }
        }
    }

    /// The objects recorded, if there is a record.
    pub(crate) async fn objects(&self) -> Result<Vec<String>, String> {
        Ok(self.read().await?.map(|l| l.objects).unwrap_or_default())
    }

    async fn read(&self) -> Result<Option<Left>, String> {
        use object_store::ObjectStoreExt as _;
        let got = match self.at.store.get(&self.at.path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(crate::errors::one_line(&e)),
        };
        if got.meta.size > MAX_BYTES {
            return Err(format!(
                "{} bytes: not a record of objects left",
                got.meta.size
            ));
        }
        let bytes = got.bytes().await.map_err(|e| crate::errors::one_line(&e))?;
        let left: Left = serde_json::from_slice(&bytes)
            .map_err(|e| format!("not a record of objects left: {e}"))?;
        if left.format != FORMAT {
            return Err(format!(
                "written in format {:?}, which this landline does not read (it reads {FORMAT:?})",
                left.format
            ));
        }
        Ok(Some(left))
    }

    /// Adds `objects` (left by `pipeline`'s failed run of `ingest_date`) to the record.
    pub(crate) async fn add(&self, pipeline: &str, ingest_date: &str, objects: &[String]) {
        use object_store::ObjectStoreExt as _;
        let location = self.at.location.as_str();
        let mut left = match self.read().await {
            Ok(Some(left)) => left,
            Ok(None) => Left {
                format: FORMAT.to_owned(),
                pipeline: pipeline.to_owned(),
                ingest_date: ingest_date.to_owned(),
                objects: Vec::new(),
            },
            Err(e) => {
                tracing::warn!(record = location, error = %e, "the record of objects left by failed runs is unreadable: writing a new one");
                Left {
                    format: FORMAT.to_owned(),
                    pipeline: pipeline.to_owned(),
                    ingest_date: ingest_date.to_owned(),
                    objects: Vec::new(),
                }
            }
        };
        let known: std::collections::HashSet<String> = left.objects.iter().cloned().collect();
        left.objects
            .extend(objects.iter().filter(|o| !known.contains(*o)).cloned());
        let json = match serde_json::to_vec_pretty(&left) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(record = location, error = %e, "could not record the objects the failed run left");
                return;
            }
        };
        match self.at.store.put(&self.at.path, json.into()).await {
            Ok(_) => tracing::info!(
                record = location,
                objects = objects.len(),
                "recorded the objects the failed run left: the next complete run of this date deletes those it does not write again"
            ),
            Err(e) => tracing::warn!(
                record = location,
                error = %crate::errors::one_line(&e),
                "could not record the objects the failed run left: a complete run of this date will not know to delete them"
            ),
        }
    }

    /// Deletes the record.
    pub(crate) async fn clear(&self) {
        use object_store::ObjectStoreExt as _;
        match self.at.store.delete(&self.at.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(
                record = self.at.location.as_str(),
                error = %crate::errors::one_line(&e),
                "could not delete the record of objects left by failed runs"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let store = std::sync::Arc::new(object_store::memory::InMemory::new());
        Record {
            at: Destination {
                store: std::sync::Arc::clone(&store) as _,
                multipart: store as _,
                path: "_landline/left/p/2026-12-07.json".into(),
                location: "memory:///_landline/left/p/2026-12-07.json".into(),
                s3_rules: false,
            },
        }
    }

    #[tokio::test]
    async fn runs_add_their_objects_once_each_and_a_clear_forgets_them() {
        let r = record();
        assert!(r.objects().await.expect("readable").is_empty());
        r.add("p", "2026-12-07", &["s3://b/a".into(), "s3://b/b".into()])
            .await;
        r.add("p", "2026-12-07", &["s3://b/b".into(), "s3://b/c".into()])
            .await;
        assert_eq!(
            r.objects().await.expect("readable"),
            ["s3://b/a", "s3://b/b", "s3://b/c"]
        );
        r.clear().await;
        assert!(r.objects().await.expect("readable").is_empty());
        r.clear().await;
    }

    #[tokio::test]
    async fn another_format_is_refused() {
        use object_store::ObjectStoreExt as _;
        let r = record();
        r.at.store
            .put(
                &r.at.path,
                br#"{"format":"landline-left/9","pipeline":"p","ingest_date":"d","objects":[]}"#
                    .to_vec()
                    .into(),
            )
            .await
            .expect("put");
        let err = r.objects().await.expect_err("refused");
        assert!(err.contains("landline-left/9"), "{err}");
    }
}
