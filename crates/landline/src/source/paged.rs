//! [`Source`]: a paged source of records that is not (or not only) the pipeline file's HTTP
//! API — a database cursor, a queue, another SDK — run through the same transform,
//! compression, multipart upload and checkpoints by
//! [`pipeline::run_source`](crate::pipeline::run_source).
//!
//! A source hands over one [`Page`] of records at a time and says where it stands after it
//! ([`Source::position`]), as a value a checkpoint can hold. A run that stops (a time limit,
//! a kill) is continued by another process: it builds the same source, moves it to the
//! checkpoint's position ([`Source::resume_at`]), and the pages after it land in the same
//! upload and the same gzip member.
//!
//! [`HttpPages`] is the pipeline's own HTTP API as a `Source`: the same fetching, paging,
//! retries and rate limits as [`pipeline::run`](crate::pipeline::run), with each page
//! collected whole, for code that wants to look at or filter the records before they land.
//! `run` itself streams pages straight into the encoder and never holds one whole.
//!
//! Memory: a page is held whole, twice at most (the one being written and the one being
//! fetched); a source decides its own page size.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::paginate::PagingState;
use super::{HttpSource, SourceError};
use crate::checkpoint::Ledger;
use crate::compress::CompressError;
use crate::encode::LineOutput;
use crate::pages::{self, PageOutput, Processed, Processor};
use crate::pipeline::RunError;
use crate::pointer::JsonPointer;
use crate::report::Progress;
use crate::source::page::Paths;
use crate::transform::Transform;

/// A paged source of JSON records.
///
/// Pages come in order; each is a batch of records ([`Page`]) that lands whole between two
/// checkpoints, so [`position`](Self::position) is only ever asked for between pages. An
/// empty page is allowed (paging goes on); `Ok(false)` ends the source.
///
/// # Example
///
/// A source of numbered records, 500 a page, whose position is the next number:
///
/// ```no_run
/// use landline::source::{Page, Source};
///
/// struct Numbers {
///     next: u64,
///     end: u64,
/// }
///
/// impl Source for Numbers {
///     type Position = u64;
///     type Error = std::io::Error;
///
///     fn position(&self) -> u64 {
///         self.next
///     }
///
///     fn resume_at(&mut self, position: u64) -> Result<(), std::io::Error> {
///         self.next = position;
///         Ok(())
///     }
///
///     async fn fetch_next(&mut self, page: &mut Page) -> Result<bool, std::io::Error> {
///         if self.next >= self.end {
///             return Ok(false);
///         }
///         let last = (self.next + 500).min(self.end);
///         for id in self.next..last {
///             page.push(&serde_json::json!({ "id": id, "name": format!("n{id}") }))?;
///         }
///         self.next = last;
///         Ok(true)
///     }
/// }
///
/// # async fn example(pipeline: &landline::Pipeline) -> Result<(), Box<dyn std::error::Error>> {
/// let source = Numbers { next: 0, end: 1_000_000 };
/// let options = landline::RunOptions {
///     store_env: std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).collect(),
///     ..Default::default()
/// };
/// let report = landline::pipeline::run_source(pipeline, source, options, std::future::pending()).await?;
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
pub trait Source: Send {
    /// Where the source stands between two pages: what a checkpoint holds (as JSON, under
    /// `position.library`) and a later process gives back to
    /// [`resume_at`](Self::resume_at). Keep it small; it is written after every part.
    type Position: Serialize + DeserializeOwned + Send + 'static;
    /// Why a page could not be fetched. A [`SourceError`] is reported as it is; any other
    /// error as [`SourceError::Library`], with the page number.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The position after the last page fetched (before the first: the start).
    fn position(&self) -> Self::Position;

    /// Moves to `position`, a checkpoint's, before the first [`fetch_next`](Self::fetch_next).
    fn resume_at(&mut self, position: Self::Position) -> Result<(), Self::Error>;

    /// Fills `page` (empty when called) with the next page's records; `Ok(false)` once
    /// there are no more pages.
    fn fetch_next(
        &mut self,
        page: &mut Page,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// One page of records, as JSON text: each record an object, one after the other.
///
/// Records are checked when they are written, not here: a record that is not valid JSON, or
/// not an object, fails the run with its page and index. The buffer is reused from page to
/// page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Page {
    /// The records' text, each followed by a newline.
    text: Vec<u8>,
    /// The end of each record's text (before its newline) in `text`.
    ends: Vec<usize>,
}

impl Page {
    /// Adds a record given as JSON text (one object).
    pub fn push_json(&mut self, record: &str) {
        self.text.extend_from_slice(record.as_bytes());
        self.end_record();
    }

    /// Adds a record serialised with serde_json (a struct, a map, a `serde_json::Value`).
    pub fn push<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<(), serde_json::Error> {
        let start = self.text.len();
        if let Err(e) = serde_json::to_writer(&mut self.text, record) {
            self.text.truncate(start);
            return Err(e);
        }
        self.end_record();
        Ok(())
    }

    fn end_record(&mut self) {
        self.ends.push(self.text.len());
        self.text.push(b'\n');
    }

    /// Records in the page.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the page has no records.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of JSON text in the page.
    pub fn bytes(&self) -> u64 {
        (self.text.len() - self.ends.len()) as u64
    }

    /// Each record's JSON text, in order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|end| end + 1));
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.text[start..end])
    }

    /// Empties the page, keeping its buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }
}

/// The pipeline's HTTP API as a [`Source`]: pages fetched ahead and in parallel as
/// `landline run` fetches them (retries, rate limits, the loop guard), each collected whole
/// into a [`Page`] with its records as the API sent them. Its position is the paging state a
/// `landline run` checkpoint holds.
pub struct HttpPages {
    source: HttpSource,
    records: JsonPointer,
    position: PagingState,
    /// Set by the first fetch.
    running: Option<Running>,
}

struct Running {
    pages: mpsc::Receiver<(u64, Page)>,
    /// Emptied pages back to the collector, to reuse their buffers.
    recycle: std::sync::mpsc::Sender<Page>,
    ledger: Arc<Ledger>,
    drive: JoinHandle<Result<(), RunError>>,
    processed: oneshot::Receiver<Result<Processed, RunError>>,
    done: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Its page tasks go with it.
        self.drive.abort();
    }
}

impl std::fmt::Debug for HttpPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPages")
            .field("source", &self.source)
            .field("records", &self.records.to_string())
            .field("position", &self.position)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl HttpPages {
    /// The pages of `source`, records at `records` in each body, from the first page.
    pub fn new(source: HttpSource, records: JsonPointer) -> Self {
        HttpPages {
            position: source.paginator().state(),
            source,
            records,
            running: None,
        }
    }

    /// The source it fetches from (its counters, its settings).
    pub fn source(&self) -> &HttpSource {
        &self.source
    }

    fn start(&mut self) -> Result<&mut Running, SourceError> {
        let pagination = |e| SourceError::Pagination {
            page: self.position.pages,
            url: self.source.config().redactor.url(&self.source.config().url),
            source: e,
        };
        let mut paginator = self
            .source
            .resume_paginator(self.position.clone())
            .map_err(pagination)?;
        let first_number = self.position.pages + 1;
        let first = paginator.next_url().map_err(pagination)?;
        let ledger = Arc::new(Ledger::with_seen(self.position.seen.clone()));
        let (pages_tx, pages_rx) = mpsc::channel(1);
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let config = self.source.config();
        let processor = Processor {
            transform: Arc::new(Transform::identity()),
            encoder: Collector {
                page: Page::default(),
                pages: pages_tx,
                recycled: recycle_rx,
            },
            paths: Paths {
                records: self.records.clone(),
                cursor: config.body_pointer().cloned(),
                error: config.error.clone(),
            },
            source: self.source.clone(),
            progress: Arc::new(Progress::default()),
            events: events_tx,
            ledger: Some(Arc::clone(&ledger)),
            mark_pages: true,
        };
        let (feeds_tx, feeds_rx) = mpsc::channel(1);
        let (done_tx, done_rx) = oneshot::channel();
        let before = Processed {
            records: self.position.records,
            pages: self.position.pages,
            ..Processed::default()
        };
        std::thread::Builder::new()
            .name("landline-http-pages".into())
            .spawn(move || {
                // The collector goes before the outcome is told: its sender closes the
                // page channel, which is how the last fetch learns the pages have ended.
                let outcome = pages::process(processor, feeds_rx, before).map(|(_, done)| done);
                let _ = done_tx.send(outcome);
            })
            .map_err(|e| SourceError::Stopped(format!("starting the page processor: {e}")))?;
        let source = self.source.clone();
        let drive_ledger = Arc::clone(&ledger);
        let drive = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            let first = first.map(|url| {
                (
                    first_number,
                    url.clone(),
                    source.spawn_page(first_number, url, &mut tasks),
                )
            });
            pages::drive(
                &source,
                paginator,
                first,
                &mut tasks,
                feeds_tx,
                events_rx,
                pages::Stops {
                    ledger: Some(&drive_ledger),
                    clock: None,
                },
            )
            .await
            .map(|_| ())
        });
        Ok(self.running.insert(Running {
            pages: pages_rx,
            recycle: recycle_tx,
            ledger,
            drive,
            processed: done_rx,
            done: false,
        }))
    }
}

impl Source for HttpPages {
    type Position = PagingState;
    type Error = SourceError;

    fn position(&self) -> PagingState {
        self.position.clone()
    }

    fn resume_at(&mut self, position: PagingState) -> Result<(), SourceError> {
        // Checked here rather than at the first fetch, so a checkpoint that does not fit
        // this source's pagination is refused before anything is written.
        self.source
            .resume_paginator(position.clone())
            .map_err(|e| SourceError::Pagination {
                page: position.pages,
                url: self.source.config().redactor.url(&self.source.config().url),
                source: e,
            })?;
        self.position = position;
        self.running = None;
        Ok(())
    }

    async fn fetch_next(&mut self, page: &mut Page) -> Result<bool, SourceError> {
        let running = match self.running.take() {
            Some(running) => self.running.insert(running),
            None => self.start()?,
        };
        if running.done {
            return Ok(false);
        }
        match running.pages.recv().await {
            Some((number, mut fetched)) => {
                std::mem::swap(page, &mut fetched);
                fetched.clear();
                let _ = running.recycle.send(fetched);
                let position = running.ledger.take(number).await.position;
                if let Some(paging) = position.paging() {
                    self.position = paging.clone();
                }
                Ok(true)
            }
            None => {
                running.done = true;
                let driven = (&mut running.drive)
                    .await
                    .unwrap_or_else(|e| Err(RunError::Internal(format!("paging task: {e}"))));
                let processed = (&mut running.processed)
                    .await
                    .unwrap_or_else(|_| Err(RunError::Internal("the page processor died".into())));
                // The processor's own error says more than paging's view of it.
                processed.map_err(source_error)?;
                driven.map_err(source_error)?;
                Ok(false)
            }
        }
    }
}

fn source_error(e: RunError) -> SourceError {
    match e {
        RunError::Source(e) => e,
        other => SourceError::Stopped(other.to_string()),
    }
}

/// The processor's output for [`HttpPages`]: lines into a page, handed over at its end.
struct Collector {
    page: Page,
    pages: mpsc::Sender<(u64, Page)>,
    recycled: std::sync::mpsc::Receiver<Page>,
}

impl LineOutput for Collector {
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.page.text
    }
    fn end_line(&mut self) -> Result<(), CompressError> {
        // The identity transform ends each line with its newline.
        self.page.ends.push(self.page.text.len() - 1);
        Ok(())
    }
}

impl PageOutput for Collector {
    fn end_page(&mut self, page: u64, _mark: bool) -> Result<(), CompressError> {
        let next = self.recycled.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.page, next);
        self.pages
            .blocking_send((page, full))
            .map_err(|_| CompressError::OutputClosed)
    }
    fn bytes(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_keeps_each_record_apart_and_reuses_its_buffers() {
        let mut page = Page::default();
        page.push_json(r#"{"a":1}"#);
        page.push(&serde_json::json!({"b": "x\ny"})).unwrap();
        page.push_json("{\n  \"c\": 3\n}");
        let records: Vec<&[u8]> = page.records().collect();
        assert_eq!(
            records,
            [&br#"{"a":1}"#[..], br#"{"b":"x\ny"}"#, b"{\n  \"c\": 3\n}"]
        );
        assert_eq!(page.len(), 3);
        assert_eq!(page.bytes(), 7 + 12 + 12);
        let capacity = page.text.capacity();
        page.clear();
        assert!(page.is_empty());
        assert_eq!(page.records().count(), 0);
        assert_eq!(page.text.capacity(), capacity);
    }

    #[test]
    fn a_record_that_does_not_serialise_leaves_nothing() {
        let mut page = Page::default();
        page.push_json(r#"{"a":1}"#);
        let mut bad = std::collections::BTreeMap::new();
        bad.insert(vec![1u8], 2);
        assert!(page.push(&bad).is_err());
        assert_eq!(page.len(), 1);
        assert_eq!(page.records().collect::<Vec<_>>(), [&br#"{"a":1}"#[..]]);
    }
}
