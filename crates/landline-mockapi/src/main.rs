//! `landline-mockapi`: serves the mock variants API as its own process, for benchmarks.
//!
//! Prints `listening on http://HOST:PORT` on stdout once the pool is built and the socket
//! listens (scripts wait for that line; `--port 0` picks a free port), a summary of the pool on
//! stderr, and stops on SIGINT or SIGTERM after open requests finish.
//!
//! A real network can be imitated as with `bench/mock_api.py`: `--latency-ms` waits before each
//! page, `--bandwidth-mbps` caps each response's send rate, and `--gzip` (or `--encodings
//! gzip,br,zstd,deflate`, in order of preference) compresses pages for clients that accept it.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use landline_mockapi::{DataConfig, Encoding, Faults, MockApi, MockConfig};
use tokio::net::TcpListener;

/// Paged mock "variants" API (see the landline-mockapi crate docs for the endpoints).
#[derive(Parser)]
#[command(version)]
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
        require_bearer: None,
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
