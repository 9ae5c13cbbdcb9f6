//! The source stage: pages from a paged HTTP API, fetched one at a time into a reused buffer.
//!
//! [`HttpSource::fetch_next`] asks the [`Paginator`] for the next URL, GETs it with retries
//! (see [`retry`]), and reads the body into the caller's buffer, refusing pages larger than
//! `max_page_bytes`. Splitting the body into records is [`page`]'s job; deciding what comes
//! next from what the page said is [`paginate`]'s. Header values are secrets: they are marked
//! sensitive and never printed; URLs are printed only through [`redact`].
//!
//! Memory: one page body (the buffer the caller passes in, reused from page to page).

pub mod link;
pub mod page;
pub mod paginate;
pub mod redact;
pub mod retry;

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::tls::CaBundle;

pub use paginate::{Cursor, PageOutcome, Pagination, PaginationError, Paginator};
pub use redact::{RedactedUrl, Redactor};
pub use retry::RetryPolicy;

/// Settings of the HTTP source, validated.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The first page's URL, static query included.
    pub url: Url,
    /// Request headers (values may be secrets).
    pub headers: Vec<(String, String)>,
    /// How pages chain.
    pub pagination: Pagination,
    /// More pages than this is an error.
    pub max_pages: u64,
    /// A page body larger than this is an error (it bounds memory).
    pub max_page_bytes: usize,
    /// Limit for the whole of one request, body included.
    pub timeout: Duration,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Which query parameters to hide in messages.
    pub redactor: Redactor,
    /// CAs trusted besides the system's.
    pub ca_bundle: Option<CaBundle>,
}

/// Why the source failed. Every variant names the page and the (redacted) URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The HTTP client could not be built (TLS set-up, bad header).
    #[error("setting up the HTTP client: {0}")]
    Client(String),
    /// The server answered with an error status (after retries, if it was retryable).
    #[error("page {page} of {url}: HTTP {status} after {attempts} attempt(s){}", body_excerpt(.body))]
    Status {
        /// Page number, from 1.
        page: u64,
        /// The URL, redacted.
        url: RedactedUrl,
        /// The final status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The start of the response body, if it was text.
        body: String,
    },
    /// The request failed without a response (connection, timeout, reset), after retries.
    #[error("page {page} of {url}: {cause} after {attempts} attempt(s)")]
    Transport {
        /// Page number, from 1.
        page: u64,
        /// The URL, redacted.
        url: RedactedUrl,
        /// Attempts made.
        attempts: u32,
        /// What went wrong (reqwest's error, without its URL).
        cause: String,
    },
    /// The page is larger than `max_page_bytes`.
    #[error("page {page} of {url} is larger than max_page_bytes = {limit}")]
    PageTooLarge {
        /// Page number, from 1.
        page: u64,
        /// The URL, redacted.
        url: RedactedUrl,
        /// The configured limit.
        limit: usize,
    },
    /// The page could not be split into records.
    #[error("page {page} of {url}: {source}")]
    Page {
        /// Page number, from 1.
        page: u64,
        /// The URL, redacted.
        url: RedactedUrl,
        /// What is wrong with the body.
        #[source]
        source: page::PageError,
    },
    /// Paging went wrong (loop, too many pages, bad cursor).
    #[error("after page {page} of {url}: {source}")]
    Pagination {
        /// The last page fetched.
        page: u64,
        /// Its URL, redacted.
        url: RedactedUrl,
        /// What went wrong.
        #[source]
        source: PaginationError,
    },
}

fn body_excerpt(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// A fetched page: its number, URL and what its headers say about the next one.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Page number, from 1.
    pub page: u64,
    /// The URL requested.
    pub url: Url,
    /// The `rel="next"` link from the `Link` headers, if any.
    pub link_next: Option<String>,
    /// Attempts it took.
    pub attempts: u32,
}

/// A paged HTTP API.
#[derive(Debug)]
pub struct HttpSource {
    client: reqwest::Client,
    config: SourceConfig,
    paginator: Paginator,
    /// The last URL requested, for errors about what came after it.
    last_url: Option<Url>,
}

impl HttpSource {
    /// Builds the client (rustls, certificate verification on).
    pub fn new(config: SourceConfig) -> Result<Self, SourceError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SourceError::Client(format!("invalid header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                SourceError::Client(format!("invalid value for header {name} (not shown)"))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut builder = reqwest::Client::builder();
        if let Some(bundle) = &config.ca_bundle {
            let certificates = bundle
                .reqwest_certificates()
                .map_err(|e| SourceError::Client(e.to_string()))?;
            builder = builder.tls_certs_merge(certificates);
        }
        let client = builder
            .user_agent(concat!("landline/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| SourceError::Client(e.without_url().to_string()))?;
        let paginator = Paginator::new(
            config.pagination.clone(),
            config.url.clone(),
            config.max_pages,
        );
        Ok(HttpSource {
            client,
            config,
            paginator,
            last_url: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// Where paging stands.
    pub fn cursor(&self) -> &Cursor {
        self.paginator.cursor()
    }

    /// Fetches the next page into `body` (cleared first); `None` when there are no more pages.
    pub async fn fetch_next(&mut self, body: &mut Vec<u8>) -> Result<Option<Fetched>, SourceError> {
        let last_page = self.paginator.pages();
        let url = match self.paginator.next_url() {
            Ok(Some(url)) => url,
            Ok(None) => return Ok(None),
            Err(source) => {
                let last_url = self.last_url.as_ref().unwrap_or(&self.config.url);
                return Err(SourceError::Pagination {
                    page: last_page,
                    url: self.config.redactor.url(last_url),
                    source,
                });
            }
        };
        let page = self.paginator.pages();
        self.last_url = Some(url.clone());
        let (link_next, attempts) = self.get_with_retries(&url, page, body).await?;
        Ok(Some(Fetched {
            page,
            url,
            link_next,
            attempts,
        }))
    }

    /// Moves paging past `fetched`, given what its body said.
    pub fn advance(
        &mut self,
        fetched: &Fetched,
        outcome: PageOutcome<'_>,
    ) -> Result<(), SourceError> {
        self.paginator
            .advance(&fetched.url, outcome)
            .map_err(|source| SourceError::Pagination {
                page: fetched.page,
                url: self.config.redactor.url(&fetched.url),
                source,
            })
    }

    /// The body pointer the pagination needs from each page, if any.
    pub fn cursor_pointer(&self) -> Option<&crate::pointer::JsonPointer> {
        self.config.pagination.body_pointer()
    }

    async fn get_with_retries(
        &self,
        url: &Url,
        page: u64,
        body: &mut Vec<u8>,
    ) -> Result<(Option<String>, u32), SourceError> {
        let policy = &self.config.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            body.clear();
            let failure = match self.get_once(url, page, body).await {
                Ok(link) => return Ok((link, attempt)),
                Err(f) => f,
            };
            let give_up = !failure.retryable || attempt >= policy.max_attempts;
            if give_up {
                return Err(failure.into_error(
                    page,
                    self.config.redactor.url(url),
                    attempt,
                    self.config.max_page_bytes,
                ));
            }
            let delay = policy.delay(attempt - 1, failure.retry_after, &mut rand::rng());
            tracing::warn!(
                page,
                url = %self.config.redactor.url(url),
                attempt,
                cause = %failure.describe(),
                retry_in_ms = delay.as_millis() as u64,
                "retrying page"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn get_once(
        &self,
        url: &Url,
        page: u64,
        body: &mut Vec<u8>,
    ) -> Result<Option<String>, Failure> {
        let mut response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(Failure::transport)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
            let text = read_excerpt(&mut response).await;
            return Err(Failure {
                retryable: retry::is_retryable_status(status.as_u16()),
                retry_after,
                kind: FailureKind::Status(status.as_u16(), text),
            });
        }
        let link_next = link::next_link(
            response
                .headers()
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
        .map(str::to_owned);
        let limit = self.config.max_page_bytes;
        if let Some(len) = response.content_length() {
            if len as usize > limit {
                return Err(Failure::too_large());
            }
            body.reserve(len as usize);
        }
        while let Some(chunk) = response.chunk().await.map_err(Failure::body)? {
            if body.len() + chunk.len() > limit {
                return Err(Failure::too_large());
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(page, bytes = body.len(), "fetched page");
        Ok(link_next)
    }
}

/// Reads up to 200 characters of an error response for the message.
async fn read_excerpt(response: &mut reqwest::Response) -> String {
    const MAX: usize = 200;
    let mut text = Vec::new();
    while text.len() < MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => text.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&text);
    let mut excerpt: String = text.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if text.chars().count() > MAX {
        excerpt.push('…');
    }
    excerpt
}

struct Failure {
    retryable: bool,
    retry_after: Option<Duration>,
    kind: FailureKind,
}

enum FailureKind {
    Status(u16, String),
    Transport(String),
    TooLarge,
}

impl Failure {
    fn transport(e: reqwest::Error) -> Failure {
        // Timeouts, refused or reset connections and bodies cut short may heal; a request
        // that could not even be built, or a certificate that does not verify, will not.
        let retryable = (e.is_timeout() || e.is_connect() || e.is_request() || e.is_body())
            && !crate::errors::is_certificate_error(&e);
        Failure {
            retryable,
            retry_after: None,
            kind: FailureKind::Transport(crate::errors::one_line(&e.without_url())),
        }
    }

    /// A failure while reading the body of a successful answer: the connection closed or
    /// reset before the end, or the request timed out. reqwest calls every such failure "error
    /// decoding response body", but with no content decoding enabled none is about the
    /// content, and all may heal.
    fn body(e: reqwest::Error) -> Failure {
        let e = e.without_url();
        let cause = match std::error::Error::source(&e) {
            Some(source) => crate::errors::one_line(source),
            None => e.to_string(),
        };
        Failure {
            retryable: true,
            retry_after: None,
            kind: FailureKind::Transport(format!("reading the body: {cause}")),
        }
    }

    fn too_large() -> Failure {
        Failure {
            retryable: false,
            retry_after: None,
            kind: FailureKind::TooLarge,
        }
    }

    fn describe(&self) -> String {
        match &self.kind {
            FailureKind::Status(s, _) => format!("HTTP {s}"),
            FailureKind::Transport(cause) => cause.clone(),
            FailureKind::TooLarge => "page too large".into(),
        }
    }

    fn into_error(self, page: u64, url: RedactedUrl, attempts: u32, limit: usize) -> SourceError {
        match self.kind {
            FailureKind::Status(status, body) => SourceError::Status {
                page,
                url,
                status,
                attempts,
                body,
            },
            FailureKind::Transport(cause) => SourceError::Transport {
                page,
                url,
                attempts,
                cause,
            },
            FailureKind::TooLarge => SourceError::PageTooLarge { page, url, limit },
        }
    }
}
