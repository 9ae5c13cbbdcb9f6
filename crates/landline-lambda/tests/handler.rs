//! The handler driven the way the Step Functions state machine in `deploy/` drives it: invoke
//! with the event, and while the answer is `continue`, invoke again with its checkpoint. Each
//! invocation is given only just more than the handler's margin, so the run is cut into many.

use std::io::Read;
use std::time::Duration;

use landline_lambda::{Event, PipelineSource, handle, margin};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_shard_of_a_plan_fed_back_on_continue_ends_in_its_whole_object() {
    let records = 1_500;
    let server = landline_mockapi::spawn(landline_mockapi::MockConfig {
        data: landline_mockapi::DataConfig {
            total: records,
            pool: 50,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("mock API");
    let dir = tempfile::tempdir().expect("tempdir");
    let object = dir
        .path()
        .join("out/region={region}/date={ingest_date}/variants.jsonl.gz");
    // A template variable in the query, an added field and the key: a plan splits by it.
    let toml = format!(
        "name = \"variants\"\n[vars]\nregion = \"eu\"\n\
         [source]\nurl = \"{}/variants\"\nquery = {{ count = 20, region = \"{{region}}\" }}\nrecords = \"/variants\"\n\
         [source.pagination]\ntype = \"token\"\nnext = \"/next_token\"\nparam = \"token\"\n\
         [transform]\nadd = {{ ingest_ts = \"{{ingest_ts}}\", region = \"{{region}}\" }}\n\
         [sink]\nurl = \"{}\"\ncompression_level = 0\n",
        server.base_url(),
        object.display()
    );
    let file = landline::PipelineFile::parse(&toml, "variants.toml").expect("pipeline file");
    let splits = [
        "date:2024-01-01..2024-01-02".to_owned(),
        "values:region=eu,us".to_owned(),
    ];
    let shards = landline::plan::plan(
        &PipelineSource::Toml(toml.clone()),
        &file,
        &splits,
        &Default::default(),
    )
    .expect("plan");
    assert_eq!(shards.len(), 4);
    for first in shards {
        let date = first.ingest_date.expect("a date").to_string();
        let region = first.vars["region"].clone();
        shard(
            first,
            records,
            &region,
            &dir.path()
                .join(format!("out/region={region}/date={date}/variants.jsonl.gz")),
        )
        .await;
    }
    // Nothing but the objects is left: two regions of two dates.
    let mut left = Vec::new();
    for region in std::fs::read_dir(dir.path().join("out"))
        .expect("out")
        .flatten()
        .filter(|entry| entry.file_name() != "_landline")
    {
        for date in std::fs::read_dir(region.path())
            .expect("a region")
            .flatten()
        {
            left.push(date.path());
        }
    }
    assert_eq!(left.len(), 4, "{left:?}");
    // Every request carried its shard's region.
    let log = server.request_log();
    for region in ["eu", "us"] {
        let asked = log
            .iter()
            .filter(|r| r.path_and_query.contains(&format!("region={region}")))
            .count();
        assert!(
            asked >= 2 * (records as usize / 20),
            "{region}: {asked} requests"
        );
    }
    assert!(log.iter().all(|r| r.path_and_query.contains("region=")));
    server.shutdown().await;
}

/// Runs one shard as the state machine does; checks its object at `path`.
async fn shard(first: Event, records: u64, region: &str, path: &std::path::Path) {
    // Just over the margin: each invocation has a moment, and stops at its first checkpoint.
    let time_left = margin(Duration::from_secs(1)) + Duration::from_millis(1);
    let mut event = first.clone();
    let mut answers: Vec<Value> = Vec::new();
    loop {
        let report = handle(event.clone(), time_left, vec![])
            .await
            .unwrap_or_else(|e| panic!("invocation {}: {e}", answers.len() + 1));
        let answer = serde_json::to_value(&report).expect("the answer is JSON");
        answers.push(answer.clone());
        match answer["status"].as_str() {
            Some("complete") => break,
            Some("continue") => {
                let checkpoint = answer["checkpoint"].as_str().expect("a checkpoint URL");
                event = Event {
                    checkpoint: Some(checkpoint.to_owned()),
                    ..first.clone()
                };
            }
            other => panic!("status {other:?}"),
        }
        assert!(answers.len() < 100, "no end in sight");
    }
    assert!(answers.len() >= 3, "{} invocations", answers.len());
    let last = answers.last().expect("an answer");
    assert_eq!(last["records"], records);
    let ingest_ts = &answers[0]["ingest_ts"];
    assert!(
        answers.iter().all(|a| &a["ingest_ts"] == ingest_ts),
        "one ingest_ts for the run"
    );
    let bytes = std::fs::read(path).expect("the object");
    let mut jsonl = String::new();
    // One member: the single-member reader reads every record.
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut jsonl)
        .expect("gzip");
    let ids: Vec<u64> = jsonl
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(&v["ingest_ts"], ingest_ts);
            assert_eq!(v["region"], region);
            v["id"].as_u64().expect("id")
        })
        .collect();
    assert_eq!(ids.len() as u64, records);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "every record once, in order"
    );
}

#[tokio::test]
async fn a_bad_event_or_pipeline_is_a_clear_error() {
    let event = |toml: &str| Event {
        pipeline: PipelineSource::Toml(toml.to_owned()),
        ingest_date: None,
        vars: Default::default(),
        checkpoint: None,
    };
    let err = handle(
        event("[source]\nurl = 3\n"),
        Duration::from_secs(60),
        vec![],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("pipeline event.toml"), "{err}");
    // A variable the pipeline does not declare is refused before anything runs.
    let mut with_vars = event(
        "[source]\nurl = \"http://127.0.0.1:9/v\"\nrecords = \"\"\n[sink]\nurl = \"/nonexistent/v.jsonl.gz\"\n",
    );
    with_vars.vars.insert("region".into(), "eu".into());
    let err = handle(with_vars, Duration::from_secs(60), vec![])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid event: vars.region: not a variable of this pipeline"),
        "{err}"
    );
}
