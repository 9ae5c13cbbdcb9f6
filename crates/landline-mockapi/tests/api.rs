//! The mock API over real TCP on 127.0.0.1: every pagination style pages through the whole data
//! set in order, errors and injected faults answer as documented, and the binary announces its
//! address and stops on SIGTERM.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use landline_mockapi::{
    Action, DataConfig, Fault, Faults, MockConfig, MockServer, RetryAfter, Stats, Times, When,
    encode_cursor, expected_record, spawn,
};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, RETRY_AFTER, TRANSFER_ENCODING};
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
    let far = get(&format!("{base}/offset/variants?offset=1000000&limit=5"))
        .await
        .ok();
    assert_eq!(far, json!({"results": [], "total": 23}));
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
        let page = get(&format!("{base}/page/variants?page={number}&per_page=5"))
            .await
            .ok();
        assert_eq!(page["page"], number);
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
            pages_served: 0,
            bytes_served: 0,
            requests: 2,
            faults_injected: 0,
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
    let started = Instant::now();
    let mut response = reqwest::get(url).await.expect("the headers arrive");
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
}
