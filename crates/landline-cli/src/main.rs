//! The `landline` command: run a pipeline file, or the self-contained demo.
//!
//! This is the binary's edge: argument parsing, logging, the progress bar, signals, exit codes
//! and error reporting live here; everything else is the `landline` library.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use landline::config::PipelineFile;
use landline::report::Progress;
use landline::sink::StoreOptions;
use landline::sink::cleanup::{CleanupError, IncompleteUploads};
use landline::{Pipeline, RunError, RunOptions, RunReport};

mod plot;

mod verify;

/// Land paged HTTP APIs in object storage as compressed JSON Lines, in constant memory.
#[derive(Debug, Parser)]
#[command(name = "landline", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format; `auto` is human-readable text with a progress bar on a terminal and JSON
    /// lines elsewhere. The level comes from LANDLINE_LOG (e.g. `debug`), default `info`.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    log_format: LogFormat,
    /// No progress bar and only warnings and errors in the log.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline file: every page of the source, into one compressed object.
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// The `{ingest_date}` of the run (YYYY-MM-DD); default: today in UTC.
        #[arg(long, value_parser = parse_date)]
        ingest_date: Option<chrono::NaiveDate>,
        /// A value for one of the pipeline's template variables (`[vars]`), over its default;
        /// repeat for several.
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Also write the run report as JSON to this file.
        #[arg(long)]
        report_json: Option<PathBuf>,
        /// Stop at a checkpoint before this much time has passed (e.g. 10m), leaving the
        /// upload open: the report says `continue`, and `landline resume` goes on.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_duration: Option<Duration>,
        /// `auto`: continue this pipeline's checkpointed run of the same ingest date (and
        /// variables) if there is one, else start afresh. `never` (the default): a checkpoint found is a run that
        /// died; its upload is aborted and the run starts afresh.
        #[arg(long, value_enum, default_value_t = ResumeMode::Never)]
        resume: ResumeMode,
        /// Exit with status 3 when the run's data drifted from the previous run's past the
        /// pipeline's `[drift]` thresholds (the object has landed all the same; the report
        /// lists the changes).
        #[arg(long)]
        fail_on_drift: bool,
        /// Draw resident memory over the run against the bytes landed into this SVG file,
        /// with the peak and the memory budget marked.
        #[arg(long, value_name = "PATH.svg", value_parser = parse_svg_path)]
        memory_plot: Option<PathBuf>,
    },
    /// Continue a run from its checkpoint (the URL a `continue` report names); when the
    /// source is exhausted, the object is completed.
    Resume {
        /// The checkpoint's URL (s3://…/_landline/checkpoints/NAME/DATE.json, or a path).
        checkpoint: String,
        /// The pipeline file, if not where the checkpoint says it was read from.
        #[arg(long)]
        pipeline: Option<PathBuf>,
        /// Stop at a checkpoint again before this much time has passed.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_duration: Option<Duration>,
        /// Also write the run report as JSON to this file.
        #[arg(long)]
        report_json: Option<PathBuf>,
        /// Exit with status 3 when the run's data drifted from the previous run's past the
        /// pipeline's `[drift]` thresholds (the object has landed all the same; the report
        /// lists the changes).
        #[arg(long)]
        fail_on_drift: bool,
        /// Draw resident memory over the run against the bytes landed into this SVG file,
        /// with the peak and the memory budget marked.
        #[arg(long, value_name = "PATH.svg", value_parser = parse_svg_path)]
        memory_plot: Option<PathBuf>,
    },
    /// Print one Lambda event per shard of a run, as JSON Lines, for the Step Functions map
    /// in deploy/ (see its README).
    Plan {
        /// The pipeline: an s3:// URL (the function reads it there) or a local file (put
        /// inline into each event, unless --pipeline-url says where the function reads it).
        pipeline: String,
        /// The shards: date:FIRST..LAST (YYYY-MM-DD, both days included), one per ingest date;
        /// or values:NAME=a,b,c, one per value of a `[vars]` variable (NAME may be left out
        /// when the pipeline has only one). Repeat to make every combination.
        #[arg(long, required = true)]
        split_by: Vec<String>,
        /// A value for a `[vars]` variable in every event; repeat for several.
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Where the function reads the pipeline file (when PIPELINE is a local copy of it).
        #[arg(long)]
        pipeline_url: Option<String>,
    },
    /// Check a pipeline and its environment without writing data: the variables, the store
    /// (a multipart upload created and aborted), the first page and its records; then print
    /// what `run` would do (object, key, state location, memory budget).
    Check {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// The `{ingest_date}` to check with (YYYY-MM-DD); default: today in UTC.
        #[arg(long, value_parser = parse_date)]
        ingest_date: Option<chrono::NaiveDate>,
        /// A value for one of the pipeline's template variables (`[vars]`); repeat for several.
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the whole path on an embedded mock API into ./landline-demo/ (no cloud account).
    Demo {
        /// Records the mock API serves (about 28.6 KB each).
        #[arg(long, default_value_t = 4_000)]
        records: u64,
        /// Also write the run report as JSON to this file.
        #[arg(long)]
        report_json: Option<PathBuf>,
        /// Draw resident memory over the run against the bytes landed into this SVG file,
        /// with the peak and the memory budget marked.
        #[arg(long, value_name = "PATH.svg", value_parser = parse_svg_path)]
        memory_plot: Option<PathBuf>,
    },
    /// Inspect or change an incremental pipeline's cursor (`[source.incremental]`).
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Abort the incomplete multipart uploads under an S3 prefix that a killed run left behind.
    ///
    /// A run that fails or is interrupted aborts its own upload; one killed outright (SIGKILL,
    /// a Lambda timeout) cannot, and S3 keeps its parts until the upload is aborted. The store
    /// is configured like a run's, from the AWS_* variables.
    Cleanup {
        /// s3://BUCKET/PREFIX (the prefix may be empty, or a whole key).
        location: String,
        /// Only uploads started longer ago than this (e.g. 90m, 24h, 7d); keep it above your
        /// longest run, so that runs in progress are left alone.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        older_than: Duration,
        /// Only list what would be aborted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Read an object back and check it: its container (gzip members, trailer CRC and length;
    /// zstd frames and checksums), every line a JSON object, and its manifest's format, size,
    /// SHA-256 and record count.
    /// Exits 1 on any difference, naming each.
    Verify {
        /// The object: s3://, gs://, az://, file:// or a path.
        url: String,
        /// The manifest to compare with (a URL or a path).
        #[arg(long, conflicts_with = "pipeline")]
        manifest: Option<String>,
        /// The pipeline file that wrote the object: its manifest is read from its state
        /// location (with --ingest-date and --var).
        #[arg(long)]
        pipeline: Option<PathBuf>,
        /// The run's `{ingest_date}` (with --pipeline); default: the URL's `date=YYYY-MM-DD`,
        /// else today in UTC.
        #[arg(long, value_parser = parse_date, requires = "pipeline")]
        ingest_date: Option<chrono::NaiveDate>,
        /// A value of one of the pipeline's `[vars]` (with --pipeline); repeat for several.
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var, requires = "pipeline")]
        vars: Vec<(String, String)>,
        /// Print what was found as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StateAction {
    /// Print the stored cursor (the next run asks from it) and the lock, if a run holds one.
    Show {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// A value of one of the pipeline's `[vars]`; repeat for several.
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the cursor: the next run asks for the records from VALUE on.
    Set {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// The cursor: a timestamp, a number or text, of the kind `start` has.
        value: String,
        /// A value of one of the pipeline's `[vars]`; repeat for several.
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
    },
    /// Forget the cursor: the next run asks from `start` again.
    Reset {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// A value of one of the pipeline's `[vars]`; repeat for several.
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ResumeMode {
    Auto,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| "expected NAME=VALUE".to_owned())
}

/// A path ending in `.svg` whose directory exists (checked before the run, not after it).
fn parse_svg_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("svg"))
    {
        return Err("expected a file name ending in .svg".to_owned());
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(format!("no directory {}", dir.display()))
        }
        _ => Ok(path),
    }
}

fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("expected YYYY-MM-DD: {e}"))
}

/// Exit status for a failed run (configuration errors and usage errors exit 2).
const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
/// `--fail-on-drift` and the data drifted (the object landed).
const EXIT_DRIFT: u8 = 3;
/// 128 + SIGINT, as shells report an interrupted command.
const EXIT_CANCELLED: u8 = 130;

fn main() -> ExitCode {
    landline::report::use_one_malloc_arena();
    let cli = Cli::parse();
    let interactive = std::io::stderr().is_terminal() && cli.log_format != LogFormat::Json;
    init_logging(cli.log_format, cli.quiet, interactive);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let show_progress = interactive && !cli.quiet;
    match runtime.block_on(dispatch(cli.command, show_progress)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", chain(&err));
            let code = match err.downcast_ref::<RunError>() {
                Some(RunError::Cancelled) => EXIT_CANCELLED,
                Some(RunError::Config(_)) => EXIT_CONFIG,
                Some(_) => EXIT_FAILED,
                None if err.downcast_ref::<Drifted>().is_some() => EXIT_DRIFT,
                None if err.downcast_ref::<landline::ConfigError>().is_some() => EXIT_CONFIG,
                None if err.downcast_ref::<landline::plan::PlanError>().is_some() => EXIT_CONFIG,
                None if matches!(
                    err.downcast_ref::<CleanupError>(),
                    Some(CleanupError::Open(_))
                ) =>
                {
                    EXIT_CONFIG
                }
                None => EXIT_FAILED,
            };
            ExitCode::from(code)
        }
    }
}

async fn dispatch(command: Command, show_progress: bool) -> anyhow::Result<()> {
    match command {
        Command::Run {
            pipeline,
            ingest_date,
            vars,
            report_json,
            max_duration,
            resume,
            fail_on_drift,
            memory_plot,
        } => {
            let plot = memory_plot.as_deref();
            let loaded = Pipeline::load(&pipeline)?;
            let vars: BTreeMap<String, String> = vars.into_iter().collect();
            let found = found_checkpoint(&loaded, ingest_date, &vars, resume).await?;
            let resuming = found.is_some();
            let options = |resume| RunOptions {
                ingest_date,
                vars: vars.clone(),
                max_duration,
                resume,
                pipeline_file: Some(absolute(&pipeline)),
                ..RunOptions::default()
            };
            let ran = match run(&loaded, options(found), show_progress, plot.is_some()).await {
                // The checkpoint's upload is gone (aborted, expired): its checkpoint was
                // deleted, and the run starts afresh.
                Err(RunError::Sink(e @ landline::sink::SinkError::UploadGone { .. }))
                    if resuming =>
                {
                    tracing::warn!(error = %e, "the checkpointed upload is gone: starting afresh");
                    run(&loaded, options(None), show_progress, plot.is_some()).await?
                }
                other => other?,
            };
            finish(&ran, report_json.as_deref(), plot)?;
            drift_verdict(&ran.report, fail_on_drift)
        }
        Command::Resume {
            checkpoint,
            pipeline,
            max_duration,
            report_json,
            fail_on_drift,
            memory_plot,
        } => {
            let env: Vec<(String, String)> = std::env::vars().collect();
            let cp = landline::pipeline::read_checkpoint(
                &checkpoint,
                &StoreOptions::default(),
                env,
            )
            .await?
            .with_context(|| {
                format!("no checkpoint at {checkpoint}: the run may have completed or been aborted")
            })?;
            let file = match (&pipeline, &cp.pipeline_file) {
                (Some(path), _) => path.clone(),
                (None, Some(file)) => PathBuf::from(file),
                (None, None) => anyhow::bail!(
                    "the checkpoint does not say where its pipeline file is: give --pipeline FILE"
                ),
            };
            let loaded = Pipeline::load(&file)?;
            let options = RunOptions {
                max_duration,
                resume: Some(cp),
                pipeline_file: Some(absolute(&file)),
                ..RunOptions::default()
            };
            let ran = run(&loaded, options, show_progress, memory_plot.is_some()).await?;
            finish(&ran, report_json.as_deref(), memory_plot.as_deref())?;
            drift_verdict(&ran.report, fail_on_drift)
        }
        Command::Plan {
            pipeline,
            split_by,
            vars,
            pipeline_url,
        } => {
            plan(
                &pipeline,
                &split_by,
                vars.into_iter().collect(),
                pipeline_url,
            )
            .await
        }
        Command::Check {
            pipeline,
            ingest_date,
            vars,
            json,
        } => {
            let loaded = Pipeline::load(&pipeline)?;
            let options = RunOptions {
                ingest_date,
                vars: vars.into_iter().collect(),
                store_env: std::env::vars().collect(),
                ..RunOptions::default()
            };
            let found = landline::check::check(&loaded, options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                println!("{found}");
            }
            Ok(())
        }
        Command::Demo {
            records,
            report_json,
            memory_plot,
        } => {
            demo(
                records,
                show_progress,
                report_json.as_deref(),
                memory_plot.as_deref(),
            )
            .await
        }
        Command::Cleanup {
            location,
            older_than,
            dry_run,
        } => cleanup(&location, older_than, dry_run).await,
        Command::State { action } => state(action).await,
        Command::Verify {
            url,
            manifest,
            pipeline,
            ingest_date,
            vars,
            json,
        } => {
            let expected = verify::Expected {
                manifest,
                pipeline,
                ingest_date,
                vars: vars.into_iter().collect(),
            };
            verify::verify(&url, expected, json).await
        }
    }
}

/// `landline plan`: checks the pipeline file, then prints the shards' events.
async fn plan(
    pipeline: &str,
    split_by: &[String],
    vars: BTreeMap<String, String>,
    pipeline_url: Option<String>,
) -> anyhow::Result<()> {
    use landline::plan::PipelineSource;
    let remote = pipeline.contains("://") && !pipeline.starts_with("file://");
    let text = if remote {
        let at = landline::sink::Destination::open(
            pipeline,
            &StoreOptions::default(),
            std::env::vars(),
        )?;
        let bytes = at
            .read_whole()
            .await
            .map_err(|e| anyhow::anyhow!("reading {pipeline}: {e}"))?;
        String::from_utf8(bytes).with_context(|| format!("{pipeline} is not UTF-8 text"))?
    } else {
        std::fs::read_to_string(pipeline).with_context(|| format!("reading {pipeline}"))?
    };
    // The file must parse here; its ${VAR}s are the function's to resolve.
    let file = PipelineFile::parse(&text, pipeline)?;
    let source = match (pipeline_url, remote) {
        (Some(url), _) => PipelineSource::Url(url),
        (None, true) => PipelineSource::Url(pipeline.to_owned()),
        (None, false) => PipelineSource::Toml(text),
    };
    let events = landline::plan::plan(&source, &file, split_by, &vars)?;
    let mut out = std::io::stdout().lock();
    for event in &events {
        serde_json::to_writer(&mut out, event)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    }
    Ok(())
}

/// `landline cleanup`: lists the incomplete uploads older than `older_than`, aborts them
/// unless `dry_run`, and fails if any abort failed.
/// `landline state show|set|reset`.
async fn state(action: StateAction) -> anyhow::Result<()> {
    use landline::incremental::{self, IncrementalState, STATE_FORMAT};
    let (file, vars) = match &action {
        StateAction::Show { pipeline, vars, .. }
        | StateAction::Set { pipeline, vars, .. }
        | StateAction::Reset { pipeline, vars } => (pipeline, vars),
    };
    let loaded = Pipeline::load(file)?;
    let Some(spec) = loaded.source.as_ref().and_then(|s| s.incremental.clone()) else {
        return Err(RunError::Config(landline::config::ConfigError::Invalid {
            key: "source.incremental".into(),
            message: "this pipeline is not incremental: it has no cursor".into(),
        })
        .into());
    };
    let vars: BTreeMap<String, String> = vars.iter().cloned().collect();
    let (at, lock_at) = landline::pipeline::incremental_locations(&loaded, &vars)?;
    let store = &loaded.sink.store;
    let env = || std::env::vars().collect::<Vec<_>>();
    let lock = incremental::read_lock(&lock_at, store, env()).await?;
    let held = lock.filter(|l| l.expires_at > chrono::Utc::now());
    match action {
        StateAction::Show { json, .. } => {
            let stored = incremental::read_state(&at, store, env()).await?;
            if json {
                let shown = serde_json::json!({
                    "state": at,
                    "stored": stored,
                    "start": spec.start,
                    "lock": held,
                });
                println!("{}", serde_json::to_string_pretty(&shown)?);
                return Ok(());
            }
            match &stored {
                Some(s) => {
                    println!("cursor   {} ({:?}, field {})", s.cursor, s.kind, s.field);
                    println!("set      {} by {}", s.updated_at.to_rfc3339(), s.set_by);
                    if let Some(run) = &s.run {
                        println!(
                            "run      {} ({} records, asked from {})",
                            run.ingest_date, run.records, run.since
                        );
                    }
                }
                None => println!(
                    "cursor   none: the next run asks from start = {}",
                    spec.start
                ),
            }
            println!("state    {at}");
            if let Some(lock) = held {
                println!(
                    "lock     held by {} since {} (expires {})",
                    lock.owner, lock.acquired_at, lock.expires_at
                );
            }
            Ok(())
        }
        StateAction::Set { .. } | StateAction::Reset { .. } if held.is_some() => {
            anyhow::bail!(
                "a run of this pipeline holds the lock {lock_at}: change the cursor when it has ended"
            )
        }
        StateAction::Set { value, .. } => {
            let cursor = spec
                .parse_cursor(&value)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let state = IncrementalState {
                format: STATE_FORMAT.to_owned(),
                pipeline: loaded.name.clone(),
                field: spec.field.clone(),
                kind: spec.kind,
                cursor,
                updated_at: chrono::Utc::now(),
                set_by: "landline state set".into(),
                run: None,
            };
            incremental::write_state(&at, &state, store, env()).await?;
            println!("cursor {} set at {at}", state.cursor);
            Ok(())
        }
        StateAction::Reset { .. } => {
            if incremental::delete_state(&at, store, env()).await? {
                println!(
                    "cursor deleted at {at}: the next run asks from start = {}",
                    spec.start
                );
            } else {
                println!(
                    "no cursor at {at}: the next run asks from start = {}",
                    spec.start
                );
            }
            Ok(())
        }
    }
}

async fn cleanup(location: &str, older_than: Duration, dry_run: bool) -> anyhow::Result<()> {
    let uploads = IncompleteUploads::open(location, &StoreOptions::default(), std::env::vars())?;
    let now = chrono::Utc::now();
    let found = uploads.older_than(older_than, now).await?;
    let age = humantime::format_duration(older_than);
    let bucket = location
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_default();
    let mut failed = 0usize;
    for upload in &found {
        let ago = (now - upload.initiated).to_std().unwrap_or_default();
        let ago = humantime::format_duration(Duration::from_secs(ago.as_secs()));
        let what = format!(
            "s3://{bucket}/{} (upload {}, started {}, {ago} ago)",
            upload.key,
            upload.upload_id,
            upload
                .initiated
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if dry_run {
            println!("would abort {what}");
            continue;
        }
        match uploads.abort(upload).await {
            Ok(()) => println!("aborted {what}"),
            Err(e) => {
                failed += 1;
                tracing::error!(error = %e, "abort failed");
                eprintln!("failed to abort {what}: {e}");
            }
        }
    }
    let verb = if dry_run { "to abort" } else { "aborted" };
    println!(
        "{} incomplete upload(s) under {location} older than {age}: {} {verb}",
        found.len(),
        found.len() - failed
    );
    if failed > 0 {
        anyhow::bail!("{failed} of {} aborts failed", found.len());
    }
    Ok(())
}

/// The checkpoint of `pipeline`'s run of `ingest_date` with `vars`, when one is to be
/// continued. With `never`, one found is a run that died: its upload is aborted and it is
/// deleted.
async fn found_checkpoint(
    pipeline: &Pipeline,
    ingest_date: Option<chrono::NaiveDate>,
    vars: &BTreeMap<String, String>,
    mode: ResumeMode,
) -> anyhow::Result<Option<landline::checkpoint::Checkpoint>> {
    if !pipeline.state.checkpoints {
        return Ok(None);
    }
    let url = landline::pipeline::checkpoint_location(pipeline, ingest_date, vars)?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let found = landline::pipeline::read_checkpoint(&url, &pipeline.sink.store, env.clone()).await;
    let cp = match (found, mode) {
        (Ok(None), _) => return Ok(None),
        (Ok(Some(cp)), ResumeMode::Auto) => {
            tracing::info!(checkpoint = %url, records = cp.counters.records, "continuing the run from its checkpoint");
            return Ok(Some(cp));
        }
        (Ok(Some(cp)), ResumeMode::Never) => cp,
        (Err(e), _) => return Err(e).context("reading the checkpoint of an earlier run"),
    };
    tracing::warn!(
        checkpoint = %url,
        upload = %cp.upload.upload_id,
        "found the checkpoint of an earlier run that did not finish: aborting its upload, deleting the objects it completed, and starting afresh (use --resume auto to continue it instead)"
    );
    let deleted = landline::pipeline::discard_checkpoint(pipeline, &url, &cp, env)
        .await
        .context("discarding the earlier run")?;
    if !deleted.is_empty() {
        tracing::warn!(
            objects = deleted.len(),
            "deleted the objects the unfinished run had completed (this run writes their records again)"
        );
    }
    Ok(None)
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

/// A run's report, and its memory samples when they were asked for.
struct Ran {
    report: RunReport,
    samples: Option<plot::Samples>,
}

async fn run(
    pipeline: &Pipeline,
    options: RunOptions,
    show_progress: bool,
    sample_memory: bool,
) -> Result<Ran, RunError> {
    let progress = Arc::new(Progress::default());
    let bar = show_progress.then(|| progress_bar(Arc::clone(&progress)));
    let sampler = sample_memory.then(|| plot::Sampler::start(Arc::clone(&progress)));
    let options = RunOptions {
        store_env: std::env::vars().collect(),
        progress: Some(progress),
        ..options
    };
    let result = landline::run(pipeline, options, shutdown_signal()).await;
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    let samples = match sampler {
        Some(sampler) => Some(sampler.stop().await),
        None => None,
    };
    result.map(|report| Ran { report, samples })
}

/// `--fail-on-drift` and the run drifted: the object landed, but the run counts as failed.
#[derive(Debug)]
struct Drifted {
    changes: usize,
    since: String,
}

impl std::fmt::Display for Drifted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the data drifted since the run of {} ({} change{} past the [drift] thresholds, listed in the report); the object has landed (--fail-on-drift)",
            self.since,
            self.changes,
            if self.changes == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Drifted {}

/// Fails with [`Drifted`] when `fail_on_drift` and the report has drift.
fn drift_verdict(report: &RunReport, fail_on_drift: bool) -> anyhow::Result<()> {
    match &report.drift {
        Some(drift) if fail_on_drift && drift.drifted() => Err(Drifted {
            changes: drift.changes.len(),
            since: drift.previous_ingest_date.clone(),
        }
        .into()),
        _ => Ok(()),
    }
}

fn finish(ran: &Ran, report_json: Option<&Path>, memory_plot: Option<&Path>) -> anyhow::Result<()> {
    let report = &ran.report;
    println!("{report}");
    if let Some(path) = report_json {
        let json = serde_json::to_vec_pretty(report).context("encoding the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let (Some(path), Some(samples)) = (memory_plot, &ran.samples) {
        plot::draw(path, samples.as_slice(), &plot::Marks::of(report))
            .context("the memory plot")?;
        println!("  memory plot {}", path.display());
    }
    Ok(())
}

/// The demo: the mock API in this process, a local directory as the destination.
async fn demo(
    records: u64,
    show_progress: bool,
    report_json: Option<&Path>,
    memory_plot: Option<&Path>,
) -> anyhow::Result<()> {
    let data = landline_mockapi::DataConfig {
        total: records,
        pool: 400,
        ..Default::default()
    };
    let server = landline_mockapi::spawn(landline_mockapi::MockConfig {
        data,
        ..Default::default()
    })
    .await
    .context("starting the mock API")?;
    let api = server.base_url();
    eprintln!("mock API serving {records} records at {api}/variants");
    let pipeline = PipelineFile::parse(include_str!("demo.toml"), "demo.toml")?
        .validate(&|name| (name == "DEMO_API").then(|| api.clone()))?;
    let ran = run(
        &pipeline,
        RunOptions::default(),
        show_progress,
        memory_plot.is_some(),
    )
    .await?;
    server.shutdown().await;
    finish(&ran, report_json, memory_plot)?;
    if let Some(object) = ran.report.objects.first() {
        let path = object.trim_start_matches("file://");
        println!("try: zcat {path} | head -c 400");
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::warn!("interrupted: aborting the upload"),
        () = term => tracing::warn!("terminated: aborting the upload"),
    }
}

/// The live display on a terminal (only there: elsewhere nothing is animated), redrawn 4
/// times a second from the run's counters and the process's resident memory.
fn progress_bar(progress: Arc<Progress>) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let shown = bar.clone();
    let ticker = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let rss = landline::report::current_rss_bytes();
            shown.set_message(progress_line(&progress, started.elapsed(), rss));
            shown.tick();
        }
    });
    (bar, ticker)
}

/// One line of the progress display: counters, sizes in MiB, rates over `elapsed`, memory.
fn progress_line(progress: &Progress, elapsed: Duration, rss: Option<u64>) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    let secs = elapsed.as_secs_f64().max(1e-3);
    let records = progress.records.load(Relaxed);
    let lines = progress.bytes_uncompressed.load(Relaxed);
    let rss = rss.map_or("?".to_owned(), |b| format!("{:.1} MiB", mib(b)));
    format!(
        "{} pages, {records} records | {:.1} MiB in, {:.1} MiB JSON Lines, {:.1} MiB out | {:.0} MB/s, {:.0} records/s | RSS {rss}",
        progress.pages.load(Relaxed),
        mib(progress.bytes_in.load(Relaxed)),
        mib(lines),
        mib(progress.bytes_written.load(Relaxed)),
        lines as f64 / 1e6 / secs,
        records as f64 / secs,
    )
}

fn init_logging(format: LogFormat, quiet: bool, interactive: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet || interactive { "warn" } else { "info" };
    let filter =
        EnvFilter::try_from_env("LANDLINE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !interactive,
    };
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.with_target(false).init();
    }
}

/// The error and its causes in one paragraph, each cause once.
fn chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn the_progress_line_shows_counters_sizes_rates_and_memory() {
        let progress = Progress::default();
        progress.pages.store(3, Relaxed);
        progress.records.store(300, Relaxed);
        progress.bytes_in.store(2 << 20, Relaxed);
        progress.bytes_uncompressed.store(4_000_000, Relaxed);
        progress.bytes_written.store(1 << 19, Relaxed);
        let line = progress_line(&progress, Duration::from_secs(2), Some(25 << 20));
        assert_eq!(
            line,
            "3 pages, 300 records | 2.0 MiB in, 3.8 MiB JSON Lines, 0.5 MiB out | 2 MB/s, 150 records/s | RSS 25.0 MiB"
        );
        assert!(progress_line(&progress, Duration::ZERO, None).ends_with("RSS ?"));
    }

    #[test]
    fn the_memory_plot_is_an_svg_file_in_a_directory_that_exists() {
        assert!(parse_svg_path("memory.svg").is_ok());
        assert!(parse_svg_path("./Memory.SVG").is_ok());
        assert!(parse_svg_path("memory.png").is_err());
        assert!(parse_svg_path("memory").is_err());
        let err = parse_svg_path("/no/such/dir/memory.svg").unwrap_err();
        assert!(err.contains("/no/such/dir"), "{err}");
    }
}
