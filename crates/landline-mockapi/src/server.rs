//! The HTTP side: one data set behind six pagination styles, plus auth, faults, and the
//! imitation of a real network and a real API's limits.
//!
//! Every data endpoint serves dataset offsets `[start, min(start + size, total))` of the
//! [`Pool`]; a page body is the pool's byte slices written one after the other, so serving costs
//! a memcpy, not JSON encoding. A page is generated and sent in slices of about 256 KiB, never
//! built whole, so even `/single/variants` of a large data set costs the server a few slices of
//! memory. Endpoints (all `GET` but the token endpoint):
//!
//! | path | query | body | next page |
//! |---|---|---|---|
//! | `/variants` | `count`, `token`, `updated_since` | `{"variants":[…],"next_token":"…"}` | `next_token`, `null` at the end |
//! | `/next_url/variants` | `count`, `cursor`, `updated_since` | `{"data":{"items":[…]},"links":{"next":"…"}}` | relative URL (keeping `updated_since`), no `next` at the end |
//! | `/link/variants` | `per_page`, `cursor`, `updated_since` | `[…]` | `Link` header `rel="next"` (absolute, from `Host`, keeping `updated_since`) |
//! | `/offset/variants` | `offset`, `limit` | `{"results":[…],"total":N}`, header `X-Total-Count: N` | client adds `limit` |
//! | `/page/variants` | `page` (from 1), `per_page` | `{"items":[…],"page":P,"total":N}`, header `X-Total-Count: N` | client adds 1 |
//! | `/single/variants` | `updated_since` | `{"variants":[…all…]}` | none |
//! | `POST /oauth/token` | form body | `{"access_token":"…","token_type":"Bearer",…}` | only with [`Auth::OAuth2`]; see [`OAuth2Server`] |
//!
//! Page sizes must be in `1..=1000` (default 200); tokens and cursors are the opaque base64url
//! of `v1:<offset>`, the same as `bench/mock_api.py`. Past the end, `offset` and `page` answer
//! empty pages. `/healthz` answers `ok` and `/meta` the data set's parameters. Errors are JSON
//! `{"error":"…"}`: 400 for bad parameters, 401 when [`MockConfig::auth`] is not satisfied
//! (every path but `/healthz` and the token endpoint), 404 for unknown paths. [`Faults`],
//! latency, bandwidth, compression and the rate limit apply to data endpoints only. Query
//! parameters the endpoint does not know (an `api_key`, say) are ignored. Paging values are not
//! percent-decoded (they never need encoding); `updated_since` and the
//! [`Auth::ApiKeyQuery`] key are (`+` stays `+`: send `%2B` or `+`, both mean a plus).
//!
//! **Auth.** [`MockConfig::auth`] says what every request but `/healthz` (and
//! `/oauth/token`) must present; a request without it answers 401 `{"error":"…"}` naming what
//! was missing or did not match (never echoing a secret), with a `WWW-Authenticate`
//! challenge, before anything else (rate limit, faults, latency), and counts in
//! [`Stats::unauthorized`]. The kinds ([`Auth`]): a static bearer token (challenge `Bearer`);
//! HTTP Basic, RFC 7617 (`Basic realm="landline-mockapi", charset="UTF-8"`; malformed base64
//! or no `:` answers 401 too); an API key in a header or in a query parameter (`ApiKey
//! realm=…, header=…` / `query=…`); OAuth2 bearer tokens from this server's token endpoint
//! ([`OAuth2Server`]: client credentials and refresh grants, expiry after
//! [`OAuth2Server::token_ttl`], revocation after [`OAuth2Server::revoke_after_requests`] data
//! requests, refresh token rotation; a missing token is challenged with `Bearer
//! realm="landline-mockapi"`, an unknown, expired or revoked one with `Bearer
//! realm="landline-mockapi", error="invalid_token", error_description="…"`; tokens issued
//! and their use: [`MockApi::issued_tokens`]); and AWS Signature Version 4 in its header form
//! (challenge `AWS4-HMAC-SHA256`): the canonical request is rebuilt as the AWS documentation
//! and the `aws-sigv4` crate's default settings build it (the path normalised and URI-encoded
//! once more, i.e. each segment twice; the query form-decoded, RFC 3986-encoded and sorted;
//! the `SignedHeaders`, which must hold `host` and `x-amz-date`, lowercase, trimmed, sorted;
//! the payload hash from `X-Amz-Content-Sha256`, else of an empty body), the key derived by the
//! HMAC chain, the signatures compared in constant time; `X-Amz-Date` must be within 15
//! minutes of the server's clock, and with a session token configured
//! `X-Amz-Security-Token` must be sent and equal it. Secrets are compared in constant time.
//!
//! **Incremental reads.** A request to `/variants`, `/next_url/variants`, `/link/variants` or
//! `/single/variants` may carry `updated_since=<RFC 3339 timestamp>` (percent-decoded; `Z` or
//! an offset such as `+00:00`; 0 to 9 fractional digits, e.g. `2024-02-13T14:04:10.045Z`):
//! each page then serves only the records of its window whose `updated_at` instant is **at or
//! after** that instant (inclusive, so a record updated exactly then is served again:
//! at-least-once at the boundary; the comparison is exact, a fraction finer than the
//! records' milliseconds included). The next token, cursor or link is the unfiltered one, so
//! a page may hold fewer records, or none (`{"variants":[],"next_token":"…"}`, `[]` with its
//! `Link`), and paging still reaches the end; next URLs and links keep `updated_since`
//! (re-encoded). `/offset/variants` and `/page/variants` answer 400 to `updated_since` (a
//! client-computed offset would skip records under a filter), and so does a value that is not
//! a timestamp. With [`MockConfig::as_of`], records updated after that instant do not exist
//! yet: no endpoint serves them (on `/offset` and `/page` too, whose pages then hold fewer
//! records while `total` and `X-Total-Count` stay the data set's). The expected set of a run:
//! [`visible_offsets`](crate::visible_offsets).
//!
//! **Network.** [`MockConfig::latency`] waits before each data page is answered (before its
//! first byte); [`MockConfig::bandwidth`] holds each data page's body to that many bytes
//! per second, sent in pieces of up to 64 KiB, like `bench/mock_api.py --bandwidth-mbps`.
//!
//! **Compression.** With [`MockConfig::encodings`] set, a data page answered 200 is compressed
//! with the first of those [`Encoding`]s that the request's `Accept-Encoding` accepts (`q=0`
//! refuses a coding, `*` stands for the others; without the header, nothing is compressed),
//! with `Content-Encoding` set and in chunked encoding (uncompressed pages have their
//! `Content-Length`); every such page says `Vary: Accept-Encoding`, compressed or not. Levels are the fast ones a server compressing on the
//! fly uses: gzip and deflate (zlib-wrapped, as RFC 9110 defines `deflate`) level 1, brotli
//! quality 1, zstd level 1. Error answers, fault answers that replace the page
//! ([`Action::Status`], [`Action::NotJson`], [`Action::ErrorBody`]) and non-data endpoints are
//! never compressed. Body faults ([`Action::ResetMidBody`], [`Action::Truncate`],
//! [`Action::Stall`]) count their `after` in **uncompressed** bytes: the encoder is flushed
//! there, so what the client has received at the failure or pause decodes to exactly the
//! page's first `after` bytes; the ones that promise a `Content-Length` (truncate, stall, and
//! [`Action::Pad`] without `chunked`) compress the page whole in memory first, to know it.
//!
//! **Rate limit.** With [`MockConfig::rate_limit`] set, at most [`RateLimit::limit`] data
//! requests are answered per fixed window of [`RateLimit::window`], a window starting with the
//! first request after the previous one ended. Every request to a data endpoint that passed the
//! auth check ([`MockConfig::auth`]) counts, whatever its answer; the ones over the limit answer 429 with
//! `Retry-After` (seconds to the window's end, rounded up), before any fault rule or latency,
//! and count in [`Stats::rate_limited`]. Every answer of a request that counted (200, 429 or
//! any other) carries the headers [`RateLimit::headers`] chooses. [`MockApi::request_log`] records every data request, with its
//! arrival and status, to check how a client spaces its requests.
//!
//! **Faults.** [`Faults::rules`] is a list of [`Fault`]s, each saying which requests it hits
//! ([`When`]: a page number, a dataset offset, or every page), what goes wrong ([`Action`]: an
//! error status with or without `Retry-After`, a connection dropped mid-body, a truncated body,
//! a 200 that is not JSON or that holds an error, a slow answer or a body that stalls, a next
//! cursor that leads back, a page padded past a size limit, a page whose records changed) and
//! how often ([`Times`]: the first `n` requests of each URL, or forever). Uses are counted per
//! request URL, so a client that retries a URL sees exactly `n` failures and then the page.

mod auth;
mod body;
mod sigv4;

pub use auth::{Auth, Grant, IssuedToken, OAuth2Server, TOKEN_PATH};

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use std::{fmt, io};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, LINK, RETRY_AFTER, VARY,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::generator::{DataConfig, ID_BASE, Pool, parse_rfc3339};

/// Largest page a client may ask for (`count`, `limit`, `per_page`).
pub const MAX_PAGE_SIZE: u64 = 1000;
/// Page size when the request does not say.
pub const DEFAULT_PAGE_SIZE: u64 = 200;

const JSON: &str = "application/json";

/// Requests [`MockApi::request_log`] keeps: the most recent ones.
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// How the mock API behaves: the data set, the network it imitates, its limits, and what goes
/// wrong. The default serves [`DataConfig::default`] as fast as it can, uncompressed, without
/// auth, limits or faults.
#[derive(Clone, Debug, Default)]
pub struct MockConfig {
    /// The records served.
    pub data: DataConfig,
    /// Added to every data request before it is answered: the wait before a page's first byte.
    pub latency: Duration,
    /// When set, the body of each data page answered (not of error answers) is sent at most
    /// this many bytes per second, counted on the wire (compressed bytes, if compressed), in
    /// pieces of up to 64 KiB (about 1/20 s of data for rates below 1.3 MB/s) with no initial
    /// burst; `None` or `Some(0)`: as fast as the connection takes it.
    pub bandwidth: Option<u64>,
    /// Content codings offered for data pages, in the server's order of preference: a page
    /// answered 200 is compressed with the first one the request's `Accept-Encoding` accepts.
    /// Empty (the default): never compress. See the [module docs](crate::server).
    pub encodings: Vec<Encoding>,
    /// What every path but `/healthz` (and the OAuth2 token endpoint) requires; see [`Auth`]
    /// and the [module docs](crate::server). Default: nothing.
    pub auth: Auth,
    /// When set (milliseconds since the Unix epoch), only the records whose `updated_at` is at
    /// or before this instant exist: no endpoint serves the others (the data set "as of" that
    /// instant). Totals stay the data set's. For incremental runs: day 1 `as_of = T1`, day 2
    /// `as_of = T2`; see [`visible_offsets`](crate::visible_offsets).
    pub as_of: Option<i64>,
    /// Injected failures of the data endpoints.
    pub faults: Faults,
    /// When set, data requests beyond this rate answer 429; see [`RateLimit`].
    pub rate_limit: Option<RateLimit>,
}

/// A content coding the server can compress data pages with ([`MockConfig::encodings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `gzip`, level 1 (`x-gzip` in `Accept-Encoding` is taken for it).
    Gzip,
    /// `deflate`: the zlib format (RFC 1950) as RFC 9110 defines it, level 1.
    Deflate,
    /// `br`: brotli, quality 1.
    Brotli,
    /// `zstd`: Zstandard, level 1.
    Zstd,
}

impl Encoding {
    /// Every encoding.
    pub const ALL: [Encoding; 4] = [
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Brotli,
        Encoding::Zstd,
    ];

    /// Its token in `Accept-Encoding` and `Content-Encoding`: `gzip`, `deflate`, `br`, `zstd`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Encoding {
    /// The [token](Encoding::token).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

impl FromStr for Encoding {
    type Err = String;

    /// A [token](Encoding::token), or `brotli`; case-insensitive.
    fn from_str(s: &str) -> Result<Encoding, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("brotli") {
            return Ok(Encoding::Brotli);
        }
        Encoding::ALL
            .into_iter()
            .find(|e| s.eq_ignore_ascii_case(e.token()))
            .ok_or_else(|| format!("unknown encoding {s:?} (gzip, deflate, br or zstd)"))
    }
}

/// A fixed-window rate limit of the data endpoints ([`MockConfig::rate_limit`]).
///
/// At most `limit` data requests are answered per window of `window`; a window starts with
/// the first data request after the previous window ended (the first one with the first
/// request). Every data request that passes the auth check ([`MockConfig::auth`]) counts, whatever its answer
/// (a 400, a fault, the page); one beyond the limit answers 429 at once, with `Retry-After`
/// in whole seconds until the window ends (rounded up), and counts in
/// [`Stats::rate_limited`]. Every answer of a request that counted, 200 or 429 or other,
/// carries the `headers` chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests answered per window; 0 refuses them all.
    pub limit: u32,
    /// The window's length.
    pub window: Duration,
    /// Which headers tell the client about the limit.
    pub headers: RateLimitHeaders,
}

/// The rate limit headers of a [`RateLimit`], sent with every answer of a data endpoint.
///
/// "Remaining" is what is left of the window after this request (0 on a 429), and "reset" the
/// time until the window ends, rounded up to whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitHeaders {
    /// No headers (only the 429s' `Retry-After`).
    None,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, and `RateLimit-Reset` in delta seconds (the
    /// IETF httpapi draft's fields).
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, and `X-RateLimit-Reset` in seconds since
    /// the Unix epoch, as GitHub sends them.
    XRateLimit,
}

/// One data request as [`MockApi::request_log`] recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the request arrived (before auth, latency or faults).
    pub at: Instant,
    /// The path and query, as sent.
    pub path_and_query: String,
    /// The status answered (a body that failed later still answered its status).
    pub status: u16,
}

/// Injected failures of the data endpoints; the default injects none.
///
/// [`rules`](Faults::rules) is the general mechanism. The other fields are shorthands kept for
/// the tests that use them; rules are tried first, then `transient_errors`, then
/// `error_after_pages`.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Fault rules, tried in order for every data request whose parameters are valid; see
    /// [`Fault`].
    pub rules: Vec<Fault>,
    /// After this many successful data pages, every data request answers `error_status`,
    /// forever.
    pub error_after_pages: Option<u64>,
    /// Status of the `error_after_pages` failures (default 500; an invalid code gives 500).
    pub error_status: u16,
    /// Every distinct data request URL (path and query) fails with 503 this many times before
    /// it succeeds.
    pub transient_errors: u32,
    /// `Retry-After` header sent with the 503s of `transient_errors`, e.g. `"0"` or `"1"`.
    pub retry_after: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            error_after_pages: None,
            error_status: 500,
            transient_errors: 0,
            retry_after: None,
        }
    }
}

/// One fault rule: which requests it hits, what it does to them, and how many times per URL.
///
/// For each data request whose parameters are valid, the rules of [`Faults::rules`] are tried
/// in order. The first rule whose [`when`](Fault::when) matches the request and which has uses
/// left **for this request URL** (path and query, as sent) applies its
/// [`what`](Fault::what) and spends one use for that URL; when none applies, the page is served
/// normally. Uses only ever grow, so a client retrying a URL meets a [`Times::First`]`(n)` rule
/// exactly `n` times, then the next matching rule, then the real page: rules with the same
/// `when` play one after the other.
///
/// ```
/// use std::time::Duration;
/// use landline_mockapi::{Action, Fault, RetryAfter, Times, When};
///
/// let busy = Action::status(503).retry_after(RetryAfter::Seconds(1));
/// let rules = vec![
///     // Page 2 answers 503 twice, with `Retry-After: 1`, then a reset, then the page.
///     Fault::new(When::Page(2), busy, Times::First(2)),
///     Fault::new(When::Page(2), Action::ResetMidBody { after: 1024 }, Times::First(1)),
///     // The first request of every URL is slow.
///     Fault::new(When::Always, Action::Delay(Duration::from_secs(2)), Times::First(1)),
/// ];
/// # let _ = rules;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which requests the rule applies to.
    pub when: When,
    /// What happens to them.
    pub what: Action,
    /// How many requests of each URL it applies to.
    pub times: Times,
}

impl Fault {
    /// A rule: `what` happens to requests matching `when`, `times` per URL.
    pub fn new(when: When, what: Action, times: Times) -> Fault {
        Fault { when, what, times }
    }
}

/// The requests a [`Fault`] applies to, by the records they ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Every data request.
    Always,
    /// Page `n` (from 1) in pages of the requested size: the request whose first record is at
    /// dataset offset `(n - 1) × size`. `/single/variants` is page 1.
    Page(u64),
    /// The request whose first record is at this dataset offset.
    Offset(u64),
}

impl When {
    fn matches(self, window: &Window) -> bool {
        match self {
            When::Always => true,
            When::Offset(offset) => window.start == offset,
            When::Page(0) => false,
            When::Page(n) if window.size == 0 => n == 1,
            When::Page(n) => (n - 1).checked_mul(window.size) == Some(window.start),
        }
    }
}

/// How many requests of each URL a [`Fault`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    /// The first `n` requests of each matching URL that reach this rule; later ones go on to
    /// the next rule (or the page).
    First(u32),
    /// Every request of a matching URL.
    Forever,
}

/// What a [`Fault`] does to a request.
///
/// The body-level faults send the real page's bytes (a prefix of them), so what a client
/// receives before the failure is exactly what it would have read. When the page is compressed
/// ([`MockConfig::encodings`]), their `after` counts uncompressed bytes, and what was sent
/// before the failure or pause decodes to exactly those (see the [module docs](crate::server)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answers `status` with a JSON error body and, if set, a `Retry-After` header. An invalid
    /// status gives a 500 saying so.
    Status {
        /// The HTTP status, e.g. 429, 500, 502 or 503.
        status: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<RetryAfter>,
    },
    /// Answers 200 and the page's first `after` bytes (at most its length minus one) in
    /// chunked encoding, then fails the body so the server drops the connection mid-body: the
    /// client reads a chunked body that never ends.
    ResetMidBody {
        /// Body bytes sent before the connection drops.
        after: usize,
    },
    /// Answers 200 with the page's full `Content-Length` but sends only its first `after`
    /// bytes (at most its length minus one), then closes the connection. Compressed, the
    /// `Content-Length` is the whole compressed page's.
    Truncate {
        /// Body bytes sent before the connection closes.
        after: usize,
    },
    /// Answers 200 with an HTML error page (`text/html`), as a proxy in front of an API might.
    NotJson,
    /// Waits this long before answering (then serves the page normally).
    Delay(Duration),
    /// Sends the headers (full `Content-Length`, compressed or not) and the page's first
    /// `after` bytes, waits `stall`, then sends the rest.
    Stall {
        /// Body bytes sent before the pause.
        after: usize,
        /// The pause.
        stall: Duration,
    },
    /// Serves the page, but its next token, cursor or link leads to this dataset offset: an
    /// earlier page's offset makes a pagination loop. No effect on `/offset`, `/page` and
    /// `/single`, where the client computes the next page.
    NextOffset(u64),
    /// Serves the page with `bytes` spaces after its JSON (still valid JSON, just larger): with
    /// its `Content-Length`, or in chunked encoding (the client learns the size only by
    /// reading) when `chunked`. Compressed, the spaces are compressed too (a page far larger
    /// decoded than on the wire), and the `Content-Length` is the compressed one.
    Pad {
        /// Spaces added.
        bytes: usize,
        /// Whether to leave out `Content-Length`.
        chunked: bool,
    },
    /// Answers **200** with this text as its `application/json` body, sent as is (never
    /// compressed) and holding no records: an API that reports errors inside a successful
    /// answer, e.g. `{"error":{"code":"quota","message":"daily quota exceeded"}}`.
    ErrorBody(String),
    /// Serves the page as usual (200, the same shape, size, headers and next token, cursor or
    /// link as the real page), but each of its records is the one `n` dataset offsets further
    /// on, with that offset's `"id"`: a page whose content changed between two requests.
    /// After a [`Times::First`] rule on the same page, a client's retry sees other records
    /// than the real page's. Offsets past the data set's `total` are generated like any other
    /// (the pool wraps).
    Shifted(u64),
}

impl Action {
    /// [`Action::Status`] without `Retry-After`.
    pub fn status(status: u16) -> Action {
        Action::Status {
            status,
            retry_after: None,
        }
    }

    /// This action with a `Retry-After` header, if it is an [`Action::Status`] (else unchanged).
    pub fn retry_after(self, after: RetryAfter) -> Action {
        match self {
            Action::Status { status, .. } => Action::Status {
                status,
                retry_after: Some(after),
            },
            other => other,
        }
    }

    /// Whether the request is still answered with the whole page (perhaps late or altered),
    /// and so counts in [`Stats::pages_served`].
    fn serves_page(&self) -> bool {
        matches!(
            self,
            Action::Delay(_)
                | Action::Stall { .. }
                | Action::NextOffset(_)
                | Action::Pad { .. }
                | Action::Shifted(_)
        )
    }
}

/// A `Retry-After` header value, computed when the response is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// Delta-seconds: `Retry-After: 2`.
    Seconds(u64),
    /// An HTTP-date this long after the response, e.g. `Retry-After: Wed, 25 Nov 2026
    /// 10:00:02 GMT`. HTTP-dates have whole seconds and this one is rounded down, so a client
    /// honouring it waits up to one second less than this.
    DateIn(Duration),
}

impl RetryAfter {
    fn header_value(self, now: SystemTime) -> String {
        match self {
            RetryAfter::Seconds(secs) => secs.to_string(),
            RetryAfter::DateIn(wait) => {
                // HTTP-dates end with the year 9999.
                let last = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
                let at = now.checked_add(wait).map_or(last, |at| at.min(last));
                httpdate::fmt_http_date(at)
            }
        }
    }
}

/// What a server has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Data pages answered with 200 (including the faults that still serve the whole page:
    /// [`Action::Delay`], [`Action::Stall`], [`Action::NextOffset`], [`Action::Pad`],
    /// [`Action::Shifted`]).
    pub pages_served: u64,
    /// Body bytes of those pages sent so far, as on the wire (compressed if they were).
    pub bytes_served: u64,
    /// Every request received, whatever its answer.
    pub requests: u64,
    /// Requests a fault was injected into: a [`Fault`] rule applied, or one of the
    /// [`Faults`] shorthands answered an error.
    pub faults_injected: u64,
    /// The same bodies as `bytes_served`, uncompressed: equal to it when nothing was
    /// compressed. (Of a body still being sent, the bytes a compressor holds back are counted
    /// when they are sent.)
    pub bytes_decoded: u64,
    /// Data requests refused with 429 by [`MockConfig::rate_limit`].
    pub rate_limited: u64,
    /// Requests refused with 401 by [`MockConfig::auth`] (any path; not the token endpoint's
    /// own errors).
    pub unauthorized: u64,
    /// Access tokens issued by the `client_credentials` grant ([`Auth::OAuth2`]).
    pub client_credentials_grants: u64,
    /// Access tokens issued by the `refresh_token` grant: the refreshes.
    pub refresh_grants: u64,
    /// Token requests answered with an error (`invalid_client`, `invalid_grant`, …).
    pub token_errors: u64,
}

/// A mock API with its pool built, ready to serve; clones share the pool and the counters.
#[derive(Clone)]
pub struct MockApi {
    shared: Arc<Shared>,
}

struct Shared {
    config: MockConfig,
    pool: Pool,
    /// Tokens issued and auth counters.
    auth: auth::AuthState,
    pages_served: AtomicU64,
    bytes_served: AtomicU64,
    bytes_decoded: AtomicU64,
    requests: AtomicU64,
    faults_injected: AtomicU64,
    rate_limited: AtomicU64,
    /// Failures injected so far per request URL, for [`Faults::transient_errors`].
    transient: Mutex<HashMap<String, u32>>,
    /// Uses of each rule (by index in [`Faults::rules`]) per request URL.
    rule_uses: Mutex<HashMap<(usize, String), u32>>,
    /// The current window of [`MockConfig::rate_limit`], if one has started.
    rate_window: Mutex<Option<RateWindow>>,
    /// The last [`REQUEST_LOG_CAPACITY`] data requests.
    log: Mutex<VecDeque<RequestRecord>>,
}

/// A window of [`MockConfig::rate_limit`].
#[derive(Clone, Copy)]
struct RateWindow {
    started: Instant,
    /// Requests answered in it so far.
    used: u32,
}

impl MockApi {
    /// Builds the record pool: CPU-bound and blocking (see [`Pool::build`]).
    pub fn new(config: MockConfig) -> MockApi {
        let pool = Pool::build(&config.data);
        MockApi {
            shared: Arc::new(Shared {
                auth: auth::AuthState::new(&config.auth),
                config,
                pool,
                pages_served: AtomicU64::new(0),
                bytes_served: AtomicU64::new(0),
                bytes_decoded: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                faults_injected: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
                transient: Mutex::new(HashMap::new()),
                rule_uses: Mutex::new(HashMap::new()),
                rate_window: Mutex::new(None),
                log: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The configuration served.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// The record pool.
    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// Counters so far, over all servers of this API.
    pub fn stats(&self) -> Stats {
        Stats {
            pages_served: self.shared.pages_served.load(Relaxed),
            bytes_served: self.shared.bytes_served.load(Relaxed),
            requests: self.shared.requests.load(Relaxed),
            faults_injected: self.shared.faults_injected.load(Relaxed),
            bytes_decoded: self.shared.bytes_decoded.load(Relaxed),
            rate_limited: self.shared.rate_limited.load(Relaxed),
            unauthorized: self.shared.auth.unauthorized.load(Relaxed),
            client_credentials_grants: self.shared.auth.client_credentials_grants.load(Relaxed),
            refresh_grants: self.shared.auth.refresh_grants.load(Relaxed),
            token_errors: self.shared.auth.token_errors.load(Relaxed),
        }
    }

    /// The access tokens the OAuth2 token endpoint issued so far, in order, each with its
    /// grant, scope, expiry and the data requests it was accepted on (empty without
    /// [`Auth::OAuth2`]): to see that a client refreshed mid-run, and how many requests each
    /// token served.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.shared.auth.issued()
    }

    /// The data requests received so far, oldest first: every request to a data endpoint
    /// (whatever its answer, 401s included), the last [`REQUEST_LOG_CAPACITY`] of them.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        let log = self
            .shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.iter().cloned().collect()
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets open requests
    /// finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    fn router(&self) -> Router {
        let mut router = Router::new()
            .route("/healthz", get(healthz))
            .route("/meta", get(meta));
        for paging in Paging::ALL {
            let handler =
                move |State(api): State<Arc<Shared>>, req: Request| data_endpoint(api, paging, req);
            router = router.route(paging.path(), get(handler));
        }
        if let Auth::OAuth2(_) = &self.shared.config.auth {
            let handler = |State(api): State<Arc<Shared>>, req: Request| async move {
                match &api.config.auth {
                    Auth::OAuth2(server) => api.auth.token_endpoint(server, req).await,
                    _ => not_found().await,
                }
            };
            router = router.route(TOKEN_PATH, post(handler));
        }
        router
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.shared.clone(), gate))
            .with_state(self.shared.clone())
    }
}

/// Builds the pool of `config` and serves it on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    build(config).await?.serve(listener, shutdown).await
}

/// Builds the pool of `config` and serves it on `127.0.0.1` at a free port, in a tokio task.
pub async fn spawn(config: MockConfig) -> io::Result<MockServer> {
    let api = build(config).await?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    // A sent `()` and a dropped sender both end this wait: dropping the handle stops the server.
    let task = tokio::spawn(api.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    Ok(MockServer {
        addr,
        api,
        stop,
        task,
    })
}

/// Builds a [`MockApi`] on tokio's blocking pool.
async fn build(config: MockConfig) -> io::Result<MockApi> {
    match tokio::task::spawn_blocking(move || MockApi::new(config)).await {
        Ok(api) => Ok(api),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// A running mock API, from [`spawn`]; dropping it stops the server.
pub struct MockServer {
    addr: SocketAddr,
    api: MockApi,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl MockServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.api.stats()
    }

    /// The data requests received so far: see [`MockApi::request_log`].
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.api.request_log()
    }

    /// The OAuth2 access tokens issued so far: see [`MockApi::issued_tokens`].
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.api.issued_tokens()
    }

    /// `http://127.0.0.1:PORT/oauth/token`: the OAuth2 token endpoint ([`Auth::OAuth2`]).
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url())
    }

    /// The API served, with its configuration and pool.
    pub fn api(&self) -> &MockApi {
        &self.api
    }

    /// Stops accepting connections and waits for open requests to finish.
    pub async fn shutdown(self) {
        let MockServer { stop, task, .. } = self;
        // The receiver lives as long as the server task; if it is gone, the server is too.
        let _ = stop.send(());
        // axum's `serve` only returns after shutdown (it retries accept errors itself), and a
        // cancelled task means the runtime is going away: only a panic is left to report.
        if let Err(e) = task.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The pagination styles, one data endpoint each.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Paging {
    Token,
    NextUrl,
    LinkHeader,
    Offset,
    Page,
    Single,
}

impl Paging {
    const ALL: [Paging; 6] = [
        Paging::Token,
        Paging::NextUrl,
        Paging::LinkHeader,
        Paging::Offset,
        Paging::Page,
        Paging::Single,
    ];

    /// The endpoint of `path`, if it is a data endpoint's.
    fn of_path(path: &str) -> Option<Paging> {
        Paging::ALL.into_iter().find(|paging| paging.path() == path)
    }

    fn path(self) -> &'static str {
        match self {
            Paging::Token => "/variants",
            Paging::NextUrl => "/next_url/variants",
            Paging::LinkHeader => "/link/variants",
            Paging::Offset => "/offset/variants",
            Paging::Page => "/page/variants",
            Paging::Single => "/single/variants",
        }
    }
}

/// The records one request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Window {
    /// Dataset offsets served: `start..end` (empty past the end).
    start: u64,
    end: u64,
    /// Page size asked for, carried into next links.
    size: u64,
    /// Page number, for [`Paging::Page`].
    page: u64,
}

impl Window {
    fn parse(paging: Paging, query: &str, total: u64) -> Result<Window, String> {
        let (start, size, page) = match paging {
            Paging::Token => (
                cursor(query, "token", total)?,
                page_size(query, "count")?,
                0,
            ),
            Paging::NextUrl => (
                cursor(query, "cursor", total)?,
                page_size(query, "count")?,
                0,
            ),
            Paging::LinkHeader => (
                cursor(query, "cursor", total)?,
                page_size(query, "per_page")?,
                0,
            ),
            Paging::Offset => (
                number(query, "offset")?.unwrap_or(0),
                page_size(query, "limit")?,
                0,
            ),
            Paging::Page => {
                let size = page_size(query, "per_page")?;
                match number(query, "page")?.unwrap_or(1) {
                    0 => return Err("page starts at 1".into()),
                    page => ((page - 1).saturating_mul(size), size, page),
                }
            }
            Paging::Single => (0, total, 0),
        };
        let end = start.saturating_add(size).min(total).max(start);
        Ok(Window {
            start,
            end,
            size,
            page,
        })
    }
}

/// The value of query parameter `name`, if present.
fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            _ => None,
        })
}

fn number(query: &str, name: &str) -> Result<Option<u64>, String> {
    param(query, name)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{name} must be a non-negative integer, not {v:?}"))
        })
        .transpose()
}

fn page_size(query: &str, name: &str) -> Result<u64, String> {
    match number(query, name)?.unwrap_or(DEFAULT_PAGE_SIZE) {
        size @ 1..=MAX_PAGE_SIZE => Ok(size),
        size => Err(format!("{name} must be in 1..={MAX_PAGE_SIZE}, not {size}")),
    }
}

/// Offset named by an opaque token or cursor; 0 without one.
fn cursor(query: &str, name: &str, total: u64) -> Result<u64, String> {
    let Some(token) = param(query, name) else {
        return Ok(0);
    };
    match decode_cursor(token) {
        Some(offset) if offset < total.max(1) => Ok(offset),
        _ => Err(format!("bad {name} {token:?}")),
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url (unpadded) of `v1:<offset>`, as `bench/mock_api.py` writes its tokens: the
/// token or cursor of dataset offset `offset`, as the server writes it in next links.
pub fn encode_cursor(offset: u64) -> String {
    let text = format!("v1:{offset}");
    let mut out = String::with_capacity(text.len().div_ceil(3) * 4);
    for chunk in text.as_bytes().chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64URL[(bits >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Inverse of [`encode_cursor`]; `None` for anything it did not make.
fn decode_cursor(token: &str) -> Option<u64> {
    let token = token.trim_end_matches('=');
    let mut bytes = Vec::with_capacity(token.len() * 3 / 4);
    let (mut bits, mut held) = (0u32, 0);
    for c in token.bytes() {
        let value = BASE64URL.iter().position(|&b| b == c)? as u32;
        bits = bits << 6 | value;
        held += 6;
        if held >= 8 {
            held -= 8;
            bytes.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    let offset = std::str::from_utf8(&bytes).ok()?.strip_prefix("v1:")?;
    offset
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| offset.parse().ok())
        .flatten()
}

/// Which records of its window a page serves: those updated at or after `updated_since`, and
/// at or before [`MockConfig::as_of`].
#[derive(Debug, Default, PartialEq, Eq)]
struct Filter {
    /// Smallest `updated_at` served, in milliseconds: the `updated_since` instant, rounded up
    /// to the millisecond (a record's `updated_at` has milliseconds, so `>=` is exact).
    since_ms: Option<i64>,
    /// Largest `updated_at` served, in milliseconds ([`MockConfig::as_of`]).
    as_of_ms: Option<i64>,
    /// `&updated_since=<value re-encoded>` for next URLs and links, or empty.
    carry: String,
}

impl Filter {
    /// The filter of a request to `paging` with `query`, on a server with `as_of`.
    fn parse(paging: Paging, query: &str, as_of: Option<i64>) -> Result<Filter, String> {
        let mut filter = Filter {
            as_of_ms: as_of,
            ..Filter::default()
        };
        let Some(raw) = param(query, "updated_since") else {
            return Ok(filter);
        };
        if matches!(paging, Paging::Offset | Paging::Page) {
            return Err(format!(
                "updated_since is not supported on {}: a client-computed offset or page would \
                 skip records under a filter (use /variants, /next_url/variants, \
                 /link/variants or /single/variants)",
                paging.path()
            ));
        }
        let value = auth::percent_decoded(raw)
            .ok_or_else(|| format!("updated_since {raw:?} is not percent-encoded UTF-8"))?;
        let (secs, nanos) =
            parse_rfc3339(&value).map_err(|why| format!("bad updated_since: {why}"))?;
        let ms = secs
            .saturating_mul(1000)
            .saturating_add(i64::from(nanos / 1_000_000))
            .saturating_add(i64::from(nanos % 1_000_000 != 0));
        filter.since_ms = Some(ms);
        filter.carry = format!("&updated_since={}", sigv4::uri_encode(&value, false));
        Ok(filter)
    }

    /// The `updated_at` range served (inclusive), or `None` for every record.
    fn bounds(&self) -> Option<(i64, i64)> {
        (self.since_ms.is_some() || self.as_of_ms.is_some()).then(|| {
            (
                self.since_ms.unwrap_or(i64::MIN),
                self.as_of_ms.unwrap_or(i64::MAX),
            )
        })
    }
}

/// Counts every request, checks [`MockConfig::auth`] on every path but `/healthz` (and the
/// token endpoint), and logs the requests of data endpoints.
async fn gate(State(api): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let at = Instant::now();
    api.requests.fetch_add(1, Relaxed);
    let data = Paging::of_path(req.uri().path()).is_some();
    let logged = data.then(|| path_and_query(req.uri()).to_owned());
    let path = req.uri().path();
    let exempt =
        path == "/healthz" || (path == TOKEN_PATH && matches!(api.config.auth, Auth::OAuth2(_)));
    let refused = if exempt {
        None
    } else {
        api.auth.refusal(&api.config.auth, &req, data)
    };
    let response = match refused {
        None => next.run(req).await,
        Some(refused) => refused,
    };
    if let Some(path_and_query) = logged {
        api.log(RequestRecord {
            at,
            path_and_query,
            status: response.status().as_u16(),
        });
    }
    response
}

/// The path and query of `uri`, as sent.
fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or(uri.path(), |pq| pq.as_str())
}

async fn healthz() -> Response {
    (StatusCode::OK, [(CONTENT_TYPE, "text/plain")], "ok").into_response()
}

async fn meta(State(api): State<Arc<Shared>>) -> Response {
    let data = &api.config.data;
    let meta = serde_json::json!({
        "total": data.total,
        "pool": api.pool.len(),
        "seed": data.seed,
        "target_bytes": data.target_bytes,
        "id_base": ID_BASE,
    });
    (StatusCode::OK, [(CONTENT_TYPE, JSON)], meta.to_string()).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(CONTENT_TYPE, JSON)], body).into_response()
}

/// A short pause after the bytes sent before a body-level failure, so that the server flushes
/// them (and the headers) to the socket before it drops the connection.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// The HTML error page of [`Action::NotJson`].
const HTML_ERROR_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n\
    <body><h1>Bad Gateway</h1><p>The upstream server did not answer in time. Please try again \
    later.</p></body></html>\n";

const X_TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");

/// A data endpoint: the rate limit, then the page (or what the faults make of it).
async fn data_endpoint(api: Arc<Shared>, paging: Paging, req: Request) -> Response {
    let quota = api.rate_limit(Instant::now());
    let mut response = match &quota {
        Some(quota) if !quota.admitted => {
            api.rate_limited.fetch_add(1, Relaxed);
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(ceil_secs(quota.reset_in)));
            response
        }
        _ => data_page(api, paging, req).await,
    };
    if let Some(quota) = quota {
        quota.insert_headers(response.headers_mut(), SystemTime::now());
    }
    response
}

async fn data_page(api: Arc<Shared>, paging: Paging, req: Request) -> Response {
    let (request, _) = req.into_parts();
    let total = api.config.data.total;
    let query = request.uri.query().unwrap_or("");
    let parsed = Window::parse(paging, query, total)
        .and_then(|window| Ok((window, Filter::parse(paging, query, api.config.as_of)?)));
    let (window, filter) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, &format!("bad request: {message}")),
    };
    let host = if paging == Paging::LinkHeader {
        let host = request.headers.get(HOST).and_then(|h| h.to_str().ok());
        let Some(host) = host.or_else(|| request.uri.authority().map(|a| a.as_str())) else {
            return error(StatusCode::BAD_REQUEST, "bad request: no Host header");
        };
        Some(host.to_owned())
    } else {
        None
    };

    if !api.config.latency.is_zero() {
        tokio::time::sleep(api.config.latency).await;
    }
    let action = match api.fault(&request.uri, &window) {
        Verdict::Answer(action) => action,
        Verdict::Refuse(failure) => return failure,
    };
    match &action {
        Some(Action::Status {
            status,
            retry_after,
        }) => return status_fault(*status, *retry_after),
        Some(Action::NotJson) => {
            return (
                StatusCode::OK,
                [(CONTENT_TYPE, "text/html")],
                HTML_ERROR_PAGE,
            )
                .into_response();
        }
        Some(Action::ErrorBody(text)) => {
            return (StatusCode::OK, [(CONTENT_TYPE, JSON)], text.clone()).into_response();
        }
        Some(Action::Delay(delay)) => tokio::time::sleep(*delay).await,
        _ => {}
    }

    let mut next = (window.end < total && paging != Paging::Single).then_some(window.end);
    if let Some(Action::NextOffset(offset)) = action
        && matches!(paging, Paging::Token | Paging::NextUrl | Paging::LinkHeader)
    {
        next = Some(offset);
    }
    let link = match host {
        Some(host) => {
            match HeaderValue::try_from(link_header(&host, window.size, next, &filter.carry)) {
                Ok(link) => Some(link),
                Err(_) => return error(StatusCode::BAD_REQUEST, "bad request: bad Host header"),
            }
        }
        None => None,
    };

    let encoding = body::negotiate(&api.config.encodings, &request.headers);
    let shift = match action {
        Some(Action::Shifted(shift)) => shift,
        _ => 0,
    };
    let mut page = body::PageBytes::new(api.clone(), paging, &window, next, shift, &filter);
    let last = page.len().saturating_sub(1);
    // Where a body fault cuts the page (in uncompressed bytes), and whether the answer has a
    // `Content-Length`: always, never, or when it is known without compressing the page first.
    let (cut, length) = match action {
        Some(Action::ResetMidBody { after }) => {
            (Some((after.min(last), body::AtCut::Abort)), Length::Never)
        }
        Some(Action::Truncate { after }) => {
            (Some((after.min(last), body::AtCut::Close)), Length::Always)
        }
        Some(Action::Stall { after, stall }) => {
            let after = after.min(page.len());
            (Some((after, body::AtCut::Pause(stall))), Length::Always)
        }
        Some(Action::Pad { bytes, chunked }) => {
            page.pad(bytes);
            (
                None,
                if chunked {
                    Length::Never
                } else {
                    Length::Always
                },
            )
        }
        _ => (None, Length::WhenKnown),
    };
    let counted = action.as_ref().is_none_or(Action::serves_page);
    let uncompressed_len = page.len();
    let producer = body::Producer::new(page, encoding, cut);
    let (body, content_length) = match (encoding, length) {
        (_, Length::Never) => (body::stream(api.clone(), producer, counted), None),
        (None, _) => (
            body::stream(api.clone(), producer, counted),
            Some(uncompressed_len),
        ),
        (Some(_), Length::WhenKnown) => (body::stream(api.clone(), producer, counted), None),
        (Some(_), Length::Always) => {
            // Compress the whole page first, off the runtime's threads, to know its length.
            let steps = match tokio::task::spawn_blocking(move || producer.collect()).await {
                Ok(steps) => steps,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            };
            let steps: Vec<body::Step> = steps;
            let len = steps
                .iter()
                .map(|step| match step {
                    body::Step::Bytes { wire, .. } => wire.len(),
                    _ => 0,
                })
                .sum();
            let body = body::stream(api.clone(), steps.into_iter(), counted);
            (body, Some(len))
        }
    };

    let mut response = (StatusCode::OK, [(CONTENT_TYPE, JSON)], body).into_response();
    let headers = response.headers_mut();
    if let Some(len) = content_length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Some(encoding) = encoding {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
    }
    if !api.config.encodings.is_empty() {
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if let Some(link) = link {
        headers.insert(LINK, link);
    }
    if matches!(paging, Paging::Offset | Paging::Page) {
        headers.insert(X_TOTAL_COUNT, HeaderValue::from(total));
    }
    response
}

/// Whether a page's answer has a `Content-Length`.
#[derive(Clone, Copy)]
enum Length {
    /// Always, even if the page must be compressed whole to know it.
    Always,
    /// When the page is not compressed (its length is known beforehand).
    WhenKnown,
    /// Never: chunked encoding.
    Never,
}

/// The answer of an [`Action::Status`] fault.
fn status_fault(status: u16, retry_after: Option<RetryAfter>) -> Response {
    let Ok(code) = StatusCode::from_u16(status) else {
        let message = format!("fault status {status} is not an HTTP status");
        return error(StatusCode::INTERNAL_SERVER_ERROR, &message);
    };
    let mut response = error(code, &format!("injected fault: HTTP {status}"));
    if let Some(after) = retry_after {
        // Digits, or an HTTP-date: always a valid header value.
        if let Ok(value) = HeaderValue::try_from(after.header_value(SystemTime::now())) {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
    }
    response
}

/// `duration` in whole seconds, rounded up.
fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

/// Where a data request stands with [`MockConfig::rate_limit`].
struct Quota {
    /// Whether it is answered (else 429).
    admitted: bool,
    limit: u32,
    /// Requests left in the window after this one.
    remaining: u32,
    /// Until the window ends.
    reset_in: Duration,
    headers: RateLimitHeaders,
}

impl Quota {
    fn insert_headers(&self, headers: &mut HeaderMap, now: SystemTime) {
        let reset = ceil_secs(self.reset_in);
        let (names, reset) = match self.headers {
            RateLimitHeaders::None => return,
            RateLimitHeaders::Ietf => (
                ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
                reset,
            ),
            RateLimitHeaders::XRateLimit => {
                let since_epoch = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                (
                    [
                        "x-ratelimit-limit",
                        "x-ratelimit-remaining",
                        "x-ratelimit-reset",
                    ],
                    ceil_secs(since_epoch.saturating_add(self.reset_in)),
                )
            }
        };
        let values = [u64::from(self.limit), u64::from(self.remaining), reset];
        for (name, value) in names.into_iter().zip(values) {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

/// What [`Shared::fault`] decided for a data request.
enum Verdict {
    /// Answer with the page, or as this rule's action says.
    Answer(Option<Action>),
    /// Send this failure instead of the page.
    Refuse(Response),
}

impl Shared {
    /// Applies [`Faults`] to a data request that passed validation: the failure to send
    /// instead of the page, or the action of the rule that applies, if one does, for the
    /// caller to carry out. A page that will be served whole is counted here (counting
    /// atomically with the check keeps `error_after_pages` exact under concurrency).
    fn fault(&self, uri: &Uri, window: &Window) -> Verdict {
        let faults = &self.config.faults;
        let url = path_and_query(uri);
        if let Some(action) = self.rule(url, window) {
            self.faults_injected.fetch_add(1, Relaxed);
            if action.serves_page()
                && let Some(refused) = self.admit()
            {
                return Verdict::Refuse(refused);
            }
            return Verdict::Answer(Some(action));
        }
        if faults.transient_errors > 0 {
            let mut failed = self
                .transient
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = failed.entry(url.to_owned()).or_default();
            if *count < faults.transient_errors {
                *count += 1;
                self.faults_injected.fetch_add(1, Relaxed);
                let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "transient fault, retry");
                if let Some(after) = &faults.retry_after {
                    let Ok(after) = HeaderValue::try_from(after.as_str()) else {
                        let message = "faults.retry_after is not a header value";
                        return Verdict::Refuse(error(StatusCode::INTERNAL_SERVER_ERROR, message));
                    };
                    response.headers_mut().insert(RETRY_AFTER, after);
                }
                return Verdict::Refuse(response);
            }
        }
        match self.admit() {
            Some(refused) => {
                self.faults_injected.fetch_add(1, Relaxed);
                Verdict::Refuse(refused)
            }
            None => Verdict::Answer(None),
        }
    }

    /// The action of the first rule that applies to `url` and has uses left for it, spending
    /// one.
    fn rule(&self, url: &str, window: &Window) -> Option<Action> {
        let rules = &self.config.faults.rules;
        if rules.is_empty() {
            return None;
        }
        let mut uses = self
            .rule_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (index, rule) in rules.iter().enumerate() {
            if !rule.when.matches(window) {
                continue;
            }
            let used = uses.entry((index, url.to_owned())).or_default();
            let left = match rule.times {
                Times::First(n) => *used < n,
                Times::Forever => true,
            };
            if left {
                *used = used.saturating_add(1);
                return Some(rule.what.clone());
            }
        }
        None
    }

    /// Counts a data request against [`MockConfig::rate_limit`], if there is one.
    fn rate_limit(&self, now: Instant) -> Option<Quota> {
        let limit = self.config.rate_limit?;
        let mut current = self
            .rate_window
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A window too long for an `Instant` never ends.
        let ends = |window: &RateWindow| window.started.checked_add(limit.window);
        let window = match *current {
            Some(window) if ends(&window).is_none_or(|end| now < end) => window,
            _ => RateWindow {
                started: now,
                used: 0,
            },
        };
        let admitted = window.used < limit.limit;
        let window = RateWindow {
            used: window.used + u32::from(admitted),
            ..window
        };
        *current = Some(window);
        let reset_in = ends(&window).map_or(limit.window, |end| end.saturating_duration_since(now));
        Some(Quota {
            admitted,
            limit: limit.limit,
            remaining: limit.limit.saturating_sub(window.used),
            reset_in,
            headers: limit.headers,
        })
    }

    /// Adds a data request to the log, forgetting the oldest beyond [`REQUEST_LOG_CAPACITY`].
    fn log(&self, record: RequestRecord) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() >= REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }

    /// Counts a page about to be served (`None`), or answers the `error_after_pages` failure.
    fn admit(&self) -> Option<Response> {
        let faults = &self.config.faults;
        let limit = faults.error_after_pages.unwrap_or(u64::MAX);
        let admitted = self
            .pages_served
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1));
        admitted.is_err().then(|| {
            let status = StatusCode::from_u16(faults.error_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, &format!("injected fault after {limit} pages"))
        })
    }
}

/// `Link` header value: `rel="next"` (if any) and `rel="first"`, absolute on `host`, with
/// `carry` (`&name=value…`) at the end of both.
fn link_header(host: &str, size: u64, next: Option<u64>, carry: &str) -> String {
    let first = format!(
        r#"<http://{host}{}?per_page={size}{carry}>; rel="first""#,
        Paging::LinkHeader.path()
    );
    match next {
        Some(offset) => format!(
            r#"<http://{host}{}?per_page={size}&cursor={}{carry}>; rel="next", {first}"#,
            Paging::LinkHeader.path(),
            encode_cursor(offset)
        ),
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_python_compatible_and_round_trip() {
        // base64.urlsafe_b64encode(b"v1:200").rstrip(b"=") in bench/mock_api.py
        assert_eq!(encode_cursor(200), "djE6MjAw");
        for offset in [0, 1, 9, 10, 199, 83_687, u64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(offset)), Some(offset));
        }
        assert_eq!(decode_cursor("djE6MjAw=="), Some(200));
        for bad in ["", "!!!", "djE6", "djI6MjAw", "djE6LTE", "djE6KzE"] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn when_matches_pages_and_offsets() {
        let window = |paging, query| Window::parse(paging, query, 23).expect("a valid query");
        let token = format!("count=5&token={}", encode_cursor(10));
        let third = window(Paging::Token, &token);
        assert!(When::Always.matches(&third));
        assert!(When::Page(3).matches(&third));
        assert!(When::Offset(10).matches(&third));
        for other in [When::Page(0), When::Page(2), When::Page(4), When::Offset(5)] {
            assert!(!other.matches(&third), "{other:?}");
        }
        // Page numbers count pages of the requested size; an offset between pages is none.
        assert!(When::Page(3).matches(&window(Paging::Page, "page=3&per_page=5")));
        assert!(When::Page(3).matches(&window(Paging::Offset, "offset=10&limit=5")));
        let between = window(Paging::Offset, "offset=12&limit=5");
        assert!(!(1..=5).any(|n| When::Page(n).matches(&between)));
        assert!(When::Offset(12).matches(&between));
        // Past the end: the empty page still has a number.
        assert!(When::Page(6).matches(&window(Paging::Offset, "offset=25&limit=5")));
        // The single page is page 1, even of an empty data set.
        assert!(When::Page(1).matches(&window(Paging::Single, "")));
        let empty = Window::parse(Paging::Single, "", 0).expect("valid");
        assert!(When::Page(1).matches(&empty));
        assert!(!When::Page(2).matches(&empty));
    }

    #[test]
    fn retry_after_values() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(RetryAfter::Seconds(7).header_value(now), "7");
        assert_eq!(
            RetryAfter::DateIn(Duration::MAX).header_value(now),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(
            RetryAfter::DateIn(Duration::from_millis(60_900)).header_value(now),
            "Tue, 14 Nov 2023 22:14:20 GMT"
        );
        let action = Action::status(429).retry_after(RetryAfter::Seconds(1));
        assert_eq!(
            action,
            Action::Status {
                status: 429,
                retry_after: Some(RetryAfter::Seconds(1))
            }
        );
        assert_eq!(
            Action::NotJson.retry_after(RetryAfter::Seconds(1)),
            Action::NotJson
        );
    }

    #[test]
    fn windows_follow_the_query() {
        let w = |paging, query| Window::parse(paging, query, 23);
        assert_eq!(
            w(Paging::Token, ""),
            Ok(Window {
                start: 0,
                end: 23,
                size: 200,
                page: 0
            })
        );
        let token = format!("count=5&token={}", encode_cursor(20));
        assert_eq!(
            w(Paging::Token, &token),
            Ok(Window {
                start: 20,
                end: 23,
                size: 5,
                page: 0
            })
        );
        assert_eq!(
            w(Paging::Offset, "limit=5&offset=30"),
            Ok(Window {
                start: 30,
                end: 30,
                size: 5,
                page: 0
            })
        );
        assert_eq!(
            w(Paging::Page, "page=2&per_page=10"),
            Ok(Window {
                start: 10,
                end: 20,
                size: 10,
                page: 2
            })
        );
        assert_eq!(
            w(Paging::Single, "count=1"),
            Ok(Window {
                start: 0,
                end: 23,
                size: 23,
                page: 0
            })
        );
        for (paging, query) in [
            (Paging::Token, "count=0"),
            (Paging::Token, "count=1001"),
            (Paging::Token, "count=-1"),
            (Paging::Token, "token=djE6MjM"), // offset 23 == total
            (Paging::NextUrl, "cursor=x"),
            (Paging::Offset, "offset=abc"),
            (Paging::Page, "page=0"),
        ] {
            assert!(w(paging, query).is_err(), "{query}");
        }
    }
}
