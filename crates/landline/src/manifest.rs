//! Manifests: what each completed run landed, written beside its checkpoints in the state
//! location (`_landline/manifests/<pipeline>/<ingest date>[.<var>=<value>…].json`), never
//! inside the data prefix, where a query engine would read it as data.
//!
//! A manifest holds the run's report, the object's URL, size, ETag and SHA-256 (computed
//! while its parts streamed out), the record count and the records' field inventory. The
//! next run of the same pipeline (and the same `[vars]`) compares itself with the manifest of
//! the latest earlier date ([`crate::drift`]), and `landline verify` checks an object against
//! its manifest.

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::checkpoint::state_url;
use crate::drift::DriftReport;
use crate::sink::{Destination, StoreOptions};
use crate::transform::FieldInventory;

/// The format a manifest declares (`"format"`).
pub const FORMAT: &str = "landline-manifest/1";

/// The largest manifest read (a field inventory of [`crate::transform::inventory::MAX_FIELDS`]
/// fields is well under it).
const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;

/// What a completed run landed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The run's `{ingest_date}`.
    pub ingest_date: String,
    /// The run's `{ingest_ts}`.
    pub ingest_ts: String,
    /// The values of the pipeline's own template variables in this run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The landline that wrote it.
    pub landline_version: String,
    /// The object written; `None` when the source had no records (nothing is written then),
    /// and for a sequence of objects, which [`objects`](Self::objects) lists.
    pub object: Option<ObjectFacts>,
    /// The objects of a sequence (`{part}` in the URL), in order, each with its records and
    /// JSON Lines bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectFacts>,
    /// Records written.
    pub records: u64,
    /// JSON Lines bytes (before compression).
    pub bytes_uncompressed: u64,
    /// JSON Lines bytes per record, its newline included.
    pub average_record_bytes: f64,
    /// The widest record's line, its newline not counted.
    pub largest_record_bytes: u64,
    /// The records' top-level fields; `None` when they were not counted (a run resumed from
    /// a checkpoint that did not carry them).
    pub fields: Option<FieldInventory>,
    /// How this run compared with the previous one, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftReport>,
    /// The run's report, as `--report-json` writes it.
    pub report: serde_json::Value,
    /// When the manifest was written.
    pub written_at: chrono::DateTime<chrono::Utc>,
}

/// The object a run wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectFacts {
    /// Its URL.
    pub url: String,
    /// Its size in bytes.
    pub size: u64,
    /// The store's ETag, when it gave one.
    pub e_tag: Option<String>,
    /// The SHA-256 of its bytes (hex); `None` when the run resumed from a checkpoint that
    /// did not carry the hash state.
    pub sha256: Option<String>,
    /// Upload parts.
    pub parts: u64,
    /// The object's format; gzip in manifests written before there was a choice.
    #[serde(default = "gzip")]
    pub compression: crate::compress::Compression,
    /// gzip members: 1 for a gzip object (one member over the whole object), 0 for the
    /// other formats.
    #[serde(default)]
    pub gzip_members: u64,
    /// Records in this object, for an object of a sequence (otherwise the manifest's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// JSON Lines bytes in this object, for an object of a sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_uncompressed: Option<u64>,
}

impl Manifest {
    /// The facts of the object at `url`: one of a sequence's, or the run's only object.
    pub fn facts_of(&self, url: &str) -> Option<&ObjectFacts> {
        if self.objects.is_empty() {
            return self.object.as_ref();
        }
        self.objects.iter().find(|o| same_object(&o.url, url))
    }
}

/// Whether `listed` (a manifest's URL) and `given` (as a user wrote it: the same URL, a
/// `file://` URL or a path, maybe relative) name the same object.
fn same_object(listed: &str, given: &str) -> bool {
    let strip = |u: &str| {
        u.strip_prefix("file://")
            .unwrap_or(u)
            .trim_start_matches("./")
            .to_owned()
    };
    let (listed, given) = (strip(listed), strip(given));
    listed == given
        || (!given.contains("://")
            && listed.ends_with(&format!("/{}", given.trim_start_matches('/'))))
}

fn gzip() -> crate::compress::Compression {
    crate::compress::Compression::Gzip
}

/// A manifest that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The store refused or failed.
    #[error("manifest {location}: {reason}")]
    Store {
        /// The manifest's URL.
        location: String,
        /// What went wrong.
        reason: String,
    },
    /// It is not a manifest this landline reads.
    #[error("manifest {location}: {reason}")]
    Invalid {
        /// The manifest's URL.
        location: String,
        /// Why.
        reason: String,
    },
}

/// The manifest URL of a run of `name` on `ingest_date` with `vars`, under the state `prefix`.
pub fn manifest_url(
    prefix: &str,
    name: &str,
    ingest_date: &str,
    vars: &BTreeMap<String, String>,
) -> String {
    state_url(prefix, "manifests", name, ingest_date, vars)
}

/// Writes `manifest` at `url`.
pub async fn write(
    url: &str,
    manifest: &Manifest,
    options: &StoreOptions,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ManifestError> {
    let store_error = |reason: String| ManifestError::Store {
        location: url.to_owned(),
        reason,
    };
    let at = Destination::open(url, options, env).map_err(|e| store_error(e.to_string()))?;
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| store_error(e.to_string()))?;
    at.store
        .put(&at.path, json.into())
        .await
        .map_err(|e| store_error(crate::errors::one_line(&e)))?;
    tracing::debug!(location = url, "manifest written");
    Ok(())
}

/// Reads the manifest at `url`; `Ok(None)` when there is none.
pub async fn read(
    url: &str,
    options: &StoreOptions,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<Manifest>, ManifestError> {
    let at = Destination::open(url, options, env).map_err(|e| ManifestError::Store {
        location: url.to_owned(),
        reason: e.to_string(),
    })?;
    read_at(&at.store, &at.path, url).await
}

async fn read_at(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    path: &Path,
    location: &str,
) -> Result<Option<Manifest>, ManifestError> {
    let store_error = |reason: String| ManifestError::Store {
        location: location.to_owned(),
        reason,
    };
    let got = match store.get(path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_error(crate::errors::one_line(&e))),
    };
    if got.meta.size > MAX_MANIFEST_BYTES as u64 {
        return Err(ManifestError::Invalid {
            location: location.to_owned(),
            reason: format!(
                "{} bytes: larger than a manifest can be ({MAX_MANIFEST_BYTES})",
                got.meta.size
            ),
        });
    }
    let bytes = got
        .bytes()
        .await
        .map_err(|e| store_error(crate::errors::one_line(&e)))?;
    parse(&bytes, location).map(Some)
}

/// A manifest's text, checked to be one.
pub fn parse(bytes: &[u8], location: &str) -> Result<Manifest, ManifestError> {
    let invalid = |reason: String| ManifestError::Invalid {
        location: location.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(invalid(format!(
                "written in format {other:?}, which this landline does not read (it reads {FORMAT:?})"
            )));
        }
        None => return Err(invalid("not a manifest (no \"format\" key)".into())),
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("corrupt: {e}")))
}

/// The manifest of the latest run before `ingest_date` with the same `vars`, next to `url`
/// (this run's manifest URL): the previous run to compare with. Returns its URL too.
pub async fn previous(
    url: &str,
    ingest_date: &str,
    options: &StoreOptions,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<(String, Manifest)>, ManifestError> {
    let store_error = |reason: String| ManifestError::Store {
        location: url.to_owned(),
        reason,
    };
    let at = Destination::open(url, options, env).map_err(|e| store_error(e.to_string()))?;
    let Some(name) = at.path.filename().map(str::to_owned) else {
        return Ok(None);
    };
    // `<date><suffix>`: the same suffix (vars), an earlier date.
    let Some(suffix) = name.strip_prefix(ingest_date).map(str::to_owned) else {
        return Ok(None);
    };
    let dir: Path = at.path.parts().take(at.path.parts().count() - 1).collect();
    let listed: Vec<object_store::ObjectMeta> = at
        .store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| store_error(crate::errors::one_line(&e)))?;
    let latest = listed
        .iter()
        .filter_map(|meta| {
            let file = meta.location.filename()?;
            let date = file.strip_suffix(suffix.as_str())?;
            let plain =
                date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok();
            (plain && date < ingest_date).then_some((date.to_owned(), &meta.location))
        })
        .max_by(|a, b| a.0.cmp(&b.0));
    let Some((_, path)) = latest else {
        return Ok(None);
    };
    let location = match url.rfind('/') {
        Some(slash) => format!("{}/{}", &url[..slash], path.filename().unwrap_or_default()),
        None => path.to_string(),
    };
    Ok(read_at(&at.store, path, &location)
        .await?
        .map(|manifest| (location, manifest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_found_by_url_or_by_path() {
        let listed = "file:///data/out/date=2026-01-01/part-00002.jsonl.gz";
        assert!(same_object(listed, listed));
        assert!(same_object(
            listed,
            "/data/out/date=2026-01-01/part-00002.jsonl.gz"
        ));
        assert!(same_object(
            listed,
            "out/date=2026-01-01/part-00002.jsonl.gz"
        ));
        assert!(same_object(
            listed,
            "./out/date=2026-01-01/part-00002.jsonl.gz"
        ));
        assert!(!same_object(
            listed,
            "out/date=2026-01-01/part-00001.jsonl.gz"
        ));
        assert!(!same_object(
            listed,
            "t/date=2026-01-01/part-00002.jsonl.gz"
        ));
        let s3 = "s3://b/v/date=2026-01-01/part-00001.jsonl.zst";
        assert!(same_object(s3, s3));
        assert!(!same_object(
            s3,
            "s3://other/v/date=2026-01-01/part-00001.jsonl.zst"
        ));
    }

    fn manifest(date: &str) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            pipeline: "p".into(),
            ingest_date: date.into(),
            ingest_ts: format!("{date}T00:00:00.000Z"),
            vars: BTreeMap::new(),
            landline_version: env!("CARGO_PKG_VERSION").into(),
            object: None,
            objects: Vec::new(),
            records: 0,
            bytes_uncompressed: 0,
            average_record_bytes: 0.0,
            largest_record_bytes: 0,
            fields: Some(FieldInventory::default()),
            drift: None,
            report: serde_json::json!({}),
            written_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn finds_the_latest_earlier_run_with_the_same_vars() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("{}/", url::Url::from_directory_path(dir.path()).unwrap());
        let none = BTreeMap::new();
        let shard: BTreeMap<String, String> = [("region".to_owned(), "eu".to_owned())].into();
        let env = Vec::new;
        let o = StoreOptions::default();
        for (date, vars) in [
            ("2026-01-01", &none),
            ("2026-01-03", &none),
            ("2026-01-04", &shard),
            ("2026-01-09", &none),
        ] {
            let url = manifest_url(&prefix, "p", date, vars);
            write(&url, &manifest(date), &o, env()).await.unwrap();
        }
        // Not a manifest's name: ignored.
        std::fs::write(dir.path().join("manifests/p/notes.json"), "{}").unwrap();
        let url = manifest_url(&prefix, "p", "2026-01-05", &none);
        let (at, found) = previous(&url, "2026-01-05", &o, env())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.ingest_date, "2026-01-03");
        assert!(at.ends_with("manifests/p/2026-01-03.json"), "{at}");
        let url = manifest_url(&prefix, "p", "2026-01-05", &shard);
        let (_, found) = previous(&url, "2026-01-05", &o, env())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.ingest_date, "2026-01-04");
        // The run itself (a rerun of a date) is not its own previous run.
        let url = manifest_url(&prefix, "p", "2026-01-01", &none);
        assert!(
            previous(&url, "2026-01-01", &o, env())
                .await
                .unwrap()
                .is_none()
        );
        let url = manifest_url(&prefix, "other", "2026-01-05", &none);
        assert!(
            previous(&url, "2026-01-05", &o, env())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refuses_what_is_not_a_manifest() {
        let e = parse(b"[1]", "x").unwrap_err().to_string();
        assert!(e.contains("no \"format\""), "{e}");
        let e = parse(br#"{"format":"landline-manifest/9"}"#, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not read"), "{e}");
        let e = parse(b"{", "x").unwrap_err().to_string();
        assert!(e.contains("not JSON"), "{e}");
        let text = serde_json::to_vec(&manifest("2026-01-01")).unwrap();
        assert_eq!(parse(&text, "x").unwrap(), manifest_with_time(&text));
    }

    fn manifest_with_time(text: &[u8]) -> Manifest {
        serde_json::from_slice(text).unwrap()
    }
}
