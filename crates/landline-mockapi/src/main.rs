//! `landline-mockapi`: serves the mock variants API as its own process, for benchmarks.
//!
//! Prints `listening on http://HOST:PORT` on stdout once the pool is built and the socket
//! listens (scripts wait for that line; `--port 0` picks a free port), a summary of the pool on
//! stderr, and stops on SIGINT or SIGTERM after open requests finish.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use landline_mockapi::{DataConfig, Faults, MockApi, MockConfig};
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
    /// Delay added to every data request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
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
    let config = MockConfig {
        data: DataConfig {
            total: args.total,
            pool: args.pool,
            seed: args.seed,
            target_bytes: args.target_bytes,
        },
        latency: Duration::from_millis(args.latency_ms),
        require_bearer: None,
        faults: Faults {
            error_after_pages: args.error_after_pages,
            ..Faults::default()
        },
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
