//! The source stage: pages from a paged HTTP API, each fetched by its own task and streamed,
//! never held whole.
//!
//! [`HttpSource`] holds what every fetch of a run shares: the HTTP client (rustls, certificate
//! verification always on, `Accept-Encoding` when compression is on), the settings, the
//! [`RateLimiter`] and the counters. [`HttpSource::spawn_page`] starts the task that fetches
//! one page with retries ([`fetch`]) and returns the channel its body arrives on; reading that
//! channel, decoded ([`decode`]), and splitting it into records ([`page`]) is the page
//! processor's job, and deciding what comes next from what the page said is [`paginate`]'s.
//! Header values are secrets: they are marked sensitive and never printed; URLs are printed
//! only through [`redact`].
//!
//! [`Source`] ([`paged`]) is the trait for sources of a library's own, run by
//! [`pipeline::run_source`](crate::pipeline::run_source); [`HttpPages`] is this HTTP API as
//! one.
//!
//! Memory: per page in flight, at most `page_buffer_bytes` of body as received.

pub mod auth;
pub mod decode;
pub mod fetch;
mod link;
pub mod page;
pub mod paged;
pub mod paginate;
pub mod rate;
pub mod redact;
mod retry;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use url::Url;

use crate::pointer::JsonPointer;
use crate::tls::CaBundle;
pub use auth::{Auth, AuthError, ClientAuth, Grant, OAuth2};
pub use fetch::{BodyEvent, FetchStats, RetryCause, Verdict};
pub use paged::{HttpPages, Page, Source};
pub use paginate::{Cursor, PageOutcome, Pagination, PaginationError, Paginator};
pub use rate::{RateLimitConfig, RateLimiter, RateStats};
pub use redact::{RedactedUrl, Redactor};
pub use retry::RetryPolicy;

use crate::secret::Secret;

/// Default for [`SourceConfig::concurrency`]: pages fetched at once where the API allows.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default for [`SourceConfig::page_buffer_bytes`]: 256 KiB of body as received per page in
/// flight. Beyond it the kernel's socket buffer (autotuned up to several MiB) keeps the
/// transfer going while the page waits, outside the process's memory; 1 MiB cost 0.8 MiB more
/// peak RSS on the incident workload for 3 % less wall time on loopback.
pub const DEFAULT_PAGE_BUFFER_BYTES: usize = 256 * 1024;

/// Where the total record count of offset and page pagination is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Total {
    /// A number (or a numeric string) at this pointer in every body.
    Body(JsonPointer),
    /// A response header, such as `X-Total-Count`.
    Header(HeaderName),
}

/// Settings of the HTTP source, validated.
#[derive(Clone)]
pub struct SourceConfig {
    /// The first page's URL, static query included.
    pub url: Url,
    /// Request headers (values are secrets, never printed).
    pub headers: Vec<(String, Secret)>,
    /// How requests are authenticated (`[source.auth]`).
    pub auth: Auth,
    /// How pages chain.
    pub pagination: Pagination,
    /// Where offset and page pagination read the total record count, if anywhere.
    pub total: Option<Total>,
    /// A pointer whose value in a 200 body means the API failed the page.
    pub error: Option<JsonPointer>,
    /// More pages than this is an error.
    pub max_pages: u64,
    /// A page body larger than this (decoded) is an error; `usize::MAX` for no limit.
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
    /// Whether to ask for compressed responses (`Accept-Encoding`).
    pub compression: bool,
    /// Pages fetched at once for offset and page pagination (1: one at a time).
    pub concurrency: usize,
    /// Body bytes, as received, buffered per page in flight.
    pub page_buffer_bytes: usize,
    /// The client-side rate limit, if any.
    pub rate_limit: Option<RateLimitConfig>,
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("SourceConfig")
            .field("url", &self.redactor.url(&self.url))
            .field("headers", &header_names)
            .field("auth", &self.auth)
            .field("pagination", &self.pagination)
            .field("total", &self.total)
            .field("error", &self.error)
            .field("max_pages", &self.max_pages)
            .field("max_page_bytes", &self.max_page_bytes)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .field("compression", &self.compression)
            .field("concurrency", &self.concurrency)
            .field("page_buffer_bytes", &self.page_buffer_bytes)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

impl SourceConfig {
    /// The pointer the splitter reads besides the records: the cursor of token and next-URL
    /// pagination, or the total of offset and page pagination.
    pub fn body_pointer(&self) -> Option<&JsonPointer> {
        match (&self.pagination, &self.total) {
            (Pagination::Offset { .. } | Pagination::Page { .. }, Some(Total::Body(p))) => Some(p),
            (pagination, _) => pagination.body_pointer(),
        }
    }

    /// The header with the total record count, if one is configured.
    pub fn total_header(&self) -> Option<&HeaderName> {
        match &self.total {
            Some(Total::Header(name)) => Some(name),
            _ => None,
        }
    }
}

/// Why the source failed. Every variant of the HTTP source names the page and the
/// (redacted) URL.
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
    /// The page's compressed body decodes to more than `max_page_bytes`.
    #[error(
        "page {page} of {url} decodes to more than max_page_bytes = {limit} bytes from {wire_bytes} bytes of {encoding} (a decompression bomb, or a limit to raise)"
    )]
    DecodedTooLarge {
        /// Page number, from 1.
        page: u64,
        /// The URL, redacted.
        url: RedactedUrl,
        /// The configured limit.
        limit: usize,
        /// The `Content-Encoding`.
        encoding: &'static str,
        /// Bytes received when the limit was passed.
        wire_bytes: u64,
    },
    /// The server sent a `Content-Encoding` landline does not decode.
    #[error("page {page} of {url}: unsupported Content-Encoding {encoding:?}")]
    Encoding {
        /// Page number, from 1.
        page: u64,
        /// The URL, redacted.
        url: RedactedUrl,
        /// The header's value.
        encoding: String,
    },
    /// The API answered 200 with an error value at the `error` pointer, on every attempt.
    #[error(
        "page {page} of {url}: the API answered with an error after {attempts} attempt(s): {message}"
    )]
    Api {
        /// Page number, from 1.
        page: u64,
        /// The URL, redacted.
        url: RedactedUrl,
        /// Attempts made.
        attempts: u32,
        /// The error value (up to 200 characters of its JSON).
        message: String,
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
    /// The request could not be authenticated (the OAuth2 token endpoint failed).
    #[error("page {page} of {url}: {source}")]
    Auth {
        /// Page number, from 1.
        page: u64,
        /// The URL, redacted.
        url: RedactedUrl,
        /// What failed.
        #[source]
        source: AuthError,
    },
    /// A library [`Source`] failed to fetch a page.
    #[error("page {page} of the source: {source}")]
    Library {
        /// The page it was fetching, from 1.
        page: u64,
        /// The source's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record of a library [`Source`]'s page could not be written.
    #[error("page {page} of the source: {source}")]
    LibraryPage {
        /// The page, from 1.
        page: u64,
        /// What is wrong with the record.
        #[source]
        source: page::PageError,
    },
    /// [`HttpPages`]' own page pipeline stopped (a thread could not start, or died).
    #[error("the page pipeline stopped: {0}")]
    Stopped(String),
}

fn body_excerpt(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// A paged HTTP API: the client and what every page fetch of a run shares.
///
/// Build it from a [`SourceConfig`]: a validated pipeline's, rendered for one run with
/// [`SourceSpec::config`](crate::config::SourceSpec::config), or one filled in by hand (its
/// fields are public). Clones share the client, the rate limiter and the counters.
///
/// Paging is a loop: [`Paginator::next_url`] gives the next page's URL,
/// [`spawn_page`](Self::spawn_page) fetches it in a task (retries included) and streams its
/// body as [`BodyEvent`]s, and [`Paginator::advance`] takes what the page said about the
/// next one. [`pipeline::run`](crate::pipeline::run) does all of this without holding a page
/// whole, with several pages in flight where the pagination allows; the example below is
/// the same loop, one page at a time, each read whole.
///
/// # Example
///
/// ```no_run
/// use std::collections::BTreeMap;
/// use std::io::Read;
///
/// use landline::source::decode::{Encoding, decoder};
/// use landline::source::page::{PageError, RecordSink, scan_page};
/// use landline::source::{BodyEvent, HttpSource, PageOutcome, Verdict};
/// use serde::{Deserialize, Deserializer};
/// use serde_json::value::RawValue;
///
/// /// Prints each record as the API sent it.
/// struct Print;
///
/// impl RecordSink for Print {
///     fn record<'de, D: Deserializer<'de>>(
///         &mut self,
///         _index: u64,
///         record: D,
///     ) -> Result<&'de str, D::Error> {
///         let raw = <&RawValue>::deserialize(record)?.get();
///         println!("{raw}");
///         Ok(raw)
///     }
///     fn take_error(&mut self) -> Option<PageError> {
///         None
///     }
/// }
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let pipeline = landline::Pipeline::load("variants.toml".as_ref())?;
/// // The run's {ingest_date}, {ingest_ts} and [vars] (their defaults) in URL and headers.
/// let vars = pipeline.run_vars(
///     "2026-11-25".into(),
///     "2026-11-25T02:00:00.000Z".into(),
///     &BTreeMap::new(),
/// )?;
/// let spec = pipeline.source.as_ref().ok_or("the pipeline has no [source]")?;
/// let source = HttpSource::new(spec.config(&vars)?)?;
/// let cursor = source.config().pagination.body_pointer();
///
/// let mut paginator = source.paginator();
/// let mut tasks = tokio::task::JoinSet::new();
/// while let Some(url) = paginator.next_url()? {
///     let mut events = source.spawn_page(paginator.pages(), url.clone(), &mut tasks);
///     let mut body = Vec::new();
///     let (mut encoding, mut link_next, mut total) = (Encoding::Identity, None, None);
///     while let Some(event) = events.recv().await {
///         match event {
///             // An attempt's answer (after a `Broken` body, the next attempt's).
///             BodyEvent::Start { encoding: e, link_next: next, total: n, .. } => {
///                 body.clear();
///                 (encoding, link_next, total) = (e, next, n);
///             }
///             BodyEvent::Chunk(bytes, _budget) => body.extend_from_slice(&bytes),
///             BodyEvent::Broken { .. } => {}
///             BodyEvent::End(verdict) => {
///                 let _ = verdict.send(Verdict::Done);
///                 break;
///             }
///             // Retries are used up, or the failure is not worth retrying.
///             BodyEvent::Failed(e) => return Err(e.into()),
///         }
///     }
///     let mut json = Vec::new();
///     decoder(encoding, &body[..])?.read_to_end(&mut json)?;
///     let scan = scan_page(&json, &spec.records, cursor, &mut Print)?;
///     let outcome = PageOutcome {
///         records: scan.records,
///         body_next: scan.next.as_deref(),
///         link_next: link_next.as_deref(),
///         total,
///     };
///     paginator.advance(&url, outcome)?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HttpSource {
    ctx: Arc<fetch::FetchContext>,
}

impl HttpSource {
    /// Builds the client (rustls, certificate verification on, the configured headers marked
    /// sensitive, timeouts and extra CAs from `config`). No request is made.
    ///
    /// # Errors
    ///
    /// [`SourceError::Client`] for a header name or value that is not valid, or a CA bundle
    /// or TLS set-up that fails.
    pub fn new(config: SourceConfig) -> Result<Self, SourceError> {
        crate::tls::crypto();
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SourceError::Client(format!("invalid header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
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
        let limiter = RateLimiter::new(config.rate_limit);
        Ok(HttpSource {
            ctx: Arc::new(fetch::FetchContext {
                auth: auth::Authenticator::new(config.auth.clone()),
                client,
                config,
                limiter,
                stats: FetchStats::default(),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SourceConfig {
        &self.ctx.config
    }

    /// A paginator starting at the source URL.
    pub fn paginator(&self) -> Paginator {
        let config = &self.ctx.config;
        Paginator::new(
            config.pagination.clone(),
            config.url.clone(),
            config.max_pages,
        )
    }

    /// A paginator that goes on from `state` (a checkpoint's); the state must fit this
    /// source's pagination.
    pub fn resume_paginator(
        &self,
        state: paginate::PagingState,
    ) -> Result<Paginator, PaginationError> {
        let config = &self.ctx.config;
        Paginator::resume(
            config.pagination.clone(),
            config.url.clone(),
            config.max_pages,
            state,
        )
    }

    /// Starts fetching page `page` (a number for messages, from 1) at `url` in a task of
    /// `tasks`; its body arrives on the returned channel as [`BodyEvent`]s (see [`fetch`]).
    ///
    /// The task waits for the rate limiter, retries what is worth retrying, and holds at most
    /// `page_buffer_bytes` of body in the channel: read it, and answer the
    /// [`BodyEvent::End`] with a [`Verdict`], or the task waits. Dropping the receiver stops
    /// the fetch.
    pub fn spawn_page(
        &self,
        page: u64,
        url: Url,
        tasks: &mut JoinSet<()>,
    ) -> mpsc::Receiver<BodyEvent> {
        // The byte budget bounds the channel; its length only bounds small chunks' count.
        let (tx, rx) = mpsc::channel(64);
        tasks.spawn(fetch::fetch_page(Arc::clone(&self.ctx), page, url, tx));
        rx
    }

    /// Counters of every fetch so far.
    pub fn stats(&self) -> &FetchStats {
        &self.ctx.stats
    }

    /// Rate-limit waits so far.
    pub fn rate_stats(&self) -> RateStats {
        self.ctx.limiter.stats()
    }

    /// Time spent waiting before retries so far.
    pub fn retry_wait(&self) -> Duration {
        fetch::retry_wait(&self.ctx.stats)
    }

    /// OAuth2 access tokens fetched so far.
    pub fn tokens_fetched(&self) -> u64 {
        self.ctx.auth.fetched.load(Ordering::Relaxed)
    }

    /// Retries so far.
    pub fn retries(&self) -> u64 {
        self.ctx.stats.retries.load(Ordering::Relaxed)
    }
}

/// Reads up to 200 characters of an error response for the message.
pub(crate) async fn read_excerpt(response: &mut reqwest::Response) -> String {
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

pub(crate) struct Failure {
    pub(crate) retryable: bool,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) kind: FailureKind,
}

pub(crate) enum FailureKind {
    Status(u16, String),
    Transport(String),
    TooLarge,
    /// A `Content-Encoding` landline does not decode.
    Encoding(String),
    /// A complete body the page processor turned down.
    Rejected(RetryCause),
    /// No credentials for the request.
    Auth(AuthError),
}

impl Failure {
    pub(crate) fn transport(e: reqwest::Error) -> Failure {
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
    pub(crate) fn body(e: reqwest::Error) -> Failure {
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

    pub(crate) fn too_large() -> Failure {
        Failure {
            retryable: false,
            retry_after: None,
            kind: FailureKind::TooLarge,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            FailureKind::Status(s, _) => format!("HTTP {s}"),
            FailureKind::Transport(cause) => cause.clone(),
            FailureKind::TooLarge => "page too large".into(),
            FailureKind::Encoding(e) => format!("unsupported Content-Encoding {e:?}"),
            FailureKind::Rejected(RetryCause::ApiError(message)) => {
                format!("the API answered with an error: {message}")
            }
            FailureKind::Rejected(RetryCause::Decode(cause)) => cause.clone(),
            FailureKind::Auth(e) => e.to_string(),
        }
    }

    pub(crate) fn into_error(
        self,
        page: u64,
        url: RedactedUrl,
        attempts: u32,
        limit: usize,
    ) -> SourceError {
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
            FailureKind::Encoding(encoding) => SourceError::Encoding {
                page,
                url,
                encoding,
            },
            FailureKind::Rejected(RetryCause::ApiError(message)) => SourceError::Api {
                page,
                url,
                attempts,
                message,
            },
            FailureKind::Rejected(RetryCause::Decode(cause)) => SourceError::Transport {
                page,
                url,
                attempts,
                cause,
            },
            FailureKind::Auth(source) => SourceError::Auth { page, url, source },
        }
    }
}
