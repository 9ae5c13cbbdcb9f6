//! A [`MultipartStore`] for the local filesystem that keeps every upload's state on disk.
//!
//! object_store's `LocalFileSystem` has no [`MultipartStore`]: its uploads are one staging file
//! held open by the process, so they end with it. [`LocalMultipart`] keeps all of an upload's
//! state in files, none in memory: another process given the same root, [`Path`] and
//! [`MultipartId`] can put more parts, complete the upload or abort it, which is what resuming
//! after a crash or a Lambda deadline needs.
//!
//! Layout, for the object `<dir>/<name>`:
//!
//! ```text
//! <dir>/_landline-uploads/<id>/target        the object's Path, checked on every call
//! <dir>/_landline-uploads/<id>/made          how many directories, <dir> and up, creating the
//!                                            upload made (absent when none)
//! <dir>/_landline-uploads/<id>/part-000000   the part with index 0, as put_part wrote it
//! <dir>/_landline-uploads/<id>/part-000001   …
//! ```
//!
//! The leading underscore makes query engines (Spark, Hive, Trino, DuckDB) skip the staging
//! directory. Nothing appears half-written under a final name: a part is written to a dotted
//! temporary file in the upload's directory and renamed; an upload's directory is assembled as
//! `.<id>.new` and renamed into place, and removed by renaming it to `.<id>.gone` first;
//! completing concatenates the parts into a temporary file in the upload's directory and
//! renames it over the object, so a reader sees the old object or the new one. Ids are
//! letters, digits, `-` and `_`, so dotted names are never taken for uploads. When the last
//! upload of a directory is gone, the empty `_landline-uploads` is removed too.
//!
//! Aborting an upload also removes the directories that creating it made (`<dir>` and those
//! above it that did not exist), innermost first, stopping at the first one that is not empty:
//! a failed run to a new directory leaves none behind. [`LocalFiles`], the store beside
//! [`LocalMultipart`] for a local destination (and its checkpoints), does the same for the
//! directories a put makes, once that file is deleted.
//!
//! A [`PartId`] records the part's index, length and xxh3 hash; completing checks each part
//! file against it while copying, and a mismatch fails the completion without touching the
//! object, leaving the upload as it was (the part can be put again).
//!
//! Limits: no fsync. A crash of the process loses nothing that was acknowledged; a crash of
//! the machine may leave a renamed part short or empty, which completing then refuses rather
//! than writing a corrupt object. Temporaries left by a crash in the middle of a call (dotted
//! names in `_landline-uploads`) are not swept. Unix paths: no Windows drive-letter handling.
//! An id is only looked up beside its object, so an id used with an object in another
//! directory is [`object_store::Error::NotFound`], and with another object in the same
//! directory an error naming the object it belongs to.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::path::{Component, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt as _, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions,
};
use url::Url;
use xxhash_rust::xxh3::Xxh3;

/// The directory, beside each object, that holds its uploads.
pub const STAGING_DIR: &str = "_landline-uploads";

/// The store's name in [`object_store::Error::Generic`].
const STORE: &str = "LocalMultipart";
/// The file in an upload's directory that records the object's [`Path`].
const TARGET_FILE: &str = "target";
/// The file in an upload's directory that records how many directories creating it made.
const MADE_FILE: &str = "made";
/// The longest id accepted.
const MAX_ID_LEN: usize = 128;
/// The copy buffer of [`LocalMultipart`]'s completion.
const COPY_BUFFER: usize = 256 * 1024;
/// Attempts at a step that a concurrent call can make fail harmlessly.
const RACE_ATTEMPTS: u32 = 3;

/// A [`MultipartStore`] on the local filesystem, all of whose state is on disk.
///
/// Object paths are relative to `root`: with root `/`, the path `tmp/x/y.jsonl.gz` (as
/// [`Path::from_absolute_path`] gives for `/tmp/x/y.jsonl.gz`) is the file
/// `/tmp/x/y.jsonl.gz`, as object_store's `LocalFileSystem::new()` maps it.
#[derive(Debug, Clone)]
pub struct LocalMultipart {
    root: PathBuf,
}

impl LocalMultipart {
    /// A store whose object paths are relative to `root` (made absolute against the current
    /// directory if relative).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalMultipart { root }
    }

    /// The file `path` names.
    fn object_file(&self, path: &Path) -> Result<PathBuf, LocalError> {
        let invalid = |reason: &'static str| LocalError::InvalidPath {
            path: path.to_string(),
            reason,
        };
        // As LocalFileSystem does: segments appended to the root's file URL, then decoded.
        let mut url = Url::from_directory_path(&self.root).map_err(|()| LocalError::Root {
            root: self.root.clone(),
        })?;
        url.path_segments_mut()
            .map_err(|()| LocalError::Root {
                root: self.root.clone(),
            })?
            .pop_if_empty()
            .extend(path.parts());
        let file = url
            .to_file_path()
            .map_err(|()| invalid("not a file path"))?;
        let below = file
            .strip_prefix(&self.root)
            .map_err(|_| invalid("outside the store's root"))?;
        let mut names = 0;
        for component in below.components() {
            match component {
                Component::Normal(name) if name == STAGING_DIR => {
                    return Err(invalid("names the staging directory"));
                }
                Component::Normal(_) => names += 1,
                _ => return Err(invalid("has a segment that is not a plain name")),
            }
        }
        if names == 0 {
            return Err(invalid("is empty"));
        }
        Ok(file)
    }

    /// Where the upload `id` of `path` lives; checks the form of both, not the disk.
    fn upload(&self, path: &Path, id: &str) -> Result<Upload, LocalError> {
        let valid = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(LocalError::InvalidId { id: id.to_owned() });
        }
        let object = self.object_file(path)?;
        let staging = object
            .parent()
            .ok_or_else(|| LocalError::InvalidPath {
                path: path.to_string(),
                reason: "has no parent directory",
            })?
            .join(STAGING_DIR);
        Ok(Upload {
            id: id.to_owned(),
            path: path.to_string(),
            object,
            dir: staging.join(id),
            staging,
        })
    }
}

#[async_trait::async_trait]
impl MultipartStore for LocalMultipart {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        let upload = self.upload(path, &new_id())?;
        blocking(move || upload.create().map(|()| upload.id)).await
    }

    /// Files have no content type, encoding or tags: the options are ignored.
    async fn create_multipart_opts(
        &self,
        path: &Path,
        _opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<MultipartId> {
        self.create_multipart(path).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        let upload = self.upload(path, id)?;
        blocking(move || upload.put_part(part_idx, &data)).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        let upload = self.upload(path, id)?;
        blocking(move || upload.complete(&parts)).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        let upload = self.upload(path, id)?;
        blocking(move || upload.abort()).await
    }
}

/// object_store's [`LocalFileSystem`] (with its root at `/`), except that it removes again the
/// directories it made: a put records the directories it has to create for its file, and
/// deleting that file removes them, innermost first, stopping at the first one that is not
/// empty. It is the store of a local destination and of local checkpoints, so that deleting a
/// run's checkpoint (after its upload was completed or aborted) leaves none of the
/// directories its first write made.
///
/// The record is in memory and only covers puts and deletes through this instance: a
/// directory made by another process (a run that was killed, then resumed) stays.
#[derive(Debug, Clone)]
pub struct LocalFiles {
    inner: Arc<LocalFileSystem>,
    /// For each file put here: the outermost directory its puts made.
    made: Arc<Mutex<HashMap<Path, PathBuf>>>,
}

impl LocalFiles {
    /// A store whose paths are absolute filesystem paths, as [`LocalFileSystem::new`]'s.
    pub fn new() -> Self {
        LocalFiles {
            inner: Arc::new(LocalFileSystem::new()),
            made: Arc::default(),
        }
    }

    /// The directory `location`'s file is in.
    fn parent_dir(inner: &LocalFileSystem, location: &Path) -> Option<PathBuf> {
        let file = inner.path_to_filesystem(location).ok()?;
        file.parent().map(PathBuf::from)
    }

    /// After `location` was deleted: removes the directories its puts made, when empty.
    fn unmake(inner: &LocalFileSystem, made: &Mutex<HashMap<Path, PathBuf>>, location: &Path) {
        let outermost = made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(location);
        if let (Some(outermost), Some(dir)) = (outermost, Self::parent_dir(inner, location)) {
            let depth = outermost.components().count();
            remove_empty_dirs(
                dir.ancestors()
                    .take_while(|d| d.components().count() >= depth),
            );
        }
    }
}

impl Default for LocalFiles {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for LocalFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalFiles {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // Directories are made only on the way to a file: the few stat calls before are all
        // this costs.
        let dir = Self::parent_dir(&self.inner, location);
        let missing = dir.as_deref().map_or(0, missing_dirs);
        let put = self.inner.put_opts(location, payload, opts).await;
        if let (Some(dir), 1..) = (&dir, missing) {
            let made = dir.ancestors().take(missing);
            if put.is_ok() {
                if let Some(outermost) = made.last() {
                    self.made
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(location.clone())
                        .and_modify(|known| {
                            if known.starts_with(outermost) {
                                *known = outermost.to_path_buf();
                            }
                        })
                        .or_insert_with(|| outermost.to_path_buf());
                }
            } else {
                remove_empty_dirs(made);
            }
        }
        put
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (inner, made) = (Arc::clone(&self.inner), Arc::clone(&self.made));
        // One at a time, each followed by the removal of the directories it leaves empty.
        locations
            .then(move |location| {
                let (inner, made) = (Arc::clone(&inner), Arc::clone(&made));
                async move {
                    let location = location?;
                    let deleted = inner.delete(&location).await;
                    if matches!(deleted, Ok(()) | Err(object_store::Error::NotFound { .. })) {
                        Self::unmake(&inner, &made, &location);
                    }
                    deleted.map(|()| location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// Runs `work` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LocalError> + Send + 'static,
) -> object_store::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(answer) => answer.map_err(object_store::Error::from),
        Err(source) => Err(object_store::Error::JoinError { source }),
    }
}

/// A fresh upload id: 128 random bits in hex.
fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A suffix that keeps concurrent calls' temporaries apart.
fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Why a call failed, before it becomes an [`object_store::Error`].
#[derive(Debug, thiserror::Error)]
enum LocalError {
    /// The upload's directory does not exist: never created, completed or aborted.
    #[error("no upload {id} of {path} in {dir}", dir = .dir.display())]
    UploadNotFound {
        id: String,
        path: String,
        dir: PathBuf,
    },
    /// The id is not one this store makes.
    #[error(
        "{id:?} is not an upload id of {STORE} (letters, digits, '-', '_'; at most {MAX_ID_LEN})"
    )]
    InvalidId { id: String },
    /// The path cannot name a file below the root.
    #[error("object path {path:?} {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// The root cannot be turned into a file URL.
    #[error("root {} is not an absolute directory path", .root.display())]
    Root { root: PathBuf },
    /// The object's path is a directory.
    #[error("{} is a directory", .file.display())]
    IsDirectory { file: PathBuf },
    /// The upload belongs to another object.
    #[error("upload {id} is of {recorded}, not of {path}")]
    WrongTarget {
        id: String,
        path: String,
        recorded: String,
    },
    /// A part that completing needs was never put.
    #[error("upload {id} of {path} has no part with index {index}")]
    MissingPart {
        id: String,
        path: String,
        index: usize,
    },
    /// A PartId this store did not make, or given for another index.
    #[error(
        "part {position} of the completion of {path}: {content_id:?} is not the PartId of a part with index {position}"
    )]
    BadPartId {
        path: String,
        position: usize,
        content_id: String,
    },
    /// A part file is not the part its PartId describes.
    #[error(
        "part {index} of upload {id} of {path} changed on disk: {found_len} bytes with xxh3 {found_hash:016x}, PartId says {len} bytes with xxh3 {hash:016x}"
    )]
    PartMismatch {
        id: String,
        path: String,
        index: usize,
        len: u64,
        hash: u64,
        found_len: u64,
        found_hash: u64,
    },
    /// A filesystem call failed.
    #[error("{op} {}: {source}", .file.display())]
    Io {
        op: &'static str,
        file: PathBuf,
        source: io::Error,
    },
}

impl From<LocalError> for object_store::Error {
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::UploadNotFound { ref path, .. } => object_store::Error::NotFound {
                path: path.clone(),
                source: Box::new(e),
            },
            _ => object_store::Error::Generic {
                store: STORE,
                source: Box::new(e),
            },
        }
    }
}

/// An `io::Result`'s error with what was being done to which file.
fn io_error(op: &'static str, file: &std::path::Path) -> impl FnOnce(io::Error) -> LocalError {
    let file = file.to_path_buf();
    move |source| LocalError::Io { op, file, source }
}

/// What a [`PartId`] says about its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartSum {
    index: usize,
    len: u64,
    hash: u64,
}

impl PartSum {
    fn content_id(&self) -> String {
        format!("{}:{}:{:016x}", self.index, self.len, self.hash)
    }

    fn parse(content_id: &str) -> Option<PartSum> {
        let mut fields = content_id.split(':');
        let index = fields.next()?.parse().ok()?;
        let len = fields.next()?.parse().ok()?;
        let hash = u64::from_str_radix(fields.next()?, 16).ok()?;
        if fields.next().is_some() {
            return None;
        }
        Some(PartSum { index, len, hash })
    }
}

/// One upload's files; knows nothing of their state until it looks.
#[derive(Debug)]
struct Upload {
    id: String,
    /// The object's [`Path`], as `target` records it.
    path: String,
    /// The object's file.
    object: PathBuf,
    /// `<dir of the object>/_landline-uploads`.
    staging: PathBuf,
    /// `<staging>/<id>`.
    dir: PathBuf,
}

impl Upload {
    fn not_found(&self) -> LocalError {
        LocalError::UploadNotFound {
            id: self.id.clone(),
            path: self.path.clone(),
            dir: self.dir.clone(),
        }
    }

    /// `e`, or [`LocalError::UploadNotFound`] if it says a file is missing and the upload's
    /// directory is gone (aborted or completed meanwhile).
    fn gone_or(&self, e: LocalError) -> LocalError {
        match &e {
            LocalError::Io { source, .. }
                if source.kind() == ErrorKind::NotFound && !self.dir.is_dir() =>
            {
                self.not_found()
            }
            _ => e,
        }
    }

    fn part_file(&self, index: usize) -> PathBuf {
        self.dir.join(format!("part-{index:06}"))
    }

    fn temp_file(&self, what: &str) -> PathBuf {
        self.dir.join(format!(".{what}-{}.tmp", nonce()))
    }

    /// Makes the upload's directory, complete with its `target`.
    fn create(&self) -> Result<(), LocalError> {
        if self.object.is_dir() {
            return Err(LocalError::IsDirectory {
                file: self.object.clone(),
            });
        }
        let fresh = self.staging.join(format!(".{}.new", self.id));
        // The object's directory and those above it that do not exist yet: this upload makes
        // them, and aborting it removes them again.
        let mut made = 0;
        let mut attempt = 1;
        loop {
            made = made.max(missing_dirs(self.object_dir()));
            let created = fs::create_dir_all(&self.staging)
                .map_err(io_error("creating", &self.staging))
                .and_then(|()| match fs::create_dir(&fresh) {
                    Ok(()) => Ok(true),
                    // Another call removed the empty staging directory in between.
                    Err(e) if e.kind() == ErrorKind::NotFound && attempt < RACE_ATTEMPTS => {
                        Ok(false)
                    }
                    Err(e) => Err(io_error("creating", &fresh)(e)),
                });
            match created {
                Ok(true) => break,
                Ok(false) => attempt += 1,
                Err(e) => {
                    self.unmake(made);
                    return Err(e);
                }
            }
        }
        let published = fs::write(fresh.join(TARGET_FILE), format!("{}\n", self.path))
            .map_err(io_error("writing", &fresh.join(TARGET_FILE)))
            .and_then(|()| match made {
                0 => Ok(()),
                _ => fs::write(fresh.join(MADE_FILE), format!("{made}\n"))
                    .map_err(io_error("writing", &fresh.join(MADE_FILE))),
            })
            .and_then(|()| fs::rename(&fresh, &self.dir).map_err(io_error("renaming", &fresh)));
        if published.is_err() {
            let _ = fs::remove_dir_all(&fresh);
            self.unmake(made);
        }
        published
    }

    /// The object's directory, `<dir>`.
    fn object_dir(&self) -> &std::path::Path {
        self.staging.parent().unwrap_or(&self.staging)
    }

    /// How many directories, `<dir>` and up, creating the upload made: what its `made` file
    /// says (in its directory, or in the `.gone` one an unfinished removal left), else 0.
    fn made(&self) -> usize {
        [self.dir.clone(), self.gone_dir()]
            .iter()
            .find_map(|dir| fs::read_to_string(dir.join(MADE_FILE)).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Removes the empty staging directory, then the `made` directories `<dir>` and up,
    /// innermost first, as long as they are empty.
    fn unmake(&self, made: usize) {
        let _ = fs::remove_dir(&self.staging);
        remove_empty_dirs(self.object_dir().ancestors().take(made));
    }

    fn gone_dir(&self) -> PathBuf {
        self.staging.join(format!(".{}.gone", self.id))
    }

    /// Checks that the upload exists and is of this object.
    fn check(&self) -> Result<(), LocalError> {
        let file = self.dir.join(TARGET_FILE);
        let recorded = match fs::read_to_string(&file) {
            Ok(recorded) => recorded,
            // The directory appears with its target, so no target means no upload.
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.not_found()),
            Err(e) => return Err(io_error("reading", &file)(e)),
        };
        let recorded = recorded.strip_suffix('\n').unwrap_or(&recorded);
        if recorded != self.path {
            return Err(LocalError::WrongTarget {
                id: self.id.clone(),
                path: self.path.clone(),
                recorded: recorded.to_owned(),
            });
        }
        Ok(())
    }

    /// Writes part `index`, replacing any earlier one.
    fn put_part(&self, index: usize, data: &PutPayload) -> Result<PartId, LocalError> {
        self.check()?;
        let write = || -> Result<PartSum, LocalError> {
            let mut temp = Temp::create(self.temp_file("part"))?;
            let mut hasher = Xxh3::new();
            let mut len = 0;
            for chunk in data {
                temp.file
                    .write_all(chunk)
                    .map_err(io_error("writing", &temp.path))?;
                hasher.update(chunk);
                len += chunk.len() as u64;
            }
            temp.persist(&self.part_file(index))?;
            Ok(PartSum {
                index,
                len,
                hash: hasher.digest(),
            })
        };
        let sum = write().map_err(|e| self.gone_or(e))?;
        Ok(PartId {
            content_id: sum.content_id(),
        })
    }

    /// Concatenates the parts into the object, replacing it, and removes the upload.
    fn complete(&self, parts: &[PartId]) -> Result<PutResult, LocalError> {
        self.check()?;
        let sums = parts
            .iter()
            .enumerate()
            .map(|(position, part)| match PartSum::parse(&part.content_id) {
                Some(sum) if sum.index == position => Ok(sum),
                _ => Err(LocalError::BadPartId {
                    path: self.path.clone(),
                    position,
                    content_id: part.content_id.clone(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let assemble = || -> Result<fs::Metadata, LocalError> {
            let temp = Temp::create(self.temp_file("object"))?;
            let mut out = BufWriter::with_capacity(COPY_BUFFER, &temp.file);
            for sum in &sums {
                self.copy_part(sum, &mut out)?;
            }
            out.flush().map_err(io_error("writing", &temp.path))?;
            drop(out);
            let metadata = temp
                .file
                .metadata()
                .map_err(io_error("reading the metadata of", &temp.path))?;
            if let Some(parent) = self.object.parent() {
                fs::create_dir_all(parent).map_err(io_error("creating", parent))?;
            }
            temp.persist(&self.object)?;
            Ok(metadata)
        };
        let metadata = assemble().map_err(|e| self.gone_or(e))?;
        // The object is in place: a leftover upload directory is litter, not a failure.
        if let Err(e) = self.remove() {
            tracing::warn!(
                upload = %self.id,
                object = %self.object.display(),
                error = %e,
                "completed the upload but could not remove its staging files"
            );
        }
        Ok(PutResult {
            e_tag: Some(e_tag(&metadata)),
            version: None,
            extensions: Default::default(),
        })
    }

    /// Appends the part `sum` describes to `out`, checking it on the way.
    fn copy_part(&self, sum: &PartSum, out: &mut impl Write) -> Result<(), LocalError> {
        let file = self.part_file(sum.index);
        let part = File::open(&file).map_err(|e| match e.kind() {
            ErrorKind::NotFound if self.dir.is_dir() => LocalError::MissingPart {
                id: self.id.clone(),
                path: self.path.clone(),
                index: sum.index,
            },
            _ => io_error("opening", &file)(e),
        })?;
        let mut reader = Hashing {
            inner: part,
            hasher: Xxh3::new(),
        };
        let len = io::copy(&mut reader, out).map_err(io_error("copying", &file))?;
        let hash = reader.hasher.digest();
        if len != sum.len || hash != sum.hash {
            return Err(LocalError::PartMismatch {
                id: self.id.clone(),
                path: self.path.clone(),
                index: sum.index,
                len: sum.len,
                hash: sum.hash,
                found_len: len,
                found_hash: hash,
            });
        }
        Ok(())
    }

    /// Removes the upload, and the directories creating it made when they are left empty;
    /// one that is already gone is fine.
    fn abort(&self) -> Result<(), LocalError> {
        match self.check() {
            Ok(()) | Err(LocalError::UploadNotFound { .. }) => {
                let made = self.made();
                self.remove()?;
                self.unmake(made);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the upload's directory out of sight by renaming it, then deletes it. Repeating
    /// this finishes the deletion an earlier attempt left undone.
    fn remove(&self) -> Result<(), LocalError> {
        let gone = self.gone_dir();
        match fs::rename(&self.dir, &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("renaming", &self.dir)(e)),
        }
        let mut attempt = 1;
        loop {
            match fs::remove_dir_all(&gone) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                // A put_part that was under way when the directory moved added a file.
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty && attempt < RACE_ATTEMPTS => {
                    attempt += 1;
                }
                Err(e) => return Err(io_error("removing", &gone)(e)),
            }
        }
        // Only succeeds when no other upload of the directory is left.
        let _ = fs::remove_dir(&self.staging);
        Ok(())
    }
}

/// A temporary file, removed on drop unless persisted.
struct Temp {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl Temp {
    fn create(path: PathBuf) -> Result<Temp, LocalError> {
        let file = File::create_new(&path).map_err(io_error("creating", &path))?;
        Ok(Temp {
            path,
            file,
            persisted: false,
        })
    }

    /// Renames the file to `to`, replacing what is there.
    fn persist(mut self, to: &std::path::Path) -> Result<(), LocalError> {
        fs::rename(&self.path, to).map_err(io_error("renaming", &self.path))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// How many of `dir` and the directories above it do not exist (counted from `dir` up to
/// the first that does).
fn missing_dirs(dir: &std::path::Path) -> usize {
    dir.ancestors()
        .take_while(
            |d| matches!(fs::symlink_metadata(d), Err(e) if e.kind() == ErrorKind::NotFound),
        )
        .count()
}

/// Removes `dirs` in order (innermost first), stopping at the first that cannot be removed:
/// one that is not empty, or is not there.
fn remove_empty_dirs<'a>(dirs: impl IntoIterator<Item = &'a std::path::Path>) {
    for dir in dirs {
        if fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

/// A reader that hashes what it reads.
struct Hashing<R> {
    inner: R,
    hasher: Xxh3,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The ETag `LocalFileSystem` gives the same file (inode, mtime in µs, size), so a later
/// `head` of the object agrees with what completing returned.
fn e_tag(metadata: &fs::Metadata) -> String {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(metadata);
    #[cfg(not(unix))]
    let inode = 0u64;
    let mtime = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{inode:x}-{mtime:x}-{:x}\"", metadata.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::local::LocalFileSystem;

    fn store(dir: &tempfile::TempDir) -> LocalMultipart {
        LocalMultipart::new(dir.path())
    }

    fn staging(dir: &tempfile::TempDir, sub: &str) -> PathBuf {
        dir.path().join(sub).join(STAGING_DIR)
    }

    async fn put(
        store: &LocalMultipart,
        path: &Path,
        id: &MultipartId,
        index: usize,
        data: &'static str,
    ) -> PartId {
        store
            .put_part(path, id, index, PutPayload::from(data))
            .await
            .unwrap()
    }

    fn is_not_found(e: &object_store::Error) -> bool {
        matches!(e, object_store::Error::NotFound { .. })
    }

    #[tokio::test]
    async fn parts_put_out_of_order_complete_in_index_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("out/date=2026-01-01/x.jsonl.gz");
        let id = store.create_multipart(&path).await.unwrap();
        assert!(staging(&dir, "out/date=2026-01-01").join(&id).is_dir());
        let p2 = put(&store, &path, &id, 2, "three").await;
        let p0 = put(&store, &path, &id, 0, "one ").await;
        // A payload of several chunks.
        let payload: PutPayload = [
            bytes::Bytes::from_static(b"tw"),
            bytes::Bytes::from_static(b"o "),
        ]
        .into_iter()
        .collect();
        let p1 = store.put_part(&path, &id, 1, payload).await.unwrap();
        let result = store
            .complete_multipart(&path, &id, vec![p0, p1, p2])
            .await
            .unwrap();
        let file = dir.path().join("out/date=2026-01-01/x.jsonl.gz");
        assert_eq!(fs::read(&file).unwrap(), b"one two three");
        // No staging left behind, not even the empty directory.
        assert!(!staging(&dir, "out/date=2026-01-01").exists());
        // The ETag is the one LocalFileSystem reports for the file.
        let fs_store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let head = fs_store.head(&path).await.unwrap();
        assert_eq!(result.e_tag, head.e_tag);
    }

    #[tokio::test]
    async fn another_instance_continues_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::from("x.jsonl");
        let first = store(&dir);
        let id = first.create_multipart(&path).await.unwrap();
        let p0 = put(&first, &path, &id, 0, "a").await;
        let p1 = put(&first, &path, &id, 1, "b").await;
        drop(first);
        // The state a checkpoint would hold: the id and the PartIds, as text.
        let (id, ids) = (id.clone(), [p0.content_id, p1.content_id]);
        let second = store(&dir);
        let p2 = put(&second, &path, &id, 2, "c").await;
        let parts = ids
            .into_iter()
            .map(|content_id| PartId { content_id })
            .chain([p2])
            .collect();
        second.complete_multipart(&path, &id, parts).await.unwrap();
        assert_eq!(fs::read(dir.path().join("x.jsonl")).unwrap(), b"abc");
    }

    #[tokio::test]
    async fn parts_larger_than_the_copy_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("big");
        let id = store.create_multipart(&path).await.unwrap();
        let data: Vec<Vec<u8>> = (0..3u8)
            .map(|n| {
                (0..COPY_BUFFER * 2 + 17)
                    .map(|i| (i % 251) as u8 ^ n)
                    .collect()
            })
            .collect();
        let mut parts = Vec::new();
        for (index, part) in data.iter().enumerate() {
            let payload = PutPayload::from(part.clone());
            parts.push(store.put_part(&path, &id, index, payload).await.unwrap());
        }
        store.complete_multipart(&path, &id, parts).await.unwrap();
        assert_eq!(fs::read(dir.path().join("big")).unwrap(), data.concat());
    }

    #[tokio::test]
    async fn re_putting_a_part_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("x");
        let id = store.create_multipart(&path).await.unwrap();
        let stale = put(&store, &path, &id, 0, "old").await;
        let fresh = put(&store, &path, &id, 0, "new!").await;
        // The replaced part's PartId no longer matches the file.
        let err = store
            .complete_multipart(&path, &id, vec![stale])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("changed on disk"), "{err}");
        store
            .complete_multipart(&path, &id, vec![fresh])
            .await
            .unwrap();
        assert_eq!(fs::read(dir.path().join("x")).unwrap(), b"new!");
    }

    #[tokio::test]
    async fn abort_removes_everything_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("sub/x");
        let id = store.create_multipart(&path).await.unwrap();
        put(&store, &path, &id, 0, "a").await;
        store.abort_multipart(&path, &id).await.unwrap();
        assert!(!staging(&dir, "sub").exists());
        assert!(!dir.path().join("sub/x").exists());
        // `sub` was made for the upload, and goes with it.
        assert!(!dir.path().join("sub").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        store.abort_multipart(&path, &id).await.unwrap();
        // And after that the upload is gone for every other call.
        let err = store
            .put_part(&path, &id, 1, PutPayload::from("b"))
            .await
            .unwrap_err();
        assert!(is_not_found(&err), "{err}");
        let err = store
            .complete_multipart(&path, &id, vec![])
            .await
            .unwrap_err();
        assert!(is_not_found(&err), "{err}");
        assert!(!dir.path().join("sub/x").exists());
    }

    /// The names in `dir`, sorted.
    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn abort_removes_the_directories_creating_made() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("keep")).unwrap();
        let store = store(&dir);
        let path = Path::from("keep/new/dir/date=2026-01-01/x.jsonl.gz");
        let id = store.create_multipart(&path).await.unwrap();
        let upload = store.upload(&path, &id).unwrap();
        assert_eq!(
            fs::read_to_string(upload.dir.join(MADE_FILE)).unwrap(),
            "3\n"
        );
        put(&store, &path, &id, 0, "a").await;
        store.abort_multipart(&path, &id).await.unwrap();
        // Innermost first, up to the directory that was there before.
        assert!(!dir.path().join("keep/new").exists());
        assert_eq!(names(&dir.path().join("keep")), Vec::<String>::new());
        // Again: nothing left to remove, and nothing else is touched.
        store.abort_multipart(&path, &id).await.unwrap();
        assert!(dir.path().join("keep").is_dir());
    }

    #[tokio::test]
    async fn abort_stops_at_a_directory_that_is_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("new/a/b/x");
        let id = store.create_multipart(&path).await.unwrap();
        // Something else lands in a directory the upload made.
        fs::write(dir.path().join("new/other"), "other").unwrap();
        store.abort_multipart(&path, &id).await.unwrap();
        assert_eq!(names(&dir.path().join("new")), ["other"]);
        // A second upload of the same directory: made nothing, so removes nothing but its own.
        let path = Path::from("new/x");
        let id = store.create_multipart(&path).await.unwrap();
        assert!(
            !store
                .upload(&path, &id)
                .unwrap()
                .dir
                .join(MADE_FILE)
                .exists()
        );
        store.abort_multipart(&path, &id).await.unwrap();
        assert_eq!(names(&dir.path().join("new")), ["other"]);
    }

    #[tokio::test]
    async fn another_instance_aborts_and_removes_the_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::from("a/b/x");
        let first = store(&dir);
        let id = first.create_multipart(&path).await.unwrap();
        put(&first, &path, &id, 0, "a").await;
        drop(first);
        store(&dir).abort_multipart(&path, &id).await.unwrap();
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn completing_keeps_the_directories() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("a/b/x");
        let id = store.create_multipart(&path).await.unwrap();
        let part = put(&store, &path, &id, 0, "a").await;
        store
            .complete_multipart(&path, &id, vec![part])
            .await
            .unwrap();
        assert_eq!(names(&dir.path().join("a/b")), ["x"]);
        // Aborting the completed upload is a no-op that leaves the object and its directories.
        store.abort_multipart(&path, &id).await.unwrap();
        assert_eq!(fs::read(dir.path().join("a/b/x")).unwrap(), b"a");
    }

    /// The [`Path`] of `rel` below `dir`, as [`LocalFiles`] (rooted at `/`) names it.
    fn abs(dir: &tempfile::TempDir, rel: &str) -> Path {
        Path::from_absolute_path(dir.path().join(rel)).unwrap()
    }

    #[tokio::test]
    async fn local_files_remove_the_directories_a_put_made() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("keep")).unwrap();
        let store = LocalFiles::new();
        let file = abs(&dir, "keep/new/_landline/checkpoints/p/2026-01-01.json");
        store.put(&file, PutPayload::from("{}")).await.unwrap();
        // Written again and again (a checkpoint after each part): the first put's record stays.
        store.put(&file, PutPayload::from("{1}")).await.unwrap();
        assert_eq!(
            store.get(&file).await.unwrap().bytes().await.unwrap(),
            "{1}"
        );
        store.delete(&file).await.unwrap();
        assert_eq!(names(&dir.path().join("keep")), Vec::<String>::new());
        // A file in a directory that was there: the directory stays.
        let file = abs(&dir, "keep/x.json");
        store.put(&file, PutPayload::from("{}")).await.unwrap();
        store.delete(&file).await.unwrap();
        assert!(dir.path().join("keep").is_dir());
        // Deleting a file that is already gone is NotFound, as LocalFileSystem says.
        let err = store.delete(&file).await.unwrap_err();
        assert!(is_not_found(&err), "{err}");
    }

    #[tokio::test]
    async fn local_files_stop_at_a_directory_that_is_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFiles::new();
        let file = abs(&dir, "new/a/b/c.json");
        store.put(&file, PutPayload::from("{}")).await.unwrap();
        fs::write(dir.path().join("new/a/other"), "other").unwrap();
        store.delete(&file).await.unwrap();
        assert_eq!(names(&dir.path().join("new/a")), ["other"]);
        // A file deleted behind the store's back: its directories still go when asked to.
        let file = abs(&dir, "new2/d/e.json");
        store.put(&file, PutPayload::from("{}")).await.unwrap();
        fs::remove_file(dir.path().join("new2/d/e.json")).unwrap();
        let err = store.delete(&file).await.unwrap_err();
        assert!(is_not_found(&err), "{err}");
        assert!(!dir.path().join("new2").exists());
    }

    /// A run's order on a new local destination: the first checkpoint (through
    /// [`LocalFiles`]), the upload, then after a failure the abort and the checkpoint's
    /// deletion. Nothing the run made is left.
    #[tokio::test]
    async fn a_failed_run_leaves_no_directories() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("x")).unwrap();
        let state = LocalFiles::new();
        let checkpoint = abs(&dir, "x/new/dir/_landline/checkpoints/p/2026-01-01.json");
        state
            .put(&checkpoint, PutPayload::from("{}"))
            .await
            .unwrap();
        let data = LocalMultipart::new("/");
        let object = abs(&dir, "x/new/dir/date=2026-01-01/out.jsonl.gz");
        let id = data.create_multipart(&object).await.unwrap();
        put(&data, &object, &id, 0, "a").await;
        state
            .put(&checkpoint, PutPayload::from("{1}"))
            .await
            .unwrap();
        data.abort_multipart(&object, &id).await.unwrap();
        // The checkpoint still holds `x/new/dir`.
        assert_eq!(names(&dir.path().join("x/new/dir")), ["_landline"]);
        state.delete(&checkpoint).await.unwrap();
        assert_eq!(names(&dir.path().join("x")), Vec::<String>::new());
    }

    #[tokio::test]
    async fn abort_leaves_other_uploads_of_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let (a, b) = (Path::from("a"), Path::from("b"));
        let id_a = store.create_multipart(&a).await.unwrap();
        let id_b = store.create_multipart(&b).await.unwrap();
        store.abort_multipart(&a, &id_a).await.unwrap();
        let part = put(&store, &b, &id_b, 0, "b").await;
        store
            .complete_multipart(&b, &id_b, vec![part])
            .await
            .unwrap();
        assert!(!staging(&dir, "").exists());
    }

    #[tokio::test]
    async fn a_part_that_does_not_match_leaves_the_old_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("x");
        let file = dir.path().join("x");
        fs::write(&file, "old object").unwrap();
        let id = store.create_multipart(&path).await.unwrap();
        let p0 = put(&store, &path, &id, 0, "abc").await;
        let p1 = put(&store, &path, &id, 1, "def").await;
        // Part 1 changes on disk behind the caller's back, same length.
        fs::write(store.upload(&path, &id).unwrap().part_file(1), "xyz").unwrap();
        let err = store
            .complete_multipart(&path, &id, vec![p0.clone(), p1.clone()])
            .await
            .unwrap_err();
        assert!(matches!(err, object_store::Error::Generic { .. }), "{err}");
        assert!(err.to_string().contains("part 1"), "{err}");
        assert_eq!(fs::read(&file).unwrap(), b"old object");
        // A made-up PartId, and PartIds out of order, fail the same way.
        let made_up = PartId {
            content_id: "0:3:0".into(),
        };
        for parts in [vec![made_up], vec![p1.clone(), p0.clone()]] {
            let err = store
                .complete_multipart(&path, &id, parts)
                .await
                .unwrap_err();
            assert!(matches!(err, object_store::Error::Generic { .. }), "{err}");
        }
        // A part never put.
        let p1 = put(&store, &path, &id, 1, "def").await;
        let p2 = PartId {
            content_id: "2:1:0".into(),
        };
        let err = store
            .complete_multipart(&path, &id, vec![p0.clone(), p1.clone(), p2])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no part with index 2"), "{err}");
        assert_eq!(fs::read(&file).unwrap(), b"old object");
        // No temporaries left, and the upload is still there to be fixed.
        let upload = store.upload(&path, &id).unwrap();
        let names: Vec<_> = fs::read_dir(&upload.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        store
            .complete_multipart(&path, &id, vec![p0, p1])
            .await
            .unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"abcdef");
    }

    #[tokio::test]
    async fn completing_replaces_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("x");
        let file = dir.path().join("x");
        fs::write(&file, "old").unwrap();
        let id = store.create_multipart(&path).await.unwrap();
        let part = put(&store, &path, &id, 0, "new").await;
        assert_eq!(fs::read(&file).unwrap(), b"old");
        let old = fs::File::open(&file).unwrap();
        store
            .complete_multipart(&path, &id, vec![part])
            .await
            .unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"new");
        // Replaced by a rename: a reader that had the old file open still reads it whole.
        let mut held = String::new();
        (&old).read_to_string(&mut held).unwrap();
        assert_eq!(held, "old");
    }

    #[tokio::test]
    async fn completing_after_abort_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("x");
        let id = store.create_multipart(&path).await.unwrap();
        let part = put(&store, &path, &id, 0, "a").await;
        store.abort_multipart(&path, &id).await.unwrap();
        let err = store
            .complete_multipart(&path, &id, vec![part])
            .await
            .unwrap_err();
        assert!(is_not_found(&err), "{err}");
        // Never created is the same.
        let err = store
            .put_part(&path, &new_id(), 0, PutPayload::from("a"))
            .await
            .unwrap_err();
        assert!(is_not_found(&err), "{err}");
    }

    #[tokio::test]
    async fn an_id_belongs_to_its_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let (x, y) = (Path::from("d/x"), Path::from("d/y"));
        let id = store.create_multipart(&x).await.unwrap();
        let err = store
            .put_part(&y, &id, 0, PutPayload::from("a"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not of d/y"), "{err}");
        let err = store.abort_multipart(&y, &id).await.unwrap_err();
        assert!(!is_not_found(&err), "{err}");
        assert!(store.upload(&x, &id).unwrap().dir.is_dir());
        // In another directory the id is just unknown.
        let err = store
            .put_part(&Path::from("e/x"), &id, 0, PutPayload::from("a"))
            .await
            .unwrap_err();
        assert!(is_not_found(&err), "{err}");
    }

    #[tokio::test]
    async fn ids_cannot_escape_the_staging_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let path = Path::from("d/x");
        let id = store.create_multipart(&path).await.unwrap();
        // A directory an escaping id could reach: d/_landline-uploads/../victim = d/victim.
        fs::create_dir(dir.path().join("d/victim")).unwrap();
        fs::write(dir.path().join("d/victim/target"), "d/x\n").unwrap();
        for bad in [
            "../victim",
            "..",
            ".",
            "",
            "a/b",
            ".x.gone",
            "x\0",
            &"a".repeat(200),
        ] {
            let bad = bad.to_string();
            let err = store
                .put_part(&path, &bad, 0, PutPayload::from("a"))
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("is not an upload id"),
                "{bad:?}: {err}"
            );
            store
                .complete_multipart(&path, &bad, vec![])
                .await
                .unwrap_err();
            store.abort_multipart(&path, &bad).await.unwrap_err();
        }
        assert!(dir.path().join("d/victim/target").is_file());
        assert!(store.upload(&path, &id).unwrap().dir.is_dir());
        assert!(!dir.path().join("d/x").exists());
    }

    #[tokio::test]
    async fn paths_stay_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        for bad in [
            Path::from(""),
            Path::from("_landline-uploads/x"),
            Path::from("d/_landline-uploads"),
        ] {
            let err = store.create_multipart(&bad).await.unwrap_err();
            assert!(
                matches!(err, object_store::Error::Generic { .. }),
                "{bad}: {err}"
            );
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // A directory is not an object.
        fs::create_dir(dir.path().join("d")).unwrap();
        store.create_multipart(&Path::from("d")).await.unwrap_err();
    }

    #[test]
    fn maps_paths_as_local_file_system_does() {
        let store = LocalMultipart::new("/");
        let fs_store = LocalFileSystem::new();
        for abs in [
            "/tmp/x/y.jsonl.gz",
            "/tmp/a b/c%d#e.gz",
            "/tmp/ünï/[x]{y}~z.gz",
        ] {
            let path = Path::from_absolute_path(abs).unwrap();
            let ours = store.object_file(&path).unwrap();
            assert_eq!(ours, PathBuf::from(abs));
            assert_eq!(ours, fs_store.path_to_filesystem(&path).unwrap());
        }
        // Path::from encodes `.` and `..` segments; they stay literal names, as in
        // LocalFileSystem, rather than moving up a directory.
        let path = Path::from("tmp/a/../b");
        let ours = store.object_file(&path).unwrap();
        assert_eq!(ours, PathBuf::from("/tmp/a/%2E%2E/b"));
        assert_eq!(ours, fs_store.path_to_filesystem(&path).unwrap());
    }

    #[test]
    fn part_ids_round_trip() {
        let sum = PartSum {
            index: 7,
            len: 5 << 20,
            hash: u64::MAX,
        };
        assert_eq!(PartSum::parse(&sum.content_id()), Some(sum));
        for bad in ["", "1", "1:2", "1:2:zz", "1:2:3:4", "-1:2:3"] {
            assert_eq!(PartSum::parse(bad), None, "{bad}");
        }
    }
}
