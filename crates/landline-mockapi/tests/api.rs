//! The mock API over real TCP on 127.0.0.1: every pagination style pages through the whole data
//! set in order, errors and injected faults answer as documented, compression is negotiated and
//! decodes to the uncompressed page, bandwidth and latency hold responses back, the rate limit
//! answers 429 with its headers and the request log records it all, and the binary announces
//! its address and stops on SIGTERM.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use landline_mockapi::{
    Action, Auth, DataConfig, Encoding, Fault, Faults, Grant, MockConfig, MockServer, OAuth2Server,
    RateLimit, RateLimitHeaders, RetryAfter, Stats, Times, When, encode_cursor, expected_record,
    iso_millis, record_updated_at_ms, spawn, visible_offsets,
};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, RETRY_AFTER,
    TRANSFER_ENCODING, VARY,
};
use serde_json::{Value, json};

/// 23 records from a pool of 7: five pages of 5, the last one short, and the pool wraps.
fn data() -> DataConfig {
    DataConfig {
        total: 23,
        pool: 7,
        seed: 5,
        ..DataConfig::default()
    }
}

async fn start(config: MockConfig) -> MockServer {
    spawn(config).await.expect("the mock API starts")
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(self.headers[CONTENT_TYPE], "application/json");
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// The body of a 200 answer, as JSON.
    fn ok(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }

    /// The body of an error answer: `{"error": "..."}`.
    fn error(&self, status: StatusCode) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()["error"]
            .as_str()
            .expect("an error message")
            .to_owned()
    }
}

async fn get_with(url: &str, bearer: Option<&str>) -> Reply {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    send(request).await
}

/// GET with `Accept-Encoding: accept` (none if `None`).
async fn get_accepting(url: &str, accept: Option<&str>) -> Reply {
    let mut request = reqwest::Client::new().get(url);
    if let Some(accept) = accept {
        request = request.header(ACCEPT_ENCODING, accept);
    }
    send(request).await
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the request gets an answer");
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.bytes().await.expect("the body arrives").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(url: &str) -> Reply {
    get_with(url, None).await
}

fn records(value: &Value) -> &[Value] {
    value.as_array().expect("an array of records")
}

/// `records` are exactly dataset offsets `0..total`, in order.
fn assert_whole_data_set(records: &[Value], data: &DataConfig) {
    let ids: Vec<u64> = records.iter().filter_map(|r| r["id"].as_u64()).collect();
    let expected_ids: Vec<u64> = (0..data.total).map(|i| 10_000_000 + i).collect();
    assert_eq!(ids, expected_ids);
    for (index, record) in (0..).zip(records) {
        assert_eq!(
            *record,
            expected_record(index, data),
            "record at offset {index}"
        );
    }
}

/// A guard against a next link that never ends.
const MAX_PAGES: usize = 100;

#[tokio::test]
async fn token_pages_through_every_record() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let (mut all, mut body_bytes) = (Vec::new(), 0);
    let mut url = format!("{base}/variants?count=5");
    for _ in 0..MAX_PAGES {
        let reply = get(&url).await;
        body_bytes += reply.body.len() as u64;
        assert!(reply.headers.get("x-total-count").is_none());
        assert!(reply.headers.get(VARY).is_none(), "nothing to vary on");
        assert_eq!(reply.headers[CONTENT_LENGTH], reply.body.len().to_string());
        let page = reply.ok();
        all.extend_from_slice(records(&page["variants"]));
        match &page["next_token"] {
            Value::String(token) => url = format!("{base}/variants?count=5&token={token}"),
            Value::Null => break,
            other => panic!("next_token {other}"),
        }
    }
    assert_whole_data_set(&all, &data());
    assert_eq!(
        server.stats(),
        Stats {
            pages_served: 5,
            bytes_served: body_bytes,
            requests: 5,
            faults_injected: 0,
            bytes_decoded: body_bytes,
            rate_limited: 0,
            ..Stats::default()
        }
    );

    // Without a count, a page is 200 records: here, all of them.
    let page = get(&format!("{base}/variants")).await.ok();
    assert_eq!(records(&page["variants"]).len(), 23);
    assert!(page["next_token"].is_null());
    server.shutdown().await;
}

#[tokio::test]
async fn next_url_follows_relative_links() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let (mut all, mut pages) = (Vec::new(), 0);
    let mut url = format!("{base}/next_url/variants?count=5");
    for _ in 0..MAX_PAGES {
        let page = get(&url).await.ok();
        pages += 1;
        all.extend_from_slice(records(&page["data"]["items"]));
        match page["links"]["next"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with("/next_url/variants?count=5&cursor="),
                    "{next}"
                );
                url = format!("{base}{next}");
            }
            None => {
                assert_eq!(page["links"], json!({}));
                break;
            }
        }
    }
    assert_eq!(pages, 5);
    assert_whole_data_set(&all, &data());
}

/// `rel` → URL of a `Link` header.
fn links(header: &str) -> HashMap<String, String> {
    header
        .split(", ")
        .map(|link| {
            let (url, rel) = link.split_once(">; rel=").expect("<url>; rel=\"…\"");
            (
                rel.trim_matches('"').to_owned(),
                url.trim_start_matches('<').to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn link_header_points_to_next_and_first() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let first = format!("{base}/link/variants?per_page=5");
    let (mut all, mut pages) = (Vec::new(), 0);
    let mut url = first.clone();
    for _ in 0..MAX_PAGES {
        let reply = get(&url).await;
        pages += 1;
        all.extend_from_slice(records(&reply.ok()));
        let header = reply.headers["link"]
            .to_str()
            .expect("an ASCII Link header");
        let mut rels = links(header);
        assert_eq!(rels.remove("first"), Some(first.clone()), "{header}");
        match rels.remove("next") {
            Some(next) => {
                assert!(next.starts_with(&format!("{first}&cursor=")), "{header}");
                url = next;
            }
            None => break,
        }
        assert!(rels.is_empty(), "{header}");
    }
    assert_eq!(pages, 5);
    assert_whole_data_set(&all, &data());
}

#[tokio::test]
async fn offset_pages_end_with_an_empty_one() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let mut all = Vec::new();
    for offset in (0..).step_by(5).take(MAX_PAGES) {
        let page = get(&format!("{base}/offset/variants?offset={offset}&limit=5"))
            .await
            .ok();
        assert_eq!(page["total"], 23);
        let results = records(&page["results"]);
        if results.is_empty() {
            assert_eq!(offset, 25);
            break;
        }
        all.extend_from_slice(results);
    }
    assert_whole_data_set(&all, &data());
    let far = get(&format!("{base}/offset/variants?offset=1000000&limit=5")).await;
    assert_eq!(far.headers["x-total-count"], "23");
    assert_eq!(far.ok(), json!({"results": [], "total": 23}));
}

#[tokio::test]
async fn numbered_pages_start_at_one() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let mut all = Vec::new();
    for number in (1..).take(MAX_PAGES) {
        let reply = get(&format!("{base}/page/variants?page={number}&per_page=5")).await;
        assert_eq!(reply.headers["x-total-count"], "23");
        let end = format!(r#"],"page":{number},"total":23}}"#);
        assert!(reply.body.ends_with(end.as_bytes()), "the total comes last");
        let page = reply.ok();
        assert_eq!(page["page"], number);
        assert_eq!(page.as_object().map(|o| o.len()), Some(3));
        let items = records(&page["items"]);
        if items.is_empty() {
            assert_eq!(number, 6);
            break;
        }
        all.extend_from_slice(items);
    }
    assert_whole_data_set(&all, &data());
}

#[tokio::test]
async fn single_response_holds_everything() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let page = get(&format!("{}/single/variants", server.base_url()))
        .await
        .ok();
    assert_eq!(page.as_object().map(|o| o.len()), Some(1));
    assert_whole_data_set(records(&page["variants"]), &data());
}

#[tokio::test]
async fn empty_data_set_has_one_empty_page() {
    let data = DataConfig { total: 0, ..data() };
    let server = start(MockConfig {
        data,
        ..MockConfig::default()
    })
    .await;
    let page = get(&format!("{}/variants", server.base_url())).await.ok();
    assert_eq!(page, json!({"variants": [], "next_token": null}));
}

#[tokio::test]
async fn health_and_meta() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let health = get(&format!("{base}/healthz")).await;
    assert_eq!(
        (health.status, health.body.as_slice()),
        (StatusCode::OK, &b"ok"[..])
    );
    let meta = get(&format!("{base}/meta")).await.ok();
    let expected =
        json!({"total": 23, "pool": 7, "seed": 5, "target_bytes": 28_600, "id_base": 10_000_000});
    assert_eq!(meta, expected);
    assert_eq!(
        server.stats(),
        Stats {
            requests: 2,
            ..Stats::default()
        }
    );
}

#[tokio::test]
async fn bad_requests_get_400_and_unknown_paths_404() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    for query in [
        "/variants?count=0",
        "/variants?count=1001",
        "/variants?count=ten",
        "/variants?token=!!!",
        "/variants?token=djE6MjM", // v1:23, one past the last record
        "/next_url/variants?count=5&cursor=djI6MA", // v2:0
        "/link/variants?per_page=0",
        "/offset/variants?limit=5000",
        "/offset/variants?offset=-1",
        "/page/variants?page=0",
        "/page/variants?per_page=1001",
    ] {
        let message = get(&format!("{base}{query}"))
            .await
            .error(StatusCode::BAD_REQUEST);
        assert!(message.starts_with("bad request"), "{query}: {message}");
    }
    for path in ["/", "/nope", "/variants/1", "/link"] {
        assert_eq!(
            get(&format!("{base}{path}"))
                .await
                .error(StatusCode::NOT_FOUND),
            "not found"
        );
    }
    assert_eq!(server.stats().pages_served, 0);
}

#[tokio::test]
async fn bearer_token_guards_everything_but_health() {
    let config = MockConfig {
        data: data(),
        auth: Auth::Bearer("s3cret".into()),
        ..MockConfig::default()
    };
    let server = start(config).await;
    let base = server.base_url();
    for path in ["/variants", "/single/variants", "/meta", "/nope"] {
        for bearer in [None, Some("wrong"), Some("S3CRET")] {
            let reply = get_with(&format!("{base}{path}"), bearer).await;
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
            reply.error(StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(get(&format!("{base}/healthz")).await.status, StatusCode::OK);
    let page = get_with(&format!("{base}/variants?count=3"), Some("s3cret"))
        .await
        .ok();
    assert_eq!(records(&page["variants"]).len(), 3);
    assert_eq!(server.stats().requests, 14);
}

#[tokio::test]
async fn errors_forever_after_some_pages() {
    let faults = Faults {
        error_after_pages: Some(2),
        error_status: 502,
        ..Faults::default()
    };
    let server = start(MockConfig {
        data: data(),
        faults,
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let first = format!("{base}/variants?count=5");
    let page = get(&first).await.ok();
    let token = page["next_token"].as_str().expect("a next token");
    let second = format!("{base}/variants?count=5&token={token}");
    let page = get(&second).await.ok();
    let token = page["next_token"].as_str().expect("a next token");
    for url in [
        format!("{base}/variants?count=5&token={token}"),
        first,
        second,
    ] {
        get(&url).await.error(StatusCode::BAD_GATEWAY);
    }
    get(&format!("{base}/page/variants"))
        .await
        .error(StatusCode::BAD_GATEWAY);
    // Parameters are still checked first, and the other endpoints still work.
    get(&format!("{base}/variants?count=0"))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(get(&format!("{base}/healthz")).await.status, StatusCode::OK);
    let stats = server.stats();
    assert_eq!((stats.pages_served, stats.faults_injected), (2, 4));
}

#[tokio::test]
async fn transient_errors_per_url_then_success() {
    let faults = Faults {
        transient_errors: 2,
        retry_after: Some("1".into()),
        ..Faults::default()
    };
    let server = start(MockConfig {
        data: data(),
        faults,
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    for url in [
        format!("{base}/variants?count=5"),
        format!("{base}/offset/variants?offset=5&limit=5"),
    ] {
        for _ in 0..2 {
            let reply = get(&url).await;
            assert_eq!(reply.headers["retry-after"], "1");
            reply.error(StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(get(&url).await.status, StatusCode::OK);
        assert_eq!(get(&url).await.status, StatusCode::OK);
    }
    let stats = server.stats();
    assert_eq!(
        (stats.pages_served, stats.requests, stats.faults_injected),
        (4, 8, 4)
    );
}

/// A mock API over `data()` with these fault rules.
async fn start_with(rules: Vec<Fault>) -> MockServer {
    start(MockConfig {
        data: data(),
        faults: Faults {
            rules,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
}

/// What a client read of an answer whose body may fail part-way.
struct Partial {
    status: StatusCode,
    headers: HeaderMap,
    /// The body bytes received before the end or the failure.
    body: Vec<u8>,
    /// The failure that ended the body, if any.
    failure: Option<reqwest::Error>,
    /// When the first body bytes arrived, from the start of the request.
    first_bytes_after: Option<Duration>,
}

async fn get_partial(url: &str) -> Partial {
    get_partial_accepting(url, None).await
}

/// [`get_partial`] with `Accept-Encoding: accept` (none if `None`).
async fn get_partial_accepting(url: &str, accept: Option<&str>) -> Partial {
    let started = Instant::now();
    let mut request = reqwest::Client::new().get(url);
    if let Some(accept) = accept {
        request = request.header(ACCEPT_ENCODING, accept);
    }
    let mut response = request.send().await.expect("the headers arrive");
    let (status, headers) = (response.status(), response.headers().clone());
    let (mut body, mut first_bytes_after) = (Vec::new(), None);
    let failure = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                first_bytes_after.get_or_insert_with(|| started.elapsed());
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    Partial {
        status,
        headers,
        body,
        failure,
        first_bytes_after,
    }
}

/// The URL of token page `page` (from 1) of 5 records.
fn token_page(base: &str, page: u64) -> String {
    match page {
        1 => format!("{base}/variants?count=5"),
        n => format!(
            "{base}/variants?count=5&token={}",
            encode_cursor((n - 1) * 5)
        ),
    }
}

/// The body a fault-free server answers at `url`.
async fn clean_body(url: &str) -> Vec<u8> {
    let base = url.split("/variants").next().expect("a base");
    let clean = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let reply = get(&url.replacen(base, &clean.base_url(), 1)).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.body
}

#[tokio::test]
async fn status_rules_fail_the_first_n_requests_of_each_matching_url() {
    let fault = Fault::new(
        When::Page(2),
        Action::status(503).retry_after(RetryAfter::Seconds(1)),
        Times::First(2),
    );
    let server = start_with(vec![fault]).await;
    let base = server.base_url();
    get(&token_page(&base, 1)).await.ok();
    // Page 2 by token, and page 2 by offset: each URL has its own two failures.
    for url in [
        token_page(&base, 2),
        format!("{base}/offset/variants?offset=5&limit=5"),
    ] {
        for _ in 0..2 {
            let reply = get(&url).await;
            assert_eq!(reply.headers[RETRY_AFTER], "1");
            let message = reply.error(StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(message, "injected fault: HTTP 503");
        }
        get(&url).await.ok();
        get(&url).await.ok();
    }
    get(&token_page(&base, 3)).await.ok();
    let stats = server.stats();
    assert_eq!(
        (stats.pages_served, stats.requests, stats.faults_injected),
        (6, 10, 4)
    );
}

#[tokio::test]
async fn forever_and_always_rules_never_let_go() {
    let server = start_with(vec![Fault::new(
        When::Always,
        Action::status(502),
        Times::Forever,
    )])
    .await;
    let base = server.base_url();
    for _ in 0..3 {
        for url in [token_page(&base, 1), token_page(&base, 4)] {
            get(&url).await.error(StatusCode::BAD_GATEWAY);
        }
    }
    // Faults apply to valid data requests only.
    get(&format!("{base}/variants?count=0"))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(get(&format!("{base}/healthz")).await.status, StatusCode::OK);
    let stats = server.stats();
    assert_eq!((stats.pages_served, stats.faults_injected), (0, 6));

    // An invalid status says so.
    let server = start_with(vec![Fault::new(
        When::Always,
        Action::status(1000),
        Times::Forever,
    )])
    .await;
    let message = get(&token_page(&server.base_url(), 1))
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR);
    assert!(message.contains("1000"), "{message}");
}

#[tokio::test]
async fn retry_after_http_date_is_computed_when_answering() {
    let server = start_with(vec![Fault::new(
        When::Offset(0),
        Action::status(429).retry_after(RetryAfter::DateIn(Duration::from_secs(30))),
        Times::First(1),
    )])
    .await;
    let before = SystemTime::now();
    let reply = get(&token_page(&server.base_url(), 1)).await;
    let after = SystemTime::now();
    let header = reply.headers[RETRY_AFTER].to_str().expect("ASCII");
    assert!(header.ends_with(" GMT"), "{header}");
    let at = httpdate::parse_http_date(header).expect("an HTTP-date");
    // Rounded down to the second.
    assert!(at > before + Duration::from_secs(28), "{header}");
    assert!(at <= after + Duration::from_secs(30), "{header}");
    reply.error(StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn reset_mid_body_sends_a_prefix_of_the_page_then_drops_the_connection() {
    let server = start_with(vec![Fault::new(
        When::Page(3),
        Action::ResetMidBody { after: 1000 },
        Times::First(1),
    )])
    .await;
    let url = token_page(&server.base_url(), 3);
    let page = clean_body(&url).await;
    let cut = get_partial(&url).await;
    assert_eq!(cut.status, StatusCode::OK);
    assert_eq!(cut.headers[TRANSFER_ENCODING], "chunked");
    assert_eq!(cut.body, page[..1000], "the prefix of the real page");
    // reqwest reports a body cut short as a decode error; hyper says where it was cut.
    let failure = format!("{:?}", cut.failure.expect("the body fails"));
    assert!(failure.contains("EOF during chunk"), "{failure}");
    // Then the page, whole.
    let whole = get_partial(&url).await;
    assert!(whole.failure.is_none());
    assert_eq!(whole.body, page);
    let stats = server.stats();
    assert_eq!((stats.pages_served, stats.faults_injected), (1, 1));
}

#[tokio::test]
async fn truncated_body_is_shorter_than_its_content_length() {
    let server = start_with(vec![Fault::new(
        When::Page(1),
        Action::Truncate { after: 2000 },
        Times::First(2),
    )])
    .await;
    let url = token_page(&server.base_url(), 1);
    let page = clean_body(&url).await;
    for _ in 0..2 {
        let cut = get_partial(&url).await;
        assert_eq!(cut.status, StatusCode::OK);
        assert_eq!(cut.headers[CONTENT_LENGTH], page.len().to_string().as_str());
        assert_eq!(cut.body, page[..2000]);
        let failure = format!("{:?}", cut.failure.expect("the body fails"));
        assert!(failure.contains("IncompleteBody"), "{failure}");
    }
    assert_eq!(get_partial(&url).await.body, page);

    // A cut past the end still cuts: at most all but the last byte is sent.
    let server = start_with(vec![Fault::new(
        When::Always,
        Action::Truncate { after: usize::MAX },
        Times::First(1),
    )])
    .await;
    let cut = get_partial(&token_page(&server.base_url(), 1)).await;
    assert_eq!(cut.body, page[..page.len() - 1]);
    assert!(cut.failure.is_some());
}

#[tokio::test]
async fn not_json_answers_200_with_an_html_page() {
    let server = start_with(vec![Fault::new(
        When::Page(2),
        Action::NotJson,
        Times::First(1),
    )])
    .await;
    let url = token_page(&server.base_url(), 2);
    let reply = get(&url).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[CONTENT_TYPE], "text/html");
    assert!(reply.body.starts_with(b"<!DOCTYPE html>"));
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());
    get(&url).await.ok();
    assert_eq!(server.stats().pages_served, 1);
}

#[tokio::test]
async fn delay_and_stall_answer_late() {
    let pause = Duration::from_millis(300);
    let server = start_with(vec![
        Fault::new(When::Page(1), Action::Delay(pause), Times::First(1)),
        Fault::new(
            When::Page(2),
            Action::Stall {
                after: 100,
                stall: pause,
            },
            Times::First(1),
        ),
    ])
    .await;
    let base = server.base_url();
    let first = token_page(&base, 1);
    let started = Instant::now();
    let reply = get_partial(&first).await;
    assert!(started.elapsed() >= pause);
    assert!(reply.failure.is_none());
    assert_eq!(reply.body, clean_body(&first).await);

    let second = token_page(&base, 2);
    let started = Instant::now();
    let reply = get_partial(&second).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= pause, "{elapsed:?}");
    let first_bytes = reply.first_bytes_after.expect("bytes arrived");
    assert!(
        first_bytes < pause,
        "the head came at once: {first_bytes:?}"
    );
    assert!(reply.failure.is_none());
    assert_eq!(reply.headers[CONTENT_LENGTH], reply.body.len().to_string());
    assert_eq!(reply.body, clean_body(&second).await);

    // Once each: fast now.
    let started = Instant::now();
    get(&first).await.ok();
    get(&second).await.ok();
    assert!(started.elapsed() < pause);
    let stats = server.stats();
    assert_eq!((stats.pages_served, stats.faults_injected), (4, 2));
}

#[tokio::test]
async fn next_offset_leads_back_to_an_earlier_page() {
    let server = start_with(vec![Fault::new(
        When::Page(3),
        Action::NextOffset(5),
        Times::Forever,
    )])
    .await;
    let base = server.base_url();
    let page = get(&token_page(&base, 3)).await.ok();
    assert_eq!(page["next_token"], encode_cursor(5));
    assert_eq!(
        records(&page["variants"])[0],
        expected_record(10, &data()),
        "the records are page 3's"
    );
    let page = get(&format!(
        "{base}/next_url/variants?count=5&cursor={}",
        encode_cursor(10)
    ))
    .await
    .ok();
    assert_eq!(
        page["links"]["next"],
        format!("/next_url/variants?count=5&cursor={}", encode_cursor(5))
    );
    let reply = get(&format!(
        "{base}/link/variants?per_page=5&cursor={}",
        encode_cursor(10)
    ))
    .await;
    let header = reply.headers["link"].to_str().expect("ASCII");
    assert_eq!(
        links(header)["next"],
        format!(
            "{base}/link/variants?per_page=5&cursor={}",
            encode_cursor(5)
        )
    );
    // Where the client computes the next page, nothing changes.
    let page = get(&format!("{base}/page/variants?page=3&per_page=5"))
        .await
        .ok();
    assert_eq!(page["page"], 3);
}

#[tokio::test]
async fn pad_makes_a_page_larger_and_keeps_it_json() {
    let server = start_with(vec![
        Fault::new(
            When::Page(1),
            Action::Pad {
                bytes: 100_000,
                chunked: false,
            },
            Times::Forever,
        ),
        Fault::new(
            When::Page(2),
            Action::Pad {
                bytes: 100_000,
                chunked: true,
            },
            Times::Forever,
        ),
    ])
    .await;
    let base = server.base_url();
    let mut clean_bytes = 0;
    for (page, chunked) in [(1, false), (2, true)] {
        let url = token_page(&base, page);
        let clean = clean_body(&url).await;
        clean_bytes += clean.len() as u64;
        let reply = get_partial(&url).await;
        assert!(reply.failure.is_none());
        assert_eq!(reply.body.len(), clean.len() + 100_000);
        assert_eq!(reply.body[..clean.len()], clean);
        assert!(reply.body[clean.len()..].iter().all(|&b| b == b' '));
        assert!(serde_json::from_slice::<Value>(&reply.body).is_ok());
        if chunked {
            assert!(reply.headers.get(CONTENT_LENGTH).is_none());
            assert_eq!(reply.headers[TRANSFER_ENCODING], "chunked");
        } else {
            assert_eq!(reply.headers[CONTENT_LENGTH], reply.body.len().to_string());
        }
    }
    let stats = server.stats();
    assert_eq!(
        (
            stats.pages_served,
            stats.bytes_served,
            stats.faults_injected
        ),
        (2, clean_bytes + 200_000, 2)
    );
}

#[tokio::test]
async fn rules_with_the_same_pages_play_one_after_the_other() {
    let server = start_with(vec![
        Fault::new(When::Always, Action::status(500), Times::First(1)),
        Fault::new(
            When::Always,
            Action::ResetMidBody { after: 10 },
            Times::First(1),
        ),
        Fault::new(When::Page(2), Action::status(429), Times::First(1)),
    ])
    .await;
    let base = server.base_url();
    for page in [1, 2] {
        let url = token_page(&base, page);
        get(&url).await.error(StatusCode::INTERNAL_SERVER_ERROR);
        assert!(get_partial(&url).await.failure.is_some());
        if page == 2 {
            get(&url).await.error(StatusCode::TOO_MANY_REQUESTS);
        }
        get(&url).await.ok();
    }
    let stats = server.stats();
    assert_eq!((stats.pages_served, stats.faults_injected), (2, 5));
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let addr = server.addr();
    assert_eq!(server.base_url(), format!("http://{addr}"));
    server.shutdown().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "still accepting connections after shutdown"
    );
}

#[cfg(unix)]
#[test]
fn binary_announces_its_address_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};

    /// Kills the child if the test fails before it exits.
    struct Running(Child);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    let child = Command::new(env!("CARGO_BIN_EXE_landline-mockapi"))
        .args([
            "--port",
            "0",
            "--total",
            "12",
            "--pool",
            "5",
            "--target-bytes",
            "20000",
            "--latency-ms",
            "1",
            "--bandwidth-mbps",
            "80",
            "--gzip",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a first line");
    let addr = line
        .trim_end()
        .strip_prefix("listening on http://")
        .expect("listening on http://HOST:PORT");

    let mut stream = TcpStream::connect(addr).expect("it listens where it said");
    write!(
        stream,
        "GET /meta HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("a reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.ends_with(
            r#"{"id_base":10000000,"pool":5,"seed":42,"target_bytes":20000,"total":12}"#
        )
    );
    // `--gzip` compresses the pages of a client that accepts it.
    let mut stream = TcpStream::connect(addr).expect("it listens where it said");
    write!(
        stream,
        "GET /variants?count=2 HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: gzip\r\n\
         Connection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("a reply");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\r\ncontent-encoding: gzip\r\n"), "{reply}");

    let pid = running.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let status = running.0.wait().expect("the binary exits");
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    let mut err_pipe = running.0.stderr.take().expect("stderr is piped");
    err_pipe
        .read_to_string(&mut stderr)
        .expect("stderr is text");
    assert!(stderr.contains("pool of 5 records"), "{stderr}");
    assert!(
        stderr.contains("bandwidth 80.0 Mbit/s, compression gzip"),
        "{stderr}"
    );

    // Bad network flags are refused before anything is built.
    for args in [
        &["--encodings", "gzip,lzma"][..],
        &["--gzip", "--encodings", "br"],
        &["--bandwidth-mbps", "-1"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_landline-mockapi"))
            .args(["--port", "0", "--total", "1", "--pool", "1"])
            .args(args)
            .output()
            .expect("the binary runs");
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

// ------------------------------------------------------------------ network imitation --

/// 100 records from a pool of 7: the single page is about 2.9 MB, a dozen slices.
fn larger_data() -> DataConfig {
    DataConfig {
        total: 100,
        ..data()
    }
}

/// Decodes as much of `wire` as it can (a body cut short decodes to a prefix).
fn decode(encoding: Encoding, wire: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut reader: Box<dyn Read + '_> = match encoding {
        Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(wire)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(wire)),
        Encoding::Brotli => Box::new(brotli::Decompressor::new(wire, 4096)),
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(wire).expect("a decoder")),
    };
    let mut out = Vec::new();
    // Whether a cut stream ends in an error depends on the format: the prefix is what counts.
    let _ = reader.read_to_end(&mut out);
    out
}

/// The body a fault-free, uncompressed server over `data` answers at `path`.
async fn clean_page(data: &DataConfig, path: &str) -> Vec<u8> {
    let clean = start(MockConfig {
        data: data.clone(),
        ..MockConfig::default()
    })
    .await;
    let reply = get(&format!("{}{path}", clean.base_url())).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.body
}

#[tokio::test]
async fn every_encoding_decodes_to_the_uncompressed_page_on_every_endpoint() {
    let server = start(MockConfig {
        data: larger_data(),
        encodings: Encoding::ALL.to_vec(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let paths = [
        "/variants?count=5".to_owned(),
        format!("/variants?count=5&token={}", encode_cursor(95)),
        "/next_url/variants?count=7".to_owned(),
        "/link/variants?per_page=5".to_owned(),
        "/offset/variants?offset=10&limit=5".to_owned(),
        "/page/variants?page=2&per_page=5".to_owned(),
        "/page/variants?page=99&per_page=5".to_owned(),
        "/single/variants".to_owned(),
    ];
    let (mut wire_bytes, mut decoded_bytes) = (0, 0);
    for path in &paths {
        let url = format!("{base}{path}");
        let plain = get_accepting(&url, None).await;
        assert_eq!(plain.status, StatusCode::OK, "{path}");
        assert!(plain.headers.get(CONTENT_ENCODING).is_none(), "{path}");
        assert_eq!(plain.headers[VARY], "Accept-Encoding", "{path}");
        assert_eq!(plain.headers[CONTENT_LENGTH], plain.body.len().to_string());
        wire_bytes += plain.body.len();
        decoded_bytes += plain.body.len();
        for encoding in Encoding::ALL {
            let reply = get_accepting(&url, Some(encoding.token())).await;
            assert_eq!(reply.status, StatusCode::OK, "{path} {encoding}");
            assert_eq!(reply.headers[CONTENT_ENCODING], encoding.token());
            assert_eq!(reply.headers[VARY], "Accept-Encoding");
            assert_eq!(reply.headers[CONTENT_TYPE], "application/json");
            assert!(
                reply.headers.get(CONTENT_LENGTH).is_none(),
                "{path} {encoding}"
            );
            assert_eq!(reply.headers[TRANSFER_ENCODING], "chunked");
            for header in ["link", "x-total-count"] {
                assert_eq!(reply.headers.get(header), plain.headers.get(header));
            }
            assert_eq!(
                decode(encoding, &reply.body),
                plain.body,
                "{path} {encoding}"
            );
            if plain.body.len() > 100_000 {
                assert!(
                    reply.body.len() < plain.body.len() / 4,
                    "{path} {encoding}: {} of {} bytes",
                    reply.body.len(),
                    plain.body.len()
                );
            }
            wire_bytes += reply.body.len();
            decoded_bytes += plain.body.len();
        }
    }
    let stats = server.stats();
    let pages = paths.len() as u64 * 5;
    assert_eq!(
        (stats.pages_served, stats.bytes_served, stats.bytes_decoded),
        (pages, wire_bytes as u64, decoded_bytes as u64)
    );
}

#[tokio::test]
async fn accept_encoding_picks_the_servers_first_acceptable_coding() {
    let server = start(MockConfig {
        data: data(),
        encodings: vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip],
        faults: Faults {
            rules: vec![
                Fault::new(When::Page(2), Action::status(503), Times::Forever),
                Fault::new(
                    When::Page(3),
                    Action::ErrorBody(r#"{"error":"quota"}"#.into()),
                    Times::Forever,
                ),
                Fault::new(When::Page(4), Action::NotJson, Times::Forever),
            ],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let url = token_page(&base, 1);
    let plain = clean_body(&url).await;
    for (accept, chosen) in [
        (None, None),
        (Some(""), None),
        (Some("identity"), None),
        (Some("deflate"), None),
        (Some("gzip"), Some(Encoding::Gzip)),
        (Some("x-gzip"), Some(Encoding::Gzip)),
        (Some("gzip, deflate, br"), Some(Encoding::Brotli)),
        (Some("gzip;q=1, br;q=0.1, zstd;q=0.2"), Some(Encoding::Zstd)),
        (Some("br;q=0, GZIP;Q=0.5"), Some(Encoding::Gzip)),
        (Some("zstd;q=0, br;q=0, gzip;q=0"), None),
        (Some("*"), Some(Encoding::Zstd)),
        (Some("*;q=0"), None),
        (Some("*;q=0, gzip"), Some(Encoding::Gzip)),
        (Some("zstd;q=0, *"), Some(Encoding::Brotli)),
    ] {
        let reply = get_accepting(&url, accept).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers[VARY], "Accept-Encoding", "{accept:?}");
        let got = reply.headers.get(CONTENT_ENCODING).map(|v| v.as_bytes());
        assert_eq!(got, chosen.map(|e| e.token().as_bytes()), "{accept:?}");
        match chosen {
            Some(encoding) => assert_eq!(decode(encoding, &reply.body), plain, "{accept:?}"),
            None => assert_eq!(reply.body, plain, "{accept:?}"),
        }
    }

    // Errors, and the fault answers that replace the page, are never compressed.
    let never = |reply: &Reply| {
        assert!(reply.headers.get(CONTENT_ENCODING).is_none());
        assert!(reply.headers.get(VARY).is_none());
    };
    let bad = get_accepting(&format!("{base}/variants?count=0"), Some("*")).await;
    never(&bad);
    bad.error(StatusCode::BAD_REQUEST);
    let failed = get_accepting(&token_page(&base, 2), Some("*")).await;
    never(&failed);
    failed.error(StatusCode::SERVICE_UNAVAILABLE);
    let inside = get_accepting(&token_page(&base, 3), Some("*")).await;
    never(&inside);
    assert_eq!(inside.body, br#"{"error":"quota"}"#);
    let html = get_accepting(&token_page(&base, 4), Some("*")).await;
    never(&html);
    assert!(html.body.starts_with(b"<!DOCTYPE html>"));
    for path in ["/meta", "/healthz", "/nope"] {
        never(&get_accepting(&format!("{base}{path}"), Some("*")).await);
    }

    // A server offering no encodings never compresses, and does not vary.
    let plain_server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let reply = get_accepting(&token_page(&plain_server.base_url(), 1), Some("*")).await;
    never(&reply);
    assert_eq!(reply.body, plain);
}

#[tokio::test]
async fn body_faults_on_compressed_pages_cut_the_uncompressed_bytes() {
    // Pages of 20 records, about 570 KB: more than two slices each.
    let page_path = |page: u64| match page {
        1 => "/variants?count=20".to_owned(),
        n => format!("/variants?count=20&token={}", encode_cursor((n - 1) * 20)),
    };
    let stall = Duration::from_millis(150);
    let server = start(MockConfig {
        data: larger_data(),
        encodings: Encoding::ALL.to_vec(),
        faults: Faults {
            rules: vec![
                Fault::new(
                    When::Page(1),
                    Action::ResetMidBody { after: 300_000 },
                    Times::Forever,
                ),
                Fault::new(
                    When::Page(2),
                    Action::Truncate { after: 1000 },
                    Times::Forever,
                ),
                Fault::new(
                    When::Page(3),
                    Action::Stall {
                        after: 100_000,
                        stall,
                    },
                    Times::Forever,
                ),
                Fault::new(
                    When::Page(4),
                    Action::Pad {
                        bytes: 1_000_000,
                        chunked: false,
                    },
                    Times::Forever,
                ),
            ],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let pages: Vec<Vec<u8>> = futures::future::join_all(
        (1..=4).map(|page| async move { clean_page(&larger_data(), &page_path(page)).await }),
    )
    .await;
    for encoding in Encoding::ALL {
        let accept = Some(encoding.token());
        let name = encoding.token();

        let cut = get_partial_accepting(&format!("{base}{}", page_path(1)), accept).await;
        assert_eq!(cut.status, StatusCode::OK);
        assert_eq!(cut.headers[CONTENT_ENCODING], name);
        assert_eq!(cut.headers[TRANSFER_ENCODING], "chunked");
        assert!(cut.failure.is_some(), "{name}: the body fails");
        assert_eq!(decode(encoding, &cut.body), pages[0][..300_000], "{name}");

        let cut = get_partial_accepting(&format!("{base}{}", page_path(2)), accept).await;
        assert_eq!(cut.headers[CONTENT_ENCODING], name);
        let length: usize = cut.headers[CONTENT_LENGTH]
            .to_str()
            .expect("ASCII")
            .parse()
            .expect("a length");
        assert!(cut.body.len() < length, "{name}");
        let failure = format!("{:?}", cut.failure.expect("the body fails"));
        assert!(failure.contains("IncompleteBody"), "{name}: {failure}");
        assert_eq!(decode(encoding, &cut.body), pages[1][..1000], "{name}");

        let started = Instant::now();
        let slow = get_partial_accepting(&format!("{base}{}", page_path(3)), accept).await;
        assert!(started.elapsed() >= stall, "{name}");
        assert!(slow.failure.is_none(), "{name}");
        assert_eq!(slow.headers[CONTENT_ENCODING], name);
        assert_eq!(slow.headers[CONTENT_LENGTH], slow.body.len().to_string());
        assert_eq!(decode(encoding, &slow.body), pages[2], "{name}");

        let padded = get_partial_accepting(&format!("{base}{}", page_path(4)), accept).await;
        assert!(padded.failure.is_none(), "{name}");
        assert_eq!(
            padded.headers[CONTENT_LENGTH],
            padded.body.len().to_string()
        );
        let decoded = decode(encoding, &padded.body);
        assert_eq!(decoded.len(), pages[3].len() + 1_000_000, "{name}");
        assert_eq!(decoded[..pages[3].len()], pages[3], "{name}");
        assert!(decoded[pages[3].len()..].iter().all(|&b| b == b' '));
        assert!(
            padded.body.len() < pages[3].len(),
            "{name}: spaces compress"
        );
    }
}

#[tokio::test]
async fn bandwidth_holds_each_response_to_its_rate_after_the_latency() {
    const RATE: u64 = 2_000_000;
    let latency = Duration::from_millis(100);
    let server = start(MockConfig {
        data: data(),
        latency,
        bandwidth: Some(RATE),
        encodings: vec![Encoding::Gzip],
        ..MockConfig::default()
    })
    .await;
    let url = format!("{}/single/variants", server.base_url());
    // About 660 KB: at least a third of a second at 2 MB/s.
    for accept in [None, Some("gzip")] {
        let started = Instant::now();
        let reply = get_partial_accepting(&url, accept).await;
        let elapsed = started.elapsed();
        assert!(reply.failure.is_none());
        let first_bytes = reply.first_bytes_after.expect("bytes arrived");
        assert!(first_bytes >= latency, "{first_bytes:?}");
        let at_rate = Duration::from_secs_f64(reply.body.len() as f64 / RATE as f64);
        assert!(elapsed >= latency + at_rate, "{accept:?}: {elapsed:?}");
        if accept.is_none() {
            assert!(at_rate >= Duration::from_millis(300), "{at_rate:?}");
            assert_eq!(reply.headers[CONTENT_LENGTH], reply.body.len().to_string());
            assert_whole_data_set(
                records(&serde_json::from_slice::<Value>(&reply.body).expect("JSON")["variants"]),
                &data(),
            );
        } else {
            let plain = clean_page(&data(), "/single/variants").await;
            assert_eq!(decode(Encoding::Gzip, &reply.body), plain);
        }
    }

    // Two responses at once each get the rate.
    let started = Instant::now();
    let (a, b) = tokio::join!(get_partial(&url), get_partial(&url));
    let elapsed = started.elapsed();
    assert_eq!(a.body, b.body);
    assert!(elapsed >= Duration::from_secs_f64(a.body.len() as f64 / RATE as f64));
}

// ------------------------------------------------------------------------- rate limit --

/// A header's value as a number.
fn number(headers: &HeaderMap, name: &str) -> u64 {
    headers[name]
        .to_str()
        .expect("ASCII")
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
async fn rate_limit_answers_429_past_the_limit_with_ietf_headers() {
    let server = start(MockConfig {
        data: data(),
        rate_limit: Some(RateLimit {
            limit: 3,
            window: Duration::from_secs(2),
            headers: RateLimitHeaders::Ietf,
        }),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let started = Instant::now();
    for (page, remaining) in [(1, 2), (2, 1), (3, 0)] {
        let reply = get(&token_page(&base, page)).await;
        assert_eq!(number(&reply.headers, "ratelimit-limit"), 3);
        assert_eq!(number(&reply.headers, "ratelimit-remaining"), remaining);
        let reset = number(&reply.headers, "ratelimit-reset");
        assert!((1..=2).contains(&reset), "{reset}");
        reply.ok();
    }
    // Over the limit: a 429, and a bad request is refused before it is checked.
    for path in ["/variants?count=5", "/variants?count=0"] {
        let reply = get(&format!("{base}{path}")).await;
        let retry_after = number(&reply.headers, "retry-after");
        assert!((1..=2).contains(&retry_after), "{retry_after}");
        assert_eq!(number(&reply.headers, "ratelimit-remaining"), 0);
        assert_eq!(number(&reply.headers, "ratelimit-reset"), retry_after);
        assert_eq!(
            reply.error(StatusCode::TOO_MANY_REQUESTS),
            "rate limit exceeded"
        );
    }
    // Other paths are neither limited nor logged.
    assert_eq!(get(&format!("{base}/healthz")).await.status, StatusCode::OK);
    get(&format!("{base}/meta")).await.ok();

    let stats = server.stats();
    assert_eq!(
        (
            stats.pages_served,
            stats.rate_limited,
            stats.faults_injected
        ),
        (3, 2, 0)
    );
    let log = server.request_log();
    let seen: Vec<(&str, u16)> = log
        .iter()
        .map(|r| (r.path_and_query.as_str(), r.status))
        .collect();
    let page = |n| token_page("", n);
    assert_eq!(
        seen,
        [
            (page(1).as_str(), 200),
            (page(2).as_str(), 200),
            (page(3).as_str(), 200),
            ("/variants?count=5", 429),
            ("/variants?count=0", 429),
        ]
    );
    assert!(log.first().is_some_and(|r| r.at >= started));
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(server.api().request_log(), log);
}

#[tokio::test]
async fn rate_limit_window_starts_again_after_it_ends() {
    let window = Duration::from_millis(300);
    let server = start(MockConfig {
        data: data(),
        rate_limit: Some(RateLimit {
            limit: 1,
            window,
            headers: RateLimitHeaders::XRateLimit,
        }),
        ..MockConfig::default()
    })
    .await;
    let url = token_page(&server.base_url(), 1);
    let epoch = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    let before = epoch();
    let reply = get(&url).await;
    assert_eq!(number(&reply.headers, "x-ratelimit-limit"), 1);
    assert_eq!(number(&reply.headers, "x-ratelimit-remaining"), 0);
    // Epoch seconds of the window's end, rounded up: within a second of it.
    let reset = number(&reply.headers, "x-ratelimit-reset");
    assert!(
        reset > before && reset <= epoch() + 2,
        "{reset} vs {before}"
    );
    assert!(reply.headers.get("ratelimit-limit").is_none());
    reply.ok();

    let refused = get(&url).await;
    assert_eq!(refused.headers[RETRY_AFTER], "1", "rounded up");
    assert_eq!(number(&refused.headers, "x-ratelimit-remaining"), 0);
    refused.error(StatusCode::TOO_MANY_REQUESTS);

    tokio::time::sleep(window).await;
    get(&url).await.ok();
    let log = server.request_log();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 429, 200]);
    assert!(log[2].at.duration_since(log[0].at) >= window);
    assert_eq!(server.stats().rate_limited, 1);
}

#[tokio::test]
async fn rate_limit_without_headers_still_sends_retry_after() {
    let server = start(MockConfig {
        data: data(),
        rate_limit: Some(RateLimit {
            limit: 0,
            window: Duration::from_secs(5),
            headers: RateLimitHeaders::None,
        }),
        ..MockConfig::default()
    })
    .await;
    let reply = get(&token_page(&server.base_url(), 1)).await;
    assert_eq!(reply.headers[RETRY_AFTER], "5");
    for name in ["ratelimit-remaining", "x-ratelimit-remaining"] {
        assert!(reply.headers.get(name).is_none(), "{name}");
    }
    reply.error(StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn request_log_records_every_data_request_with_its_status() {
    let server = start(MockConfig {
        data: data(),
        auth: Auth::Bearer("s3cret".into()),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    get(&format!("{base}/variants?count=2")).await;
    get_with(&format!("{base}/offset/variants?limit=0"), Some("s3cret")).await;
    get_with(&format!("{base}/single/variants"), Some("s3cret")).await;
    get_with(&format!("{base}/healthz"), None).await;
    get_with(&format!("{base}/nope"), Some("s3cret")).await;
    let seen: Vec<(String, u16)> = server
        .request_log()
        .into_iter()
        .map(|r| (r.path_and_query, r.status))
        .collect();
    let expected = [
        ("/variants?count=2", 401),
        ("/offset/variants?limit=0", 400),
        ("/single/variants", 200),
    ]
    .map(|(path, status)| (path.to_owned(), status));
    assert_eq!(seen, expected);
}

// --------------------------------------------------------------------- content faults --

#[tokio::test]
async fn error_body_answers_200_with_an_error_inside() {
    let text = r#"{"error":{"code":"quota","message":"daily quota exceeded"}}"#;
    let server = start_with(vec![Fault::new(
        When::Page(2),
        Action::ErrorBody(text.into()),
        Times::First(1),
    )])
    .await;
    let url = token_page(&server.base_url(), 2);
    let reply = get(&url).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[CONTENT_LENGTH], text.len().to_string());
    assert_eq!(
        reply.json(),
        json!({"error": {"code": "quota", "message": "daily quota exceeded"}})
    );
    assert_eq!(reply.body, text.as_bytes());
    // Then the page.
    assert_eq!(records(&get(&url).await.ok()["variants"]).len(), 5);
    let stats = server.stats();
    assert_eq!((stats.pages_served, stats.faults_injected), (1, 1));
}

#[tokio::test]
async fn shifted_pages_serve_other_records_on_a_retry() {
    let server = start_with(vec![
        Fault::new(
            When::Page(2),
            Action::ResetMidBody { after: 200_000 },
            Times::First(1),
        ),
        Fault::new(When::Page(2), Action::Shifted(1), Times::Forever),
        Fault::new(When::Page(5), Action::Shifted(10), Times::Forever),
    ])
    .await;
    let base = server.base_url();
    let url = token_page(&base, 2);
    let clean_bytes = clean_body(&url).await;
    let clean: Value = serde_json::from_slice(&clean_bytes).expect("JSON");

    // The first attempt fails mid-body, after the real page's bytes.
    let first = get_partial(&url).await;
    assert!(first.failure.is_some());
    assert_eq!(first.body, clean_bytes[..clean_bytes.len() - 1]);
    // The retry: the same shape and next token, other records.
    for _ in 0..2 {
        let retry = get(&url).await;
        let page = retry.ok();
        assert_eq!(page["next_token"], clean["next_token"]);
        let expected: Vec<Value> = (6..11).map(|i| expected_record(i, &data())).collect();
        assert_eq!(records(&page["variants"]), expected);
        assert_ne!(page["variants"], clean["variants"]);
        assert_eq!(retry.headers[CONTENT_LENGTH], retry.body.len().to_string());
    }
    // Past the end of the data set, records are still generated: the pool wraps.
    let last = get(&token_page(&base, 5)).await.ok();
    let expected: Vec<Value> = (30..33).map(|i| expected_record(i, &data())).collect();
    assert_eq!(records(&last["variants"]), expected);
    assert!(last["next_token"].is_null());
    // Where the client computes the next page too.
    let reply = get(&format!("{base}/page/variants?page=5&per_page=5")).await;
    assert_eq!(reply.headers["x-total-count"], "23");
    let page = reply.ok();
    assert_eq!((&page["page"], &page["total"]), (&json!(5), &json!(23)));
    assert_eq!(records(&page["items"]), expected);

    let stats = server.stats();
    assert_eq!((stats.pages_served, stats.faults_injected), (4, 5));
}

// ------------------------------------------------------------------------------- auth --

/// GET `url` with these headers.
async fn get_headers(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = reqwest::Client::new().get(url);
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    send(request).await
}

/// The `WWW-Authenticate` challenge of a 401, and its error message.
fn refused(reply: &Reply) -> (String, String) {
    let message = reply.error(StatusCode::UNAUTHORIZED);
    let challenge = reply.headers["www-authenticate"]
        .to_str()
        .expect("an ASCII challenge")
        .to_owned();
    (challenge, message)
}

#[tokio::test]
async fn basic_auth_accepts_its_pair_and_refuses_the_rest() {
    let server = start(MockConfig {
        data: data(),
        auth: Auth::Basic {
            user: "ann".into(),
            password: "pass:wörd".into(),
        },
        ..MockConfig::default()
    })
    .await;
    let url = format!("{}/variants?count=3", server.base_url());
    let client = reqwest::Client::new();
    let ok = send(client.get(&url).basic_auth("ann", Some("pass:wörd"))).await;
    assert_eq!(records(&ok.ok()["variants"]).len(), 3);
    let cases = [
        (Some("Basic YW5uOndyb25n"), "wrong user or password"), // ann:wrong
        (Some("Basic Ym9iOnBhc3M6d8O2cmQ="), "wrong user or password"), // bob:pass:wörd
        (
            Some("Basic YW5ucGFzcw=="),
            "malformed Basic credentials: no ':' between user and password",
        ), // annpass
        (
            Some("Basic %%%not-base64"),
            "malformed Basic credentials: not base64",
        ),
        (
            Some("Bearer pass:wörd"),
            "missing Authorization: Basic credentials",
        ),
        (None, "missing Authorization: Basic credentials"),
    ];
    for (authorization, expected) in cases {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        let (challenge, message) = refused(&get_headers(&url, &headers).await);
        assert_eq!(
            challenge,
            r#"Basic realm="landline-mockapi", charset="UTF-8""#
        );
        assert_eq!(message, expected, "{authorization:?}");
        assert!(!message.contains("wörd"));
    }
    assert_eq!(
        get(&format!("{}/healthz", server.base_url())).await.status,
        StatusCode::OK
    );
    let stats = server.stats();
    assert_eq!(
        (stats.unauthorized, stats.pages_served, stats.requests),
        (6, 1, 8)
    );
}

#[tokio::test]
async fn api_keys_in_a_header_or_in_the_query() {
    let server = start(MockConfig {
        data: data(),
        auth: Auth::ApiKeyHeader {
            name: "X-API-Key".into(),
            key: "k3y-4711".into(),
        },
        ..MockConfig::default()
    })
    .await;
    let url = format!("{}/variants?count=3", server.base_url());
    get_headers(&url, &[("x-api-key", "k3y-4711")]).await.ok();
    for headers in [
        &[][..],
        &[("x-api-key", "k3y-4712")],
        &[("authorization", "Bearer k3y-4711")],
    ] {
        let (challenge, message) = refused(&get_headers(&url, headers).await);
        assert_eq!(
            challenge,
            r#"ApiKey realm="landline-mockapi", header="X-API-Key""#
        );
        assert!(message.ends_with("X-API-Key header"), "{message}");
    }

    // In the query: paging parameters around it still page through everything.
    let server = start(MockConfig {
        data: data(),
        auth: Auth::ApiKeyQuery {
            param: "api_key".into(),
            key: "k3y+4711/=".into(),
        },
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let key = "k3y%2B4711%2F%3D";
    let mut url = format!("{base}/variants?api_key={key}&count=5");
    let mut all = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = get(&url).await.ok();
        all.extend_from_slice(records(&page["variants"]));
        match page["next_token"].as_str() {
            Some(token) => url = format!("{base}/variants?count=5&token={token}&api_key={key}"),
            None => break,
        }
    }
    assert_whole_data_set(&all, &data());
    let page = get(&format!(
        "{base}/offset/variants?offset=20&limit=5&api_key={key}"
    ))
    .await;
    assert_eq!(records(&page.ok()["results"]).len(), 3);
    for query in ["count=5", "count=5&api_key=k3y", "api_key=k3y%204711%2F%3D"] {
        let (challenge, message) = refused(&get(&format!("{base}/variants?{query}")).await);
        assert_eq!(
            challenge,
            r#"ApiKey realm="landline-mockapi", query="api_key""#
        );
        assert!(message.ends_with("api_key query parameter"), "{message}");
        assert!(!message.contains("4711"), "{message}");
    }
}

/// An OAuth2 server for client `landline` with secret `landline-secret`, scopes read and write.
fn oauth2(configure: impl FnOnce(&mut OAuth2Server)) -> MockConfig {
    let mut server = OAuth2Server {
        scopes: vec!["read".into(), "write".into()],
        ..OAuth2Server::new("landline", "landline-secret")
    };
    configure(&mut server);
    MockConfig {
        data: data(),
        auth: Auth::OAuth2(server),
        ..MockConfig::default()
    }
}

/// POSTs the form `fields` to the token endpoint, with HTTP Basic client credentials if given.
async fn token_request(
    server: &MockServer,
    fields: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut request = reqwest::Client::new()
        .post(server.token_url())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    send(request).await
}

const CLIENT: [(&str, &str); 2] = [
    ("client_id", "landline"),
    ("client_secret", "landline-secret"),
];

/// A client-credentials token request with the client in the form, plus `extra`.
async fn client_credentials(server: &MockServer, extra: &[(&str, &str)]) -> Reply {
    let mut fields = vec![("grant_type", "client_credentials")];
    fields.extend_from_slice(&CLIENT);
    fields.extend_from_slice(extra);
    token_request(server, &fields, None).await
}

/// A refresh-token request with the client in the form.
async fn refresh(server: &MockServer, refresh_token: &str) -> Reply {
    let mut fields = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    fields.extend_from_slice(&CLIENT);
    token_request(server, &fields, None).await
}

/// The answer of a token request refused with `status` and RFC 6749 error `code`.
fn oauth_error(reply: &Reply, status: StatusCode, code: &str) -> String {
    let body = reply.json();
    assert_eq!(reply.status, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(reply.headers["cache-control"], "no-store");
    body["error_description"]
        .as_str()
        .expect("a description")
        .to_owned()
}

fn access_token(reply: &Reply) -> String {
    assert_eq!(reply.headers["cache-control"], "no-store");
    reply.ok()["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

#[tokio::test]
async fn oauth2_client_credentials_by_form_or_by_basic() {
    let server = start(oauth2(|_| {})).await;
    let base = server.base_url();
    let page = format!("{base}/variants?count=2");

    let by_form = client_credentials(&server, &[]).await;
    let answer = by_form.ok();
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 3600);
    assert_eq!(answer["scope"], "read write");
    assert!(
        answer["refresh_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let first = access_token(&by_form);
    assert_eq!(
        records(&get_with(&page, Some(&first)).await.ok()["variants"]).len(),
        2
    );
    get_with(&format!("{base}/meta"), Some(&first)).await.ok();

    let by_basic = token_request(
        &server,
        &[("grant_type", "client_credentials"), ("scope", "read")],
        Some(("landline", "landline-secret")),
    )
    .await;
    assert_eq!(by_basic.ok()["scope"], "read");
    let second = access_token(&by_basic);
    assert_ne!(first, second, "tokens are unique");
    get_with(&page, Some(&second)).await.ok();

    // Refused token requests.
    let unauthorized = StatusCode::UNAUTHORIZED;
    let bad = StatusCode::BAD_REQUEST;
    let wrong_secret = [
        ("grant_type", "client_credentials"),
        ("client_id", "landline"),
        ("client_secret", "nope"),
    ];
    let reply = token_request(&server, &wrong_secret, None).await;
    assert!(!oauth_error(&reply, unauthorized, "invalid_client").contains("landline-secret"));
    assert!(
        reply.headers["www-authenticate"]
            .to_str()
            .is_ok_and(|c| c.starts_with("Basic "))
    );
    let reply = token_request(
        &server,
        &[("grant_type", "client_credentials")],
        Some(("landline", "nope")),
    )
    .await;
    oauth_error(&reply, unauthorized, "invalid_client");
    let reply = token_request(&server, &[("grant_type", "client_credentials")], None).await;
    oauth_error(&reply, unauthorized, "invalid_client");
    let reply = token_request(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", "landline-secret"),
        ],
        Some(("landline", "landline-secret")),
    )
    .await;
    assert!(oauth_error(&reply, bad, "invalid_request").contains("twice"));
    let reply = client_credentials(&server, &[("scope", "read admin")]).await;
    assert!(oauth_error(&reply, bad, "invalid_scope").contains("admin"));
    let reply = token_request(
        &server,
        &[("grant_type", "password"), CLIENT[0], CLIENT[1]],
        None,
    )
    .await;
    oauth_error(&reply, bad, "unsupported_grant_type");
    let reply = token_request(&server, &CLIENT, None).await;
    assert_eq!(
        oauth_error(&reply, bad, "invalid_request"),
        "missing grant_type"
    );
    let reply = client_credentials(&server, &[("grant_type", "client_credentials")]).await;
    assert!(oauth_error(&reply, bad, "invalid_request").contains("repeated"));
    let not_a_form = reqwest::Client::new()
        .post(server.token_url())
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#);
    oauth_error(&send(not_a_form).await, bad, "invalid_request");
    let reply = get(&server.token_url()).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);

    // Data requests without a token, or with one the server never issued.
    let (challenge, message) = refused(&get(&page).await);
    assert_eq!(
        (challenge.as_str(), message.as_str()),
        (
            r#"Bearer realm="landline-mockapi""#,
            "missing bearer access token"
        )
    );
    let (challenge, message) = refused(&get_with(&page, Some("at_forged")).await);
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert_eq!(message, "unknown access token");

    let stats = server.stats();
    assert_eq!(
        (
            stats.client_credentials_grants,
            stats.refresh_grants,
            stats.token_errors,
            stats.unauthorized
        ),
        (2, 0, 9, 2)
    );
    let issued = server.issued_tokens();
    let uses: Vec<(Grant, &str, u64)> = issued
        .iter()
        .map(|t| (t.grant, t.scope.as_str(), t.data_requests))
        .collect();
    assert_eq!(
        uses,
        [
            (Grant::ClientCredentials, "read write", 1),
            (Grant::ClientCredentials, "read", 1)
        ]
    );
    assert_eq!(issued[0].access_token, first);
}

#[tokio::test]
async fn oauth2_access_tokens_expire() {
    let server = start(oauth2(|s| s.token_ttl = Duration::from_millis(300))).await;
    let page = format!("{}/variants?count=2", server.base_url());
    let reply = client_credentials(&server, &[]).await;
    assert_eq!(reply.ok()["expires_in"], 1, "whole seconds, rounded up");
    let token = access_token(&reply);
    get_with(&page, Some(&token)).await.ok();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (challenge, message) = refused(&get_with(&page, Some(&token)).await);
    assert_eq!(
        challenge,
        r#"Bearer realm="landline-mockapi", error="invalid_token", error_description="the access token expired""#
    );
    assert_eq!(message, "the access token expired");
    // A new token works again.
    let token = access_token(&client_credentials(&server, &[]).await);
    get_with(&page, Some(&token)).await.ok();
}

#[tokio::test]
async fn oauth2_tokens_revoked_after_some_requests_make_the_client_refresh() {
    let server = start(oauth2(|s| s.revoke_after_requests = Some(2))).await;
    let base = server.base_url();
    let reply = client_credentials(&server, &[]).await;
    let refresh_token = reply.ok()["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    let token = access_token(&reply);
    for page in 1..=2 {
        get_with(&token_page(&base, page), Some(&token)).await.ok();
    }
    let (challenge, message) = refused(&get_with(&token_page(&base, 3), Some(&token)).await);
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert_eq!(
        message,
        "the access token was revoked after 2 data requests"
    );
    refused(&get_with(&format!("{base}/meta"), Some(&token)).await);

    // Refreshed mid-run: without rotation, no new refresh token and the old one stays valid.
    let reply = refresh(&server, &refresh_token).await;
    assert!(reply.ok().get("refresh_token").is_none(), "{}", reply.ok());
    let renewed = access_token(&reply);
    get_with(&token_page(&base, 3), Some(&renewed)).await.ok();
    access_token(&refresh(&server, &refresh_token).await);

    let uses: Vec<(Grant, u64)> = server
        .issued_tokens()
        .iter()
        .map(|t| (t.grant, t.data_requests))
        .collect();
    assert_eq!(
        uses,
        [
            (Grant::ClientCredentials, 2),
            (Grant::RefreshToken, 1),
            (Grant::RefreshToken, 0)
        ]
    );
    let stats = server.stats();
    assert_eq!(
        (
            stats.client_credentials_grants,
            stats.refresh_grants,
            stats.unauthorized
        ),
        (1, 2, 2)
    );
    assert_eq!(stats.pages_served, 3);
}

#[tokio::test]
async fn oauth2_refresh_tokens_rotate_from_an_initial_one() {
    let server = start(oauth2(|s| {
        s.initial_refresh_token = Some("rt-initial".into());
        s.rotate_refresh_tokens = true;
        s.issue_refresh_tokens = false;
    }))
    .await;
    let page = format!("{}/variants?count=2", server.base_url());
    assert!(
        client_credentials(&server, &[])
            .await
            .ok()
            .get("refresh_token")
            .is_none()
    );

    let reply = refresh(&server, "rt-initial").await;
    let answer = reply.ok();
    assert_eq!(answer["scope"], "read write");
    let rotated = answer["refresh_token"]
        .as_str()
        .expect("a new refresh token")
        .to_owned();
    assert_ne!(rotated, "rt-initial");
    get_with(&page, Some(&access_token(&reply))).await.ok();

    // The old one is spent.
    let reply = refresh(&server, "rt-initial").await;
    oauth_error(&reply, StatusCode::BAD_REQUEST, "invalid_grant");
    // The new one works once, with a narrower scope if asked, but not a wider one after that.
    let mut fields = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", rotated.as_str()),
        ("scope", "read"),
    ];
    fields.extend_from_slice(&CLIENT);
    let reply = token_request(&server, &fields, None).await;
    let answer = reply.ok();
    assert_eq!(answer["scope"], "read");
    let narrower = answer["refresh_token"]
        .as_str()
        .expect("rotated again")
        .to_owned();
    oauth_error(
        &refresh(&server, &rotated).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    let mut fields = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", narrower.as_str()),
        ("scope", "write"),
    ];
    fields.extend_from_slice(&CLIENT);
    let reply = token_request(&server, &fields, None).await;
    assert!(oauth_error(&reply, StatusCode::BAD_REQUEST, "invalid_scope").contains("not granted"));
    let reply = token_request(
        &server,
        &[("grant_type", "refresh_token"), CLIENT[0], CLIENT[1]],
        None,
    )
    .await;
    assert_eq!(
        oauth_error(&reply, StatusCode::BAD_REQUEST, "invalid_request"),
        "missing refresh_token"
    );
    // Refreshing authenticates the client too.
    let reply = token_request(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", narrower.as_str()),
        ],
        None,
    )
    .await;
    oauth_error(&reply, StatusCode::UNAUTHORIZED, "invalid_client");

    let stats = server.stats();
    assert_eq!(
        (
            stats.client_credentials_grants,
            stats.refresh_grants,
            stats.token_errors
        ),
        (1, 2, 5)
    );
}

#[tokio::test]
async fn oauth2_extra_required_fields() {
    let audience = "https://api.example.com/v2?x=1&y=ü";
    let server = start(oauth2(|s| {
        s.required_fields = vec![("audience".into(), audience.into())]
    }))
    .await;
    let reply = client_credentials(&server, &[]).await;
    assert_eq!(
        oauth_error(&reply, StatusCode::BAD_REQUEST, "invalid_request"),
        "missing audience"
    );
    let reply = client_credentials(&server, &[("audience", "https://api.example.com/v2")]).await;
    assert_eq!(
        oauth_error(&reply, StatusCode::BAD_REQUEST, "invalid_request"),
        "wrong audience"
    );
    // The form serializer percent-encodes `:`, `/`, `?`, `&`, `=` and `ü`: decoded, it matches.
    let token = access_token(&client_credentials(&server, &[("audience", audience)]).await);
    get_with(
        &format!("{}/variants?count=1", server.base_url()),
        Some(&token),
    )
    .await
    .ok();
}

// ------------------------------------------------------------------------------ SigV4 --

/// A SigV4 signer written for the tests from the AWS documentation, apart from the server's:
/// the query must already be in canonical form (sorted, RFC 3986-encoded).
struct Signer<'a> {
    access_key_id: &'a str,
    secret: &'a str,
    region: &'a str,
    service: &'a str,
    session_token: Option<&'a str>,
}

impl Signer<'_> {
    /// The headers of a signed `GET host path?query` at `at`.
    fn sign(&self, host: &str, path: &str, query: &str, at: SystemTime) -> Vec<(String, String)> {
        use hmac::{Hmac, KeyInit, Mac};
        use sha2::{Digest, Sha256};
        fn hmac(key: &[u8], data: &str) -> Vec<u8> {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
            mac.update(data.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        fn hex(bytes: &[u8]) -> String {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
        let ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        // "2024-02-13T14:04:10.045Z" → "20240213T140410Z"
        let iso = landline_mockapi::iso_millis(i64::try_from(ms).expect("in range"));
        let amz_date: String = iso[..19]
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            + "Z";
        let date = &amz_date[..8];
        let empty_hash = hex(&Sha256::digest(b""));
        let mut headers = vec![("host", host.to_owned()), ("x-amz-date", amz_date.clone())];
        if let Some(token) = self.session_token {
            headers.push(("x-amz-security-token", token.to_owned()));
        }
        let signed: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        let signed = signed.join(";");
        let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let canonical =
            format!("GET\n{path}\n{query}\n{canonical_headers}\n{signed}\n{empty_hash}");
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let key = hmac(
            &hmac(
                &hmac(
                    &hmac(format!("AWS4{}", self.secret).as_bytes(), date),
                    self.region,
                ),
                self.service,
            ),
            "aws4_request",
        );
        let signature = hex(&hmac(&key, &to_sign));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.access_key_id
        );
        let mut out: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(n, _)| *n != "host")
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        out.push(("authorization".into(), authorization));
        out
    }
}

const SIGNER: Signer<'static> = Signer {
    access_key_id: "AKIDEXAMPLE",
    secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    region: "eu-central-1",
    service: "execute-api",
    session_token: None,
};

fn sigv4(session_token: Option<&str>) -> MockConfig {
    MockConfig {
        data: data(),
        auth: Auth::SigV4 {
            access_key_id: SIGNER.access_key_id.into(),
            secret_access_key: SIGNER.secret.into(),
            session_token: session_token.map(str::to_owned),
            region: SIGNER.region.into(),
            service: SIGNER.service.into(),
        },
        ..MockConfig::default()
    }
}

/// GET `path?sent_query` signed over `signed_query`.
async fn get_signed(
    server: &MockServer,
    signer: &Signer<'_>,
    path: &str,
    signed_query: &str,
    sent_query: &str,
    at: SystemTime,
) -> Reply {
    let host = server.addr().to_string();
    let headers = signer.sign(&host, path, signed_query, at);
    let url = format!("{}{path}?{sent_query}", server.base_url());
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    get_headers(&url, &headers).await
}

#[tokio::test]
async fn sigv4_signed_requests_page_through_everything() {
    let server = start(sigv4(None)).await;
    let now = SystemTime::now();
    let (mut all, mut query) = (Vec::new(), "count=5".to_owned());
    for _ in 0..MAX_PAGES {
        let page = get_signed(&server, &SIGNER, "/variants", &query, &query, now)
            .await
            .ok();
        all.extend_from_slice(records(&page["variants"]));
        match page["next_token"].as_str() {
            Some(token) => query = format!("count=5&token={token}"),
            None => break,
        }
    }
    assert_whole_data_set(&all, &data());
    // A percent-encoded value, signed as encoded: the server decodes and re-encodes the same.
    let query = "count=5&updated_since=2022-01-01T00%3A00%3A00Z";
    get_signed(&server, &SIGNER, "/variants", query, query, now)
        .await
        .ok();
    get_signed(&server, &SIGNER, "/meta", "", "", now)
        .await
        .ok();
}

#[tokio::test]
async fn sigv4_refuses_what_does_not_match() {
    let server = start(sigv4(None)).await;
    let now = SystemTime::now();
    let refuse = |reply: Reply| {
        let (challenge, message) = refused(&reply);
        assert_eq!(challenge, "AWS4-HMAC-SHA256");
        assert!(!message.contains("EXAMPLEKEY"), "{message}");
        message
    };
    let tampered = get_signed(&server, &SIGNER, "/variants", "count=5", "count=6", now).await;
    assert!(refuse(tampered).starts_with("signature does not match"));
    // Signed for one path, sent to another.
    let signed = SIGNER.sign(&server.addr().to_string(), "/variants", "", now);
    let signed: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let other_path = get_headers(&format!("{}/single/variants", server.base_url()), &signed).await;
    assert!(refuse(other_path).starts_with("signature does not match"));
    let wrong_secret = Signer {
        secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ",
        ..SIGNER
    };
    let reply = get_signed(
        &server,
        &wrong_secret,
        "/variants",
        "count=5",
        "count=5",
        now,
    )
    .await;
    assert!(refuse(reply).starts_with("signature does not match"));
    let wrong_key = Signer {
        access_key_id: "AKIDOTHER",
        ..SIGNER
    };
    let reply = get_signed(&server, &wrong_key, "/variants", "count=5", "count=5", now).await;
    assert_eq!(refuse(reply), "unknown access key id in Credential");
    let wrong_region = Signer {
        region: "us-east-1",
        ..SIGNER
    };
    let reply = get_signed(
        &server,
        &wrong_region,
        "/variants",
        "count=5",
        "count=5",
        now,
    )
    .await;
    assert!(refuse(reply).contains("region"));
    let skewed = now - Duration::from_secs(20 * 60);
    let reply = get_signed(&server, &SIGNER, "/variants", "count=5", "count=5", skewed).await;
    assert!(refuse(reply).contains("more than 15 minutes from the server's clock"));
    let reply = get_with(&format!("{}/variants", server.base_url()), Some("token")).await;
    assert!(refuse(reply).contains("not AWS4-HMAC-SHA256"));
    let reply = get(&format!("{}/variants", server.base_url())).await;
    assert!(refuse(reply).starts_with("missing Authorization"));
    assert_eq!(server.stats().unauthorized, 8);
    assert_eq!(server.stats().pages_served, 0);
}

#[tokio::test]
async fn sigv4_session_tokens_are_required_when_configured() {
    let server = start(sigv4(Some("session-token-0815"))).await;
    let now = SystemTime::now();
    let with_token = Signer {
        session_token: Some("session-token-0815"),
        ..SIGNER
    };
    get_signed(&server, &with_token, "/variants", "count=2", "count=2", now)
        .await
        .ok();
    let (_, message) =
        refused(&get_signed(&server, &SIGNER, "/variants", "count=2", "count=2", now).await);
    assert!(
        message.starts_with("missing X-Amz-Security-Token"),
        "{message}"
    );
    let wrong = Signer {
        session_token: Some("session-token-0816"),
        ..SIGNER
    };
    let (_, message) =
        refused(&get_signed(&server, &wrong, "/variants", "count=2", "count=2", now).await);
    assert_eq!(
        message,
        "X-Amz-Security-Token does not match the session token"
    );
}

// -------------------------------------------------------------------- incremental reads --

/// The distinct `updated_at` instants of [`data`]'s pool, ascending.
fn update_times() -> Vec<i64> {
    let data = data();
    let mut times: Vec<i64> = (0..data.pool as u64)
        .map(|i| record_updated_at_ms(i, &data))
        .collect();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), data.pool, "distinct instants");
    times
}

fn ids(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r["id"].as_u64().expect("an id") - landline_mockapi::ID_BASE)
        .collect()
}

/// Pages through `/variants` with `updated_since` (already encoded) in every request.
async fn token_pages_since(base: &str, since: &str, count: u64) -> (Vec<Value>, usize) {
    let (mut all, mut empty) = (Vec::new(), 0);
    let mut url = format!("{base}/variants?count={count}&updated_since={since}");
    for _ in 0..MAX_PAGES {
        let reply = get(&url).await;
        assert_eq!(reply.headers[CONTENT_LENGTH], reply.body.len().to_string());
        let page = reply.ok();
        let records = records(&page["variants"]);
        empty += usize::from(records.is_empty() && !page["next_token"].is_null());
        all.extend_from_slice(records);
        match page["next_token"].as_str() {
            Some(token) => {
                url = format!("{base}/variants?count={count}&token={token}&updated_since={since}")
            }
            None => break,
        }
    }
    (all, empty)
}

#[tokio::test]
async fn updated_since_filters_the_cursor_endpoints_inclusively() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let times = update_times();
    let since = times[3];
    let expected = visible_offsets(&data(), Some(since), None);
    assert!(!expected.is_empty() && expected.len() < 23);
    let iso = iso_millis(since);
    let encoded = iso.replace(':', "%3A");
    let plus = iso.replace('Z', "%2B00:00");
    let raw_plus = iso.replace('Z', "+00:00");
    for value in [
        iso.as_str(),
        encoded.as_str(),
        plus.as_str(),
        raw_plus.as_str(),
    ] {
        let (all, _) = token_pages_since(&base, value, 5).await;
        assert_eq!(ids(&all), expected, "{value}");
        for (record, &offset) in all.iter().zip(&expected) {
            assert_eq!(*record, expected_record(offset, &data()));
            assert!(
                record["updated_at"]
                    .as_str()
                    .is_some_and(|u| u >= iso.as_str())
            );
        }
    }
    // Inclusive to the millisecond, exact below it.
    let finer = iso.replace('Z', "0001Z");
    let (all, _) = token_pages_since(&base, &finer, 5).await;
    assert_eq!(ids(&all), visible_offsets(&data(), Some(since + 1), None));
    // Only the newest records: most pages of 2 are empty, still valid and still leading on.
    let (all, empty) = token_pages_since(&base, &iso_millis(times[6]), 2).await;
    assert_eq!(ids(&all), visible_offsets(&data(), Some(times[6]), None));
    assert!(empty >= 5, "{empty} empty pages");
    let empty_page = get(&format!(
        "{base}/variants?count=1&token={}&updated_since={}",
        encode_cursor(1),
        "9999-12-31T23%3A59%3A59.999999999%2B00%3A00"
    ))
    .await;
    assert_eq!(
        empty_page.ok(),
        json!({"variants": [], "next_token": encode_cursor(2)})
    );

    // Next URLs and links keep the filter.
    let (mut all, mut url) = (
        Vec::new(),
        format!("{base}/next_url/variants?count=5&updated_since={encoded}"),
    );
    for _ in 0..MAX_PAGES {
        let page = get(&url).await.ok();
        all.extend_from_slice(records(&page["data"]["items"]));
        match page["links"]["next"].as_str() {
            Some(next) => {
                assert!(
                    next.ends_with(&format!("&updated_since={encoded}")),
                    "{next}"
                );
                url = format!("{base}{next}");
            }
            None => break,
        }
    }
    assert_eq!(ids(&all), expected);
    let (mut all, mut url) = (
        Vec::new(),
        format!("{base}/link/variants?per_page=5&updated_since={iso}"),
    );
    for _ in 0..MAX_PAGES {
        let reply = get(&url).await;
        let header = reply.headers["link"].to_str().expect("ASCII").to_owned();
        all.extend_from_slice(records(&reply.ok()));
        let rels = links(&header);
        assert!(
            rels["first"].ends_with(&format!("&updated_since={encoded}")),
            "{header}"
        );
        match rels.get("next") {
            Some(next) => url = next.clone(),
            None => break,
        }
    }
    assert_eq!(ids(&all), expected);
    let single = get(&format!("{base}/single/variants?updated_since={plus}"))
        .await
        .ok();
    assert_eq!(ids(records(&single["variants"])), expected);
}

#[tokio::test]
async fn updated_since_is_refused_where_unsupported_or_malformed() {
    let server = start(MockConfig {
        data: data(),
        ..MockConfig::default()
    })
    .await;
    let base = server.base_url();
    let since = "2023-01-01T00:00:00Z";
    for path in ["/offset/variants?limit=5", "/page/variants?page=1"] {
        let message = get(&format!("{base}{path}&updated_since={since}"))
            .await
            .error(StatusCode::BAD_REQUEST);
        assert!(
            message.contains("updated_since is not supported on"),
            "{message}"
        );
    }
    for bad in [
        "yesterday",
        "2023-01-01",
        "2023-01-01T00:00:00",
        "2023-02-30T00:00:00Z",
        "2023-01-01T00%3A00%3A00%FFZ",
        "",
    ] {
        let message = get(&format!("{base}/variants?updated_since={bad}"))
            .await
            .error(StatusCode::BAD_REQUEST);
        assert!(message.contains("updated_since"), "{bad}: {message}");
    }
    assert_eq!(server.stats().pages_served, 0);
}

#[tokio::test]
async fn as_of_hides_later_records_and_two_days_add_up() {
    let times = update_times();
    let (day_one, day_two) = (times[2], times[5]);
    let serve_as_of = |as_of| {
        start(MockConfig {
            data: data(),
            as_of: Some(as_of),
            ..MockConfig::default()
        })
    };

    // Day one: a full read sees the records updated by then, on every endpoint.
    let server = serve_as_of(day_one).await;
    let base = server.base_url();
    let day_one_set = visible_offsets(&data(), None, Some(day_one));
    let first_read = ids(
        &get(&format!("{base}/single/variants")).await.ok()["variants"]
            .as_array()
            .expect("records")
            .clone(),
    );
    assert_eq!(first_read, day_one_set);
    let mut offset_read = Vec::new();
    for offset in (0..25).step_by(5) {
        let reply = get(&format!("{base}/offset/variants?offset={offset}&limit=5")).await;
        assert_eq!(
            reply.headers["x-total-count"], "23",
            "totals stay the data set's"
        );
        offset_read.extend(ids(records(&reply.ok()["results"])));
    }
    assert_eq!(offset_read, day_one_set);
    let page = get(&format!("{base}/page/variants?page=1&per_page=23"))
        .await
        .ok();
    assert_eq!(ids(records(&page["items"])), day_one_set);
    server.shutdown().await;

    // Day two: an incremental read since day one's instant gets what changed, and the
    // records updated exactly then again.
    let server = serve_as_of(day_two).await;
    let (second_read, _) = token_pages_since(&server.base_url(), &iso_millis(day_one), 5).await;
    let second_read = ids(&second_read);
    assert_eq!(
        second_read,
        visible_offsets(&data(), Some(day_one), Some(day_two))
    );
    let boundary = visible_offsets(&data(), Some(day_one), Some(day_one));
    assert!(!boundary.is_empty());
    assert!(
        boundary
            .iter()
            .all(|o| first_read.contains(o) && second_read.contains(o))
    );
    let mut union: Vec<u64> = first_read.iter().chain(&second_read).copied().collect();
    union.sort_unstable();
    union.dedup();
    assert_eq!(union, visible_offsets(&data(), None, Some(day_two)));
}

// ------------------------------------------------------------------------ binary auth --

#[tokio::test]
async fn binary_demands_the_auth_its_flags_ask_for_and_never_prints_secrets() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_landline-mockapi"))
        .args([
            "--port",
            "0",
            "--total",
            "12",
            "--pool",
            "5",
            "--target-bytes",
            "2000",
        ])
        .args([
            "--basic",
            "ann:bin-secret-1234",
            "--as-of",
            "2023-06-01T00:00:00+02:00",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a first line");
    let base = line
        .trim_end()
        .strip_prefix("listening on ")
        .expect("listening on URL")
        .to_owned();
    let url = format!("{base}/single/variants");
    let refused_reply = get(&url).await;
    let client = reqwest::Client::new();
    let ok = send(client.get(&url).basic_auth("ann", Some("bin-secret-1234"))).await;
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("text");

    refused(&refused_reply);
    let config = DataConfig {
        total: 12,
        pool: 5,
        seed: 42,
        target_bytes: 2000,
        extra_fields: 0,
    };
    let as_of = landline_mockapi::parse_rfc3339_ms("2023-05-31T22:00:00Z").expect("a timestamp");
    assert_eq!(
        ids(records(&ok.ok()["variants"])),
        visible_offsets(&config, None, Some(as_of))
    );
    assert!(stderr.contains("auth HTTP Basic (user ann)"), "{stderr}");
    assert!(!stderr.contains("bin-secret"), "{stderr}");

    // Bad auth flags are refused, without echoing the secret.
    for args in [
        &["--bearer", "a-secret-1", "--basic", "ann:a-secret-2"][..],
        &["--basic", "a-secret-3"],
        &["--api-key-header", "a-secret-4"],
        &["--oauth2-scopes", "read"],
        &["--sigv4-region", "us-east-1"],
        &["--as-of", "yesterday"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_landline-mockapi"))
            .args(["--port", "0", "--total", "1", "--pool", "1"])
            .args(args)
            .output()
            .expect("the binary runs");
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("a-secret"), "{args:?}: {stderr}");
        assert!(!stderr.is_empty(), "{args:?}");
    }
}
