//! The sink stage: where objects go, and the streaming writer that puts them there.
//!
//! [`Destination::open`] turns a destination URL into an object store and a path: `s3://`
//! (configured the standard AWS way, from environment variables), `gs://`, `az://`/`abfss://`,
//! `file:///abs/path`, or a plain relative or absolute path. Writing is done by
//! [`ObjectWriter`], the same for every store, through object_store's `MultipartStore` (upload
//! ids and part ids as plain data); its contract (part sizes, numbering, limits, atomic
//! completion, no abort on drop) is on the type. Local files use [`local::LocalMultipart`]:
//! parts are files under `_landline-uploads/` beside the target, concatenated and renamed
//! into place on completion, so a local destination is as atomic as S3 and as resumable.

pub mod cleanup;
pub mod digest;
pub mod local;
pub mod multipart;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, MultipartId, ObjectStore, PutMultipartOptions, PutPayload,
    PutResult, RetryConfig,
};
use url::Url;

use crate::tls::{CaBundle, CaBundleError};

pub use multipart::{
    MAX_PARTS, MIN_PART_SIZE, ObjectWriter, PartSizer, UploadHandle, UploadState, UploadedPart,
    Written,
};

/// Why an object could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The destination is not a usable URL or path.
    #[error("destination {url:?}: {reason}")]
    Destination {
        /// The destination as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A plain-HTTP endpoint that is not on this machine, without `AWS_ALLOW_HTTP=true`.
    #[error(
        "S3 endpoint {endpoint} uses plain http on a non-loopback address; use https, or set AWS_ALLOW_HTTP=true if you really mean it"
    )]
    InsecureEndpoint {
        /// The endpoint URL.
        endpoint: String,
    },
    /// The object store could not be configured.
    #[error("configuring the object store for {location}: {}", crate::errors::one_line(.source))]
    Store {
        /// The destination.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Starting the multipart upload failed (credentials, bucket, permissions, network).
    #[error("starting the upload of {location}: {}{}", access_hint(.source), one_line(.source))]
    Create {
        /// The destination.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Uploading a part failed after the store's retries.
    #[error("uploading part {part} of {location}: {}", crate::errors::one_line(.source))]
    Part {
        /// The destination.
        location: String,
        /// Part number, from 1.
        part: u64,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// More than [`MAX_PARTS`] parts.
    #[error("{location} needs more than {MAX_PARTS} parts; raise [sink] part_size_bytes")]
    TooManyParts {
        /// The destination.
        location: String,
    },
    /// Completing the upload failed, so the object was not created.
    #[error("completing the upload of {location}: {}", crate::errors::one_line(.source))]
    Complete {
        /// The destination.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Aborting the upload failed: an incomplete upload may be left behind.
    #[error(
        "aborting the upload of {location} failed after {attempts} attempts (an incomplete multipart upload may remain; an AbortIncompleteMultipartUpload lifecycle rule cleans it up){}",
        .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    Abort {
        /// The destination.
        location: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: Option<Box<object_store::Error>>,
    },
    /// An object of an unfinished run being discarded could not be deleted.
    #[error("deleting {location}, an object of the unfinished run being discarded: {}", crate::errors::one_line(.source))]
    Delete {
        /// The object.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An upload failed, and aborting it failed too.
    #[error("{cause}; then {abort}")]
    AbortFailed {
        /// What made the run abort.
        cause: Box<SinkError>,
        /// How the abort failed.
        abort: Box<SinkError>,
    },
    /// The store no longer has the upload (aborted, or expired by a lifecycle rule).
    #[error(
        "the store no longer has upload {upload_id} of {location} (needed for part {part}): it was aborted or expired; start the run afresh"
    )]
    UploadGone {
        /// The destination.
        location: String,
        /// The upload's id.
        upload_id: String,
        /// The part that found it gone.
        part: u64,
    },
    /// A checkpoint could not be written or deleted.
    #[error("checkpoint {location}: {reason}")]
    Checkpoint {
        /// Where the checkpoint goes.
        location: String,
        /// What failed.
        reason: String,
    },
    /// A background upload task panicked or was cancelled.
    #[error("an upload task failed: {0}")]
    Task(String),
    /// The CA bundle named by `AWS_CA_BUNDLE` could not be used.
    #[error("AWS_CA_BUNDLE: {0}")]
    CaBundle(#[source] CaBundleError),
    /// The AWS profile files could not be read (for the region of the profile).
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
}

/// How the object store's HTTP client behaves: timeouts, retries and extra trusted CAs.
///
/// Requests to the store are retried by object_store on 5xx, 429, timeouts and connection
/// failures, with exponential backoff, until `retry.max_attempts` or `retry.timeout`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Limit for one whole request (a part upload included).
    pub timeout: Duration,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Retries of each request.
    pub retry: StoreRetry,
    /// CAs trusted besides the system's (else `AWS_CA_BUNDLE` from the environment, if set).
    pub ca_bundle: Option<CaBundle>,
    /// S3: send each part with its SHA-256 checksum (`x-amz-checksum-sha256`), which the
    /// store checks before it accepts the part. The SHA-256 is the one SigV4 computes to sign
    /// the payload anyway, so it costs nothing more.
    pub part_checksums: bool,
    /// S3: the AWS profile whose credentials and region to use (`[sink] profile`), as the
    /// AWS CLI's `--profile`: it wins over `AWS_PROFILE`. See [`crate::aws`].
    pub profile: Option<String>,
}

/// Retries of each request to the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreRetry {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff (doubles per retry, with jitter).
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt.
    pub timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: StoreRetry::default(),
            ca_bundle: None,
            part_checksums: true,
            profile: None,
        }
    }
}

impl Default for StoreRetry {
    fn default() -> Self {
        StoreRetry {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            timeout: Duration::from_secs(180),
        }
    }
}

impl StoreOptions {
    fn client_options(&self, ca_bundle: Option<&CaBundle>) -> Result<ClientOptions, SinkError> {
        let mut options = ClientOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.connect_timeout);
        if let Some(bundle) = ca_bundle {
            for certificate in bundle.store_certificates().map_err(SinkError::CaBundle)? {
                options = options.with_root_certificate(certificate);
            }
        }
        Ok(options)
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.retry.initial_backoff,
                max_backoff: self.retry.max_backoff,
                base: 2.0,
            },
            max_retries: self.retry.max_attempts.saturating_sub(1) as usize,
            retry_timeout: self.retry.timeout,
        }
    }
}

/// What to check when the store refused the request itself.
fn access_hint(e: &object_store::Error) -> &'static str {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            "access denied: the store rejected the credentials (a wrong secret key shows as \
             SignatureDoesNotMatch) or they may not write to this bucket; check \
             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile or role) and the bucket \
             policy. "
        }
        _ => "",
    }
}

/// The error and its causes on one line.
fn one_line(e: &object_store::Error) -> String {
    crate::errors::one_line(e)
}

/// A resolved destination: the store, the object's path in it, and a printable location.
#[derive(Clone)]
pub struct Destination {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// The same store's multipart uploads, driven with explicit ids (see [`ObjectWriter`]).
    pub multipart: Arc<dyn MultipartStore>,
    /// The object's path within the store.
    pub path: Path,
    /// The destination as users know it (`s3://bucket/key`, `file:///…`); holds no secrets.
    pub location: String,
    /// Whether the store enforces S3's part rules (5 MiB minimum, 10,000 parts).
    pub s3_rules: bool,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("store", &self.store)
            .field("path", &self.path)
            .field("location", &self.location)
            .finish()
    }
}

impl Destination {
    /// The whole object, for small ones (a pipeline file); the error is on one line.
    pub async fn read_whole(&self) -> Result<Vec<u8>, String> {
        use object_store::ObjectStoreExt as _;
        let got = self
            .store
            .get(&self.path)
            .await
            .map_err(|e| crate::errors::one_line(&e))?;
        let bytes = got.bytes().await.map_err(|e| crate::errors::one_line(&e))?;
        Ok(bytes.to_vec())
    }

    /// `path` in an in-memory store (for tests and examples).
    pub fn in_memory(path: &str) -> Destination {
        let store = Arc::new(object_store::memory::InMemory::new());
        Destination {
            store: Arc::clone(&store) as Arc<dyn ObjectStore>,
            multipart: store,
            path: Path::from(path),
            location: format!("memory:///{path}"),
            s3_rules: false,
        }
    }

    /// Checks the form of `dest` without opening anything: a supported scheme, an S3 URL with
    /// a bucket and a key, a file name rather than a directory.
    pub fn check(dest: &str) -> Result<(), SinkError> {
        let bad = |reason: &str| SinkError::Destination {
            url: dest.to_owned(),
            reason: reason.to_owned(),
        };
        let url = match Url::parse(dest) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ if dest.ends_with('/') => {
                return Err(bad("is a directory; give the object's file name"));
            }
            _ => return Ok(()),
        };
        match url.scheme() {
            "s3" | "s3a" => {
                let key = url.path().trim_start_matches('/');
                if url.host_str().unwrap_or_default().is_empty()
                    || key.is_empty()
                    || key.ends_with('/')
                {
                    return Err(bad("expected s3://BUCKET/KEY with a non-empty key"));
                }
                Ok(())
            }
            "file" => url
                .to_file_path()
                .map(drop)
                .map_err(|()| bad("not an absolute file:// path")),
            "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" => Ok(()),
            other => Err(bad(&format!(
                "unsupported scheme {other:?} (use s3://, gs://, az://, file:// or a path)"
            ))),
        }
    }

    /// Opens `dest` (a URL or a filesystem path). Store settings come from `env`, normally
    /// `std::env::vars()`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`, `AWS_CA_BUNDLE`, and the `GOOGLE_*`/`AZURE_*` equivalents. Without
    /// static keys in `env`, or with a profile (`options.profile`, `AWS_PROFILE`), S3
    /// credentials come from the AWS CLI's chain ([`crate::aws`]: profiles, SSO,
    /// `credential_process`, roles, web identity, ECS, IMDS), read from `env` too (`HOME`
    /// included), and the region from the profile when `env` names none. `options`'
    /// timeouts, retries and CA bundle apply to every store; the profile and part checksums
    /// to S3.
    pub fn open(
        dest: &str,
        options: &StoreOptions,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Destination, SinkError> {
        crate::tls::crypto();
        let bad = |reason: String| SinkError::Destination {
            url: dest.to_owned(),
            reason,
        };
        let url = match Url::parse(dest) {
            Ok(url) if url.scheme().len() > 1 => url,
            // No scheme (or a Windows drive letter): a filesystem path.
            _ => return local(dest),
        };
        match url.scheme() {
            "s3" | "s3a" => s3(&url, options, env),
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("not an absolute file:// path".into()))?;
                local(&path.to_string_lossy())
            }
            "gs" => {
                // The client options first: the environment's client keys (allow_http…)
                // then change them rather than being replaced.
                let builder = env_config::<GoogleConfigKey>(env, "GOOGLE_").fold(
                    GoogleCloudStorageBuilder::new()
                        .with_url(dest)
                        .with_client_options(options.client_options(options.ca_bundle.as_ref())?)
                        .with_retry(options.retry_config()),
                    |b, (key, value)| b.with_config(key, value),
                );
                let store = builder.build().map(Arc::new);
                cloud(dest, &url, store.map(|s| (Arc::clone(&s) as _, s as _)))
            }
            "az" | "adl" | "azure" | "abfs" | "abfss" => {
                let builder = env_config::<AzureConfigKey>(env, "AZURE_").fold(
                    MicrosoftAzureBuilder::new()
                        .with_url(dest)
                        .with_client_options(options.client_options(options.ca_bundle.as_ref())?)
                        .with_retry(options.retry_config()),
                    |b, (key, value)| b.with_config(key, value),
                );
                let store = builder.build().map(Arc::new);
                let blocks =
                    |s: Arc<MicrosoftAzure>| (Arc::clone(&s) as _, Arc::new(AzureBlocks(s)) as _);
                cloud(dest, &url, store.map(blocks))
            }
            other => Err(bad(format!(
                "unsupported scheme {other:?} (use s3://, gs://, az://, file:// or a path)"
            ))),
        }
    }
}

impl Destination {
    /// Another object of the same bucket or container (or filesystem), reached through this
    /// destination's client: the objects of a sequence share one client, its connections and
    /// its credentials. `dest` must name the same bucket; it is not checked here.
    pub fn sibling(&self, dest: &str) -> Result<Destination, SinkError> {
        let bad = |reason: String| SinkError::Destination {
            url: dest.to_owned(),
            reason,
        };
        let url = match Url::parse(dest) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ => return local(dest),
        };
        let path = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("not an absolute file:// path".into()))?;
                return local(&path.to_string_lossy());
            }
            "s3" | "s3a" => {
                let key = url.path().trim_start_matches('/');
                Path::parse(key).map_err(|e| bad(e.to_string()))?
            }
            _ => {
                object_store::ObjectStoreScheme::parse(&url)
                    .map_err(|e| bad(e.to_string()))?
                    .1
            }
        };
        Ok(Destination {
            store: Arc::clone(&self.store),
            multipart: Arc::clone(&self.multipart),
            path,
            location: dest.to_owned(),
            s3_rules: self.s3_rules,
        })
    }
}

/// The variables of `env` named `PREFIX…` that are configuration keys `K` of a store.
fn env_config<K: std::str::FromStr>(
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
) -> impl Iterator<Item = (K, String)> {
    env.into_iter().filter_map(move |(name, value)| {
        let key = name
            .starts_with(prefix)
            .then(|| name.to_ascii_lowercase().parse::<K>().ok())??;
        Some((key, value))
    })
}

/// A GCS or Azure destination from its built store (objects, and multipart uploads): the
/// object's path is the URL's path after the container.
fn cloud(
    dest: &str,
    url: &Url,
    store: object_store::Result<(Arc<dyn ObjectStore>, Arc<dyn MultipartStore>)>,
) -> Result<Destination, SinkError> {
    let store_error = |source| SinkError::Store {
        location: dest.to_owned(),
        source,
    };
    let (store, multipart) = store.map_err(store_error)?;
    let (_, path) =
        object_store::ObjectStoreScheme::parse(url).map_err(|source| store_error(source.into()))?;
    Ok(Destination {
        store,
        multipart,
        path,
        location: dest.to_owned(),
        s3_rules: true,
    })
}

/// Azure's block-list uploads as [`ObjectWriter`] drives them. object_store's Azure
/// `MultipartStore` makes no request to start an upload and names it with an empty id (its
/// parts are blocks of the blob, committed by the Put Block List that completes it), and it
/// refuses `create_multipart_opts` with attributes: its completion cannot set them. Here an
/// upload gets an id of its own, so that checkpoints can tell a started upload from one not
/// yet named, and the attributes (`Content-Type`, `Content-Encoding`) are left out rather than
/// failing the run: the blob gets the service's default `Content-Type`.
#[derive(Debug)]
struct AzureBlocks(Arc<MicrosoftAzure>);

#[async_trait::async_trait]
impl MultipartStore for AzureBlocks {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        // No request: Azure has nothing to create until the first block.
        self.0.create_multipart(path).await?;
        Ok(format!("azure-blocks-{:016x}", rand::random::<u64>()))
    }

    async fn create_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<MultipartId> {
        if !opts.attributes.is_empty() || !opts.tags.is_empty() {
            tracing::debug!(
                %path,
                "Azure: the blob's attributes and tags are not set (object_store's block-list completion has none)"
            );
        }
        self.create_multipart(path).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        self.0.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.0.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        // A no-op on Azure: uncommitted blocks are dropped by the service (after a week).
        self.0.abort_multipart(path, id).await
    }
}

fn local(path: &str) -> Result<Destination, SinkError> {
    let bad = |reason: String| SinkError::Destination {
        url: path.to_owned(),
        reason,
    };
    let abs = std::path::absolute(path).map_err(|e| bad(e.to_string()))?;
    if path.ends_with('/') || abs.is_dir() {
        return Err(bad("is a directory; give the object's file name".into()));
    }
    let object = Path::from_absolute_path(&abs).map_err(|e| bad(e.to_string()))?;
    Ok(Destination {
        store: Arc::new(local::LocalFiles::new()),
        multipart: Arc::new(local::LocalMultipart::new("/")),
        path: object,
        location: format!("file://{}", abs.display()),
        s3_rules: false,
    })
}

fn s3(
    url: &Url,
    options: &StoreOptions,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Destination, SinkError> {
    let location = url.to_string();
    let key = url.path().trim_start_matches('/');
    if key.is_empty() || key.ends_with('/') {
        return Err(SinkError::Destination {
            url: location,
            reason: "expected s3://BUCKET/KEY with a non-empty key".into(),
        });
    }
    let bucket = S3Bucket::open(url, options, env)?;
    let path = Path::parse(key).map_err(|e| SinkError::Destination {
        url: location.clone(),
        reason: e.to_string(),
    })?;
    let store = Arc::new(bucket.store);
    Ok(Destination {
        store: Arc::clone(&store) as Arc<dyn ObjectStore>,
        multipart: store,
        path,
        location,
        s3_rules: true,
    })
}

/// An S3 bucket configured from the environment the standard AWS way: the store, and what a
/// request of our own to it needs (see [`cleanup`]).
#[derive(Debug)]
pub(crate) struct S3Bucket {
    /// The store, for objects.
    pub(crate) store: AmazonS3,
    /// The bucket's URL, as object_store derives it (path style unless virtual-hosted).
    pub(crate) endpoint: Url,
    /// The signing region.
    pub(crate) region: String,
    /// A client with the store's timeouts and trusted CAs.
    pub(crate) client: reqwest::Client,
}

impl S3Bucket {
    /// The bucket of `url` (`s3://BUCKET/…`).
    pub(crate) fn open(
        url: &Url,
        options: &StoreOptions,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<S3Bucket, SinkError> {
        crate::tls::crypto();
        let location = url.to_string();
        let bad = |reason: String| SinkError::Destination {
            url: location.clone(),
            reason,
        };
        let bucket = url.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(bad("expected s3://BUCKET/…".into()));
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let var = |name: &str| {
            env.iter()
                .rev()
                .find(|(n, v)| n == name && !v.is_empty())
                .map(|(_, v)| v.as_str())
        };
        // Static keys and no profile: object_store's own handling of the environment, as
        // before profiles. Else the AWS CLI's chain, cached (crate::aws).
        let profile = options.profile.as_deref().filter(|p| !p.is_empty());
        let static_keys =
            var("AWS_ACCESS_KEY_ID").is_some() && var("AWS_SECRET_ACCESS_KEY").is_some();
        let use_chain = profile.is_some() || var("AWS_PROFILE").is_some() || !static_keys;
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        let mut endpoint = None;
        let mut endpoint_s3 = None;
        let mut allow_http = false;
        let mut env_ca_bundle = None;
        for (name, value) in env.iter().cloned() {
            match name.as_str() {
                "AWS_ENDPOINT_URL" => endpoint = Some(value),
                "AWS_ENDPOINT_URL_S3" => endpoint_s3 = Some(value),
                "AWS_CA_BUNDLE" if !value.is_empty() => env_ca_bundle = Some(value),
                "AWS_ALLOW_HTTP" => allow_http = value.eq_ignore_ascii_case("true"),
                _ if name.starts_with("AWS_") => {
                    if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        builder = builder.with_config(key, value);
                    }
                }
                _ => {}
            }
        }
        let endpoint = endpoint_s3.or(endpoint);
        if let Some(endpoint) = &endpoint {
            let parsed = Url::parse(endpoint)
                .map_err(|e| bad(format!("AWS endpoint {endpoint:?} is not a URL: {e}")))?;
            if parsed.scheme() == "http" {
                if is_loopback(&parsed) {
                    allow_http = true;
                } else if !allow_http {
                    return Err(SinkError::InsecureEndpoint {
                        endpoint: endpoint.clone(),
                    });
                }
            }
            builder = builder.with_endpoint(endpoint);
        }
        let ca_bundle = match (&options.ca_bundle, env_ca_bundle) {
            (Some(bundle), _) => Some(bundle.clone()),
            (None, Some(path)) => Some(CaBundle::load(path).map_err(SinkError::CaBundle)?),
            (None, None) => None,
        };
        if use_chain
            && builder
                .get_config_value(&AmazonS3ConfigKey::Region)
                .is_none()
            && let Some(region) = crate::aws::profile_region(profile, &env)?
        {
            builder = builder.with_region(region);
        }
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".into());
        if use_chain {
            let mut credentials =
                crate::aws::AwsCredentials::new(profile, env.iter().cloned()).with_region(&region);
            if let Some(bundle) = &ca_bundle {
                // The same extra CAs for STS and SSO (read again: CaBundle keeps its PEM to
                // itself); the bundle was read a moment ago, so this rarely fails.
                match std::fs::read(bundle.path()) {
                    Ok(pem) => credentials = credentials.with_ca_pem(pem),
                    Err(e) => tracing::warn!(
                        "CA bundle {} not used for the AWS credential chain: {e}",
                        bundle.path().display()
                    ),
                }
            }
            builder =
                builder.with_credentials(Arc::new(crate::aws::S3CredentialProvider(credentials)));
        }
        let virtual_hosted = builder
            .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        // As object_store derives it, so our own requests go where its requests go.
        let bucket_endpoint = match (&endpoint, virtual_hosted) {
            (Some(endpoint), true) => endpoint.clone(),
            (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let endpoint = Url::parse(&format!("{}/", bucket_endpoint.trim_end_matches('/')))
            .map_err(|e| bad(format!("bucket URL {bucket_endpoint:?}: {e}")))?;
        let store_error = |source| SinkError::Store {
            location: location.clone(),
            source,
        };
        if options.part_checksums {
            builder = builder.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
        }
        // Client options first: they carry allow_http, which the next call sets.
        let store = builder
            .with_client_options(options.client_options(ca_bundle.as_ref())?)
            .with_allow_http(allow_http)
            .with_retry(options.retry_config())
            .build()
            .map_err(store_error)?;
        let mut client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout);
        if let Some(bundle) = &ca_bundle {
            let certificates = bundle.reqwest_certificates().map_err(SinkError::CaBundle)?;
            client = client.tls_certs_merge(certificates);
        }
        let client = client.build().map_err(|e| bad(e.to_string()))?;
        Ok(S3Bucket {
            store,
            endpoint,
            region,
            client,
        })
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dest: &str, env: Vec<(String, String)>) -> Result<Destination, SinkError> {
        Destination::open(dest, &StoreOptions::default(), env)
    }

    #[test]
    fn aws_ca_bundle_is_read_and_checked() {
        let err = open("s3://b/k", env(&[("AWS_CA_BUNDLE", "/nonexistent/ca.pem")])).unwrap_err();
        assert!(matches!(err, SinkError::CaBundle(_)), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        // Empty means unset, as in the AWS CLI.
        open("s3://b/k", env(&[("AWS_CA_BUNDLE", "")])).unwrap();
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn opens_s3_destinations() {
        let d = open(
            "s3://bench/variants/date=2026-11-25/variants.jsonl.gz",
            env(&[
                ("AWS_ACCESS_KEY_ID", "ak"),
                ("AWS_SECRET_ACCESS_KEY", "sk"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ]),
        )
        .unwrap();
        assert_eq!(
            d.path.as_ref(),
            "variants/date=2026-11-25/variants.jsonl.gz"
        );
        assert!(d.s3_rules);
    }

    #[test]
    fn refuses_plain_http_off_loopback() {
        let err = open(
            "s3://b/k",
            env(&[("AWS_ENDPOINT_URL", "http://10.1.2.3:9000")]),
        )
        .unwrap_err();
        assert!(matches!(err, SinkError::InsecureEndpoint { .. }), "{err}");
        open(
            "s3://b/k",
            env(&[
                ("AWS_ENDPOINT_URL", "http://10.1.2.3:9000"),
                ("AWS_ALLOW_HTTP", "true"),
            ]),
        )
        .unwrap();
        // The S3-specific variable wins over the generic one.
        let err = open(
            "s3://b/k",
            env(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
                ("AWS_ENDPOINT_URL_S3", "http://s3.internal:9000"),
            ]),
        )
        .unwrap_err();
        assert!(matches!(err, SinkError::InsecureEndpoint { .. }), "{err}");
        open(
            "s3://b/k",
            env(&[("AWS_ENDPOINT_URL", "http://[::1]:9000")]),
        )
        .unwrap();
        open(
            "s3://b/k",
            env(&[("AWS_ENDPOINT_URL", "http://localhost:1")]),
        )
        .unwrap();
    }

    #[test]
    fn rejects_bad_destinations() {
        for bad in [
            "s3://bucket",
            "s3://bucket/",
            "s3://bucket/dir/",
            "ftp://x/y",
            "/tmp/",
        ] {
            assert!(open(bad, env(&[])).is_err(), "{bad}");
        }
    }

    /// An Azure upload takes the object's attributes (left out: object_store's block-list
    /// completion cannot set them) and gets an id, without a request (Azure makes none to
    /// start an upload).
    #[tokio::test]
    async fn azure_uploads_take_attributes_and_get_an_id() {
        use object_store::{Attribute, Attributes};
        let d = open(
            "az://container/variants/v.jsonl.gz",
            env(&[
                ("AZURE_STORAGE_ACCOUNT_NAME", "account"),
                ("AZURE_STORAGE_ACCOUNT_KEY", "a2V5"),
                ("AZURE_STORAGE_ENDPOINT", "http://127.0.0.1:9/account"),
                ("AZURE_ALLOW_HTTP", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(d.path.as_ref(), "variants/v.jsonl.gz");
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, "application/gzip".into());
        let options = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let id = d
            .multipart
            .create_multipart_opts(&d.path, options)
            .await
            .unwrap();
        assert!(id.starts_with("azure-blocks-"), "{id:?}");
        let other = d.multipart.create_multipart(&d.path).await.unwrap();
        assert_ne!(id, other);
    }

    #[test]
    fn opens_local_paths() {
        let d = open("out/x.jsonl.gz", env(&[])).unwrap();
        assert!(d.location.starts_with("file:///"), "{}", d.location);
        assert!(d.location.ends_with("/out/x.jsonl.gz"));
        assert!(!d.s3_rules);
        let d = open("file:///tmp/a/b.gz", env(&[])).unwrap();
        assert_eq!(d.location, "file:///tmp/a/b.gz");
    }
}
