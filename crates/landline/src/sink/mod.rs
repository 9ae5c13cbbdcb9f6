//! The sink stage: where objects go, and the streaming writer that puts them there.
//!
//! [`Destination::open`] turns a destination URL into an object store and a path: `s3://`
//! (configured the standard AWS way, from environment variables), `gs://`, `az://`/`abfss://`,
//! `file:///abs/path`, or a plain relative or absolute path. Writing is done by
//! [`ObjectWriter`], the same for every store: for local files object_store writes a staging
//! file beside the target and renames it into place on completion, so a local destination is
//! as atomic as S3.

pub mod multipart;

use std::net::IpAddr;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use url::Url;

pub use multipart::{MAX_PARTS, MIN_PART_SIZE, ObjectWriter, PartSizer, Written};

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
    #[error("configuring the object store for {location}: {source}")]
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
    #[error("uploading part {part} of {location}: {source}")]
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
    #[error("completing the upload of {location}: {source}")]
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
    /// An upload failed, and aborting it failed too.
    #[error("{cause}; then {abort}")]
    AbortFailed {
        /// What made the run abort.
        cause: Box<SinkError>,
        /// How the abort failed.
        abort: Box<SinkError>,
    },
    /// A background upload task panicked or was cancelled.
    #[error("an upload task failed: {0}")]
    Task(String),
}

/// What to check when the store refused the request itself.
fn access_hint(e: &object_store::Error) -> &'static str {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            "access denied: the store rejected the credentials (a wrong secret key shows as \
             SignatureDoesNotMatch) or they may not write to this bucket; check \
             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the role) and the bucket policy. "
        }
        _ => "",
    }
}

/// The error on one line: servers' XML error bodies come with line breaks.
fn one_line(e: &object_store::Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A resolved destination: the store, the object's path in it, and a printable location.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// The object's path within the store.
    pub path: Path,
    /// The destination as users know it (`s3://bucket/key`, `file:///…`); holds no secrets.
    pub location: String,
    /// Whether the store enforces S3's part rules (5 MiB minimum, 10,000 parts).
    pub s3_rules: bool,
}

impl Destination {
    /// Opens `dest` (a URL or a filesystem path). Store settings come from `env`, normally
    /// `std::env::vars()`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`, and the `GOOGLE_*`/`AZURE_*` equivalents.
    pub fn open(
        dest: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Destination, SinkError> {
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
            "s3" | "s3a" => s3(&url, env),
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("not an absolute file:// path".into()))?;
                local(&path.to_string_lossy())
            }
            "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" => {
                let options: Vec<(String, String)> = env
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("GOOGLE_") || k.starts_with("AZURE_"))
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                let (store, path) =
                    object_store::parse_url_opts(&url, options).map_err(|source| {
                        SinkError::Store {
                            location: dest.to_owned(),
                            source,
                        }
                    })?;
                Ok(Destination {
                    store: Arc::from(store),
                    path,
                    location: dest.to_owned(),
                    s3_rules: true,
                })
            }
            other => Err(bad(format!(
                "unsupported scheme {other:?} (use s3://, gs://, az://, file:// or a path)"
            ))),
        }
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
    let store = object_store::local::LocalFileSystem::new();
    Ok(Destination {
        store: Arc::new(store),
        path: object,
        location: format!("file://{}", abs.display()),
        s3_rules: false,
    })
}

fn s3(
    url: &Url,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Destination, SinkError> {
    let location = url.to_string();
    let bucket = url.host_str().unwrap_or_default();
    let key = url.path().trim_start_matches('/');
    if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
        return Err(SinkError::Destination {
            url: location,
            reason: "expected s3://BUCKET/KEY with a non-empty key".into(),
        });
    }
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
    let mut endpoint = None;
    let mut endpoint_s3 = None;
    let mut allow_http = false;
    for (name, value) in env {
        match name.as_str() {
            "AWS_ENDPOINT_URL" => endpoint = Some(value),
            "AWS_ENDPOINT_URL_S3" => endpoint_s3 = Some(value),
            "AWS_ALLOW_HTTP" => allow_http = value.eq_ignore_ascii_case("true"),
            _ if name.starts_with("AWS_") => {
                if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            _ => {}
        }
    }
    if let Some(endpoint) = endpoint_s3.or(endpoint) {
        let parsed = Url::parse(&endpoint).map_err(|e| SinkError::Destination {
            url: location.clone(),
            reason: format!("AWS endpoint {endpoint:?} is not a URL: {e}"),
        })?;
        if parsed.scheme() == "http" {
            if is_loopback(&parsed) {
                allow_http = true;
            } else if !allow_http {
                return Err(SinkError::InsecureEndpoint { endpoint });
            }
        }
        builder = builder.with_endpoint(endpoint);
    }
    let store = builder
        .with_allow_http(allow_http)
        .build()
        .map_err(|source| SinkError::Store {
            location: location.clone(),
            source,
        })?;
    let path = Path::parse(key).map_err(|e| SinkError::Destination {
        url: location.clone(),
        reason: e.to_string(),
    })?;
    Ok(Destination {
        store: Arc::new(store),
        path,
        location,
        s3_rules: true,
    })
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

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn opens_s3_destinations() {
        let d = Destination::open(
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
        let err = Destination::open(
            "s3://b/k",
            env(&[("AWS_ENDPOINT_URL", "http://10.1.2.3:9000")]),
        )
        .unwrap_err();
        assert!(matches!(err, SinkError::InsecureEndpoint { .. }), "{err}");
        Destination::open(
            "s3://b/k",
            env(&[
                ("AWS_ENDPOINT_URL", "http://10.1.2.3:9000"),
                ("AWS_ALLOW_HTTP", "true"),
            ]),
        )
        .unwrap();
        // The S3-specific variable wins over the generic one.
        let err = Destination::open(
            "s3://b/k",
            env(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
                ("AWS_ENDPOINT_URL_S3", "http://s3.internal:9000"),
            ]),
        )
        .unwrap_err();
        assert!(matches!(err, SinkError::InsecureEndpoint { .. }), "{err}");
        Destination::open(
            "s3://b/k",
            env(&[("AWS_ENDPOINT_URL", "http://[::1]:9000")]),
        )
        .unwrap();
        Destination::open(
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
            assert!(Destination::open(bad, env(&[])).is_err(), "{bad}");
        }
    }

    #[test]
    fn opens_local_paths() {
        let d = Destination::open("out/x.jsonl.gz", env(&[])).unwrap();
        assert!(d.location.starts_with("file:///"), "{}", d.location);
        assert!(d.location.ends_with("/out/x.jsonl.gz"));
        assert!(!d.s3_rules);
        let d = Destination::open("file:///tmp/a/b.gz", env(&[])).unwrap();
        assert_eq!(d.location, "file:///tmp/a/b.gz");
    }
}
