//! The page loop: pages fetched ahead, in parallel where the API allows, and processed
//! strictly in order as their bodies stream in.
//!
//! ```text
//!   drive (async)                          process (its own thread)
//!   ─────────────                          ────────────────────────
//!   paginator ─ spawn page tasks ─┐        for each page, in order:
//!     ▲                           │          body events ─▶ decoder ─▶ splitter ─▶ transform
//!     │                           ▼                                                 │ lines
//!     │               page k: chunks ──────▶ (the page being processed)             ▼
//!     │               page k+1: chunks (buffered, bounded)                        encoder
//!     └──── early cursor / page done ◀──────┘
//! ```
//!
//! [`drive`] owns the [`Paginator`]: it starts page 1, and starts the next page as soon as its
//! URL is known: for `offset` (with a page size) and `page` pagination, up to `concurrency`
//! pages ahead, since no request depends on an answer; for `token`, `next_url` and
//! `link_header`, as soon as the cursor has been read (from a header, or from the body before
//! the records end). A page is handed to [`process`] only once the page before it is done
//! and paging goes on, so pages fetched past the end (an empty or short page, the total
//! reached) are dropped, never written.
//!
//! [`process`] reads each page's body off its channel ([`crate::source::decode`]), decoding
//! it, splits it into records as it arrives ([`crate::source::page`]) and writes them through
//! the transform into the encoder. A body that breaks off is fetched again by its task; the
//! splitter then checks and skips the records already written.
//!
//! Memory: `concurrency` × `page_buffer_bytes` of bodies as received (one page ahead for the
//! cursor kinds), plus the splitter's window (see [`crate::source::page`]).

use std::collections::VecDeque;
use std::io::Read as _;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use url::Url;

use crate::checkpoint::{Counters, Ledger};
use crate::compress::CompressError;
use crate::encode::{LineEncoder, LineOutput};
use crate::incremental::HighWater;
use crate::pipeline::RunError;
use crate::report::Progress;
use crate::source::decode::{self, BodyEnd, BodyReader, Encoding};
use crate::source::page::{PageError, PageSplitter, Paths, RecordSink as _};
use crate::source::paginate::url_hash;
use crate::source::{
    BodyEvent, HttpSource, Page, PageOutcome, Pagination, PaginationError, Paginator, RetryCause,
    SourceError, Verdict,
};
use crate::transform::{FieldInventory, RecordWriter, Transform};

/// Decoded bytes read off a body at a time, between looks at the splitter.
const READ_BYTES: u64 = 64 * 1024;

/// One page handed to the processor: its number, URL and body channel.
#[derive(Debug)]
pub(crate) struct Feed {
    page: u64,
    url: Url,
    body: mpsc::Receiver<BodyEvent>,
}

/// What the processor tells [`drive`].
#[derive(Debug)]
pub(crate) enum Event {
    /// The page's cursor is known before the page is done.
    Early {
        page: u64,
        body_next: Option<Box<RawValue>>,
        link_next: Option<String>,
    },
    /// The page is done: every record is written.
    Done {
        page: u64,
        records: u64,
        body_next: Option<Box<RawValue>>,
        link_next: Option<String>,
        total: Option<u64>,
    },
}

/// Where the processor's lines go: the run's [`LineEncoder`], or the page collector of
/// [`crate::source::HttpPages`].
pub(crate) trait PageOutput: LineOutput {
    /// Page `page` is done (see [`LineEncoder::end_page`]; `mark` when checkpoints need it).
    fn end_page(&mut self, page: u64, mark: bool) -> Result<(), CompressError>;
    /// Uncompressed bytes written so far, for the progress display.
    fn bytes(&self) -> u64;
}

impl PageOutput for LineEncoder {
    fn end_page(&mut self, page: u64, mark: bool) -> Result<(), CompressError> {
        LineEncoder::end_page(self, page, mark)
    }
    fn bytes(&self) -> u64 {
        LineEncoder::bytes(self)
    }
}

/// What the processor needs for every page.
pub(crate) struct Processor<O = LineEncoder> {
    pub(crate) transform: Arc<Transform>,
    pub(crate) encoder: O,
    pub(crate) paths: Paths,
    pub(crate) source: HttpSource,
    pub(crate) progress: Arc<Progress>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    /// With checkpoints: where each page's counters go.
    pub(crate) ledger: Option<Arc<Ledger>>,
    /// Page ends are marked for the compressor (checkpoints inside one object).
    pub(crate) mark_pages: bool,
}

/// When a time-limited run that writes several objects stops: after the first page done
/// once the time left is less than three times the longest time between two pages (one
/// more page, and the open objects to complete).
#[derive(Debug)]
pub(crate) struct PageClock {
    limit: crate::upload::TimeLimit,
    last: std::time::Instant,
    longest: std::time::Duration,
}

impl PageClock {
    pub(crate) fn new(limit: crate::upload::TimeLimit) -> Self {
        PageClock {
            limit,
            last: std::time::Instant::now(),
            longest: std::time::Duration::ZERO,
        }
    }

    /// A page is done: whether to stop after it.
    pub(crate) fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        self.longest = self.longest.max(now - self.last);
        self.last = now;
        self.limit.started.elapsed() + 3 * self.longest >= self.limit.max
    }
}

/// Where [`drive`] leaves the paging state after each page (checkpoints), and when it
/// stops early (a time-limited run of several objects).
#[derive(Debug, Default)]
pub(crate) struct Stops<'a> {
    pub(crate) ledger: Option<&'a Ledger>,
    pub(crate) clock: Option<PageClock>,
}

/// Counters of the processed pages.
#[derive(Debug, Default, Clone)]
pub(crate) struct Processed {
    pub(crate) records: u64,
    pub(crate) pages: u64,
    /// Body bytes, decoded.
    pub(crate) bytes_decoded: u64,
    pub(crate) largest_page: u64,
    /// The widest record's line, its newline not counted.
    pub(crate) largest_record: u64,
    /// The records' fields, when they are counted (for the manifest).
    pub(crate) fields: Option<FieldInventory>,
    /// The incremental cursor field's highest value, when the source is incremental.
    pub(crate) high_water: Option<HighWater>,
}

impl Processed {
    /// Where a run starts: after `counters`, with the fields counted so far (`None`: the
    /// fields are not counted).
    pub(crate) fn after(
        c: Counters,
        fields: Option<FieldInventory>,
        high_water: Option<HighWater>,
    ) -> Self {
        Processed {
            records: c.records,
            pages: c.pages,
            bytes_decoded: c.bytes_in,
            largest_page: c.largest_page,
            largest_record: c.largest_record,
            fields,
            high_water,
        }
    }

    /// Hands page `page`'s state to the checkpoints' ledger.
    fn record_in(&self, ledger: &Ledger, page: u64) {
        if let Some(fields) = &self.fields {
            ledger.fields(page, fields.snapshot());
        }
        if let Some(high_water) = &self.high_water {
            ledger.high_water(page, high_water.mark());
        }
        ledger.counters(Counters {
            page,
            records: self.records,
            pages: self.pages,
            bytes_in: self.bytes_decoded,
            largest_page: self.largest_page,
            largest_record: self.largest_record,
        });
    }
}

/// What the page writer of a library [`Source`](crate::source::Source) needs.
pub(crate) struct PageWriter {
    pub(crate) transform: Arc<Transform>,
    pub(crate) encoder: crate::partition::RunOutput,
    pub(crate) progress: Arc<Progress>,
    /// With checkpoints: where each page's counters go.
    pub(crate) ledger: Option<Arc<Ledger>>,
    /// Page ends are marked for the compressor (checkpoints inside one object).
    pub(crate) mark_pages: bool,
}

/// Writes a library source's pages, in order, through the transform into the encoder until
/// the feed ends; gives each emptied page back on `recycle` and, at the end, the encoder.
pub(crate) fn write_pages(
    mut w: PageWriter,
    mut pages: mpsc::Receiver<(u64, Page)>,
    recycle: std::sync::mpsc::Sender<Page>,
    before: Processed,
) -> Result<(crate::partition::RunOutput, Processed), RunError> {
    let mut done = before;
    let mut fields = done.fields.take();
    let mut high_water = done.high_water.take();
    let mut writer = RecordWriter::new(&w.transform, &mut w.encoder)
        .with_inventory(fields.as_mut())
        .with_high_water(high_water.as_mut());
    while let Some((number, mut page)) = pages.blocking_recv() {
        for (index, record) in page.records().enumerate() {
            write_record(&mut writer, index as u64, record).map_err(|source| match source {
                PageError::Output(e) => RunError::Compress(e),
                source => RunError::Source(SourceError::LibraryPage {
                    page: number,
                    source,
                }),
            })?;
        }
        let records = page.len() as u64;
        let bytes = page.bytes();
        done.records += records;
        done.pages += 1;
        done.bytes_decoded += bytes;
        done.largest_page = done.largest_page.max(bytes);
        done.largest_record = done.largest_record.max(writer.largest() as u64);
        if let Some(ledger) = &w.ledger {
            if let Some(fields) = writer.inventory() {
                ledger.fields(number, fields.snapshot());
            }
            if let Some(high_water) = writer.high_water() {
                ledger.high_water(number, high_water.mark());
            }
            done.record_in(ledger, number);
        }
        let out = writer.output();
        out.end_page(number, w.mark_pages)
            .map_err(RunError::Compress)?;
        w.progress.page(records, bytes, out.bytes());
        page.clear();
        let _ = recycle.send(page);
    }
    drop(writer);
    done.fields = fields;
    done.high_water = high_water;
    Ok((w.encoder, done))
}

/// Writes one record of a library source's page: a JSON object, nothing after it.
pub(crate) fn write_record<O: LineOutput>(
    writer: &mut RecordWriter<'_, O>,
    index: u64,
    record: &[u8],
) -> Result<(), PageError> {
    let mut de = serde_json::Deserializer::from_slice(record);
    let json_error = |e: serde_json::Error| PageError::RecordJson {
        index,
        line: e.line(),
        column: e.column(),
        offset: 0,
        message: e.to_string(),
    };
    match writer.record(index, &mut de) {
        Ok(_) => {}
        Err(e) => return Err(writer.take_error().unwrap_or_else(|| json_error(e))),
    }
    de.end().map_err(json_error)
}

/// Processes the pages fed, in order, until the feed ends; gives back the encoder.
pub(crate) fn process<O: PageOutput>(
    mut p: Processor<O>,
    mut feeds: mpsc::Receiver<Feed>,
    before: Processed,
) -> Result<(O, Processed), RunError> {
    let mut done = before;
    let mut window = Vec::new();
    while let Some(feed) = feeds.blocking_recv() {
        let mut splitter = PageSplitter::new(p.paths.clone(), p.transform.max_record_bytes());
        std::mem::swap(splitter.window(), &mut window);
        let result = page(&mut p, feed, &mut splitter, &mut done);
        std::mem::swap(splitter.window(), &mut window);
        window.clear();
        result?;
    }
    Ok((p.encoder, done))
}

/// Processes one page, over as many attempts at its body as it takes.
fn page<O: PageOutput>(
    p: &mut Processor<O>,
    mut feed: Feed,
    splitter: &mut PageSplitter,
    done: &mut Processed,
) -> Result<(), RunError> {
    let config = p.source.config();
    let shown_url = config.redactor.url(&feed.url);
    let page_no = feed.page;
    let page_error = |source: PageError| match source {
        PageError::Output(e) => RunError::Compress(e),
        source => RunError::Source(SourceError::Page {
            page: page_no,
            url: shown_url.clone(),
            source,
        }),
    };
    let mut attempts = 0;
    loop {
        let (encoding, link_next, total) = next_start(&mut feed)?;
        attempts += 1;
        if attempts > 1 {
            splitter.restart();
        } else if config.pagination == Pagination::LinkHeader {
            let _ = p.events.send(Event::Early {
                page: feed.page,
                body_next: None,
                link_next: link_next.clone(),
            });
        }
        let mut writer = RecordWriter::new(&p.transform, &mut p.encoder)
            .with_inventory(done.fields.as_mut())
            .with_high_water(done.high_water.as_mut());
        let read = attempt(
            &mut feed,
            encoding,
            (&p.source, &p.events),
            splitter,
            &mut writer,
        )?;
        let verdict = match read {
            Attempt::Broken(cause) => {
                tracing::debug!(page = feed.page, %cause, "body broke off; it is fetched again");
                continue;
            }
            Attempt::Undecodable(verdict, cause) => {
                let cause = format!("decoding the {} body: {cause}", encoding.name());
                let _ = verdict.send(Verdict::Retry(RetryCause::Decode(cause)));
                continue;
            }
            Attempt::Refused(e, verdict) => {
                if let Some(verdict) = verdict {
                    let _ = verdict.send(Verdict::Done);
                }
                return Err(page_error(e));
            }
            Attempt::Whole(verdict) => verdict,
        };
        let scan = match splitter.finish(&mut writer) {
            Ok(scan) => scan,
            Err(e) => {
                let _ = verdict.send(Verdict::Done);
                return Err(page_error(e));
            }
        };
        if let Some(error) = scan.error {
            let message: String = error.get().chars().take(200).collect();
            let _ = verdict.send(Verdict::Retry(RetryCause::ApiError(message)));
            continue;
        }
        let _ = verdict.send(Verdict::Done);
        let bytes = splitter.consumed();
        tracing::debug!(
            page = feed.page,
            records = scan.records,
            bytes,
            attempts,
            "page written"
        );
        done.records += scan.records;
        done.pages += 1;
        done.bytes_decoded += bytes;
        done.largest_page = done.largest_page.max(bytes);
        done.largest_record = done.largest_record.max(writer.largest() as u64);
        drop(writer);
        if let Some(ledger) = &p.ledger {
            done.record_in(ledger, feed.page);
        }
        p.encoder
            .end_page(feed.page, p.mark_pages)
            .map_err(RunError::Compress)?;
        p.progress.page(scan.records, bytes, p.encoder.bytes());
        // Offset and page pagination read the total where the others read the cursor.
        let (body_next, total) = match &config.pagination {
            Pagination::Offset { .. } | Pagination::Page { .. } => (
                None,
                total.or_else(|| scan.next.as_deref().and_then(total_of)),
            ),
            _ => (scan.next, total),
        };
        let _ = p.events.send(Event::Done {
            page: feed.page,
            records: scan.records,
            body_next,
            link_next,
            total,
        });
        return Ok(());
    }
}

/// Waits for the next attempt's answer: its encoding, `Link` next and total header.
fn next_start(feed: &mut Feed) -> Result<(Encoding, Option<String>, Option<u64>), RunError> {
    loop {
        match feed.body.blocking_recv() {
            Some(BodyEvent::Start {
                encoding,
                link_next,
                total,
                ..
            }) => return Ok((encoding, link_next, total)),
            Some(BodyEvent::Failed(e)) => return Err(e.into()),
            // Late pieces of an attempt already given up on.
            Some(BodyEvent::Chunk(..) | BodyEvent::Broken { .. }) => {}
            Some(BodyEvent::End(verdict)) => {
                let _ = verdict.send(Verdict::Done);
                return Err(RunError::Internal(format!(
                    "page {}: a body ended before it started",
                    feed.page
                )));
            }
            None => return Err(stopped(feed.page)),
        }
    }
}

/// How one attempt at a page's body ended.
enum Attempt {
    /// Read whole; the fetch task waits for the verdict.
    Whole(oneshot::Sender<Verdict>),
    /// Read whole, but it did not decode: to be fetched again.
    Undecodable(oneshot::Sender<Verdict>, String),
    /// It broke off; the fetch task fetches it again.
    Broken(String),
    /// The splitter refused it (the verdict is there if the body was whole).
    Refused(PageError, Option<oneshot::Sender<Verdict>>),
}

/// Reads one attempt's body, decoded, into the splitter; an early cursor goes to `events`.
fn attempt(
    feed: &mut Feed,
    encoding: Encoding,
    (source, events): (&HttpSource, &mpsc::UnboundedSender<Event>),
    splitter: &mut PageSplitter,
    writer: &mut RecordWriter<'_, impl LineOutput>,
) -> Result<Attempt, RunError> {
    let (page, url, body) = (feed.page, &feed.url, &mut feed.body);
    let config = source.config();
    let limit = config.max_page_bytes as u64;
    let mut end = None;
    let mut unread = 0;
    let read = {
        let mut reader = BodyReader::new(body, &mut end, &mut unread);
        let wire = std::cell::Cell::new(0u64);
        let mut decoded = 0u64;
        match decode::decoder(encoding, CountingReader(&mut reader, &wire)) {
            Err(e) => ReadStop::Undecodable(e.to_string()),
            Ok(mut decoder) => loop {
                let n = match std::io::Read::take(&mut decoder, READ_BYTES)
                    .read_to_end(splitter.window())
                {
                    Ok(0) => break ReadStop::Eof,
                    Ok(n) => n as u64,
                    Err(e) => break ReadStop::Undecodable(e.to_string()),
                };
                decoded += n;
                if decoded > limit {
                    let url = config.redactor.url(url);
                    return Err(RunError::Source(match encoding {
                        Encoding::Identity => SourceError::PageTooLarge {
                            page,
                            url,
                            limit: config.max_page_bytes,
                        },
                        _ => SourceError::DecodedTooLarge {
                            page,
                            url,
                            limit: config.max_page_bytes,
                            encoding: encoding.name(),
                            wire_bytes: wire.get(),
                        },
                    }));
                }
                if let Err(e) = splitter.feed(writer) {
                    break ReadStop::Refused(e);
                }
                if let Some(next) = splitter.take_new_cursor() {
                    let _ = events.send(Event::Early {
                        page,
                        body_next: Some(next.to_owned()),
                        link_next: None,
                    });
                }
            },
        }
    };
    // A decoder may stop at the end of its stream before the body's end is read: the body
    // must end there too.
    let end = match end {
        Some(end) => end,
        None => match drain(body) {
            (end @ BodyEnd::Complete(_), 0) if unread == 0 => end,
            (BodyEnd::Complete(verdict), _) if matches!(read, ReadStop::Eof) => {
                let cause = "it has bytes after the end of its stream".to_owned();
                return Ok(Attempt::Undecodable(verdict, cause));
            }
            (end, _) => end,
        },
    };
    Ok(match (read, end) {
        (_, BodyEnd::Failed(e)) => return Err(e.into()),
        (_, BodyEnd::Gone) => return Err(stopped(page)),
        (_, BodyEnd::Broken(cause)) => Attempt::Broken(cause),
        (ReadStop::Refused(e), BodyEnd::Complete(verdict)) => Attempt::Refused(e, Some(verdict)),
        (ReadStop::Undecodable(cause), BodyEnd::Complete(verdict)) => {
            Attempt::Undecodable(verdict, cause)
        }
        (ReadStop::Eof, BodyEnd::Complete(verdict)) => Attempt::Whole(verdict),
    })
}

/// How reading one attempt's body through its decoder stopped.
enum ReadStop {
    /// The decoder reached the end of the body (or of its stream).
    Eof,
    /// The body did not decode, or did not arrive whole (the [`BodyEnd`] says which).
    Undecodable(String),
    /// The splitter refused the body.
    Refused(PageError),
}

/// A [`BodyReader`] that notes how many bytes it has given.
struct CountingReader<'r, 'a>(&'r mut BodyReader<'a>, &'r std::cell::Cell<u64>);

impl std::io::Read for CountingReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.set(self.0.wire_bytes());
        Ok(n)
    }
}

impl std::io::BufRead for CountingReader<'_, '_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.1.set(self.0.wire_bytes());
        self.0.fill_buf()
    }
    fn consume(&mut self, amount: usize) {
        self.0.consume(amount);
    }
}

/// Reads and drops the rest of an attempt's body events: how it ended, and the bytes dropped.
fn drain(body: &mut mpsc::Receiver<BodyEvent>) -> (BodyEnd, u64) {
    let mut dropped = 0;
    loop {
        let end = match body.blocking_recv() {
            Some(BodyEvent::Chunk(chunk, _)) => {
                dropped += chunk.len() as u64;
                continue;
            }
            Some(BodyEvent::End(verdict)) => BodyEnd::Complete(verdict),
            Some(BodyEvent::Broken { cause }) => BodyEnd::Broken(cause),
            Some(BodyEvent::Failed(e)) => BodyEnd::Failed(e),
            Some(BodyEvent::Start { .. }) | None => BodyEnd::Gone,
        };
        return (end, dropped);
    }
}

fn stopped(page: u64) -> RunError {
    RunError::Internal(format!("the fetch of page {page} stopped"))
}

/// A total record count: a non-negative integer, or a string of one.
fn total_of(raw: &RawValue) -> Option<u64> {
    let text = raw.get().trim();
    text.parse::<u64>().ok().or_else(|| {
        serde_json::from_str::<String>(text)
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

/// Drives paging: starts page tasks ahead and feeds the processor in order, until paging
/// ends. `first` is page 1, already started.
pub(crate) async fn drive(
    source: &HttpSource,
    mut paginator: Paginator,
    first: Option<(u64, Url, mpsc::Receiver<BodyEvent>)>,
    tasks: &mut JoinSet<()>,
    feeds: mpsc::Sender<Feed>,
    mut events: mpsc::UnboundedReceiver<Event>,
    stops: Stops<'_>,
) -> Result<Option<u64>, RunError> {
    let Stops { ledger, mut clock } = stops;
    let note = |page: u64, url: &Url, paginator: &Paginator| {
        if let Some(ledger) = ledger {
            ledger.paging(page, paginator.position(), url_hash(url));
        }
    };
    let Some((first_page, first_url, first_body)) = first else {
        return Ok(None);
    };
    let config = source.config();
    let parallel = paginator.is_parallel() && config.concurrency > 1;
    let pagination_error = |page: u64, url: &Url, source: PaginationError| {
        RunError::Source(SourceError::Pagination {
            page,
            url: config.redactor.url(url),
            source,
        })
    };
    let feed = |page: u64, url: Url, body| {
        let feeds = feeds.clone();
        async move {
            feeds
                .send(Feed { page, url, body })
                .await
                .map_err(|_| RunError::Internal("the page processor stopped".into()))
        }
    };
    // Pages started but not handed to the processor yet, in order.
    let mut ahead: VecDeque<(u64, Url, mpsc::Receiver<BodyEvent>)> = VecDeque::new();
    let mut current = (first_page, first_url.clone());
    feed(first_page, first_url, first_body).await?;
    let mut started = first_page;
    // Sequential kinds: the cursor the next page was started from, before the page was done.
    let mut early: Option<String> = None;
    // The total record count, once a page has told it: no page is started past it.
    let mut known_total: Option<u64> = None;
    loop {
        if parallel {
            while ahead.len() + 1 < config.concurrency {
                let past_total = known_total
                    .zip(paginator.records_before(started + 1))
                    .is_some_and(|(total, before)| before >= total);
                if past_total {
                    break;
                }
                let Some(url) = paginator.page_url(started + 1) else {
                    break;
                };
                started += 1;
                let body = source.spawn_page(started, url.clone(), tasks);
                ahead.push_back((started, url, body));
            }
        }
        let Some(event) = events.recv().await else {
            return Err(RunError::Internal("the page processor stopped".into()));
        };
        match event {
            Event::Early {
                page,
                body_next,
                link_next,
            } if !parallel && page == current.0 && early.is_none() => {
                let outcome = PageOutcome {
                    records: 0,
                    body_next: body_next.as_deref(),
                    link_next: link_next.as_deref(),
                    total: None,
                };
                paginator
                    .advance(&current.1, outcome)
                    .map_err(|e| pagination_error(page, &current.1, e))?;
                note(page, &current.1, &paginator);
                early = Some(cursor_text(body_next.as_deref(), link_next.as_deref()));
                if let Some(url) = paginator
                    .next_url()
                    .map_err(|e| pagination_error(page, &current.1, e))?
                {
                    started = page + 1;
                    let body = source.spawn_page(started, url.clone(), tasks);
                    ahead.push_back((started, url, body));
                }
            }
            Event::Early { .. } => {}
            Event::Done {
                page,
                records,
                body_next,
                link_next,
                total,
            } => {
                known_total = total.or(known_total);
                let (_, url) = &current;
                match early.take() {
                    Some(seen)
                        if seen != cursor_text(body_next.as_deref(), link_next.as_deref()) =>
                    {
                        return Err(RunError::Internal(format!(
                            "page {page}: its cursor changed between attempts at its body"
                        )));
                    }
                    Some(_) => {}
                    None => {
                        let outcome = PageOutcome {
                            records,
                            body_next: body_next.as_deref(),
                            link_next: link_next.as_deref(),
                            total,
                        };
                        paginator
                            .advance(url, outcome)
                            .map_err(|e| pagination_error(page, url, e))?;
                        note(page, url, &paginator);
                        let next = paginator
                            .next_url()
                            .map_err(|e| pagination_error(page, url, e))?;
                        match (next, parallel) {
                            (None, _) => return Ok(None),
                            (Some(next), true) => match ahead.front() {
                                Some((_, ahead_url, _)) if *ahead_url == next => {}
                                Some(_) => return Err(short_page(page, records)),
                                // None started ahead (a total that has not been reached).
                                None => {
                                    started = page + 1;
                                    let body = source.spawn_page(started, next.clone(), tasks);
                                    ahead.push_back((started, next, body));
                                }
                            },
                            (Some(next), false) => {
                                started = page + 1;
                                let body = source.spawn_page(started, next.clone(), tasks);
                                ahead.push_back((started, next, body));
                            }
                        }
                    }
                }
                // A time-limited run of several objects stops here, with every page fed so far
                // done: the pages started ahead are dropped, and fetched again on resume.
                if clock.as_mut().is_some_and(PageClock::due) {
                    tracing::info!(page, "time is nearly up: stopping after this page");
                    return Ok(Some(page));
                }
                let Some((page, url, body)) = ahead.pop_front() else {
                    return Ok(None);
                };
                current = (page, url.clone());
                feed(page, url, body).await?;
            }
        }
    }
}

/// The text of a cursor, to compare an early one with the final one.
fn cursor_text(body_next: Option<&RawValue>, link_next: Option<&str>) -> String {
    format!(
        "{}|{}",
        body_next.map_or("", RawValue::get),
        link_next.unwrap_or("")
    )
}

/// A page with more records than the page size: the pages fetched ahead are not the ones
/// that follow it.
fn short_page(page: u64, records: u64) -> RunError {
    RunError::Internal(format!(
        "page {page} returned {records} records, more than the page size, so the pages fetched ahead do not follow it; set [source] concurrency = 1 for this API"
    ))
}
