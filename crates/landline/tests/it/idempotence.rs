//! Idempotence: running the same pipeline again for the same date replaces the object
//! atomically. Readers during the second run see the old object or the new one, whole, never
//! a mix or a partial object.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{Style, data, gunzip, mock, pipeline, pipeline_text, run, verify};
use crate::s3;

/// Runs the pipeline twice into each server while a reader GETs the key in a loop; every
/// read is the first run's object or the second's.
#[tokio::test]
async fn rerun_replaces_the_object_atomically_for_concurrent_readers() {
    let data = data(1_200);
    // 40 pages at 10 ms: the second run lasts long enough for many reads during it.
    let server = mock(data.clone(), |c| c.latency = Duration::from_millis(10)).await;
    for s3 in s3::servers() {
        let prefix = s3.unique_prefix("rerun");
        let key = format!("{prefix}/date=2026-11-25/variants.jsonl.gz");
        let text = pipeline_text(
            &Style::Token.source(&server.base_url(), 30),
            &format!("url = \"s3://{}/{key}\"", s3.bucket),
        );
        let pipeline = pipeline(&text);

        let first_report = run(&pipeline, s3.env()).await.expect("first run");
        let first = s3.get_object(&key).await.expect("first object");
        verify(&gunzip(&first), &data, &first_report, 1);

        // `ingest_ts` differs between runs, so the two objects differ.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (s3, key, first, done) = (s3.clone(), key.clone(), first.clone(), done.clone());
            tokio::spawn(async move {
                // Reads of the old object, and each other answer once per change.
                let (mut old, mut others) = (0usize, Vec::<Vec<u8>>::new());
                while !done.load(Ordering::Acquire) {
                    let bytes = s3.get_object(&key).await;
                    match bytes {
                        Some(bytes) if bytes == first => old += 1,
                        Some(bytes) if others.last() == Some(&bytes) => {}
                        Some(bytes) => others.push(bytes),
                        None => others.push(b"<no object>".to_vec()),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (old, others)
            })
        };
        let second_report = run(&pipeline, s3.env()).await.expect("second run");
        done.store(true, Ordering::Release);
        let (old, others) = reader.await.expect("reader");
        let second = s3.get_object(&key).await.expect("second object");
        assert_ne!(first, second, "{}: the rerun wrote the same bytes", s3.name);
        verify(&gunzip(&second), &data, &second_report, 1);
        assert!(old >= 1, "{}: no read during the run", s3.name);
        for bytes in &others {
            assert!(
                *bytes == second,
                "{}: a reader saw neither the old nor the new object ({} bytes)",
                s3.name,
                bytes.len()
            );
        }
        assert_eq!(s3.list_keys(&prefix).await, [key.as_str()], "{}", s3.name);
        if s3.supports_list_multipart_uploads {
            assert!(s3.list_multipart_uploads(&prefix).await.is_empty());
        }
    }
    server.shutdown().await;
}

/// The same for a local file: the new object is renamed over the old one, so a reader opens
/// one or the other, and no staging file is left.
#[tokio::test]
async fn rerun_replaces_a_local_file_atomically() {
    let data = data(1_200);
    let server = mock(data.clone(), |c| c.latency = Duration::from_millis(10)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("variants.jsonl.gz");
    let text = pipeline_text(
        &Style::Token.source(&server.base_url(), 30),
        &format!("url = \"{}\"", target.display()),
    );
    let pipeline = pipeline(&text);
    let first_report = run(&pipeline, vec![]).await.expect("first run");
    let first = std::fs::read(&target).expect("first object");
    verify(&gunzip(&first), &data, &first_report, 1);

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (target, first, done) = (target.clone(), first.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            let (mut old, mut other) = (0usize, Vec::new());
            let mut last_other: Option<Vec<u8>> = None;
            while !done.load(Ordering::Acquire) {
                let bytes = std::fs::read(&target).expect("the object is always there");
                if bytes == first {
                    old += 1;
                } else if last_other.as_ref() != Some(&bytes) {
                    last_other = Some(bytes.clone());
                    other.push(bytes);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (old, other)
        })
    };
    let second_report = run(&pipeline, vec![]).await.expect("second run");
    done.store(true, Ordering::Release);
    let (old, others) = reader.await.expect("reader");
    let second = std::fs::read(&target).expect("second object");
    verify(&gunzip(&second), &data, &second_report, 1);
    assert!(old >= 1, "no read during the run");
    for bytes in &others {
        assert_eq!(bytes, &second, "a reader saw a partial or mixed object");
    }
    // The object, and the state directory with the runs' manifest.
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|name| name != "_landline")
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    server.shutdown().await;
}
