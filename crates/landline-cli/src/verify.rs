//! `landline verify URL`: reads an object back and checks it against its manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use landline::Pipeline;
use landline::compress::Compression;
use landline::verify::{Verified, VerifyError, VerifyOptions};

/// Where the manifest to compare with comes from.
pub(crate) struct Expected {
    /// `--manifest URL`.
    pub(crate) manifest: Option<String>,
    /// `--pipeline FILE`: the manifest in the pipeline's state location.
    pub(crate) pipeline: Option<PathBuf>,
    /// `--ingest-date`: the run's date, else the URL's `date=YYYY-MM-DD`, else today.
    pub(crate) ingest_date: Option<chrono::NaiveDate>,
    /// `--var`.
    pub(crate) vars: BTreeMap<String, String>,
}

/// Verifies the object at `url`; prints a summary (JSON with `json`) and fails on any
/// difference, naming each.
pub(crate) async fn verify(url: &str, expected: Expected, json: bool) -> anyhow::Result<()> {
    let mut options = VerifyOptions::default();
    let manifest_url = match (&expected.manifest, &expected.pipeline) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(file)) => {
            let pipeline = Pipeline::load(file)?;
            options.store = pipeline.sink.store.clone();
            options.max_line_bytes = pipeline.transform.max_record_bytes();
            let date = expected.ingest_date.or_else(|| date_in(url));
            Some(landline::pipeline::manifest_location(
                &pipeline,
                date,
                &expected.vars,
            )?)
        }
        (None, None) => None,
    };
    let manifest = match &manifest_url {
        Some(at) => Some(
            landline::manifest::read(at, &options.store, std::env::vars())
                .await?
                .with_context(|| format!("no manifest at {at}"))?,
        ),
        None => None,
    };
    let result = landline::verify::verify(url, &options, std::env::vars(), manifest.as_ref()).await;
    let (verified, problems) = match &result {
        Ok(verified) => (verified, &[][..]),
        Err(VerifyError::Mismatch {
            verified, problems, ..
        }) => (&**verified, &problems[..]),
        Err(_) => return Ok(result.map(drop)?),
    };
    if json {
        let out = serde_json::json!({
            "ok": problems.is_empty(),
            "object": verified,
            "manifest": manifest_url,
            "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_summary(verified, manifest_url.as_deref(), problems.is_empty());
    }
    Ok(result.map(drop)?)
}

fn print_summary(verified: &Verified, manifest: Option<&str>, ok: bool) {
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let container = match verified.compression {
        Compression::Gzip => format!(
            "{} gzip member{}",
            verified.gzip_members,
            plural(verified.gzip_members)
        ),
        Compression::Zstd => format!(
            "{} zstd frame{}",
            verified.zstd_frames,
            plural(verified.zstd_frames)
        ),
        Compression::None => "uncompressed".to_owned(),
    };
    println!(
        "{} {}: {} bytes (sha256 {}), {container}, {} records, {} bytes of JSON Lines",
        if ok { "ok" } else { "FAILED" },
        verified.location,
        verified.size,
        verified.sha256,
        verified.records,
        verified.bytes_uncompressed
    );
    match manifest {
        Some(at) if ok => println!("matches its manifest {at}"),
        Some(at) => println!("compared with its manifest {at}"),
        None => println!(
            "no manifest compared (container and lines only; give --manifest URL or --pipeline FILE)"
        ),
    }
}

/// The date of a `date=YYYY-MM-DD` segment of `url`.
fn date_in(url: &str) -> Option<chrono::NaiveDate> {
    url.split('/').find_map(|segment| {
        let date = segment.strip_prefix("date=")?;
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_comes_from_a_date_segment() {
        let date = |s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        assert_eq!(
            date_in("s3://b/v/date=2024-03-01/v.jsonl.gz"),
            date("2024-03-01")
        );
        assert_eq!(date_in("out/region=eu/date=2024-3-1x/v.gz"), None);
        assert_eq!(date_in("s3://b/v.jsonl.gz"), None);
    }
}
