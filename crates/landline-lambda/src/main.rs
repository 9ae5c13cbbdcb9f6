//! The Lambda function's entry point (custom runtime `provided.al2023`): JSON logs on
//! stdout for CloudWatch, then the runtime's event loop, one [`landline_lambda::handle`] per
//! invocation.

use std::time::{Duration, SystemTime};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use landline_lambda::{Event, handle};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    landline::report::use_one_malloc_arena();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LANDLINE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .with_current_span(false)
        .init();
    lambda_runtime::run(service_fn(invoke)).await
}

async fn invoke(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let time_left = event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let parsed: Event = serde_json::from_value(event.payload)
        .map_err(|e| Error::from(format!("invalid event: {e}")))?;
    let report = handle(parsed, time_left, std::env::vars().collect())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "run failed");
            Error::from(landline_error_chain(&e))
        })?;
    Ok(serde_json::to_value(&report)?)
}

/// The error and its causes, on one line.
fn landline_error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
