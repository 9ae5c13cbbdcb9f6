//! The mock API over real TCP on 127.0.0.1: every pagination style pages through the whole data
//! set in order, errors and injected faults answer as documented, compression is negotiated and
//! decodes to the uncompressed page, bandwidth and latency hold responses back, the rate limit
//! answers 429 with its headers and the request log records it all, and the binary announces
//! its address and stops on SIGTERM.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use landline_mockapi::{
    Action, DataConfig, Encoding, Fault, Faults, MockConfig, MockServer, RateLimit,
    RateLimitHeaders, RetryAfter, Stats, Times, When, encode_cursor, expected_record, spawn,
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
        require_bearer: Some("s3cret".into()),
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
        require_bearer: Some("s3cret".into()),
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
