//! Checkpoints: a run's state, written down after every part that ends a page, so that a
//! later process can continue the same upload where the run stopped.
//!
//! A checkpoint is a small JSON object ([`Checkpoint`]) under the state prefix
//! (`_landline/` at the root of the destination bucket by default, never inside the data
//! prefix that query engines read): `checkpoints/{pipeline name}/{ingest date}.json` (with
//! the run's `[vars]` values in the name when the pipeline has any, see [`checkpoint_url`]). It
//! holds the pipeline's identity (a hash of its file, secrets excluded, since `${VAR}`
//! references are hashed unexpanded), the destination, the multipart upload and its
//! acknowledged parts, the gzip member's state after the last of them, the source's position
//! after the page that part ends ([`SourcePosition`]: the paging state of an HTTP source, or
//! a [`Source`](crate::source::Source)'s own position), the counters at that page, and the run's `ingest_date`,
//! `ingest_ts` and template variables. No secret is ever written: a resumed run resolves
//! them from its environment.
//!
//! The first checkpoint is written just before the upload is created
//! ([`Checkpoints::pending`], with the uploads of the key already open) and again as soon as
//! it is ([`Checkpoints::started`]), so that no kill can leave an upload that nothing knows
//! about; it is deleted once the upload is completed, or aborted after a failure.
//!
//! Memory: the [`Ledger`] keeps the state after each page only until a checkpoint passes it:
//! the pages of about one part.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::compress::{MemberState, PartEnd};
use crate::incremental::{IncrementalMark, IncrementalRun};
use crate::sink::{Destination, SinkError, UploadState};
use crate::source::paginate::PagingState;
use crate::transform::FieldInventory;

/// The checkpoint format this build writes and reads.
pub const FORMAT: &str = "landline-checkpoint/2";

/// Reads of a checkpoint whose body breaks off, the first included.
const LOAD_ATTEMPTS: u32 = 3;

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// [`FORMAT`].
    pub format: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// A hash of the pipeline file as written (no secrets in it).
    pub pipeline_identity: String,
    /// Where the pipeline file was read from (an absolute path or a URL), for `landline
    /// resume`; the file itself is not copied here.
    pub pipeline_file: Option<String>,
    /// The object being written.
    pub destination: String,
    /// The run's `{ingest_date}`.
    pub ingest_date: String,
    /// The run's `{ingest_ts}`.
    pub ingest_ts: String,
    /// The values of the pipeline's own template variables (`[vars]`) in this run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The multipart upload and its acknowledged parts.
    pub upload: UploadState,
    /// Before the upload exists (no `upload.upload_id` yet): the uploads of the destination's
    /// key that were open already, where the store lists them. Any other upload of the key
    /// found later was created by this run, and nothing else knows about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads_before: Option<Vec<String>>,
    /// The gzip member after the last acknowledged part.
    pub member: MemberState,
    /// The source's position after the last page those parts hold.
    pub position: SourcePosition,
    /// Counters at that page.
    pub counters: Counters,
    /// The fields of the records written up to that page, when they are counted (for the
    /// manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldInventory>,
    /// An incremental run's query (`[source.incremental]`): the same in every process of
    /// the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalRun>,
    /// An incremental run's high-water mark up to that page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_water: Option<IncrementalMark>,
    /// A run that writes several objects (`{part}`, `{record:...}`): the objects completed
    /// up to that page and the number each stream goes on with. No upload is open at such a
    /// checkpoint (`upload` names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectsDone>,
    /// When this checkpoint was written.
    pub written_at: chrono::DateTime<chrono::Utc>,
}

/// The objects a run that writes several has completed at a checkpoint, and where it goes
/// on: the process that resumes starts new objects, numbered on from these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsDone {
    /// The objects completed, in the order they landed in.
    pub landed: Vec<crate::report::ObjectReport>,
    /// The `{part}` of the next object (one stream).
    pub next_part: u64,
    /// With partitions from the records: the `{part}` of each partition's next object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partitions: BTreeMap<String, u64>,
    /// Records written to the default partition so far.
    #[serde(default)]
    pub default_records: u64,
    /// Partitions completed early to make room, so far.
    #[serde(default)]
    pub evictions: u64,
}

/// Where a source stands after a page, as a checkpoint holds it:
/// `{"http": {"cursor": …, "pages": …, "records": …, "seen": […]}}` for a pipeline's HTTP
/// source, `{"library": …}` for a [`Source`](crate::source::Source) run with
/// [`run_source`](crate::pipeline::run_source), whose own `Position` type gives the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourcePosition {
    /// The paging state of the pipeline's `[source]`.
    Http(PagingState),
    /// A library source's position, as its `Position` type serialises it.
    Library(serde_json::Value),
}

impl SourcePosition {
    /// The HTTP paging state, if this is one.
    pub fn paging(&self) -> Option<&PagingState> {
        match self {
            SourcePosition::Http(paging) => Some(paging),
            SourcePosition::Library(_) => None,
        }
    }

    /// What kind of source wrote it, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            SourcePosition::Http(_) => "the pipeline's HTTP [source]",
            SourcePosition::Library(_) => "a library source",
        }
    }
}

/// Counters of a run up to a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// The last page written (0 before the first).
    pub page: u64,
    /// Records written.
    pub records: u64,
    /// Pages written.
    pub pages: u64,
    /// Page bytes read, decoded.
    pub bytes_in: u64,
    /// The largest page, decoded.
    pub largest_page: u64,
    /// The widest record's line, its newline not counted.
    #[serde(default)]
    pub largest_record: u64,
}

/// The state after each page, until a checkpoint needs it: counters from the page
/// processor, the source's position from the pager, each arriving on its own.
#[derive(Debug, Default)]
pub struct Ledger {
    pages: Mutex<BTreeMap<u64, Entry>>,
    /// The loop guard's hashes of the pages taken so far (and of a resumed run's earlier
    /// pages): the `seen` of the next checkpoint.
    seen: Mutex<Vec<u64>>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Entry {
    counters: Option<Counters>,
    fields: Option<FieldInventory>,
    high_water: Option<IncrementalMark>,
    position: Option<SourcePosition>,
    url_hash: Option<u64>,
}

impl Ledger {
    /// Records the counters after `counters.page`.
    pub fn counters(&self, counters: Counters) {
        self.update(counters.page, |e| e.counters = Some(counters));
    }

    /// Records the fields counted up to `page` (given before its counters).
    pub fn fields(&self, page: u64, fields: FieldInventory) {
        self.update(page, |e| e.fields = Some(fields));
    }

    /// Records the incremental high-water mark up to `page` (given before its counters).
    pub fn high_water(&self, page: u64, mark: IncrementalMark) {
        self.update(page, |e| e.high_water = Some(mark));
    }

    /// Starts from a resumed run's loop-guard hashes.
    pub fn with_seen(seen: Vec<u64>) -> Self {
        Ledger {
            seen: Mutex::new(seen),
            ..Ledger::default()
        }
    }

    /// Records the paging position after `page` (its `seen` is ignored) and the hash of
    /// `page`'s URL ([`crate::source::paginate::url_hash`]).
    pub fn paging(&self, page: u64, position: PagingState, url_hash: u64) {
        self.update(page, |e| {
            e.position = Some(SourcePosition::Http(position));
            e.url_hash = Some(url_hash);
        });
    }

    /// Records a library source's position after `page`.
    pub fn position(&self, page: u64, position: serde_json::Value) {
        self.update(page, |e| {
            e.position = Some(SourcePosition::Library(position))
        });
    }

    fn update(&self, page: u64, set: impl FnOnce(&mut Entry)) {
        if let Ok(mut pages) = self.pages.lock() {
            set(pages.entry(page).or_default());
        }
        self.changed.notify_waiters();
    }

    /// Waits for both halves of `page`'s state, then forgets it and every page before it.
    pub async fn take(&self, page: u64) -> PageState {
        loop {
            let changed = self.changed.notified();
            if let Some(whole) = self.try_take(page) {
                return whole;
            }
            changed.await;
        }
    }

    fn try_take(&self, page: u64) -> Option<PageState> {
        let mut pages = self.pages.lock().ok()?;
        let entry = pages.get_mut(&page)?;
        let (Some(counters), Some(mut position)) = (entry.counters, entry.position.clone()) else {
            return None;
        };
        let fields = entry.fields.take();
        let high_water = entry.high_water.take();
        let rest = pages.split_off(&(page + 1));
        let taken = std::mem::replace(&mut *pages, rest);
        if let SourcePosition::Http(paging) = &mut position {
            let mut seen = self.seen.lock().ok()?;
            seen.extend(taken.values().filter_map(|e| e.url_hash));
            seen.sort_unstable();
            seen.dedup();
            paging.seen = seen.clone();
        }
        Some(PageState {
            counters,
            position,
            fields,
            high_water,
        })
    }
}

/// The state after a page, as the ledger hands it to a checkpoint.
#[derive(Debug)]
pub struct PageState {
    /// The counters after the page.
    pub counters: Counters,
    /// The source's position after it.
    pub position: SourcePosition,
    /// The fields counted up to it, if they are counted.
    pub fields: Option<FieldInventory>,
    /// The incremental high-water mark up to it, if the source is incremental.
    pub high_water: Option<IncrementalMark>,
}

/// The run-constant part of a checkpoint, and where checkpoints go.
#[derive(Debug)]
pub struct Checkpoints {
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
    ledger: Arc<Ledger>,
    template: Checkpoint,
    /// For a local state directory: the directories [`checkpoint_url`] adds, innermost
    /// first, removed when empty once the checkpoint is deleted.
    local_dirs: Vec<std::path::PathBuf>,
}

impl Checkpoints {
    /// Checkpoints of `destination`'s run at `at` (a state destination), filled from `ledger`.
    pub fn new(at: Destination, ledger: Arc<Ledger>, template: Checkpoint) -> Self {
        let local_dirs = url::Url::parse(&at.location)
            .ok()
            .filter(|url| url.scheme() == "file")
            .and_then(|url| url.to_file_path().ok())
            .map(|file| file.ancestors().skip(1).take(3).map(Into::into).collect())
            .unwrap_or_default();
        Checkpoints {
            local_dirs,
            store: at.store,
            path: at.path,
            location: at.location,
            ledger,
            template,
        }
    }

    /// Where the checkpoints are written.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The ledger the run fills.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Reads the checkpoint at `at` (a [`Destination`] for its URL); `Ok(None)` when there is
    /// none. A checkpoint of another format, or not one at all, is an error saying so.
    ///
    /// [`pipeline::checkpoint_location`](crate::pipeline::checkpoint_location) gives a
    /// pipeline's checkpoint URL for a date, and
    /// [`pipeline::read_checkpoint`](crate::pipeline::read_checkpoint) opens and reads it in
    /// one call.
    ///
    /// ```no_run
    /// use landline::checkpoint::Checkpoints;
    /// use landline::sink::{Destination, StoreOptions};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let at = Destination::open(
    ///     "s3://my-bucket/_landline/checkpoints/variants/2026-11-25.json",
    ///     &StoreOptions::default(),
    ///     std::env::vars(),
    /// )?;
    /// match Checkpoints::load(&at).await? {
    ///     Some(cp) => println!(
    ///         "{} is {} parts ({} bytes) into upload {} of {}, after page {} ({} records)",
    ///         cp.pipeline,
    ///         cp.upload.parts.len(),
    ///         cp.upload.bytes(),
    ///         cp.upload.upload_id,
    ///         cp.destination,
    ///         cp.counters.page,
    ///         cp.counters.records,
    ///     ),
    ///     None => println!("nothing to continue: no run left an upload open"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn load(at: &Destination) -> Result<Option<Checkpoint>, SinkError> {
        let bad = |reason: String| SinkError::Checkpoint {
            location: at.location.clone(),
            reason,
        };
        // The store's client retries requests, not a body cut short: that is retried here.
        let mut attempt = 0;
        let bytes = loop {
            attempt += 1;
            let read = match at.store.get(&at.path).await {
                Ok(got) => got.bytes().await,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(bad(crate::errors::one_line(&e))),
            };
            match read {
                Ok(bytes) => break bytes,
                Err(e) if attempt < LOAD_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "reading the checkpoint broke off; reading it again");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt as u64))
                        .await;
                }
                Err(e) => return Err(bad(crate::errors::one_line(&e))),
            }
        };
        let format = serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| bad(format!("not a checkpoint (not JSON: {e})")))?
            .get("format")
            .and_then(|f| f.as_str().map(str::to_owned));
        match format.as_deref() {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(bad(format!(
                    "written in format {other:?}, which this landline does not read (it reads {FORMAT:?})"
                )));
            }
            None => return Err(bad("not a checkpoint (no \"format\" key)".into())),
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| bad(format!("corrupt: {e}")))
    }

    /// Writes the checkpoint of a run about to create its upload: no upload id yet, and the
    /// uploads of the key open before it (`uploads_before`, `None` where the store cannot
    /// list them). A kill before [`Checkpoints::started`] leaves an upload that only this says
    /// may exist; the next run finds it as an upload of the key not in that list.
    pub async fn pending(
        &self,
        position: SourcePosition,
        uploads_before: Option<Vec<String>>,
    ) -> Result<(), SinkError> {
        let upload = UploadState {
            upload_id: String::new(),
            created: chrono::Utc::now(),
            parts: Vec::new(),
            sha256: None,
        };
        let checkpoint = Checkpoint {
            upload,
            position,
            uploads_before,
            written_at: chrono::Utc::now(),
            ..self.template.clone()
        };
        self.write(&checkpoint).await
    }

    /// Writes the checkpoint of a run whose upload was just created: nothing is written yet.
    pub async fn started(
        &self,
        upload: UploadState,
        position: SourcePosition,
    ) -> Result<(), SinkError> {
        self.put(upload, MemberState::empty(), position, Counters::default())
            .await
    }

    /// Writes the checkpoint after a part that ends page `end.mark`, once that page's state
    /// is known.
    pub async fn part_done(
        &self,
        upload: UploadState,
        end: &PartEnd,
    ) -> Result<Counters, SinkError> {
        let PageState {
            counters,
            position,
            fields,
            high_water,
        } = self.ledger.take(end.mark).await;
        let checkpoint = Checkpoint {
            upload,
            member: end.member.clone(),
            position,
            counters,
            fields,
            high_water,
            written_at: chrono::Utc::now(),
            ..self.template.clone()
        };
        self.write(&checkpoint).await?;
        Ok(counters)
    }

    /// Writes the checkpoint of a run that writes several objects, stopped after `page`
    /// with every object up to it completed (`objects`); returns the counters at that page.
    pub async fn objects_done(
        &self,
        page: u64,
        objects: ObjectsDone,
    ) -> Result<Counters, SinkError> {
        let PageState {
            counters,
            position,
            fields,
            high_water,
        } = self.ledger.take(page).await;
        let checkpoint = Checkpoint {
            upload: UploadState {
                upload_id: String::new(),
                created: chrono::Utc::now(),
                parts: Vec::new(),
                sha256: None,
            },
            member: MemberState::empty(),
            position,
            counters,
            fields,
            high_water,
            objects: Some(objects),
            written_at: chrono::Utc::now(),
            ..self.template.clone()
        };
        self.write(&checkpoint).await?;
        Ok(counters)
    }

    async fn put(
        &self,
        upload: UploadState,
        member: MemberState,
        position: SourcePosition,
        counters: Counters,
    ) -> Result<(), SinkError> {
        let checkpoint = Checkpoint {
            upload,
            member,
            position,
            counters,
            written_at: chrono::Utc::now(),
            ..self.template.clone()
        };
        self.write(&checkpoint).await
    }

    async fn write(&self, checkpoint: &Checkpoint) -> Result<(), SinkError> {
        let json = serde_json::to_vec(checkpoint).map_err(|e| SinkError::Checkpoint {
            location: self.location.clone(),
            reason: e.to_string(),
        })?;
        self.store
            .put(&self.path, PutPayload::from(json))
            .await
            .map_err(|source| SinkError::Checkpoint {
                location: self.location.clone(),
                reason: crate::errors::one_line(&source),
            })?;
        tracing::debug!(
            location = %self.location,
            page = checkpoint.counters.page,
            parts = checkpoint.upload.parts.len(),
            "checkpoint written"
        );
        Ok(())
    }

    /// Deletes the checkpoint (the upload was completed or aborted); one already gone is fine.
    pub async fn delete(&self) -> Result<(), SinkError> {
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                // A local state directory left empty goes too (remove_dir fails on any
                // directory that still holds something, which is then kept).
                for dir in &self.local_dirs {
                    if std::fs::remove_dir(dir).is_err() {
                        break;
                    }
                }
                Ok(())
            }
            Err(source) => Err(SinkError::Checkpoint {
                location: self.location.clone(),
                reason: format!("deleting it: {}", crate::errors::one_line(&source)),
            }),
        }
    }
}

/// The default state prefix for a destination template `sink_url` rendered as `rendered`:
/// `_landline/` at the bucket's root for object stores, and for a local destination beside
/// the first directory of the path that holds a `{variable}` (or beside the object).
pub fn default_state_prefix(literal_prefix: &str, rendered: &str) -> String {
    if let Ok(url) = url::Url::parse(rendered)
        && url.scheme().len() > 1
        && url.scheme() != "file"
    {
        return format!(
            "{}://{}/_landline/",
            url.scheme(),
            url.host_str().unwrap_or_default()
        );
    }
    match literal_prefix.rfind('/') {
        Some(slash) => format!("{}_landline/", &literal_prefix[..=slash]),
        None => "_landline/".to_owned(),
    }
}

/// The checkpoint's URL for `name` on `ingest_date` with the pipeline's own template
/// variables `vars` under `prefix` (ending in `/`):
/// `checkpoints/{name}/{ingest_date}.json`, or with variables
/// `checkpoints/{name}/{ingest_date}.{var}={value}….json`, so that the shards of one date
/// have a checkpoint each. A value that is not all ASCII letters, digits, `-` and `_` (or is
/// longer than 64) is written as `~` and its XXH3-64 hash, which keeps keys plain and
/// distinct.
pub fn checkpoint_url(
    prefix: &str,
    name: &str,
    ingest_date: &str,
    vars: &BTreeMap<String, String>,
) -> String {
    state_url(prefix, "checkpoints", name, ingest_date, vars)
}

/// The URL of a run's state object of `kind` (`checkpoints`, `manifests`), named as
/// [`checkpoint_url`] names checkpoints.
pub fn state_url(
    prefix: &str,
    kind: &str,
    name: &str,
    ingest_date: &str,
    vars: &BTreeMap<String, String>,
) -> String {
    let mut url = format!("{prefix}{kind}/{name}/{ingest_date}");
    for (var, value) in vars {
        let plain = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if plain {
            url.push_str(&format!(".{var}={value}"));
        } else {
            let hash = xxhash_rust::xxh3::xxh3_64(value.as_bytes());
            url.push_str(&format!(".{var}=~{hash:016x}"));
        }
    }
    url.push_str(".json");
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_lives_at_the_bucket_root_or_beside_the_data_directory() {
        let p = |lit: &str, rendered: &str| default_state_prefix(lit, rendered);
        assert_eq!(
            p(
                "s3://b/variants/date=",
                "s3://b/variants/date=2024-01-01/v.jsonl.gz"
            ),
            "s3://b/_landline/"
        );
        assert_eq!(p("gs://c/x.gz", "gs://c/x.gz"), "gs://c/_landline/");
        assert_eq!(
            p(
                "out/variants/date=",
                "out/variants/date=2024-01-01/v.jsonl.gz"
            ),
            "out/variants/_landline/"
        );
        assert_eq!(
            p("/data/v.jsonl.gz", "/data/v.jsonl.gz"),
            "/data/_landline/"
        );
        assert_eq!(
            p("file:///data/d=", "file:///data/d=1/v.gz"),
            "file:///data/_landline/"
        );
        assert_eq!(p("v-", "v-2024.jsonl.gz"), "_landline/");
        let none = BTreeMap::new();
        assert_eq!(
            checkpoint_url("s3://b/_landline/", "variants", "2024-01-01", &none),
            "s3://b/_landline/checkpoints/variants/2024-01-01.json"
        );
        let vars = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            checkpoint_url(
                "_landline/",
                "v",
                "2024-01-01",
                &vars(&[("tier", "gold"), ("region", "eu-west_1")])
            ),
            "_landline/checkpoints/v/2024-01-01.region=eu-west_1.tier=gold.json"
        );
        // Values that are not plain are hashed, and stay distinct.
        let a = checkpoint_url("p/", "v", "d", &vars(&[("a", "x.b=y"), ("b", "z")]));
        let b = checkpoint_url("p/", "v", "d", &vars(&[("a", "x"), ("b", "y.b=z")]));
        assert_ne!(a, b);
        assert!(
            a.starts_with("p/checkpoints/v/d.a=~") && a.ends_with(".b=z.json"),
            "{a}"
        );
        let odd = checkpoint_url("p/", "v", "d", &vars(&[("a", "")]));
        assert!(odd.starts_with("p/checkpoints/v/d.a=~"), "{odd}");
    }

    #[tokio::test]
    async fn the_ledger_waits_for_both_halves_and_forgets_what_is_passed() {
        let ledger = Arc::new(Ledger::default());
        for page in 1..=3 {
            ledger.counters(Counters {
                page,
                records: page * 10,
                pages: page,
                ..Counters::default()
            });
        }
        let paging = |pages| PagingState {
            pages,
            ..serde_json::from_str(r#"{"cursor":{"kind":"start"},"pages":0,"records":0,"seen":[]}"#)
                .unwrap()
        };
        ledger.paging(1, paging(1), 11);
        let waiter = {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move { ledger.take(2).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        ledger.paging(2, paging(2), 7);
        let PageState {
            counters,
            position: state,
            ..
        } = waiter.await.unwrap();
        let state = state.paging().unwrap();
        assert_eq!((counters.records, state.pages), (20, 2));
        assert_eq!(state.seen, [7, 11]);
        // Pages 1 and 2 are forgotten; 3 is kept.
        assert!(ledger.try_take(1).is_none());
        ledger.paging(3, paging(3), 5);
        let PageState {
            counters,
            position: state,
            ..
        } = ledger.try_take(3).unwrap();
        let state = state.paging().unwrap();
        assert_eq!((counters.records, &state.seen), (30, &vec![5, 7, 11]));
    }

    #[test]
    fn a_library_position_is_kept_as_given_and_tagged() {
        let ledger = Ledger::default();
        ledger.counters(Counters {
            page: 1,
            records: 5,
            pages: 1,
            ..Counters::default()
        });
        ledger.position(1, serde_json::json!({"next_id": 42}));
        let PageState {
            counters, position, ..
        } = ledger.try_take(1).unwrap();
        assert_eq!(counters.records, 5);
        assert_eq!(
            serde_json::to_string(&position).unwrap(),
            r#"{"library":{"next_id":42}}"#
        );
        assert!(position.paging().is_none());
    }
}
