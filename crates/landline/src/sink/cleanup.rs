//! Finding and aborting incomplete multipart uploads: what a killed run leaves behind.
//!
//! A run that fails or is interrupted aborts its own upload. A run that is killed outright
//! (SIGKILL, a Lambda timeout, a lost machine) cannot: no object appears, but S3 keeps the
//! uploaded parts, and bills them, until someone aborts the upload. An S3 lifecycle rule with
//! `AbortIncompleteMultipartUpload` does that after some days; [`IncompleteUploads`] does it
//! now, for the uploads under a prefix older than a given age (`landline cleanup`).
//!
//! object_store has no call for ListMultipartUploads, so these two requests are made here,
//! signed with object_store's SigV4 signer and the same credential chain as the upload.

use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::aws::AwsAuthorizer;
use object_store::client::HttpRequestBody;
use reqwest::Method;
use serde::Deserialize;
use url::Url;

use super::{S3Bucket, SinkError, StoreOptions};

/// Attempts per request; 5xx, 429 and transport failures are retried.
const ATTEMPTS: u32 = 3;

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    /// The key the upload would have written.
    pub key: String,
    /// The upload's id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: DateTime<Utc>,
}

/// Why listing or aborting uploads failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CleanupError {
    /// The location is not usable.
    #[error(transparent)]
    Open(#[from] SinkError),
    /// No credentials could be found.
    #[error("getting credentials for {location}: {source}")]
    Credentials {
        /// The bucket.
        location: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
    /// The request could not be signed.
    #[error("signing {operation} for {location}: {source}")]
    Sign {
        /// The S3 operation.
        operation: &'static str,
        /// The bucket.
        location: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
    /// The request failed without a response, after retries.
    #[error("{operation} on {location}: {cause} after {ATTEMPTS} attempts")]
    Transport {
        /// The S3 operation.
        operation: &'static str,
        /// The bucket or object.
        location: String,
        /// What went wrong.
        cause: String,
    },
    /// The store answered with an error.
    #[error("{operation} on {location}: HTTP {status}: {body}")]
    Status {
        /// The S3 operation.
        operation: &'static str,
        /// The bucket or object.
        location: String,
        /// The status.
        status: u16,
        /// The start of the store's answer, on one line.
        body: String,
    },
    /// The store's answer could not be read.
    #[error("ListMultipartUploads on {location}: unexpected answer: {reason}")]
    Parse {
        /// The bucket.
        location: String,
        /// What is wrong.
        reason: String,
    },
}

/// The incomplete uploads of one S3 bucket under one prefix.
#[derive(Debug)]
pub struct IncompleteUploads {
    bucket: S3Bucket,
    /// `s3://bucket/`, for messages.
    location: String,
    prefix: String,
}

impl IncompleteUploads {
    /// Opens `url`, `s3://BUCKET[/PREFIX]`, configured from `env` like a destination (see
    /// [`super::Destination::open`]).
    pub fn open(
        url: &str,
        options: &StoreOptions,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<IncompleteUploads, CleanupError> {
        let bad = |reason: &str| SinkError::Destination {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = Url::parse(url).map_err(|_| bad("expected s3://BUCKET/PREFIX"))?;
        if !matches!(parsed.scheme(), "s3" | "s3a") {
            return Err(bad("only s3:// has multipart uploads to clean up").into());
        }
        let bucket = S3Bucket::open(&parsed, options, env)?;
        let prefix = parsed.path().trim_start_matches('/').to_owned();
        Ok(IncompleteUploads {
            location: format!("s3://{}/", parsed.host_str().unwrap_or_default()),
            bucket,
            prefix,
        })
    }

    /// Every incomplete upload under the prefix, oldest first.
    pub async fn list(&self) -> Result<Vec<IncompleteUpload>, CleanupError> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = self.bucket.endpoint.clone();
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("uploads", "");
                if !self.prefix.is_empty() {
                    query.append_pair("prefix", &self.prefix);
                }
                if let Some((key, id)) = &markers {
                    query.append_pair("key-marker", key);
                    query.append_pair("upload-id-marker", id);
                }
            }
            let body = self
                .send("ListMultipartUploads", Method::GET, url, &self.location)
                .await?;
            let page: ListResult =
                quick_xml::de::from_str(&body).map_err(|e| CleanupError::Parse {
                    location: self.location.clone(),
                    reason: e.to_string(),
                })?;
            for upload in page.uploads {
                let initiated = DateTime::parse_from_rfc3339(&upload.initiated)
                    .map_err(|e| CleanupError::Parse {
                        location: self.location.clone(),
                        reason: format!("Initiated {:?}: {e}", upload.initiated),
                    })?
                    .with_timezone(&Utc);
                uploads.push(IncompleteUpload {
                    key: upload.key,
                    upload_id: upload.upload_id,
                    initiated,
                });
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(id))
                    if markers.as_ref() != Some(&(key.clone(), id.clone())) =>
                {
                    markers = Some((key, id));
                }
                (true, ..) => {
                    return Err(CleanupError::Parse {
                        location: self.location.clone(),
                        reason: "a truncated listing without new markers".into(),
                    });
                }
                (false, ..) => break,
            }
        }
        uploads.sort_by(|a, b| a.initiated.cmp(&b.initiated).then(a.key.cmp(&b.key)));
        Ok(uploads)
    }

    /// The uploads under the prefix started more than `age` before `now`, oldest first.
    pub async fn older_than(
        &self,
        age: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<IncompleteUpload>, CleanupError> {
        let mut uploads = self.list().await?;
        retain_older_than(&mut uploads, age, now);
        Ok(uploads)
    }

    /// The ids of the incomplete uploads of exactly the key this was opened with.
    pub async fn of_key(&self) -> Result<Vec<String>, CleanupError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|u| u.key == self.prefix)
            .map(|u| u.upload_id)
            .collect())
    }

    /// Aborts the incomplete uploads of exactly the key this was opened with, except those
    /// in `known` and `keep`; returns the ids aborted. With `known` the uploads open before a
    /// run created its own, these are uploads of that run that nothing else knows about: one
    /// created by a retried CreateMultipartUpload whose first answer was lost, or by a
    /// process killed before its first checkpoint named it. (Not by start time: moto answers
    /// one fixed `Initiated` for every upload, and clocks differ.)
    pub async fn abort_strays(
        &self,
        known: &[String],
        keep: Option<&str>,
    ) -> Result<Vec<String>, CleanupError> {
        let mut aborted = Vec::new();
        for upload in self.list().await? {
            let stray = upload.key == self.prefix
                && !known.contains(&upload.upload_id)
                && keep != Some(upload.upload_id.as_str());
            if stray {
                self.abort(&upload).await?;
                aborted.push(upload.upload_id);
            }
        }
        Ok(aborted)
    }

    /// Aborts `upload`; an upload already gone (completed or aborted since) is not an error.
    pub async fn abort(&self, upload: &IncompleteUpload) -> Result<(), CleanupError> {
        let mut url = self.bucket.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| CleanupError::Parse {
                location: self.location.clone(),
                reason: "the bucket URL cannot hold a key".into(),
            })?
            .pop_if_empty()
            .extend(upload.key.split('/'));
        url.query_pairs_mut()
            .append_pair("uploadId", &upload.upload_id);
        let location = format!("{}{}", self.location, upload.key);
        match self
            .send("AbortMultipartUpload", Method::DELETE, url, &location)
            .await
        {
            Ok(_) => Ok(()),
            Err(CleanupError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends a signed request with an empty body, retrying what may heal; the answer's text.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        location: &str,
    ) -> Result<String, CleanupError> {
        let credential = self
            .bucket
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|source| CleanupError::Credentials {
                location: self.location.clone(),
                source,
            })?;
        let mut last_cause = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut request = http::Request::builder()
                .method(method.clone())
                .uri(url.as_str())
                .body(HttpRequestBody::from(Vec::new()))
                .map_err(|e| CleanupError::Parse {
                    location: location.to_owned(),
                    reason: e.to_string(),
                })?;
            AwsAuthorizer::new(&credential, "s3", &self.bucket.region)
                .try_authorize(&mut request, None)
                .map_err(|source| CleanupError::Sign {
                    operation,
                    location: location.to_owned(),
                    source,
                })?;
            let response = self
                .bucket
                .client
                .request(method.clone(), url.clone())
                .headers(request.headers().clone())
                .send()
                .await;
            let response = match response {
                Ok(response) => response,
                Err(e) => {
                    last_cause = e.without_url().to_string();
                    continue;
                }
            };
            let status = response.status();
            let text = match response.text().await {
                Ok(text) => text,
                Err(e) => {
                    last_cause = e.without_url().to_string();
                    continue;
                }
            };
            if status.is_success() {
                return Ok(text);
            }
            let error = CleanupError::Status {
                operation,
                location: location.to_owned(),
                status: status.as_u16(),
                body: text.split_whitespace().collect::<Vec<_>>().join(" "),
            };
            // 501 Not Implemented (s3s-fs has no ListMultipartUploads) will not heal.
            let may_heal =
                (status.is_server_error() && status.as_u16() != 501) || status.as_u16() == 429;
            if !may_heal || attempt + 1 == ATTEMPTS {
                return Err(error);
            }
            last_cause = error.to_string();
        }
        Err(CleanupError::Transport {
            operation,
            location: location.to_owned(),
            cause: last_cause,
        })
    }
}

/// Keeps the uploads started at least `age` before `now`.
fn retain_older_than(uploads: &mut Vec<IncompleteUpload>, age: Duration, now: DateTime<Utc>) {
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let cutoff = now
        .checked_sub_signed(age)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    uploads.retain(|u| u.initiated <= cutoff);
}

/// `ListMultipartUploadsResult`, the parts read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload", default)]
    uploads: Vec<ListedUpload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    initiated: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_listing() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>k/2</NextKeyMarker><NextUploadIdMarker>id2</NextUploadIdMarker>
  <Prefix>k/</Prefix><MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>k/1</Key><UploadId>id1</UploadId><Initiated>2026-11-24T01:02:03.000Z</Initiated>
    <StorageClass>STANDARD</StorageClass></Upload>
  <Upload><Key>k/2</Key><UploadId>id2</UploadId><Initiated>2026-11-25T01:02:03Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page: ListResult = quick_xml::de::from_str(xml).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("k/2"));
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[1].upload_id, "id2");

        let empty = r#"<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        let page: ListResult = quick_xml::de::from_str(empty).unwrap();
        assert!(page.uploads.is_empty());
    }

    #[test]
    fn keeps_only_uploads_older_than_the_age() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let upload = |hours_ago: i64| IncompleteUpload {
            key: format!("k/{hours_ago}"),
            upload_id: hours_ago.to_string(),
            initiated: now - chrono::Duration::hours(hours_ago),
        };
        let all = vec![
            upload(0),
            upload(23),
            upload(24),
            upload(25),
            upload(24 * 400),
        ];
        let keys = |age: Duration| {
            let mut kept = all.clone();
            retain_older_than(&mut kept, age, now);
            kept.into_iter().map(|u| u.upload_id).collect::<Vec<_>>()
        };
        assert_eq!(keys(Duration::from_secs(24 * 3600)), ["24", "25", "9600"]);
        assert_eq!(keys(Duration::ZERO), ["0", "23", "24", "25", "9600"]);
        // An age beyond the calendar keeps nothing instead of overflowing.
        assert!(keys(Duration::MAX).is_empty());
    }

    #[test]
    fn refuses_other_schemes() {
        let err =
            IncompleteUploads::open("file:///tmp/x", &StoreOptions::default(), []).unwrap_err();
        assert!(err.to_string().contains("only s3://"), "{err}");
    }
}
