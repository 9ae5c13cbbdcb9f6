//! Throughput of the pieces of the hot path, on the mock API's records (~28.6 KB each):
//! splitting a page into records (whole, and streamed in pieces as it arrives off the network),
//! transform + encode, and deflate. Setup stays outside the
//! timed closures; figures are reported per byte of page body / JSON Lines and per record.
//!
//! `cargo bench --profile dist -p landline --bench hot_path`
//!
//! The deflate benchmarks use the crate-internal block format through `landline::__internals`
//! (feature `internals`, which the crate's dev-dependency on itself turns on for benches).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use landline::__internals::{BlockDeflater, DICTIONARY_BYTES, gzip_blocks, zstd_blocks};
use landline::pointer::JsonPointer;
use landline::source::page::{PageError, PageSplitter, Paths, RecordSink, scan_page};
use landline::transform::{OnInvalidTimestamp, RecordWriter, TimeZone, Transform};
use landline_mockapi::{DataConfig, Pool};
use serde::{Deserialize, Deserializer};

const RECORDS_PER_PAGE: u64 = 200;

/// One page body as the mock API serves it.
fn page() -> Vec<u8> {
    let pool = Pool::build(&DataConfig {
        total: RECORDS_PER_PAGE,
        pool: RECORDS_PER_PAGE as usize,
        ..DataConfig::default()
    });
    let mut body = b"{\"variants\":[".to_vec();
    for i in 0..RECORDS_PER_PAGE {
        if i > 0 {
            body.push(b',');
        }
        pool.write_record(i, &mut body);
    }
    body.extend_from_slice(b"],\"next_token\":\"djE6MjAw\"}");
    body
}

fn transform() -> Transform {
    Transform::new(
        vec![
            ("ingest_date".into(), "\"2026-11-25\"".into()),
            ("ingest_ts".into(), "\"2026-11-25T02:00:00.000Z\"".into()),
        ],
        vec![
            "created_at".into(),
            "updated_at".into(),
            "published_at".into(),
        ],
        TimeZone::Utc,
        OnInvalidTimestamp::Error,
        usize::MAX,
    )
    .expect("valid transform")
}

/// Skips each record (read whole as raw JSON text): the cost of splitting alone.
struct Skip;

impl RecordSink for Skip {
    fn record<'de, D: Deserializer<'de>>(&mut self, _: u64, d: D) -> Result<&'de str, D::Error> {
        <&serde_json::value::RawValue>::deserialize(d).map(|raw| raw.get())
    }
    fn take_error(&mut self) -> Option<PageError> {
        None
    }
}

fn split_and_transform(c: &mut Criterion) {
    let body = page();
    let records = JsonPointer::parse("/variants").expect("pointer");
    let next = JsonPointer::parse("/next_token").expect("pointer");
    let t = transform();
    let mut out = Vec::with_capacity(body.len() * 2);

    let mut g = c.benchmark_group("page");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("split only (MB/s of page body)", |b| {
        b.iter(|| scan_page(black_box(&body), &records, Some(&next), &mut Skip).expect("scan"))
    });
    g.bench_function("split + transform + encode (MB/s of page body)", |b| {
        b.iter(|| {
            out.clear();
            let mut w = RecordWriter::new(&t, &mut out);
            scan_page(black_box(&body), &records, Some(&next), &mut w).expect("scan")
        })
    });
    // As a body arrives off the network: 64 KiB pieces, read by the splitter at its default
    // granularity (a record cut by the window's end is read again).
    let paths = Paths {
        records: records.clone(),
        cursor: Some(next.clone()),
        error: None,
    };
    g.bench_function(
        "streamed in 64 KiB pieces: split + transform + encode (MB/s of page body)",
        |b| {
            b.iter(|| {
                out.clear();
                let mut w = RecordWriter::new(&t, &mut out);
                let mut splitter = PageSplitter::new(paths.clone(), usize::MAX);
                for piece in black_box(&body).chunks(64 * 1024) {
                    splitter.window().extend_from_slice(piece);
                    splitter.feed(&mut w).expect("feed");
                }
                splitter.finish(&mut w).expect("scan")
            })
        },
    );
    g.throughput(Throughput::Elements(RECORDS_PER_PAGE));
    g.bench_function("split + transform + encode (records/s)", |b| {
        b.iter(|| {
            out.clear();
            let mut w = RecordWriter::new(&t, &mut out);
            scan_page(black_box(&body), &records, Some(&next), &mut w).expect("scan")
        })
    });
    g.finish();
}

fn compression(c: &mut Criterion) {
    // One chunk of JSON Lines, as the encoder hands it to the compressor.
    let body = page();
    let records = JsonPointer::parse("/variants").expect("pointer");
    let t = transform();
    let mut lines = Vec::new();
    let mut w = RecordWriter::new(&t, &mut lines);
    scan_page(&body, &records, None, &mut w).expect("scan");
    lines.truncate(landline::pipeline::CHUNK_BYTES);
    let dictionary = lines[lines.len() - DICTIONARY_BYTES..].to_vec();
    let mut out = Vec::with_capacity(lines.len());

    let mut g = c.benchmark_group("deflate");
    g.throughput(Throughput::Bytes(lines.len() as u64));
    for level in [1, 6] {
        let mut d = BlockDeflater::new(level);
        g.bench_function(
            format!("one chunk, level {level}, primed (MB/s of JSON Lines)"),
            |b| {
                b.iter(|| {
                    out.clear();
                    d.deflate(&dictionary, black_box(&lines), &mut out)
                        .expect("deflate");
                })
            },
        );
    }
    g.bench_function("gzip member of one chunk, 128 KiB blocks, level 6", |b| {
        b.iter(|| gzip_blocks(black_box(&lines), 128 * 1024, 6).expect("gzip"))
    });
    g.finish();

    // zstd compresses 1 MiB blocks (Compression::chunk_bytes), each an independent frame.
    let mut lines = Vec::new();
    let mut w = RecordWriter::new(&t, &mut lines);
    scan_page(&body, &records, None, &mut w).expect("scan");
    lines.truncate(1024 * 1024);
    let mut g = c.benchmark_group("zstd");
    g.throughput(Throughput::Bytes(lines.len() as u64));
    for level in [1, 3] {
        g.bench_function(
            format!("one 1 MiB frame, level {level} (MB/s of JSON Lines)"),
            |b| b.iter(|| zstd_blocks(black_box(&lines), 1024 * 1024, level).expect("zstd")),
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = split_and_transform, compression
}
criterion_main!(benches);
