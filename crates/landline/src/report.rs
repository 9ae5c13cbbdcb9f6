//! The run report: what a run did, from counters kept along the data path.
//!
//! [`Progress`] holds live counters (atomics, updated once per page) that a progress bar can
//! read while the run goes on; [`RunReport`] is the summary at the end, printed as text or
//! written as JSON (`--report-json`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters of a run, updated once per page (`bytes_written` once per part).
#[derive(Debug, Default)]
pub struct Progress {
    /// Pages fetched and processed.
    pub pages: AtomicU64,
    /// Records written.
    pub records: AtomicU64,
    /// Bytes of page bodies received.
    pub bytes_in: AtomicU64,
    /// Bytes of JSON Lines produced.
    pub bytes_uncompressed: AtomicU64,
    /// Compressed bytes handed to the store in this process (parts put, not all
    /// acknowledged yet), updated once per part.
    pub bytes_written: AtomicU64,
}

impl Progress {
    pub(crate) fn page(&self, records: u64, body: u64, lines: u64) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes_in.fetch_add(body, Ordering::Relaxed);
        self.bytes_uncompressed.store(lines, Ordering::Relaxed);
    }

    pub(crate) fn part(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Settings that bound a run's memory, reported beside the measured peak.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MemorySettings {
    /// Size of the first 1,000 parts.
    pub part_size_bytes: u64,
    /// Parts uploading at once.
    pub max_parts_in_flight: u64,
    /// JSON Lines chunk size handed to the compressor.
    pub chunk_bytes: u64,
    /// Chunks queued for the compressor.
    pub chunk_queue: u64,
    /// Deflate threads (each has `chunk_bytes` in flight, plus one waiting to be collected).
    pub compression_threads: u64,
    /// Largest page body accepted (decoded); `u64::MAX` for no limit.
    pub max_page_bytes: u64,
    /// Largest page body actually seen (decoded).
    pub largest_page_bytes: u64,
    /// Pages fetched at once (offset and page pagination).
    pub concurrency: u64,
    /// Body bytes, as received, buffered per page in flight.
    pub page_buffer_bytes: u64,
    /// Longest record accepted, as received and as a JSON line.
    pub max_record_bytes: u64,
    /// Streams written at once: with partitions from the records, twice `[sink]
    /// max_open_partitions` (those open and those being completed), else 1.
    pub open_streams: u64,
    /// What these settings allow the process to hold at most ([`MemorySettings::budget`]),
    /// to set beside the measured peak.
    pub budget_bytes: u64,
}

/// The process's memory without any data: runtime, HTTP and store clients, one request
/// (measured: ~8 MiB; see DESIGN.md).
pub const BASE_MEMORY_BYTES: u64 = 8 * 1024 * 1024;

impl MemorySettings {
    /// The most memory these settings let a run hold, stage by stage:
    ///
    /// - pages in flight: `concurrency` x `page_buffer_bytes` of bodies as received;
    /// - the page splitter's window (one read plus at most one record being assembled) and
    ///   that record's transformed line: 2 x `max_record_bytes` + 64 KiB;
    /// - JSON Lines chunks, per open stream: one being filled, `chunk_queue` waiting, and
    ///   per deflate thread one being compressed and its output: `open_streams` x
    ///   `(2 + chunk_queue + 2 x threads)` x `chunk_bytes`;
    /// - parts: `max_parts_in_flight + open_streams` alive, each up to twice the part size
    ///   when parts are cut at page ends (checkpoints);
    /// - [`BASE_MEMORY_BYTES`] for the rest of the process.
    ///
    /// A bound, not a forecast: a run of small records stays well under it (the records'
    /// terms are worst cases), and parts after the 1,000th are larger.
    pub fn budget(&self) -> u64 {
        let pages = self
            .concurrency
            .max(1)
            .saturating_mul(self.page_buffer_bytes);
        let records = self
            .max_record_bytes
            .saturating_mul(2)
            .saturating_add(64 * 1024);
        let streams = self.open_streams.max(1);
        let chunks = (2 + self.chunk_queue + 2 * self.compression_threads.max(1))
            .saturating_mul(self.chunk_bytes)
            .saturating_mul(streams);
        let parts = (self.max_parts_in_flight + streams)
            .saturating_mul(self.part_size_bytes)
            .saturating_mul(2);
        pages
            .saturating_add(records)
            .saturating_add(chunks)
            .saturating_add(parts)
            .saturating_add(BASE_MEMORY_BYTES)
    }
}

/// What the run's fetches cost on the network.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetworkReport {
    /// Bytes of page bodies as received (compressed, when the server compressed them), every
    /// attempt included.
    pub bytes_wire: u64,
    /// Seconds spent waiting before retries.
    pub retry_wait_seconds: f64,
    /// Requests that waited for the rate limit (the configured one or the server's).
    pub rate_limit_waits: u64,
    /// Seconds spent in those waits.
    pub rate_limit_wait_seconds: f64,
}

/// CPU time this process has used, from the operating system's own accounting
/// (`getrusage`); `None` where landline cannot read it.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CpuTimes {
    /// Seconds in user mode (every thread).
    pub user_seconds: Option<f64>,
    /// Seconds in the kernel on the process's behalf.
    pub system_seconds: Option<f64>,
}

impl CpuTimes {
    /// This process's CPU time so far.
    pub fn of_this_process() -> Self {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        #[allow(unsafe_code)]
        {
            let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
            // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which
            // points at one, and returns 0 when it did.
            if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0 {
                // SAFETY: filled by the call above (and zeroed before it).
                let usage = unsafe { usage.assume_init() };
                let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                return CpuTimes {
                    user_seconds: Some(secs(usage.ru_utime)),
                    system_seconds: Some(secs(usage.ru_stime)),
                };
            }
        }
        CpuTimes::default()
    }
}

/// Figures derived from a report's counters, so that a reader of the JSON need not.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Rates {
    /// Records written per second of wall time.
    pub records_per_second: f64,
    /// Bytes of JSON Lines per second of wall time.
    pub bytes_uncompressed_per_second: f64,
    /// JSON Lines bytes per compressed byte written (0 before anything is written).
    pub compression_ratio: f64,
    /// JSON Lines bytes per record, its newline included: the records' average width.
    pub average_record_bytes: f64,
}

impl Rates {
    /// The rates of `report`'s counters.
    pub fn of(report: &RunReport) -> Self {
        let per = |n: u64, d: f64| if d > 0.0 { n as f64 / d } else { 0.0 };
        Rates {
            records_per_second: per(report.records, report.wall_seconds),
            bytes_uncompressed_per_second: per(report.bytes_uncompressed, report.wall_seconds),
            compression_ratio: per(report.bytes_uncompressed, report.bytes_written as f64),
            average_record_bytes: per(report.bytes_uncompressed, report.records as f64),
        }
    }
}

/// One object of a sequence.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ObjectReport {
    /// Its URL.
    pub url: String,
    /// Records in it.
    pub records: u64,
    /// Its JSON Lines bytes (before compression).
    pub bytes_uncompressed: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Upload parts.
    pub parts: u64,
    /// The store's ETag, when it gave one.
    pub e_tag: Option<String>,
    /// The SHA-256 of its bytes (hex).
    pub sha256: Option<String>,
}

/// The summary of one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    /// `complete`: the object is written; `continue`: the run stopped at a checkpoint before
    /// its time ran out, and `landline resume` goes on from [`RunReport::checkpoint`].
    pub status: RunStatus,
    /// The checkpoint to resume from, when the status is `continue`.
    pub checkpoint: Option<String>,
    /// Records written (with `continue`: those the checkpoint holds, over every process of
    /// the run so far).
    pub records: u64,
    /// Pages fetched.
    pub pages: u64,
    /// Page retries that succeeded in the end.
    pub retries: u64,
    /// Bytes of page bodies received, decoded.
    pub bytes_in: u64,
    /// Bytes of JSON Lines (before compression).
    pub bytes_uncompressed: u64,
    /// Compressed bytes written to the object.
    pub bytes_written: u64,
    /// The object's format.
    pub compression: crate::compress::Compression,
    /// Upload parts.
    pub parts: u64,
    /// Objects written (URLs); empty when the source had no records.
    pub objects: Vec<String>,
    /// Each object of a sequence (`{part}` in the URL): its records, bytes, parts, ETag and
    /// SHA-256; empty for a single object (whose figures are the report's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_details: Vec<ObjectReport>,
    /// Objects of an earlier, longer run of the same date deleted after this one landed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_objects_deleted: Vec<String>,
    /// Partitions from the records (`{record:...}` in the URL), when the run had them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionReport>,
    /// The object's ETag, when the store gave one.
    pub e_tag: Option<String>,
    /// The SHA-256 of the object's bytes (hex), computed as its parts were uploaded.
    pub sha256: Option<String>,
    /// The manifest written for this run, if one was.
    pub manifest: Option<String>,
    /// This run against the previous one's manifest, when there was one to compare with.
    pub drift: Option<crate::drift::DriftReport>,
    /// An incremental run's boundary: the value asked from, the highest value written, the
    /// next run's cursor (`[source.incremental]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<crate::incremental::IncrementalReport>,
    /// Peak resident memory of the process, in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Wall-clock time of the run (this process's part of it).
    pub wall_seconds: f64,
    /// The widest record's JSON line, in bytes, its newline not counted (over every
    /// process of the run so far).
    pub largest_record_bytes: u64,
    /// CPU time of this process.
    pub cpu: CpuTimes,
    /// Throughput, compression ratio and average record width.
    pub rates: Rates,
    /// The run's `{ingest_date}`.
    pub ingest_date: String,
    /// The run's `{ingest_ts}`.
    pub ingest_ts: String,
    /// The values of the pipeline's own template variables (`[vars]`) in this run.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vars: std::collections::BTreeMap<String, String>,
    /// Bytes on the wire, retries and rate-limit waits.
    pub network: NetworkReport,
    /// Settings that bound memory.
    pub memory: MemorySettings,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The object is complete (or the source was empty).
    Complete,
    /// Stopped at a checkpoint, to be resumed.
    Continue,
}

/// Peak resident set size of this process so far (Linux `VmHWM`; elsewhere `None`).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Resident set size of this process now (Linux `VmRSS`; elsewhere `None`), for a
/// progress display or a memory plot.
pub fn current_rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Makes glibc's allocator keep one heap for all threads, unless `MALLOC_ARENA_MAX` is set
/// (then glibc has read it already); does nothing on other platforms. Returns whether it
/// changed the setting.
///
/// A run's threads (async workers, the page processor, the compressor's) free each other's
/// page and part buffers; with a heap per thread, each heap keeps a few MiB of freed blocks
/// of its own. One heap lowers the incident workload's peak RSS by ~1.2 MiB (24.9 against
/// 26.1 MiB) at no cost in wall time (0.97 x, side by side); the threads rarely allocate at
/// the same moment. Call it first thing in `main`, before any thread is started.
#[allow(unsafe_code)]
pub fn use_one_malloc_arena() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a parameter of the allocator; it is called before
            // the process starts other threads, and M_ARENA_MAX takes any positive value.
            return unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } == 1;
        }
    }
    false
}

/// The partitions of a run whose URL takes them from the records.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PartitionReport {
    /// The field that names them.
    pub field: String,
    /// Partitions written.
    pub partitions: u64,
    /// Records without a usable value, written to `[sink] default_partition`.
    pub default_records: u64,
    /// Partitions completed early to keep at most `max_open_partitions` open (a later
    /// record of such a partition started its next object).
    pub evictions: u64,
}

/// Objects listed by name in the summary; more are counted.
const OBJECTS_LISTED: usize = 20;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.status, self.objects.first(), &self.checkpoint) {
            (RunStatus::Continue, _, Some(checkpoint)) => writeln!(
                f,
                "stopped at a checkpoint before the time ran out; resume with: landline resume {checkpoint}"
            )?,
            (_, Some(object), _) if self.objects.len() == 1 => writeln!(f, "wrote {object}")?,
            (_, Some(first), _) => {
                writeln!(f, "wrote {} objects: {first}", self.objects.len())?;
                for object in self.objects.iter().skip(1).take(OBJECTS_LISTED - 1) {
                    writeln!(f, "  {object}")?;
                }
                if self.objects.len() > OBJECTS_LISTED {
                    writeln!(
                        f,
                        "  and {} more (the JSON report lists them all)",
                        self.objects.len() - OBJECTS_LISTED
                    )?;
                }
                if let Some(p) = &self.partitions {
                    writeln!(
                        f,
                        "  {} partitions by {}; {} records in the default partition; {} completed early to make room",
                        p.partitions, p.field, p.default_records, p.evictions
                    )?;
                }
                if !self.stale_objects_deleted.is_empty() {
                    writeln!(
                        f,
                        "  and deleted {} left by a longer earlier run of this date",
                        self.stale_objects_deleted.len()
                    )?;
                }
            }
            _ => writeln!(f, "the source returned no records: no object written")?,
        }
        let ratio = self.rates.compression_ratio;
        let n = &self.network;
        writeln!(
            f,
            "  {} records in {} pages, {:.1} MiB of pages ({:.1} MiB on the wire), {:.0} bytes a record on average, {} at most",
            self.records,
            self.pages,
            mib(self.bytes_in),
            mib(n.bytes_wire),
            self.rates.average_record_bytes,
            self.largest_record_bytes
        )?;
        writeln!(
            f,
            "  {} retries ({:.1} s waiting), {} rate-limit waits ({:.1} s)",
            self.retries, n.retry_wait_seconds, n.rate_limit_waits, n.rate_limit_wait_seconds
        )?;
        writeln!(
            f,
            "  {:.1} MiB of JSON Lines -> {:.1} MiB {} (ratio {ratio:.1}) in {} part{}",
            mib(self.bytes_uncompressed),
            mib(self.bytes_written),
            match self.compression {
                crate::compress::Compression::None => "uncompressed",
                c => c.name(),
            },
            self.parts,
            if self.parts == 1 { "" } else { "s" }
        )?;
        let rss = self
            .peak_rss_bytes
            .map_or("unknown".to_owned(), |b| format!("{:.1} MiB", mib(b)));
        let cpu = match (self.cpu.user_seconds, self.cpu.system_seconds) {
            (Some(user), Some(system)) => format!(", {user:.2} s user + {system:.2} s system CPU"),
            _ => String::new(),
        };
        write!(
            f,
            "  {:.2} s wall ({:.0} MB/s of JSON Lines, {:.0} records/s){cpu}, peak RSS {rss} (budget {:.1} MiB)",
            self.wall_seconds,
            self.rates.bytes_uncompressed_per_second / 1e6,
            self.rates.records_per_second,
            mib(self.memory.budget_bytes),
        )?;
        if let Some(sha256) = &self.sha256 {
            write!(f, "\n  sha256 {sha256}")?;
        }
        if let Some(manifest) = &self.manifest {
            write!(f, "\n  manifest {manifest}")?;
        }
        if let Some(inc) = &self.incremental {
            let shown = |v: &Option<crate::incremental::CursorValue>| {
                v.as_ref()
                    .map_or_else(|| "none".to_owned(), ToString::to_string)
            };
            write!(
                f,
                "\n  incremental: asked from {}={}, highest {} {}, next cursor {}",
                inc.param.as_deref().unwrap_or("{incremental_since}"),
                inc.since,
                inc.field,
                shown(&inc.high_water),
                shown(&inc.cursor),
            )?;
            if inc.records_without_value > 0 {
                write!(f, " ({} records without one)", inc.records_without_value)?;
            }
        }
        match &self.drift {
            Some(drift) if drift.drifted() => {
                write!(
                    f,
                    "\nDRIFT since the run of {} ({} change{} past the [drift] thresholds):",
                    drift.previous_ingest_date,
                    drift.changes.len(),
                    if drift.changes.len() == 1 { "" } else { "s" }
                )?;
                for change in &drift.changes {
                    write!(f, "\n  - {change}")?;
                }
                Ok(())
            }
            Some(drift) => write!(
                f,
                "\n  no drift since the run of {}",
                drift.previous_ingest_date
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn sets_one_malloc_arena_unless_the_environment_chose() {
        let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some();
        assert_eq!(use_one_malloc_arena(), !chosen);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn reads_cpu_time_and_it_grows_with_work() {
        let before = CpuTimes::of_this_process();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = CpuTimes::of_this_process();
        let (b, a) = (before.user_seconds.unwrap(), after.user_seconds.unwrap());
        assert!(a > b, "{b} -> {a}");
        assert!(after.system_seconds.unwrap() >= 0.0);
    }

    #[test]
    fn rates_are_zero_rather_than_infinite_when_nothing_was_written() {
        let mut report = RunReport {
            status: RunStatus::Complete,
            checkpoint: None,
            records: 0,
            pages: 1,
            retries: 0,
            bytes_in: 10,
            bytes_uncompressed: 0,
            bytes_written: 0,
            compression: crate::compress::Compression::Gzip,
            parts: 0,
            objects: Vec::new(),
            object_details: Vec::new(),
            stale_objects_deleted: Vec::new(),
            partitions: None,
            e_tag: None,
            sha256: None,
            manifest: None,
            drift: None,
            incremental: None,
            peak_rss_bytes: None,
            wall_seconds: 0.0,
            largest_record_bytes: 0,
            cpu: CpuTimes::default(),
            rates: Rates::default(),
            ingest_date: "2026-01-01".into(),
            ingest_ts: "2026-01-01T00:00:00.000Z".into(),
            vars: Default::default(),
            network: NetworkReport {
                bytes_wire: 0,
                retry_wait_seconds: 0.0,
                rate_limit_waits: 0,
                rate_limit_wait_seconds: 0.0,
            },
            memory: MemorySettings::default(),
        };
        assert_eq!(Rates::of(&report), Rates::default());
        report.records = 4;
        report.bytes_uncompressed = 400;
        report.bytes_written = 100;
        report.wall_seconds = 2.0;
        let rates = Rates::of(&report);
        assert_eq!(rates.records_per_second, 2.0);
        assert_eq!(rates.bytes_uncompressed_per_second, 200.0);
        assert_eq!(rates.compression_ratio, 4.0);
        assert_eq!(rates.average_record_bytes, 100.0);
        report.rates = rates;
        let text = report.to_string();
        assert!(text.contains("100 bytes a record on average"), "{text}");
    }

    #[test]
    fn the_budget_adds_up_each_stage() {
        let m = MemorySettings {
            part_size_bytes: 5 << 20,
            max_parts_in_flight: 2,
            chunk_bytes: 256 << 10,
            chunk_queue: 1,
            compression_threads: 2,
            max_page_bytes: u64::MAX,
            largest_page_bytes: 0,
            concurrency: 4,
            page_buffer_bytes: 256 << 10,
            max_record_bytes: 1 << 20,
            open_streams: 1,
            budget_bytes: 0,
        };
        let expected = (4 * (256 << 10))
            + (2 * (1 << 20) + (64 << 10))
            + 7 * (256 << 10)
            + 3 * 2 * (5 << 20)
            + BASE_MEMORY_BYTES;
        assert_eq!(m.budget(), expected);
        // Nothing overflows with limits switched off.
        let huge = MemorySettings {
            max_record_bytes: u64::MAX,
            ..m
        };
        assert_eq!(huge.budget(), u64::MAX);
    }

    #[test]
    fn reads_peak_rss() {
        let rss = peak_rss_bytes().unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_current_rss_and_it_is_at_most_the_peak() {
        let now = current_rss_bytes().unwrap();
        let peak = peak_rss_bytes().unwrap();
        assert!(now > 1024 * 1024, "{now}");
        // Both in KiB from the kernel, the peak read after: never below.
        assert!(now <= peak, "{now} > {peak}");
    }
}
