//! `landline-mockapi`: serves the mock variants API as its own process, for benchmarks.
//!
//! Prints `listening on http://HOST:PORT` on stdout once the pool is built and the socket
//! listens (scripts wait for that line; `--port 0` picks a free port), a summary of the pool on
//! stderr, and stops on SIGINT or SIGTERM after open requests finish.
//!
//! A real network can be imitated as with `bench/mock_api.py`: `--latency-ms` waits before each
//! page, `--bandwidth-mbps` caps each response's send rate, and `--gzip` (or `--encodings
//! gzip,br,zstd,deflate`, in order of preference) compresses pages for clients that accept it.
//!
//! Auth (one kind at most): `--bearer TOKEN`, `--basic USER:PASSWORD`, `--api-key-header
//! NAME=KEY`, `--api-key-query PARAM=KEY`, `--oauth2-client ID:SECRET` (token endpoint `POST
//! /oauth/token`; with `--oauth2-token-ttl-secs`, `--oauth2-scopes`, `--oauth2-refresh-token`,
//! `--oauth2-rotate`), or `--sigv4 AKID:SECRET` (with `--sigv4-region`, `--sigv4-service`,
//! `--sigv4-session-token`). Secrets are never printed, not even in an error about their form.
//! `--as-of RFC3339` serves the data set as of that instant (records updated later are
//! hidden).

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Parser};
use landline_mockapi::{
    Auth, DataConfig, Encoding, Faults, MockApi, MockConfig, OAuth2Server, parse_rfc3339_ms,
};
use tokio::net::TcpListener;

/// Paged mock "variants" API (see the landline-mockapi crate docs for the endpoints).
#[derive(Parser)]
#[command(version)]
#[command(group(ArgGroup::new("auth").multiple(false).args([
    "bearer", "basic", "api_key_header", "api_key_query", "oauth2_client", "sigv4",
])))]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 18080)]
    port: u16,
    /// Records in the data set.
    #[arg(long, default_value_t = 83_688)]
    total: u64,
    /// Distinct records kept in memory.
    #[arg(long, default_value_t = 4_000)]
    pool: usize,
    /// Seed of the record generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Average size of one record as compact JSON, in bytes.
    #[arg(long, default_value_t = 28_600)]
    target_bytes: usize,
    /// Top-level fields added to every record (`extra_1`, …): a schema change.
    #[arg(long, default_value_t = 0)]
    extra_fields: usize,
    /// Delay added to every data request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Cap on each response's send rate, in megabits per second; 0: none.
    #[arg(long, default_value_t = 0.0)]
    bandwidth_mbps: f64,
    /// Compress pages with gzip for clients that accept it (`--encodings gzip`).
    #[arg(long, conflicts_with = "encodings")]
    gzip: bool,
    /// Compress pages with the first of these encodings a client accepts (comma-separated:
    /// gzip, deflate, br, zstd).
    #[arg(long, value_delimiter = ',')]
    encodings: Vec<Encoding>,
    /// After this many data pages, answer every data request with HTTP 500.
    #[arg(long)]
    error_after_pages: Option<u64>,
    /// Serve the data set as of this RFC 3339 instant: records updated later are hidden.
    #[arg(long, value_name = "RFC3339")]
    as_of: Option<String>,
    /// Require `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "TOKEN")]
    bearer: Option<String>,
    /// Require HTTP Basic auth with these credentials.
    #[arg(long, value_name = "USER:PASSWORD")]
    basic: Option<String>,
    /// Require an API key in this header.
    #[arg(long, value_name = "NAME=KEY")]
    api_key_header: Option<String>,
    /// Require an API key in this query parameter.
    #[arg(long, value_name = "PARAM=KEY")]
    api_key_query: Option<String>,
    /// Require OAuth2 access tokens, issued to this client by `POST /oauth/token`.
    #[arg(long, value_name = "ID:SECRET")]
    oauth2_client: Option<String>,
    /// Lifetime of the OAuth2 access tokens, in seconds.
    #[arg(long, default_value_t = 3600, requires = "oauth2_client")]
    oauth2_token_ttl_secs: u64,
    /// Scopes an OAuth2 client may ask for (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "oauth2_client")]
    oauth2_scopes: Vec<String>,
    /// A refresh token accepted from the start.
    #[arg(long, value_name = "TOKEN", requires = "oauth2_client")]
    oauth2_refresh_token: Option<String>,
    /// Rotate refresh tokens: each refresh returns a new one and invalidates the old.
    #[arg(long, requires = "oauth2_client")]
    oauth2_rotate: bool,
    /// Require AWS Signature Version 4 with this access key.
    #[arg(long, value_name = "AKID:SECRET")]
    sigv4: Option<String>,
    /// Region of the SigV4 credential scope.
    #[arg(long, default_value = "us-east-1", requires = "sigv4")]
    sigv4_region: String,
    /// Service of the SigV4 credential scope.
    #[arg(long, default_value = "execute-api", requires = "sigv4")]
    sigv4_service: String,
    /// Require this `X-Amz-Security-Token` with SigV4.
    #[arg(long, value_name = "TOKEN", requires = "sigv4")]
    sigv4_session_token: Option<String>,
}

/// `text` split at the first `separator`, both sides non-empty; the error names the flag and
/// the form, never the value (it holds a secret).
fn split_secret(
    text: &str,
    separator: char,
    flag: &str,
    form: &str,
) -> io::Result<(String, String)> {
    match text.split_once(separator) {
        Some((name, secret)) if !name.is_empty() && !secret.is_empty() => {
            Ok((name.to_owned(), secret.to_owned()))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--{flag} takes {form}"),
        )),
    }
}

/// The auth the flags ask for, and a description of it without secrets.
fn auth(args: &Args) -> io::Result<(Auth, String)> {
    if let Some(token) = &args.bearer {
        return Ok((Auth::Bearer(token.clone()), "bearer token".into()));
    }
    if let Some(pair) = &args.basic {
        let (user, password) = split_secret(pair, ':', "basic", "USER:PASSWORD")?;
        let described = format!("HTTP Basic (user {user})");
        return Ok((Auth::Basic { user, password }, described));
    }
    if let Some(pair) = &args.api_key_header {
        let (name, key) = split_secret(pair, '=', "api-key-header", "NAME=KEY")?;
        let described = format!("API key in header {name}");
        return Ok((Auth::ApiKeyHeader { name, key }, described));
    }
    if let Some(pair) = &args.api_key_query {
        let (param, key) = split_secret(pair, '=', "api-key-query", "PARAM=KEY")?;
        let described = format!("API key in query parameter {param}");
        return Ok((Auth::ApiKeyQuery { param, key }, described));
    }
    if let Some(pair) = &args.oauth2_client {
        let (client_id, client_secret) = split_secret(pair, ':', "oauth2-client", "ID:SECRET")?;
        let described = format!(
            "OAuth2 (client {client_id}, tokens for {} s, token endpoint POST {})",
            args.oauth2_token_ttl_secs,
            landline_mockapi::TOKEN_PATH
        );
        let server = OAuth2Server {
            scopes: args.oauth2_scopes.clone(),
            token_ttl: Duration::from_secs(args.oauth2_token_ttl_secs),
            initial_refresh_token: args.oauth2_refresh_token.clone(),
            rotate_refresh_tokens: args.oauth2_rotate,
            ..OAuth2Server::new(client_id, client_secret)
        };
        return Ok((Auth::OAuth2(server), described));
    }
    if let Some(pair) = &args.sigv4 {
        let (access_key_id, secret_access_key) = split_secret(pair, ':', "sigv4", "AKID:SECRET")?;
        let described = format!(
            "AWS SigV4 (key {access_key_id}, {}/{})",
            args.sigv4_region, args.sigv4_service
        );
        let auth = Auth::SigV4 {
            access_key_id,
            secret_access_key,
            session_token: args.sigv4_session_token.clone(),
            region: args.sigv4_region.clone(),
            service: args.sigv4_service.clone(),
        };
        return Ok((auth, described));
    }
    Ok((Auth::None, "none".into()))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("landline-mockapi: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> io::Result<()> {
    if !(args.bandwidth_mbps.is_finite() && args.bandwidth_mbps >= 0.0) {
        let message = format!("--bandwidth-mbps {} is not a rate", args.bandwidth_mbps);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    // Megabits to bytes per second; a rate below one byte per second is one.
    let bandwidth =
        (args.bandwidth_mbps > 0.0).then(|| (args.bandwidth_mbps * 1e6 / 8.0).max(1.0) as u64);
    let (auth, auth_described) = auth(&args)?;
    let as_of = args
        .as_of
        .as_deref()
        .map(parse_rfc3339_ms)
        .transpose()
        .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, format!("--as-of: {why}")))?;
    let encodings = if args.gzip {
        vec![Encoding::Gzip]
    } else {
        args.encodings.clone()
    };
    let config = MockConfig {
        data: DataConfig {
            total: args.total,
            pool: args.pool,
            seed: args.seed,
            target_bytes: args.target_bytes,
            extra_fields: args.extra_fields,
        },
        latency: Duration::from_millis(args.latency_ms),
        bandwidth,
        encodings: encodings.clone(),
        auth,
        as_of,
        faults: Faults {
            error_after_pages: args.error_after_pages,
            ..Faults::default()
        },
        rate_limit: None,
    };
    let started = Instant::now();
    // Nothing else runs yet, so building the pool may block this runtime thread.
    let api = MockApi::new(config);
    let built_in = started.elapsed();

    let listener = TcpListener::bind((args.host.as_str(), args.port)).await?;
    let addr = listener.local_addr()?;
    // Install the handlers before announcing the address, so a signal sent as soon as the line
    // is read stops the server gracefully instead of killing it.
    let shutdown = signals()?;

    let pool = api.pool();
    eprintln!(
        "landline-mockapi: pool of {} records ({:.1} MB compact JSON) built in {:.2}s; serving {} records",
        pool.len(),
        pool.byte_len() as f64 / 1e6,
        built_in.as_secs_f64(),
        args.total,
    );
    let encodings: Vec<&str> = encodings.iter().map(|e| e.token()).collect();
    eprintln!(
        "landline-mockapi: latency {} ms, bandwidth {}, compression {}",
        args.latency_ms,
        bandwidth.map_or("unlimited".into(), |rate| format!(
            "{:.1} Mbit/s",
            rate as f64 * 8.0 / 1e6
        )),
        if encodings.is_empty() {
            "off".into()
        } else {
            encodings.join(",")
        },
    );
    eprintln!(
        "landline-mockapi: auth {auth_described}{}",
        args.as_of
            .as_deref()
            .map_or(String::new(), |as_of| format!(", data as of {as_of}")),
    );
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);

    api.serve(listener, shutdown).await
}

/// A future that completes on the first SIGINT or SIGTERM.
#[cfg(unix)]
fn signals() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// A future that completes on the first Ctrl-C.
#[cfg(not(unix))]
fn signals() -> io::Result<impl Future<Output = ()>> {
    Ok(async {
        // If the handler cannot be installed, Ctrl-C keeps its default effect and ends us anyway.
        let _ = tokio::signal::ctrl_c().await;
    })
}
