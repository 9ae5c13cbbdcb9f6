//! A paged mock "variants" API for landline's demo, integration tests and benchmarks.
//!
//! It serves one deterministic data set of retail product variants (about 28.6 KB of JSON each,
//! compressing about 20:1 with gzip) through six pagination styles, on `127.0.0.1`, fast enough
//! that a client reading at more than 1 GB/s is not waiting for it. It imitates
//! `bench/mock_api.py` and `bench/variants_gen.py` in shape, sizes and tokens, not byte for byte.
//!
//! - [`generator`]: the records ([`DataConfig`]), the in-memory [`Pool`] pages are cut from, and
//!   [`expected_record`] / [`record_times`] for verifying what a client received
//!   ([`visible_offsets`] for what an incremental client should receive).
//! - [`server`]: the HTTP endpoints, [`Auth`] (bearer, Basic, API keys, OAuth2 with its token
//!   endpoint, AWS SigV4), `updated_since` and [`MockConfig::as_of`] for incremental runs,
//!   injected [`Faults`] (see [`Action`]), and a
//!   real network and API imitated: latency, bandwidth ([`MockConfig::bandwidth`]),
//!   compression negotiated with `Accept-Encoding` ([`Encoding`]), a fixed-window
//!   [`RateLimit`] with its headers, and a log of the requests ([`RequestRecord`]);
//!   [`spawn`] for tests and the demo, [`serve`] for any listener and shutdown signal.
//! - `src/main.rs`: the `landline-mockapi` binary, for benchmarks against a separate process.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use landline_mockapi::{DataConfig, MockConfig, expected_record, spawn};
//!
//! let data = DataConfig { total: 1_000, ..DataConfig::default() };
//! let server = spawn(MockConfig { data: data.clone(), ..MockConfig::default() }).await?;
//! let first_page = format!("{}/variants?count=200", server.base_url());
//! // ... page through `first_page` and its `next_token`s with any HTTP client; record `i`
//! // equals `expected_record(i, &data)`.
//! # let _ = (first_page, expected_record(0, &data));
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod generator;
pub mod server;

pub use generator::{
    DataConfig, ID_BASE, Pool, RecordTimes, expected_record, iso_millis, parse_rfc3339_ms,
    record_times, record_updated_at_ms, visible_offsets,
};
pub use server::{
    Action, Auth, Encoding, Fault, Faults, Grant, IssuedToken, MockApi, MockConfig, MockServer,
    OAuth2Server, REQUEST_LOG_CAPACITY, RateLimit, RateLimitHeaders, RequestRecord, RetryAfter,
    Stats, TOKEN_PATH, Times, When, encode_cursor, serve, spawn,
};
