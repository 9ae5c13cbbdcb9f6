//! The HTTP side: one data set behind six pagination styles, plus auth, latency and faults.
//!
//! Every data endpoint serves dataset offsets `[start, min(start + size, total))` of the
//! [`Pool`]; a page body is the pool's byte slices concatenated into one buffer, so serving costs
//! a memcpy, not JSON encoding. Endpoints (all `GET`):
//!
//! | path | query | body | next page |
//! |---|---|---|---|
//! | `/variants` | `count`, `token` | `{"variants":[…],"next_token":"…"}` | `next_token`, `null` at the end |
//! | `/next_url/variants` | `count`, `cursor` | `{"data":{"items":[…]},"links":{"next":"…"}}` | relative URL, no `next` at the end |
//! | `/link/variants` | `per_page`, `cursor` | `[…]` | `Link` header `rel="next"` (absolute, from `Host`) |
//! | `/offset/variants` | `offset`, `limit` | `{"results":[…],"total":N}` | client adds `limit` |
//! | `/page/variants` | `page` (from 1), `per_page` | `{"items":[…],"page":P}` | client adds 1 |
//! | `/single/variants` | | `{"variants":[…all…]}` | none |
//!
//! Page sizes must be in `1..=1000` (default 200); tokens and cursors are the opaque base64url
//! of `v1:<offset>`, the same as `bench/mock_api.py`. Past the end, `offset` and `page` answer
//! empty pages. `/healthz` answers `ok` and `/meta` the data set's parameters. Errors are JSON
//! `{"error":"…"}`: 400 for bad parameters, 401 for a missing or wrong bearer token (every path
//! but `/healthz`), 404 for unknown paths. [`Faults`] and latency apply to data endpoints only.
//! Query values are not percent-decoded: the values this API accepts never need encoding.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::generator::{DataConfig, ID_BASE, Pool};

/// Largest page a client may ask for (`count`, `limit`, `per_page`).
pub const MAX_PAGE_SIZE: u64 = 1000;
/// Page size when the request does not say.
pub const DEFAULT_PAGE_SIZE: u64 = 200;

const JSON: &str = "application/json";

/// How the mock API behaves: the data set, and what goes wrong.
#[derive(Clone, Debug, Default)]
pub struct MockConfig {
    /// The records served.
    pub data: DataConfig,
    /// Added to every data request before it is answered.
    pub latency: Duration,
    /// When set, every path but `/healthz` requires `Authorization: Bearer <this>`.
    pub require_bearer: Option<String>,
    /// Injected failures of the data endpoints.
    pub faults: Faults,
}

/// Injected failures of the data endpoints; the default injects none.
#[derive(Clone, Debug)]
pub struct Faults {
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
            error_after_pages: None,
            error_status: 500,
            transient_errors: 0,
            retry_after: None,
        }
    }
}

/// What a server has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Data pages answered with 200.
    pub pages_served: u64,
    /// Body bytes of those pages.
    pub bytes_served: u64,
    /// Every request received, whatever its answer.
    pub requests: u64,
}

/// A mock API with its pool built, ready to serve; clones share the pool and the counters.
#[derive(Clone)]
pub struct MockApi {
    shared: Arc<Shared>,
}

struct Shared {
    config: MockConfig,
    pool: Pool,
    pages_served: AtomicU64,
    bytes_served: AtomicU64,
    requests: AtomicU64,
    /// Failures injected so far per request URL, for [`Faults::transient_errors`].
    transient: Mutex<HashMap<String, u32>>,
}

impl MockApi {
    /// Builds the record pool: CPU-bound and blocking (see [`Pool::build`]).
    pub fn new(config: MockConfig) -> MockApi {
        let pool = Pool::build(&config.data);
        MockApi {
            shared: Arc::new(Shared {
                config,
                pool,
                pages_served: AtomicU64::new(0),
                bytes_served: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                transient: Mutex::new(HashMap::new()),
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
        }
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
                move |State(api): State<Arc<Shared>>, req: Request| data_page(api, paging, req);
            router = router.route(paging.path(), get(handler));
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
        if let Err(e) = task.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
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

/// Base64url (unpadded) of `v1:<offset>`, as `bench/mock_api.py` writes its tokens.
fn encode_cursor(offset: u64) -> String {
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

/// Counts every request and checks the bearer token on every path but `/healthz`.
async fn gate(State(api): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    api.requests.fetch_add(1, Relaxed);
    if let Some(expected) = &api.config.require_bearer {
        let presented = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(expected.as_str()) && req.uri().path() != "/healthz" {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(req).await
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

async fn data_page(api: Arc<Shared>, paging: Paging, req: Request) -> Response {
    let (request, _) = req.into_parts();
    let total = api.config.data.total;
    let window = match Window::parse(paging, request.uri.query().unwrap_or(""), total) {
        Ok(window) => window,
        Err(message) => return error(StatusCode::BAD_REQUEST, &format!("bad request: {message}")),
    };
    let next = (window.end < total && paging != Paging::Single).then_some(window.end);
    let link = if paging == Paging::LinkHeader {
        let host = request.headers.get(HOST).and_then(|h| h.to_str().ok());
        let Some(host) = host.or_else(|| request.uri.authority().map(|a| a.as_str())) else {
            return error(StatusCode::BAD_REQUEST, "bad request: no Host header");
        };
        match HeaderValue::try_from(link_header(host, window.size, next)) {
            Ok(link) => Some(link),
            Err(_) => return error(StatusCode::BAD_REQUEST, "bad request: bad Host header"),
        }
    } else {
        None
    };

    if !api.config.latency.is_zero() {
        tokio::time::sleep(api.config.latency).await;
    }
    if let Some(fault) = api.fault(&request.uri) {
        return fault;
    }

    let (open, close): (&[u8], String) = match paging {
        Paging::Token => (
            br#"{"variants":["#,
            match next {
                Some(offset) => format!(r#"],"next_token":"{}"}}"#, encode_cursor(offset)),
                None => r#"],"next_token":null}"#.into(),
            },
        ),
        Paging::NextUrl => (
            br#"{"data":{"items":["#,
            match next {
                Some(offset) => format!(
                    r#"]}},"links":{{"next":"{}?count={}&cursor={}"}}}}"#,
                    paging.path(),
                    window.size,
                    encode_cursor(offset)
                ),
                None => r#"]},"links":{}}"#.into(),
            },
        ),
        Paging::LinkHeader => (b"[", "]".into()),
        Paging::Offset => (br#"{"results":["#, format!(r#"],"total":{total}}}"#)),
        Paging::Page => (br#"{"items":["#, format!(r#"],"page":{}}}"#, window.page)),
        Paging::Single => (br#"{"variants":["#, "]}".into()),
    };
    let records = window.start..window.end;
    let mut body =
        Vec::with_capacity(open.len() + api.pool.records_len(records.clone()) + close.len());
    body.extend_from_slice(open);
    for index in records {
        if index > window.start {
            body.push(b',');
        }
        api.pool.write_record(index, &mut body);
    }
    body.extend_from_slice(close.as_bytes());
    api.bytes_served.fetch_add(body.len() as u64, Relaxed);

    let mut response = (StatusCode::OK, [(CONTENT_TYPE, JSON)], body).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(LINK, link);
    }
    response
}

impl Shared {
    /// Applies [`Faults`] to a data request that passed validation: the failure to send instead,
    /// if any. `None` counts the request as a served page (counting atomically with the check
    /// keeps `error_after_pages` exact under concurrency).
    fn fault(&self, uri: &Uri) -> Option<Response> {
        let faults = &self.config.faults;
        if faults.transient_errors > 0 {
            let url = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            let mut failed = self
                .transient
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = failed.entry(url.to_owned()).or_default();
            if *count < faults.transient_errors {
                *count += 1;
                let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "transient fault, retry");
                if let Some(after) = &faults.retry_after {
                    let Ok(after) = HeaderValue::try_from(after.as_str()) else {
                        let message = "faults.retry_after is not a header value";
                        return Some(error(StatusCode::INTERNAL_SERVER_ERROR, message));
                    };
                    response.headers_mut().insert(RETRY_AFTER, after);
                }
                return Some(response);
            }
        }
        let limit = faults.error_after_pages.unwrap_or(u64::MAX);
        let admitted = self
            .pages_served
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1));
        if admitted.is_err() {
            let status = StatusCode::from_u16(faults.error_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Some(error(
                status,
                &format!("injected fault after {limit} pages"),
            ));
        }
        None
    }
}

/// `Link` header value: `rel="next"` (if any) and `rel="first"`, absolute on `host`.
fn link_header(host: &str, size: u64, next: Option<u64>) -> String {
    let first = format!(
        r#"<http://{host}{}?per_page={size}>; rel="first""#,
        Paging::LinkHeader.path()
    );
    match next {
        Some(offset) => format!(
            r#"<http://{host}{}?per_page={size}&cursor={}>; rel="next", {first}"#,
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
