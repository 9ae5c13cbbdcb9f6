//! Fetching one page: its attempts, as a task that streams the body into a bounded channel.
//!
//! `fetch_page` runs as its own tokio task per page. For each attempt it waits for the
//! [`RateLimiter`], sends the request, and streams the answer's body into the page's channel
//! as [`BodyEvent`]s, which the page processor reads in page order. A failure before the body
//! (a status worth retrying, a refused connection, a timeout) is retried here, with backoff
//! or the server's `Retry-After`; a body that breaks off midway is announced
//! ([`BodyEvent::Broken`]) and fetched again; the processor's verdict at the end of a body
//! ([`Verdict`]) may ask for another attempt too (an error object in a 200, a body that does
//! not decode). After the last attempt the task sends [`BodyEvent::Failed`] with the error.
//!
//! Memory: each chunk in the channel holds permits of the page's byte budget
//! (`page_buffer_bytes`), so a page waiting for its turn holds at most that many bytes as
//! received (compressed, if the server compressed them) before its connection is left
//! unread; TCP then holds the rest back at the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, HeaderMap};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use url::Url;

use super::decode::{ACCEPT, Encoding};
use super::rate::{RateLimiter, parse_rate_headers};
use super::{Failure, FailureKind, SourceConfig, SourceError, link, retry};

/// What a page's fetch task tells the page processor, in order.
#[derive(Debug)]
pub enum BodyEvent {
    /// An attempt's answer arrived (status 2xx): its body follows.
    Start {
        /// The attempt, from 1.
        attempt: u32,
        /// How the body is encoded.
        encoding: Encoding,
        /// The `rel="next"` link of its `Link` headers, if any.
        link_next: Option<String>,
        /// The total record count from the configured header, if any.
        total: Option<u64>,
    },
    /// A piece of the body as received, holding its share of the page's byte budget.
    Chunk(Bytes, OwnedSemaphorePermit),
    /// The body broke off; another [`BodyEvent::Start`] (or [`BodyEvent::Failed`]) follows.
    Broken {
        /// Why, for the log.
        cause: String,
    },
    /// The body is complete: answer with a [`Verdict`].
    End(oneshot::Sender<Verdict>),
    /// The page failed for good.
    Failed(SourceError),
}

/// The page processor's answer to a complete body.
#[derive(Debug)]
pub enum Verdict {
    /// The page is done.
    Done,
    /// Fetch it again, if attempts are left.
    Retry(RetryCause),
}

/// Why a complete body is to be fetched again.
#[derive(Debug, Clone)]
pub enum RetryCause {
    /// The body has an error value at the configured `error` pointer.
    ApiError(String),
    /// The body did not decode.
    Decode(String),
}

impl RetryCause {
    fn describe(&self) -> String {
        match self {
            RetryCause::ApiError(message) => format!("the API answered an error: {message}"),
            RetryCause::Decode(cause) => cause.clone(),
        }
    }
}

/// Counters of every fetch of a run.
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Bytes received on the wire (bodies as sent, compressed or not), every attempt.
    pub wire_bytes: AtomicU64,
    /// Retries of any page.
    pub retries: AtomicU64,
    /// Time spent waiting before retries, in nanoseconds.
    pub retry_wait_nanos: AtomicU64,
}

/// What every page task of a run shares.
#[derive(Debug)]
pub(crate) struct FetchContext {
    pub(crate) auth: super::auth::Authenticator,
    pub(crate) client: reqwest::Client,
    pub(crate) config: SourceConfig,
    pub(crate) limiter: RateLimiter,
    pub(crate) stats: FetchStats,
}

/// Fetches page `page` at `url` into `tx` until it is done or has failed for good.
pub(crate) async fn fetch_page(
    ctx: Arc<FetchContext>,
    page: u64,
    url: Url,
    tx: mpsc::Sender<BodyEvent>,
) {
    let budget_bytes = ctx
        .config
        .page_buffer_bytes
        .clamp(1, Semaphore::MAX_PERMITS);
    let budget = Arc::new(Semaphore::new(budget_bytes));
    let policy = &ctx.config.retry;
    let mut attempt = 0;
    let mut reauthorized = false;
    loop {
        attempt += 1;
        let failure = match attempt_once(&ctx, page, &url, attempt, &tx, &budget).await {
            Ok(Outcome::Done) | Err(Gone) => return,
            Ok(Outcome::Failed(failure)) => failure,
            Ok(Outcome::Unauthorized(failure)) if !reauthorized => {
                // Once per page, at once: the next attempt fetches a fresh token.
                reauthorized = true;
                tracing::warn!(
                    page,
                    url = %ctx.config.redactor.url(&url),
                    attempt,
                    "the API refused the access token (HTTP 401): fetching a new one"
                );
                drop(failure);
                attempt -= 1;
                continue;
            }
            Ok(Outcome::Unauthorized(mut failure)) => {
                if let FailureKind::Status(_, body) = &mut failure.kind {
                    body.insert_str(0, "refused again with a fresh OAuth2 access token; ");
                }
                failure
            }
        };
        let give_up = !failure.retryable || attempt >= policy.max_attempts;
        if give_up {
            let error = failure.into_error(
                page,
                ctx.config.redactor.url(&url),
                attempt,
                ctx.config.max_page_bytes,
            );
            let _ = tx.send(BodyEvent::Failed(error)).await;
            return;
        }
        let delay = policy.delay(attempt - 1, failure.retry_after, &mut rand::rng());
        if let Some(wait) = failure.retry_after {
            // The server asked every client to wait, not only this request.
            ctx.limiter.pause_for(wait.min(policy.max_retry_after));
        }
        tracing::warn!(
            page,
            url = %ctx.config.redactor.url(&url),
            attempt,
            cause = %failure.describe(),
            retry_in_ms = delay.as_millis() as u64,
            "retrying page"
        );
        ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
        let waited = Instant::now();
        tokio::time::sleep(delay).await;
        let nanos = u64::try_from(waited.elapsed().as_nanos()).unwrap_or(u64::MAX);
        ctx.stats
            .retry_wait_nanos
            .fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The page processor is gone (the run is stopping): nothing more to do.
struct Gone;

enum Outcome {
    Done,
    Failed(Failure),
    /// A 401 to a request sent with an OAuth2 token, which is no longer used.
    Unauthorized(Failure),
}

async fn attempt_once(
    ctx: &FetchContext,
    page: u64,
    url: &Url,
    attempt: u32,
    tx: &mpsc::Sender<BodyEvent>,
    budget: &Arc<Semaphore>,
) -> Result<Outcome, Gone> {
    ctx.limiter.acquire().await;
    let mut request = ctx.client.get(ctx.auth.url(url).into_owned());
    if ctx.config.compression {
        request = request.header(ACCEPT_ENCODING, ACCEPT);
    }
    let config = &ctx.config;
    let (request, token) = match ctx
        .auth
        .authorize(&ctx.client, request, &config.retry, &config.redactor)
        .await
    {
        Ok(authorized) => authorized,
        Err(e) => {
            return Ok(Outcome::Failed(Failure {
                retryable: false,
                retry_after: None,
                kind: FailureKind::Auth(e),
            }));
        }
    };
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Ok(Outcome::Failed(Failure::transport(e))),
    };
    if let Some(hint) = parse_rate_headers(response.headers(), SystemTime::now()) {
        ctx.limiter.observe(hint);
    }
    let status = response.status();
    if !status.is_success() {
        // `Retry-After: 0` (or a date already past) is no hint: back off as usual.
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
            .filter(|wait| !wait.is_zero());
        let text = super::read_excerpt(&mut response).await;
        let failure = Failure {
            retryable: retry::is_retryable_status(status.as_u16()),
            retry_after,
            kind: FailureKind::Status(status.as_u16(), text),
        };
        if let (401, Some(token)) = (status.as_u16(), token) {
            ctx.auth.rejected(token).await;
            return Ok(Outcome::Unauthorized(failure));
        }
        return Ok(Outcome::Failed(failure));
    }
    let headers = response.headers();
    let encoding = match encoding_of(headers) {
        Ok(encoding) => encoding,
        Err(found) => {
            return Ok(Outcome::Failed(Failure {
                retryable: false,
                retry_after: None,
                kind: FailureKind::Encoding(found),
            }));
        }
    };
    if encoding == Encoding::Identity
        && let Some(len) = response.content_length()
        && len > ctx.config.max_page_bytes as u64
    {
        return Ok(Outcome::Failed(Failure::too_large()));
    }
    let link_next = link::next_link(
        headers
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
    .map(str::to_owned);
    let total = ctx
        .config
        .total_header()
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    tracing::debug!(page, attempt, encoding = encoding.name(), "page answered");
    send(
        tx,
        BodyEvent::Start {
            attempt,
            encoding,
            link_next,
            total,
        },
    )
    .await?;
    let budget_bytes = ctx
        .config
        .page_buffer_bytes
        .clamp(1, Semaphore::MAX_PERMITS);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                ctx.stats
                    .wire_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                let permits = chunk.len().clamp(1, budget_bytes);
                let permit = Arc::clone(budget)
                    .acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX))
                    .await
                    .map_err(|_| Gone)?;
                send(tx, BodyEvent::Chunk(chunk, permit)).await?;
            }
            Ok(None) => {
                tracing::debug!(page, attempt, "page received");
                break;
            }
            Err(e) => {
                let failure = Failure::body(e);
                send(
                    tx,
                    BodyEvent::Broken {
                        cause: failure.describe(),
                    },
                )
                .await?;
                return Ok(Outcome::Failed(failure));
            }
        }
    }
    let (verdict_tx, verdict_rx) = oneshot::channel();
    send(tx, BodyEvent::End(verdict_tx)).await?;
    match verdict_rx.await {
        Ok(Verdict::Done) => Ok(Outcome::Done),
        Ok(Verdict::Retry(cause)) => {
            tracing::debug!(page, cause = %cause.describe(), "page to be fetched again");
            Ok(Outcome::Failed(Failure {
                retryable: true,
                retry_after: None,
                kind: FailureKind::Rejected(cause),
            }))
        }
        Err(_) => Err(Gone),
    }
}

async fn send(tx: &mpsc::Sender<BodyEvent>, event: BodyEvent) -> Result<(), Gone> {
    tx.send(event).await.map_err(|_| Gone)
}

/// The body's encoding from `Content-Encoding`; the header's text if it is not one landline
/// decodes.
fn encoding_of(headers: &HeaderMap) -> Result<Encoding, String> {
    let mut found = Encoding::Identity;
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| "(not text)".to_owned())?;
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let next = Encoding::parse(coding).ok_or_else(|| text.to_owned())?;
            if next == Encoding::Identity {
                continue;
            }
            if found != Encoding::Identity {
                // Two codings stacked: rare, and not asked for.
                return Err(text.to_owned());
            }
            found = next;
        }
    }
    Ok(found)
}

/// How long a run waited before retries, from the counters.
pub(crate) fn retry_wait(stats: &FetchStats) -> Duration {
    Duration::from_nanos(stats.retry_wait_nanos.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn content_encodings_are_read() {
        let of = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            encoding_of(&headers)
        };
        assert_eq!(of(&[]), Ok(Encoding::Identity));
        assert_eq!(of(&["gzip"]), Ok(Encoding::Gzip));
        assert_eq!(of(&["x-gzip"]), Ok(Encoding::Gzip));
        assert_eq!(of(&["BR"]), Ok(Encoding::Brotli));
        assert_eq!(of(&["zstd"]), Ok(Encoding::Zstd));
        assert_eq!(of(&["deflate"]), Ok(Encoding::Deflate));
        assert_eq!(of(&["identity, gzip"]), Ok(Encoding::Gzip));
        assert_eq!(of(&["gzip, br"]), Err("gzip, br".to_owned()));
        assert_eq!(of(&["gzip", "br"]), Err("br".to_owned()));
        assert_eq!(of(&["compress"]), Err("compress".to_owned()));
    }
}
