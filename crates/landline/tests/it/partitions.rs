//! Partitions from the records: `{record:/created_at:date}` in the key, against moto and
//! s3s-fs. The mock API serves records whose `created_at` dates come in no order (a pool
//! of 50 records, repeated), so every page feeds many partitions at once.

use std::collections::{BTreeMap, BTreeSet};

use landline::RunError;
use landline::compress::Compression;
use landline::report::RunReport;
use landline_mockapi::DataConfig;
use serde_json::Value;

use crate::harness::{Style, data, expected_line, mock, pipeline, pipeline_text, run};
use crate::s3::{self, S3Server};

/// Retries that give up at once: a failing API fails the run in milliseconds.
const FAST_RETRY: &str =
    "[source.retry]\nmax_attempts = 2\ninitial_backoff_ms = 1\nmax_backoff_ms = 2\n";

/// The `[sink]` and `[state]` of a run partitioned by `field` into `prefix`, then `extra`.
fn sink(s3: &S3Server, prefix: &str, field: &str, ext: &str, extra: &str) -> String {
    format!(
        "url = \"s3://{b}/{prefix}/created={{record:{field}}}/run={{ingest_date}}-{{part}}.{ext}\"\n\
         {extra}\n[state]\nurl = \"s3://{b}/{prefix}/_landline/\"\n",
        b = s3.bucket
    )
}

/// A run of `served` by the mock API (made faulty by `tweak`), `page` records a page, into
/// `sink` (see [`sink`]).
async fn run_partitioned(
    s3: &S3Server,
    served: &DataConfig,
    tweak: impl FnOnce(&mut landline_mockapi::MockConfig),
    page: u64,
    sink: &str,
) -> Result<RunReport, RunError> {
    let server = mock(served.clone(), tweak).await;
    let source = format!(
        "{}{FAST_RETRY}",
        Style::Token.source(&server.base_url(), page)
    );
    run(&pipeline(&pipeline_text(&source, sink)), s3.env()).await
}

/// The JSON Lines of the object at `url`.
async fn lines_of(s3: &S3Server, url: &str, compression: Compression) -> Vec<Value> {
    let key = url
        .strip_prefix(&format!("s3://{}/", s3.bucket))
        .unwrap_or_else(|| panic!("{url} is not in {}", s3.bucket));
    let bytes = s3
        .get_object(key)
        .await
        .unwrap_or_else(|| panic!("{}: no object at {key}", s3.name));
    let jsonl = match compression {
        Compression::Gzip => crate::harness::gunzip(&bytes),
        Compression::Zstd => zstd::stream::decode_all(&bytes[..]).expect("zstd decodes"),
        Compression::None => bytes,
    };
    jsonl
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a JSON line"))
        .collect()
}

/// The partition of a URL: what follows `created=`.
fn partition_of(url: &str) -> &str {
    let at = url.find("/created=").expect("a partition in the key") + "/created=".len();
    let rest = &url[at..];
    &rest[..rest.find('/').expect("a key after the partition")]
}

/// The date partition record `i` belongs in.
fn date_of(i: u64, data: &DataConfig) -> String {
    let line = expected_line(i, data, "");
    line["created_at"].as_str().expect("a timestamp")[..10].to_owned()
}

/// Checks the objects of `report`: every record in the partition of its own date, in the
/// order served within each object, objects numbered from 1 without gaps in each
/// partition, and the union equal, record by record, to what the API served. Returns the
/// objects per partition.
async fn check_union(
    s3: &S3Server,
    report: &RunReport,
    data: &DataConfig,
    compression: Compression,
) -> BTreeMap<String, Vec<String>> {
    let mut seen = BTreeMap::new();
    let mut by_partition: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, url) in report.objects.iter().enumerate() {
        let partition = partition_of(url).to_owned();
        let lines = lines_of(s3, url, compression).await;
        assert!(!lines.is_empty(), "{url} is empty");
        assert_eq!(
            report.object_details[n].records,
            lines.len() as u64,
            "{url}"
        );
        let mut last = None;
        for line in lines {
            let i = line["id"].as_u64().expect("an id") - landline_mockapi::ID_BASE;
            assert_eq!(date_of(i, data), partition, "record {i} in {url}");
            assert!(last.is_none_or(|l| l < i), "{url}: record {i} out of order");
            last = Some(i);
            assert_eq!(
                line,
                expected_line(i, data, &report.ingest_ts),
                "record {i}"
            );
            assert!(seen.insert(i, url.clone()).is_none(), "record {i} twice");
        }
        by_partition.entry(partition).or_default().push(url.clone());
    }
    assert_eq!(seen.len() as u64, data.total, "{}: records landed", s3.name);
    assert_eq!(report.records, data.total);
    let dates: BTreeSet<String> = (0..data.total).map(|i| date_of(i, data)).collect();
    assert_eq!(
        by_partition.keys().cloned().collect::<BTreeSet<_>>(),
        dates,
        "one partition per date"
    );
    for (partition, urls) in &by_partition {
        for (k, url) in urls.iter().enumerate() {
            assert!(
                url.contains(&format!("-{:05}.", k + 1)),
                "{partition}: {urls:?}"
            );
        }
    }
    let p = report.partitions.as_ref().expect("partition figures");
    assert_eq!(p.partitions, dates.len() as u64);
    by_partition
}

/// The data keys under `prefix` (the run state left out).
async fn data_keys(s3: &S3Server, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = s3
        .list_keys(&format!("{prefix}/created="))
        .await
        .into_iter()
        .collect();
    keys.sort();
    keys
}

/// Checks that the data under `prefix` is exactly the objects `urls`, and that no
/// multipart upload is left there.
async fn assert_only(s3: &S3Server, prefix: &str, urls: &[String]) {
    assert_eq!(
        data_keys(s3, prefix).await,
        urls_to_keys(s3, urls),
        "{}: the objects in the store",
        s3.name
    );
    if s3.supports_list_multipart_uploads {
        assert!(
            s3.list_multipart_uploads(prefix).await.is_empty(),
            "{}: uploads left",
            s3.name
        );
    }
}

fn urls_to_keys(s3: &S3Server, urls: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = urls
        .iter()
        .map(|u| {
            u.strip_prefix(&format!("s3://{}/", s3.bucket))
                .expect("in the bucket")
                .to_owned()
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn records_land_in_the_partition_of_their_date_and_together_are_what_the_api_served() {
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("partitions");
        let served = data(600);
        let report = run_partitioned(
            &s3,
            &served,
            |_| {},
            100,
            &sink(
                &s3,
                &prefix,
                "/created_at:date",
                "jsonl.gz",
                "max_open_partitions = 64",
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        let partitions = check_union(&s3, &report, &served, Compression::Gzip).await;
        // Room for every partition: one object each, none completed early.
        assert!(partitions.len() > 20, "{partitions:?}");
        assert!(partitions.values().all(|urls| urls.len() == 1));
        assert_eq!(report.partitions.as_ref().map(|p| p.evictions), Some(0));
        assert_only(&s3, &prefix, &report.objects).await;
        // The manifest lists every object, and each one verifies against it.
        let manifest = landline::manifest::read(
            report.manifest.as_deref().expect("a manifest"),
            &Default::default(),
            s3.env(),
        )
        .await
        .expect("readable")
        .expect("written");
        assert_eq!(manifest.objects.len(), report.objects.len());
        for url in report.objects.iter().take(5) {
            landline::verify::verify(url, &Default::default(), s3.env(), Some(&manifest))
                .await
                .unwrap_or_else(|e| panic!("{}: verify {url}: {e}", s3.name));
        }

        // The same date again, with records of fewer dates: the objects of the dates it no
        // longer has are deleted once its own have landed.
        let fewer = DataConfig {
            pool: 10,
            ..data(100)
        };
        let again = run_partitioned(
            &s3,
            &fewer,
            |_| {},
            100,
            &sink(
                &s3,
                &prefix,
                "/created_at:date",
                "jsonl.gz",
                "max_open_partitions = 64",
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        check_union(&s3, &again, &fewer, Compression::Gzip).await;
        let kept: BTreeSet<&String> = again.objects.iter().collect();
        let stale: BTreeSet<&String> = report
            .objects
            .iter()
            .filter(|u| !kept.contains(u))
            .collect();
        assert!(!stale.is_empty());
        assert_eq!(
            again.stale_objects_deleted.iter().collect::<BTreeSet<_>>(),
            stale,
            "{}",
            s3.name
        );
        assert_only(&s3, &prefix, &again.objects).await;
    }
}

#[tokio::test]
async fn more_partitions_than_may_be_open_roll_into_numbered_objects() {
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("partitions-lru");
        // 12 records repeated: each page cycles through their dates, with 4 open at once.
        let served = DataConfig {
            pool: 12,
            ..data(240)
        };
        let report = run_partitioned(
            &s3,
            &served,
            |_| {},
            60,
            &sink(
                &s3,
                &prefix,
                "/created_at:date",
                "jsonl.zst",
                "max_open_partitions = 4",
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        let partitions = check_union(&s3, &report, &served, Compression::Zstd).await;
        let figures = report.partitions.clone().expect("figures");
        assert!(figures.evictions > 0, "{figures:?}");
        assert!(
            partitions.values().any(|urls| urls.len() > 1),
            "{partitions:?}"
        );
        assert_eq!(
            report.objects.len() as u64,
            figures.evictions + figures.partitions.min(4),
            "every eviction completed an object, and the open ones were completed at the end"
        );
        assert_only(&s3, &prefix, &report.objects).await;
    }
}

#[tokio::test]
async fn a_failure_midway_aborts_every_open_partition_and_names_those_completed() {
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("partitions-fail");
        let err = run_partitioned(
            &s3,
            &data(3_000),
            |c| c.faults.error_after_pages = Some(3),
            100,
            &sink(
                &s3,
                &prefix,
                "/created_at:date",
                "jsonl",
                "max_open_partitions = 4",
            ),
        )
        .await
        .expect_err("the run must fail");
        let message = err.to_string();
        let RunError::ObjectsLeft { cause, objects } = err else {
            panic!("{}: {message}", s3.name);
        };
        assert!(cause.to_string().contains("500"), "{message}");
        assert!(!objects.is_empty());
        // What the error names is exactly what is in the store, each object readable, and
        // every open partition's upload was aborted.
        assert_only(&s3, &prefix, &objects).await;
        for url in objects.iter().take(10) {
            for line in lines_of(&s3, url, Compression::None).await {
                let i = line["id"].as_u64().expect("an id") - landline_mockapi::ID_BASE;
                assert_eq!(date_of(i, &data(3_000)), partition_of(url));
            }
        }
        // The run recorded what it left under the state prefix.
        let record = format!("{prefix}/_landline/left/");
        assert_eq!(s3.list_keys(&record).await.len(), 1, "{}", s3.name);

        // A complete rerun with room for every partition writes one object each: the failed
        // run's later objects of a partition (part-00002, ...) are not written again, and
        // are deleted once the new set has landed, with the record.
        let served = data(3_000);
        let report = run_partitioned(
            &s3,
            &served,
            |_| {},
            100,
            &sink(
                &s3,
                &prefix,
                "/created_at:date",
                "jsonl",
                "max_open_partitions = 64",
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        check_union(&s3, &report, &served, Compression::None).await;
        assert_only(&s3, &prefix, &report.objects).await;
        let gone: Vec<&String> = objects
            .iter()
            .filter(|o| !report.objects.contains(o))
            .collect();
        assert!(
            !gone.is_empty(),
            "{}: the rerun wrote every key again",
            s3.name
        );
        for url in gone {
            assert!(report.stale_objects_deleted.contains(url), "{url}");
        }
        assert!(s3.list_keys(&record).await.is_empty(), "{}", s3.name);
    }
}

#[tokio::test]
async fn records_without_the_field_go_to_the_default_partition_or_fail_the_run() {
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("partitions-default");
        let served = data(250);
        let report = run_partitioned(
            &s3,
            &served,
            |_| {},
            100,
            &sink(
                &s3,
                &prefix,
                "/no_such_field",
                "jsonl.gz",
                "default_partition = \"none/yet\"",
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        assert_eq!(report.objects.len(), 1, "{:?}", report.objects);
        assert_eq!(partition_of(&report.objects[0]), "none%2Fyet");
        let p = report.partitions.clone().expect("figures");
        assert_eq!((p.partitions, p.default_records), (1, 250));
        assert_eq!(
            lines_of(&s3, &report.objects[0], Compression::Gzip)
                .await
                .len(),
            250
        );

        // Without a default partition, the first such record fails the run, naming the
        // field, and nothing is left.
        let prefix = s3.unique_prefix("partitions-strict");
        let strict = sink(&s3, &prefix, "/no_such_field", "jsonl.gz", "");
        let err = run_partitioned(&s3, &served, |_| {}, 100, &strict)
            .await
            .expect_err("the run must fail")
            .to_string();
        assert!(
            err.contains("the partition field /no_such_field is missing")
                && err.contains("default_partition"),
            "{err}"
        );
        assert_only(&s3, &prefix, &[]).await;
    }
}

#[test]
fn partition_settings_are_checked() {
    let check = |sink: &str| {
        let text = pipeline_text(&Style::Token.source("http://127.0.0.1:1", 100), sink);
        landline::PipelineFile::parse(&text, "t.toml")
            .and_then(|f| f.validate(&|_| None))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // A run's value must be in the key, or runs replace each other's objects.
    let err =
        check("url = \"s3://b/e/d={record:/created_at:date}/{part}.jsonl.gz\"\n").unwrap_err();
    assert!(
        err.contains("sink.url") && err.contains("{ingest_date}"),
        "{err}"
    );
    // Not in the bucket.
    let err = check("url = \"s3://{record:/x}/{ingest_date}.jsonl.gz\"\n").unwrap_err();
    assert!(err.contains("after the bucket"), "{err}");
    // Partition settings without partitions.
    let err =
        check("url = \"s3://b/{ingest_date}.jsonl.gz\"\nmax_open_partitions = 3\n").unwrap_err();
    assert!(err.contains("sink.max_open_partitions"), "{err}");
    let err =
        check("url = \"s3://b/{record:/x}/{ingest_date}.jsonl.gz\"\nmax_open_partitions = 0\n")
            .unwrap_err();
    assert!(err.contains("max_open_partitions"), "{err}");
    assert!(check("url = \"s3://b/{record:/x}/{record:/y}/{ingest_date}.jsonl.gz\"\n").is_err());
    assert!(check("url = \"s3://b/e/{record:/meta/region}/{ingest_date}.jsonl.gz\"\n").is_ok());
}

/// The options of a process that stops after its first page (a time limit of 1 ms),
/// continuing `resume` if given.
fn stopping(
    s3: &S3Server,
    resume: Option<landline::checkpoint::Checkpoint>,
) -> landline::RunOptions {
    landline::RunOptions {
        ingest_date: Some(
            chrono::NaiveDate::parse_from_str(crate::harness::INGEST_DATE, "%Y-%m-%d")
                .expect("a date"),
        ),
        store_env: s3.env().into(),
        resume,
        max_duration: Some(std::time::Duration::from_millis(1)),
        ..landline::RunOptions::default()
    }
}

/// Runs `text` in processes that each stop after their first page (a time limit of 1 ms),
/// every one going on from the checkpoint the one before it left, until the run is
/// complete; returns the last report and the number of processes.
async fn run_in_processes(s3: &S3Server, text: &str) -> (RunReport, usize) {
    let pipeline = pipeline(text);
    let options = |resume| stopping(s3, resume);
    let mut report = landline::run(&pipeline, options(None), std::future::pending())
        .await
        .unwrap_or_else(|e| panic!("{}: process 1: {e}", s3.name));
    let mut processes = 1;
    let mut objects = report.objects.len();
    while report.status == landline::report::RunStatus::Continue {
        let url = report.checkpoint.clone().expect("a checkpoint");
        let cp = landline::pipeline::read_checkpoint(&url, &Default::default(), s3.env())
            .await
            .expect("readable")
            .expect("written");
        let done = cp.objects.as_ref().expect("the objects so far");
        assert_eq!(done.landed.len(), report.objects.len());
        assert_eq!(cp.counters.records, report.records);
        report = landline::run(&pipeline, options(Some(cp)), std::future::pending())
            .await
            .unwrap_or_else(|e| panic!("{}: process {}: {e}", s3.name, processes + 1));
        processes += 1;
        assert!(
            report.objects.len() > objects,
            "each process completes objects"
        );
        objects = report.objects.len();
        assert!(processes < 100, "no end in sight");
    }
    // The run is complete: its checkpoint is gone.
    let date = chrono::NaiveDate::parse_from_str(&report.ingest_date, "%Y-%m-%d").ok();
    let url = landline::pipeline::checkpoint_location(&pipeline, date, &report.vars)
        .expect("a checkpoint location");
    assert!(
        landline::pipeline::read_checkpoint(&url, &Default::default(), s3.env())
            .await
            .expect("readable")
            .is_none(),
        "{}: the checkpoint of a complete run is deleted",
        s3.name
    );
    (report, processes)
}

#[tokio::test]
async fn a_time_limited_run_of_several_objects_completes_them_at_each_stop_and_goes_on_in_new_ones()
{
    for s3 in s3::servers() {
        // Partitions: each process completes every partition it opened; the next one goes
        // on with each partition's next object.
        let prefix = s3.unique_prefix("partitions-stops");
        let served = data(500);
        let server = mock(served.clone(), |_| {}).await;
        let text = pipeline_text(
            &Style::Token.source(&server.base_url(), 100),
            &sink(&s3, &prefix, "/created_at:date", "jsonl.gz", ""),
        );
        let (report, processes) = run_in_processes(&s3, &text).await;
        assert_eq!(processes, 5, "one page a process");
        check_union(&s3, &report, &served, Compression::Gzip).await;
        assert_only(&s3, &prefix, &report.objects).await;

        // A sequence: each stop completes the object being written.
        let prefix = s3.unique_prefix("sequence-stops");
        let text = pipeline_text(
            &Style::Token.source(&server.base_url(), 100),
            &format!(
                "url = \"s3://{b}/{prefix}/created=all/run={{ingest_date}}-{{part}}.jsonl.zst\"\n\
                 max_object_records = 150\n[state]\nurl = \"s3://{b}/{prefix}/_landline/\"\n",
                b = s3.bucket
            ),
        );
        let (report, processes) = run_in_processes(&s3, &text).await;
        assert_eq!(processes, 5);
        assert_eq!(report.objects.len(), 5, "{:?}", report.objects);
        let mut ids = Vec::new();
        for (i, url) in report.objects.iter().enumerate() {
            assert!(url.ends_with(&format!("-{:05}.jsonl.zst", i + 1)), "{url}");
            for line in lines_of(&s3, url, Compression::Zstd).await {
                let id = line["id"].as_u64().expect("an id") - landline_mockapi::ID_BASE;
                assert_eq!(
                    line,
                    expected_line(id, &served, &report.ingest_ts),
                    "record {id}"
                );
                ids.push(id);
            }
        }
        assert_eq!(
            ids,
            (0..500).collect::<Vec<_>>(),
            "every record once, in order"
        );
        assert_only(&s3, &prefix, &report.objects).await;
    }
}

#[tokio::test]
async fn a_run_started_afresh_over_a_stopped_one_deletes_the_objects_it_completed() {
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("partitions-discard");
        let served = data(300);
        let server = mock(served.clone(), |_| {}).await;
        let pipeline = pipeline(&pipeline_text(
            &Style::Token.source(&server.base_url(), 100),
            &sink(&s3, &prefix, "/created_at:date", "jsonl.gz", ""),
        ));
        // A process stopped at its time limit after a page: the objects it opened are complete.
        let stopped = landline::run(&pipeline, stopping(&s3, None), std::future::pending())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        assert_eq!(stopped.status, landline::report::RunStatus::Continue);
        assert!(!stopped.objects.is_empty());
        assert_only(&s3, &prefix, &stopped.objects).await;

        // Starting afresh instead of going on (`landline run`'s `--resume never`) discards
        // that run: its objects go, then its checkpoint.
        let url = stopped.checkpoint.clone().expect("a checkpoint");
        let cp = landline::pipeline::read_checkpoint(&url, &Default::default(), s3.env())
            .await
            .expect("readable")
            .expect("written");
        let mut deleted = landline::pipeline::discard_checkpoint(&pipeline, &url, &cp, s3.env())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        deleted.sort();
        assert_eq!(deleted, urls_sorted(&stopped.objects), "{}", s3.name);
        assert_only(&s3, &prefix, &[]).await;
        assert!(
            landline::pipeline::read_checkpoint(&url, &Default::default(), s3.env())
                .await
                .expect("readable")
                .is_none()
        );

        // The fresh run lands every record once, and nothing else is there.
        let report = landline::run(
            &pipeline,
            landline::RunOptions {
                max_duration: None,
                ..stopping(&s3, None)
            },
            std::future::pending(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        check_union(&s3, &report, &served, Compression::Gzip).await;
        assert_only(&s3, &prefix, &report.objects).await;
    }
}

fn urls_sorted(urls: &[String]) -> Vec<String> {
    let mut urls = urls.to_vec();
    urls.sort();
    urls
}

#[tokio::test]
async fn a_partition_whose_object_the_store_refuses_fails_the_run() {
    use crate::proxy::{Fault, Op, Proxy, Rule};
    for s3 in s3::servers() {
        // The objects are created by the upload tasks while the page thread goes on: the
        // store refusing the fifth (403) must still be the run's error, and end it, with
        // every other upload aborted and the objects completed before it named.
        let rule = Rule::new(Op::CreateMultipartUpload, Fault::Status(403))
            .from(5)
            .always();
        let proxy = Proxy::start(&s3, vec![rule]).await;
        let prefix = s3.unique_prefix("partitions-refused");
        let server = mock(data(300), |_| {}).await;
        let text = pipeline_text(
            &format!(
                "{}{FAST_RETRY}",
                Style::Token.source(&server.base_url(), 100)
            ),
            &sink(
                &s3,
                &prefix,
                "/created_at:date",
                "jsonl.gz",
                "max_open_partitions = 4",
            ),
        );
        let err = run(&pipeline(&text), proxy.env(&s3))
            .await
            .expect_err("the run must fail");
        let message = err.to_string();
        assert!(message.contains("403"), "{}: {message}", s3.name);
        assert!(
            !message.contains("internal error"),
            "{}: {message}",
            s3.name
        );
        let objects = match err {
            RunError::ObjectsLeft { objects, .. } => objects,
            _ => Vec::new(),
        };
        assert_only(&s3, &prefix, &objects).await;
    }
}
