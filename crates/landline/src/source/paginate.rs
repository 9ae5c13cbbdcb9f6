//! Pagination: which URL to request next, from what the last page said.
//!
//! The cursor is explicit state ([`Cursor`]), not hidden in an iterator, so that a run can
//! report where it stopped and a later process can resume there: [`Paginator::state`] is a
//! snapshot as plain serialisable data ([`PagingState`]), and [`Paginator::resume`] continues
//! from one. The paginator also guards against the two ways paging goes wrong silently: a
//! cursor that repeats (a loop) and more pages than `max_pages`; both are errors, never a
//! quiet stop, and both guards carry over a resume.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use url::Url;

use super::link;
use crate::pointer::JsonPointer;

/// How pages are chained, from `[source.pagination]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// A token in the body, sent back in the query parameter `param`.
    Token {
        /// Where the token is in the body.
        next: JsonPointer,
        /// The query parameter that carries it.
        param: String,
    },
    /// A URL (absolute or relative) in the body.
    NextUrl {
        /// Where the URL is in the body.
        next: JsonPointer,
    },
    /// RFC 8288 `Link: <…>; rel="next"` response headers.
    LinkHeader,
    /// A record offset in `param`, advanced by the records each page returns.
    Offset {
        /// The offset parameter.
        param: String,
        /// The page-size parameter and its value, if the API takes one.
        limit: Option<(String, u64)>,
        /// The first offset.
        start: u64,
    },
    /// A page number in `param`.
    Page {
        /// The page-number parameter.
        param: String,
        /// The page-size parameter and its value, if the API takes one.
        limit: Option<(String, u64)>,
        /// The first page number.
        start: u64,
    },
    /// A single request.
    None,
}

impl Pagination {
    /// The body pointer this pagination reads the cursor from, if any.
    pub fn body_pointer(&self) -> Option<&JsonPointer> {
        match self {
            Pagination::Token { next, .. } | Pagination::NextUrl { next } => Some(next),
            _ => None,
        }
    }
}

/// Where paging stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Before the first page.
    Start,
    /// The next page's token.
    Token(String),
    /// The next page's URL.
    Url(Url),
    /// The next offset.
    Offset(u64),
    /// The next page number.
    Page(u64),
    /// No more pages.
    Done,
}

/// A [`Cursor`] as stored in a [`PagingState`]: the URL as text.
///
/// Its JSON form is `{"kind":"start"}`, `{"kind":"token","value":"abc"}`,
/// `{"kind":"url","value":"https://api.example/v?cursor=c2"}`, `{"kind":"offset","value":400}`,
/// `{"kind":"page","value":3}` or `{"kind":"done"}`; checkpoints depend on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "value",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum CursorState {
    /// Before the first page.
    Start,
    /// The next page's token.
    Token(String),
    /// The next page's URL, serialised.
    Url(String),
    /// The next offset.
    Offset(u64),
    /// The next page number.
    Page(u64),
    /// No more pages.
    Done,
}

impl CursorState {
    /// The kind's name, as in the JSON form: `start`, `token`, `url`, `offset`, `page`, `done`.
    pub fn kind(&self) -> &'static str {
        match self {
            CursorState::Start => "start",
            CursorState::Token(_) => "token",
            CursorState::Url(_) => "url",
            CursorState::Offset(_) => "offset",
            CursorState::Page(_) => "page",
            CursorState::Done => "done",
        }
    }
}

impl From<&Cursor> for CursorState {
    fn from(cursor: &Cursor) -> Self {
        match cursor {
            Cursor::Start => CursorState::Start,
            Cursor::Token(token) => CursorState::Token(token.clone()),
            Cursor::Url(url) => CursorState::Url(url.as_str().to_owned()),
            Cursor::Offset(n) => CursorState::Offset(*n),
            Cursor::Page(n) => CursorState::Page(*n),
            Cursor::Done => CursorState::Done,
        }
    }
}

/// Where paging stands, as plain data for a checkpoint: see [`Paginator::state`] and
/// [`Paginator::resume`].
///
/// Its JSON form (with `serde_json`) is, for example,
/// `{"cursor":{"kind":"offset","value":400},"pages":4,"records":400,"seen":["09ca188a4e26d435",…]}`:
/// `seen` holds 16-digit lowercase hexadecimal strings, not JSON numbers, since most of them
/// are above 2^53 and would not survive a reader that takes numbers as doubles (JavaScript,
/// jq 1.6). Unknown fields are refused, so that a checkpoint from a later format is not
/// half-read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingState {
    /// The cursor for the next page.
    pub cursor: CursorState,
    /// Pages done (advanced past); a resumed paginator continues the count, so `max_pages`
    /// holds across processes.
    pub pages: u64,
    /// Records in the pages done.
    pub records: u64,
    /// The loop guard: the XXH3-64 hashes of the URLs of the pages done, sorted ascending.
    #[serde(with = "url_hashes")]
    pub seen: Vec<u64>,
}

/// What a fetched page says about the next one.
#[derive(Debug, Clone, Copy)]
pub struct PageOutcome<'a> {
    /// Records in the page.
    pub records: u64,
    /// The value at the body cursor pointer, if present.
    pub body_next: Option<&'a RawValue>,
    /// The `rel="next"` target of the `Link` headers, if any.
    pub link_next: Option<&'a str>,
    /// The total record count the API gave (offset and page pagination), if any.
    pub total: Option<u64>,
}

/// Why paging cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PaginationError {
    /// The cursor value in the body is of the wrong type.
    #[error("the cursor at {pointer} is {found}; expected a string, a number or null")]
    BadCursor {
        /// The pointer.
        pointer: String,
        /// What it holds.
        found: String,
    },
    /// The next URL does not parse.
    #[error("the next-page link {link:?} is not a valid URL: {reason}")]
    BadLink {
        /// The link as given (truncated).
        link: String,
        /// Why.
        reason: String,
    },
    /// A next-page link leads to another origin, where the source's headers (credentials)
    /// must not be sent.
    #[error(
        "the next-page link leads to {found}, not to the source's origin {expected}; landline does not send the source's headers to another host"
    )]
    CrossOrigin {
        /// The link's origin.
        found: String,
        /// The source URL's origin.
        expected: String,
    },
    /// The API sent a cursor it sent before.
    #[error(
        "pagination loop: page {page} leads back to an earlier page (its cursor was seen before)"
    )]
    Loop {
        /// The page whose cursor repeats.
        page: u64,
    },
    /// More pages than `max_pages`.
    #[error(
        "the API has more than max_pages = {max_pages} pages; raise [source] max_pages if that is expected"
    )]
    TooManyPages {
        /// The configured limit.
        max_pages: u64,
    },
    /// A checkpoint's cursor is not of the kind the pagination makes (the pagination was
    /// changed since the checkpoint, or the checkpoint belongs to another source).
    #[error(
        "cannot continue {pagination} pagination from a checkpoint whose cursor is of kind {found}: it takes a cursor of kind {expected}; was [source.pagination] changed since the checkpoint?"
    )]
    ResumeMismatch {
        /// The pagination kind, as in `[source.pagination] type`.
        pagination: &'static str,
        /// The cursor kind it takes (any pagination also takes `start` and `done`; for
        /// `none` this is `start or done`).
        expected: &'static str,
        /// The cursor kind found.
        found: &'static str,
    },
    /// A checkpoint's next-page URL is on another origin than the source URL.
    #[error(
        "the checkpoint's next-page URL is on {found}, not on the source's origin {expected}; landline does not send the source's headers to another host (was [source] url changed since the checkpoint?)"
    )]
    ResumeCrossOrigin {
        /// The URL's origin.
        found: String,
        /// The source URL's origin.
        expected: String,
    },
    /// A checkpoint's next-page URL does not parse.
    #[error("the checkpoint's next-page URL is not a valid URL: {reason}")]
    ResumeBadUrl {
        /// Why (the URL itself is left out: it may carry a credential).
        reason: String,
    },
}

/// Computes request URLs page by page.
#[derive(Debug)]
pub struct Paginator {
    pagination: Pagination,
    base: Url,
    cursor: Cursor,
    pages: u64,
    max_pages: u64,
    /// Records in the pages advanced past, for the total.
    records: u64,
    /// Hashes of every URL requested: a repeat is a loop. 8 bytes a page.
    seen: HashSet<u64>,
    /// The hash of the URL [`next_url`](Self::next_url) last gave, until
    /// [`advance`](Self::advance) moves past its page: that page is not done yet.
    in_flight: Option<u64>,
}

impl Paginator {
    /// Starts at `base` (the source URL with its static query already applied).
    pub fn new(pagination: Pagination, base: Url, max_pages: u64) -> Self {
        Paginator {
            pagination,
            base,
            cursor: Cursor::Start,
            pages: 0,
            max_pages,
            records: 0,
            seen: HashSet::new(),
            in_flight: None,
        }
    }

    /// Continues paging where `state` (from [`state`](Self::state), maybe in another process)
    /// stands, with the source's pagination, URL and `max_pages`.
    ///
    /// The next [`next_url`](Self::next_url) gives the URL the paginator the state was taken
    /// from would have given, [`pages`](Self::pages) continues its count, and a URL requested
    /// before the state was taken is still a loop.
    ///
    /// Refused when the cursor is not of a kind `pagination` makes (a token cursor for token
    /// pagination, a URL cursor for `next_url` and `link_header`, an offset for offset, a page
    /// number for page, and `start` or `done` for any): [`PaginationError::ResumeMismatch`];
    /// and when a URL cursor does not parse ([`PaginationError::ResumeBadUrl`]) or is not on
    /// `base`'s origin ([`PaginationError::ResumeCrossOrigin`]).
    pub fn resume(
        pagination: Pagination,
        base: Url,
        max_pages: u64,
        state: PagingState,
    ) -> Result<Paginator, PaginationError> {
        check_kind(&pagination, state.cursor.kind())?;
        let cursor = match state.cursor {
            CursorState::Start => Cursor::Start,
            CursorState::Token(token) => Cursor::Token(token),
            CursorState::Url(text) => {
                let url = Url::parse(&text).map_err(|e| PaginationError::ResumeBadUrl {
                    reason: e.to_string(),
                })?;
                if url.origin() != base.origin() {
                    return Err(PaginationError::ResumeCrossOrigin {
                        found: url.origin().ascii_serialization(),
                        expected: base.origin().ascii_serialization(),
                    });
                }
                Cursor::Url(url)
            }
            CursorState::Offset(n) => Cursor::Offset(n),
            CursorState::Page(n) => Cursor::Page(n),
            CursorState::Done => Cursor::Done,
        };
        Ok(Paginator {
            pagination,
            base,
            cursor,
            pages: state.pages,
            max_pages,
            records: state.records,
            seen: state.seen.into_iter().collect(),
            in_flight: None,
        })
    }

    /// A snapshot of where paging stands, for a checkpoint: [`resume`](Self::resume)
    /// continues from it.
    ///
    /// It describes the pages [`advance`](Self::advance) has moved past: taken after
    /// `advance` for page N, it says "pages 1 to N are done, page N + 1 is next", and a
    /// paginator resumed from it gives page N + 1's URL as the next
    /// [`next_url`](Self::next_url), without reporting a loop, with [`pages`](Self::pages)
    /// at N. A page whose URL `next_url` has given but that `advance` has not moved past
    /// yet is not in it (the snapshot is the same before and after that `next_url`): a
    /// resumed paginator requests that page again. Whether a page's records are safely
    /// written before its `advance` is the caller's business: the snapshot takes `advance`
    /// as the mark of a page done.
    pub fn state(&self) -> PagingState {
        let mut state = self.position();
        let in_flight = self.in_flight;
        let mut seen: Vec<u64> = self
            .seen
            .iter()
            .copied()
            .filter(|&hash| Some(hash) != in_flight)
            .collect();
        seen.sort_unstable();
        state.seen = seen;
        state
    }

    /// [`state`](Self::state) without the loop guard's hashes (`seen` is empty): cheap to
    /// take after every page. A checkpoint adds the hashes of the pages it covers
    /// ([`url_hash`]).
    pub fn position(&self) -> PagingState {
        PagingState {
            cursor: CursorState::from(&self.cursor),
            pages: self
                .pages
                .saturating_sub(u64::from(self.in_flight.is_some())),
            records: self.records,
            seen: Vec::new(),
        }
    }

    /// The cursor for the next page.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Pages requested so far (counting those of the process a [`resume`](Self::resume)d
    /// paginator's state was taken in).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The URL of the next page, or `None` when paging is over; counts the page.
    pub fn next_url(&mut self) -> Result<Option<Url>, PaginationError> {
        let url = match (&self.cursor, &self.pagination) {
            (Cursor::Done, _) => return Ok(None),
            (
                Cursor::Start,
                Pagination::Offset {
                    param,
                    limit,
                    start,
                },
            ) => with_params(&self.base, param, *start, limit.as_ref()),
            (
                Cursor::Start,
                Pagination::Page {
                    param,
                    limit,
                    start,
                },
            ) => with_params(&self.base, param, *start, limit.as_ref()),
            (Cursor::Start, _) => self.base.clone(),
            (Cursor::Token(token), Pagination::Token { param, .. }) => {
                let mut url = self.base.clone();
                url.query_pairs_mut().append_pair(param, token);
                url
            }
            (Cursor::Url(url), Pagination::NextUrl { .. } | Pagination::LinkHeader) => url.clone(),
            (Cursor::Offset(n), Pagination::Offset { param, limit, .. })
            | (Cursor::Page(n), Pagination::Page { param, limit, .. }) => {
                with_params(&self.base, param, *n, limit.as_ref())
            }
            // `advance` only makes cursors of the pagination's kind and `resume` checks the
            // kind, so these cannot arise; were one to, paging must not end quietly.
            (Cursor::Token(_) | Cursor::Url(_) | Cursor::Offset(_) | Cursor::Page(_), _) => {
                let found = CursorState::from(&self.cursor).kind();
                return Err(mismatch(&self.pagination, found));
            }
        };
        if self.pages >= self.max_pages {
            return Err(PaginationError::TooManyPages {
                max_pages: self.max_pages,
            });
        }
        let hash = hash_url(&url);
        if !self.seen.insert(hash) {
            return Err(PaginationError::Loop { page: self.pages });
        }
        self.pages += 1;
        self.in_flight = Some(hash);
        Ok(Some(url))
    }

    /// Whether the next request does not depend on the last answer: offset pagination with
    /// a page size, and page pagination. Their pages can be fetched ahead, in parallel.
    pub fn is_parallel(&self) -> bool {
        matches!(
            self.pagination,
            Pagination::Offset { limit: Some(_), .. } | Pagination::Page { .. }
        )
    }

    /// The URL of page `n` (from 1), if every page before it is full, for
    /// [`is_parallel`](Self::is_parallel) pagination within `max_pages`; it is not counted
    /// (the page is counted when [`next_url`](Self::next_url) reaches it).
    pub fn page_url(&self, n: u64) -> Option<Url> {
        if n == 0 || n > self.max_pages {
            return None;
        }
        match &self.pagination {
            Pagination::Offset {
                param,
                limit: Some(limit),
                start,
            } => {
                let offset = (n - 1).checked_mul(limit.1)?.checked_add(*start)?;
                Some(with_params(&self.base, param, offset, Some(limit)))
            }
            Pagination::Page {
                param,
                limit,
                start,
            } => Some(with_params(
                &self.base,
                param,
                start.checked_add(n - 1)?,
                limit.as_ref(),
            )),
            _ => None,
        }
    }

    /// Records before page `n` (from 1) when every page is full: how far into a known total
    /// that page starts. `None` without a page size.
    pub fn records_before(&self, n: u64) -> Option<u64> {
        match &self.pagination {
            Pagination::Offset {
                limit: Some((_, size)),
                ..
            }
            | Pagination::Page {
                limit: Some((_, size)),
                ..
            } => n.saturating_sub(1).checked_mul(*size),
            _ => None,
        }
    }

    /// Moves the cursor past the page just fetched from `requested`.
    pub fn advance(
        &mut self,
        requested: &Url,
        outcome: PageOutcome<'_>,
    ) -> Result<(), PaginationError> {
        self.in_flight = None;
        self.records = self.records.saturating_add(outcome.records);
        let past_total = outcome.total.is_some_and(|total| self.records >= total);
        self.cursor = match &self.pagination {
            Pagination::None => Cursor::Done,
            Pagination::Token { next, .. } => match body_cursor(next, outcome.body_next)? {
                Some(token) => Cursor::Token(token),
                None => Cursor::Done,
            },
            Pagination::NextUrl { next } => match body_cursor(next, outcome.body_next)? {
                Some(link) => Cursor::Url(self.same_origin(resolve(requested, &link)?)?),
                None => Cursor::Done,
            },
            Pagination::LinkHeader => match outcome.link_next {
                Some(link) => Cursor::Url(self.same_origin(resolve(requested, link)?)?),
                None => Cursor::Done,
            },
            Pagination::Offset { limit, start, .. } => {
                let offset = match &self.cursor {
                    Cursor::Offset(n) => *n,
                    _ => *start,
                };
                if past_total || is_last(outcome.records, limit.as_ref()) {
                    Cursor::Done
                } else {
                    // Saturating: an offset at the end of u64 repeats, and the repeat is a loop.
                    Cursor::Offset(offset.saturating_add(outcome.records))
                }
            }
            Pagination::Page { limit, start, .. } => {
                let page = match &self.cursor {
                    Cursor::Page(n) => *n,
                    _ => *start,
                };
                if past_total || is_last(outcome.records, limit.as_ref()) {
                    Cursor::Done
                } else {
                    Cursor::Page(page.saturating_add(1))
                }
            }
        };
        Ok(())
    }
}

impl Paginator {
    /// `url`, if it is on the source URL's origin (scheme, host and port).
    fn same_origin(&self, url: Url) -> Result<Url, PaginationError> {
        if url.origin() == self.base.origin() {
            Ok(url)
        } else {
            Err(PaginationError::CrossOrigin {
                found: url.origin().ascii_serialization(),
                expected: self.base.origin().ascii_serialization(),
            })
        }
    }
}

/// The pagination kind's name, as in `[source.pagination] type`.
fn pagination_kind(pagination: &Pagination) -> &'static str {
    match pagination {
        Pagination::Token { .. } => "token",
        Pagination::NextUrl { .. } => "next_url",
        Pagination::LinkHeader => "link_header",
        Pagination::Offset { .. } => "offset",
        Pagination::Page { .. } => "page",
        Pagination::None => "none",
    }
}

/// The kind of cursor (as [`CursorState::kind`] names it) `advance` makes for `pagination`
/// besides `done`.
fn expected_cursor(pagination: &Pagination) -> &'static str {
    match pagination {
        Pagination::Token { .. } => "token",
        Pagination::NextUrl { .. } | Pagination::LinkHeader => "url",
        Pagination::Offset { .. } => "offset",
        Pagination::Page { .. } => "page",
        Pagination::None => "start or done",
    }
}

/// Whether a cursor of kind `found` can be `pagination`'s: `start`, `done`, or the kind its
/// `advance` makes.
fn check_kind(pagination: &Pagination, found: &'static str) -> Result<(), PaginationError> {
    if matches!(found, "start" | "done") || found == expected_cursor(pagination) {
        Ok(())
    } else {
        Err(mismatch(pagination, found))
    }
}

fn mismatch(pagination: &Pagination, found: &'static str) -> PaginationError {
    PaginationError::ResumeMismatch {
        pagination: pagination_kind(pagination),
        expected: expected_cursor(pagination),
        found,
    }
}

/// [`PagingState::seen`] in JSON: 16-digit lowercase hexadecimal strings.
mod url_hashes {
    use std::fmt;

    use serde::de::{self, Unexpected, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(hashes: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(hashes.len()))?;
        for hash in hashes {
            seq.serialize_element(&format_args!("{hash:016x}"))?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        Ok(Vec::<Hash>::deserialize(d)?
            .into_iter()
            .map(|Hash(h)| h)
            .collect())
    }

    struct Hash(u64);

    impl<'de> Deserialize<'de> for Hash {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(HashVisitor)
        }
    }

    struct HashVisitor;

    impl Visitor<'_> for HashVisitor {
        type Value = Hash;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a URL hash: 16 hexadecimal digits")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Hash, E> {
            let invalid = || E::invalid_value(Unexpected::Str(text), &self);
            if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            u64::from_str_radix(text, 16)
                .map(Hash)
                .map_err(|_| invalid())
        }
    }
}

fn is_last(records: u64, limit: Option<&(String, u64)>) -> bool {
    records == 0 || limit.is_some_and(|(_, l)| records < *l)
}

fn with_params(base: &Url, param: &str, value: u64, limit: Option<&(String, u64)>) -> Url {
    let mut url = base.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair(param, &value.to_string());
        if let Some((name, size)) = limit {
            q.append_pair(name, &size.to_string());
        }
    }
    url
}

/// The loop guard's hash of a page URL, as [`PagingState::seen`] holds it.
pub fn url_hash(url: &Url) -> u64 {
    hash_url(url)
}

/// XXH3 of the URL: the same on every machine and Rust release, so it can be stored.
fn hash_url(url: &Url) -> u64 {
    xxhash_rust::xxh3::xxh3_64(url.as_str().as_bytes())
}

fn resolve(base: &Url, link: &str) -> Result<Url, PaginationError> {
    link::resolve(base, link).map_err(|e| PaginationError::BadLink {
        link: link.chars().take(200).collect(),
        reason: e.to_string(),
    })
}

/// The body cursor as text: strings (unescaped) and numbers; `null`, absent and `""` end paging.
fn body_cursor(
    pointer: &JsonPointer,
    raw: Option<&RawValue>,
) -> Result<Option<String>, PaginationError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get().trim();
    let bad = |found: &str| PaginationError::BadCursor {
        pointer: pointer.to_string(),
        found: found.to_owned(),
    };
    match text.as_bytes().first() {
        Some(b'"') => {
            let s: String = serde_json::from_str(text).map_err(|_| bad("an invalid string"))?;
            Ok((!s.is_empty()).then_some(s))
        }
        Some(b'-' | b'0'..=b'9') => Ok(Some(text.to_owned())),
        Some(b'n') => Ok(None),
        Some(b'{') => Err(bad("an object")),
        Some(b'[') => Err(bad("an array")),
        _ => Err(bad("a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn outcome<'a>(
        records: u64,
        body_next: Option<&'a RawValue>,
        link_next: Option<&'a str>,
    ) -> PageOutcome<'a> {
        PageOutcome {
            records,
            body_next,
            link_next,
            total: None,
        }
    }

    fn base() -> Url {
        Url::parse("http://127.0.0.1:1/v?count=2").unwrap()
    }

    #[test]
    fn token_pagination() {
        let mut p = Paginator::new(
            Pagination::Token {
                next: JsonPointer::parse("/next").unwrap(),
                param: "token".into(),
            },
            base(),
            10,
        );
        let u1 = p.next_url().unwrap().unwrap();
        assert_eq!(u1.as_str(), "http://127.0.0.1:1/v?count=2");
        let t = raw(r#""a b""#);
        p.advance(&u1, outcome(2, Some(&t), None)).unwrap();
        let u2 = p.next_url().unwrap().unwrap();
        assert_eq!(u2.as_str(), "http://127.0.0.1:1/v?count=2&token=a+b");
        let n = raw("17");
        p.advance(&u2, outcome(2, Some(&n), None)).unwrap();
        assert_eq!(
            p.next_url().unwrap().unwrap().as_str(),
            "http://127.0.0.1:1/v?count=2&token=17"
        );
        for end in ["null", r#""""#] {
            let e = raw(end);
            p.advance(&u2, outcome(2, Some(&e), None)).unwrap();
            assert_eq!(p.cursor(), &Cursor::Done);
        }
        p.advance(&u2, outcome(2, None, None)).unwrap();
        assert_eq!(p.next_url().unwrap(), None);
        let obj = raw("{}");
        assert!(matches!(
            p.advance(&u2, outcome(2, Some(&obj), None)),
            Err(PaginationError::BadCursor { .. })
        ));
    }

    #[test]
    fn repeated_token_is_a_loop() {
        let mut p = Paginator::new(
            Pagination::Token {
                next: JsonPointer::parse("/next").unwrap(),
                param: "token".into(),
            },
            base(),
            10,
        );
        let t = raw(r#""same""#);
        let u = p.next_url().unwrap().unwrap();
        p.advance(&u, outcome(1, Some(&t), None)).unwrap();
        let u = p.next_url().unwrap().unwrap();
        p.advance(&u, outcome(1, Some(&t), None)).unwrap();
        assert_eq!(p.next_url(), Err(PaginationError::Loop { page: 2 }));
    }

    #[test]
    fn next_url_and_link_header_resolve_relative_links() {
        let mut p = Paginator::new(
            Pagination::NextUrl {
                next: JsonPointer::parse("/links/next").unwrap(),
            },
            base(),
            10,
        );
        let u = p.next_url().unwrap().unwrap();
        let link = raw(r#""/v?count=2&cursor=c2""#);
        p.advance(&u, outcome(2, Some(&link), None)).unwrap();
        assert_eq!(
            p.next_url().unwrap().unwrap().as_str(),
            "http://127.0.0.1:1/v?count=2&cursor=c2"
        );

        let mut p = Paginator::new(Pagination::LinkHeader, base(), 10);
        let u = p.next_url().unwrap().unwrap();
        p.advance(&u, outcome(2, None, Some("?count=2&page=2")))
            .unwrap();
        assert_eq!(
            p.next_url().unwrap().unwrap().as_str(),
            "http://127.0.0.1:1/v?count=2&page=2"
        );
        p.advance(&u, outcome(2, None, None)).unwrap();
        assert_eq!(p.next_url().unwrap(), None);
    }

    #[test]
    fn next_links_must_stay_on_the_source_origin() {
        let mut p = Paginator::new(Pagination::LinkHeader, base(), 10);
        let u = p.next_url().unwrap().unwrap();
        for link in [
            "http://evil.example/v?page=2",
            "https://127.0.0.1:1/v",
            "http://127.0.0.1:2/v",
        ] {
            let err = p.advance(&u, outcome(2, None, Some(link))).unwrap_err();
            assert!(
                matches!(err, PaginationError::CrossOrigin { .. }),
                "{link}: {err}"
            );
        }
    }

    #[test]
    fn offset_and_page_stop_at_short_or_empty_pages() {
        let limit = Some(("limit".to_string(), 3));
        let mut p = Paginator::new(
            Pagination::Offset {
                param: "offset".into(),
                limit: limit.clone(),
                start: 0,
            },
            base(),
            10,
        );
        let mut urls = Vec::new();
        for n in [3, 3, 1] {
            let u = p.next_url().unwrap().unwrap();
            urls.push(u.query().unwrap().to_owned());
            p.advance(&u, outcome(n, None, None)).unwrap();
        }
        assert_eq!(p.next_url().unwrap(), None);
        assert_eq!(
            urls,
            [
                "count=2&offset=0&limit=3",
                "count=2&offset=3&limit=3",
                "count=2&offset=6&limit=3"
            ]
        );

        let mut p = Paginator::new(
            Pagination::Page {
                param: "page".into(),
                limit: None,
                start: 1,
            },
            base(),
            10,
        );
        for (n, want) in [
            (5, "count=2&page=1"),
            (5, "count=2&page=2"),
            (0, "count=2&page=3"),
        ] {
            let u = p.next_url().unwrap().unwrap();
            assert_eq!(u.query(), Some(want));
            p.advance(&u, outcome(n, None, None)).unwrap();
        }
        assert_eq!(p.next_url().unwrap(), None);
    }

    #[test]
    fn max_pages_is_an_error_not_a_stop() {
        let mut p = Paginator::new(
            Pagination::Page {
                param: "page".into(),
                limit: None,
                start: 1,
            },
            base(),
            2,
        );
        for _ in 0..2 {
            let u = p.next_url().unwrap().unwrap();
            p.advance(&u, outcome(1, None, None)).unwrap();
        }
        assert_eq!(
            p.next_url(),
            Err(PaginationError::TooManyPages { max_pages: 2 })
        );
        // Exactly max_pages pages is fine.
        let mut p = Paginator::new(Pagination::None, base(), 1);
        let u = p.next_url().unwrap().unwrap();
        p.advance(&u, outcome(1, None, None)).unwrap();
        assert_eq!(p.next_url().unwrap(), None);
    }

    #[test]
    fn parallel_pages_have_urls_ahead_and_stop_at_the_total() {
        let limit = Some(("limit".to_string(), 10));
        let mut p = Paginator::new(
            Pagination::Offset {
                param: "offset".into(),
                limit: limit.clone(),
                start: 5,
            },
            base(),
            3,
        );
        assert!(p.is_parallel());
        assert_eq!(
            p.page_url(3).unwrap().query(),
            Some("count=2&offset=25&limit=10")
        );
        assert_eq!(p.page_url(4), None, "past max_pages");
        let u = p.next_url().unwrap().unwrap();
        assert_eq!(Some(u.clone()), p.page_url(1));
        let mut full = outcome(10, None, None);
        full.total = Some(20);
        p.advance(&u, full).unwrap();
        assert_eq!(p.next_url().unwrap(), p.page_url(2));
        p.advance(&u, full).unwrap();
        assert_eq!(p.next_url().unwrap(), None, "20 records of 20");

        let p = Paginator::new(
            Pagination::Offset {
                param: "offset".into(),
                limit: None,
                start: 0,
            },
            base(),
            3,
        );
        assert!(!p.is_parallel(), "offsets depend on the records returned");
        let p = Paginator::new(
            Pagination::Page {
                param: "page".into(),
                limit: None,
                start: 1,
            },
            base(),
            3,
        );
        assert_eq!(p.page_url(2).unwrap().query(), Some("count=2&page=2"));
    }

    #[test]
    fn the_loop_guard_hash_is_stable() {
        // XXH3-64 of the URL text, pinned: stored checkpoints depend on it.
        assert_eq!(
            hash_url(&Url::parse("http://a.example/v?page=2").unwrap()),
            xxhash_rust::xxh3::xxh3_64(b"http://a.example/v?page=2")
        );
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06800538d394c2);
    }

    /// A synthetic page: its record count, the raw JSON at the body cursor pointer, the
    /// `Link` next target.
    #[derive(Clone, Copy)]
    struct Step(u64, Option<&'static str>, Option<&'static str>);

    /// Requests and advances past a page per step, until the steps or the pages run out;
    /// the URLs requested.
    fn page_through(p: &mut Paginator, steps: &[Step]) -> Vec<String> {
        let mut urls = Vec::new();
        for &Step(records, body, link) in steps {
            let Some(url) = p.next_url().unwrap() else {
                break;
            };
            urls.push(url.to_string());
            let body = body.map(raw);
            p.advance(&url, outcome(records, body.as_deref(), link))
                .unwrap();
        }
        urls
    }

    /// Through JSON text and back, as a checkpoint goes.
    fn round_trip(state: &PagingState) -> PagingState {
        let json = serde_json::to_string(state).unwrap();
        let back: PagingState = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, state, "{json}");
        back
    }

    fn token() -> Pagination {
        Pagination::Token {
            next: JsonPointer::parse("/next").unwrap(),
            param: "token".into(),
        }
    }

    fn next_url() -> Pagination {
        Pagination::NextUrl {
            next: JsonPointer::parse("/links/next").unwrap(),
        }
    }

    fn offset(limit: Option<u64>) -> Pagination {
        Pagination::Offset {
            param: "offset".into(),
            limit: limit.map(|l| ("limit".to_string(), l)),
            start: 10,
        }
    }

    fn page() -> Pagination {
        Pagination::Page {
            param: "page".into(),
            limit: Some(("per_page".to_string(), 2)),
            start: 1,
        }
    }

    /// Every pagination kind with a few pages of synthetic outcomes, the last one ending
    /// paging.
    fn scripts() -> Vec<(Pagination, Vec<Step>)> {
        vec![
            (
                token(),
                vec![
                    Step(2, Some(r#""a b""#), None),
                    Step(2, Some("17"), None),
                    Step(2, Some(r#""c&d""#), None),
                    Step(1, Some("null"), None),
                ],
            ),
            (
                next_url(),
                vec![
                    Step(2, Some(r#""/v?count=2&cursor=c2""#), None),
                    Step(2, Some(r#""?count=2&cursor=c3""#), None),
                    Step(2, Some(r#""http://127.0.0.1:1/v?cursor=c4""#), None),
                    Step(2, None, None),
                ],
            ),
            (
                Pagination::LinkHeader,
                vec![
                    Step(2, None, Some("?count=2&page=2")),
                    Step(2, None, Some("/v?count=2&page=3")),
                    Step(2, None, Some("http://127.0.0.1:1/w?page=4")),
                    Step(2, None, None),
                ],
            ),
            (
                offset(Some(2)),
                vec![
                    Step(2, None, None),
                    Step(2, None, None),
                    Step(2, None, None),
                    Step(1, None, None),
                ],
            ),
            (
                offset(None),
                vec![
                    Step(3, None, None),
                    Step(1, None, None),
                    Step(5, None, None),
                    Step(0, None, None),
                ],
            ),
            (
                page(),
                vec![
                    Step(2, None, None),
                    Step(2, None, None),
                    Step(2, None, None),
                    Step(0, None, None),
                ],
            ),
            (Pagination::None, vec![Step(4, None, None)]),
        ]
    }

    #[test]
    fn resuming_from_a_snapshot_continues_the_same_urls() {
        for (pagination, steps) in scripts() {
            let name = pagination_kind(&pagination);
            let mut whole = Paginator::new(pagination.clone(), base(), 10);
            let all = page_through(&mut whole, &steps);
            assert_eq!(all.len(), steps.len(), "{name}: {all:?}");
            assert_eq!(whole.next_url().unwrap(), None, "{name}");
            assert_eq!(whole.cursor(), &Cursor::Done);

            for k in 0..=steps.len() {
                let mut first = Paginator::new(pagination.clone(), base(), 10);
                let mut urls = page_through(&mut first, &steps[..k]);
                let state = round_trip(&first.state());
                assert_eq!(state.pages, k as u64, "{name} after {k}");
                assert_eq!(state.seen.len(), k, "{name} after {k}");
                assert!(state.seen.is_sorted(), "{name} after {k}");
                let records: u64 = steps[..k].iter().map(|s| s.0).sum();
                assert_eq!(state.records, records, "{name} after {k}");

                let mut resumed =
                    Paginator::resume(pagination.clone(), base(), 10, state.clone()).unwrap();
                assert_eq!(resumed.pages(), k as u64, "{name} after {k}");
                assert_eq!(resumed.cursor(), first.cursor(), "{name} after {k}");
                assert_eq!(resumed.state(), state, "{name} after {k}");
                urls.extend(page_through(&mut resumed, &steps[k..]));
                assert_eq!(urls, all, "{name} resumed after {k}");
                assert_eq!(resumed.next_url().unwrap(), None, "{name} after {k}");
                assert_eq!(resumed.pages(), steps.len() as u64, "{name} after {k}");
                assert_eq!(resumed.state(), whole.state(), "{name} after {k}");
            }
        }
    }

    #[test]
    fn a_snapshot_leaves_out_the_page_not_advanced_past() {
        for (pagination, steps) in scripts() {
            let name = pagination_kind(&pagination);
            if steps.len() < 2 {
                continue;
            }
            let mut p = Paginator::new(pagination.clone(), base(), 10);
            page_through(&mut p, &steps[..1]);
            let done = p.state();
            // Page 2 requested, not done: the snapshot still says page 2 is next.
            let page2 = p.next_url().unwrap();
            assert_eq!(p.pages(), 2, "{name}");
            assert_eq!(p.state(), done, "{name}");
            let mut resumed = Paginator::resume(pagination, base(), 10, done).unwrap();
            assert_eq!(resumed.next_url().unwrap(), page2, "{name}");
        }
    }

    #[test]
    fn a_loop_to_a_page_before_the_snapshot_is_found_after_resume() {
        // The API sends back a cursor it sent before the checkpoint.
        for (pagination, steps) in [
            (
                token(),
                [
                    Step(1, Some(r#""a""#), None),
                    Step(1, Some(r#""b""#), None),
                    Step(1, Some(r#""a""#), None),
                ],
            ),
            (
                next_url(),
                [
                    Step(1, Some(r#""?c=1""#), None),
                    Step(1, Some(r#""?c=2""#), None),
                    Step(1, Some(r#""/v?c=1""#), None),
                ],
            ),
            (
                Pagination::LinkHeader,
                [
                    Step(1, None, Some("?c=1")),
                    Step(1, None, Some("?c=2")),
                    Step(1, None, Some("http://127.0.0.1:1/v?count=2")),
                ],
            ),
        ] {
            let name = pagination_kind(&pagination);
            let mut p = Paginator::new(pagination.clone(), base(), 10);
            page_through(&mut p, &steps[..2]);
            let state = round_trip(&p.state());
            let mut p = Paginator::resume(pagination, base(), 10, state).unwrap();
            page_through(&mut p, &steps[2..]);
            assert_eq!(
                p.next_url(),
                Err(PaginationError::Loop { page: 3 }),
                "{name}"
            );
        }

        // Every kind: a cursor back at the start leads to page 1, requested before the
        // checkpoint.
        for (pagination, steps) in scripts() {
            let name = pagination_kind(&pagination);
            let mut p = Paginator::new(pagination.clone(), base(), 10);
            page_through(&mut p, &steps[..1]);
            let mut state = round_trip(&p.state());
            state.cursor = CursorState::Start;
            let mut p = Paginator::resume(pagination, base(), 10, state).unwrap();
            assert_eq!(
                p.next_url(),
                Err(PaginationError::Loop { page: 1 }),
                "{name}"
            );
        }
    }

    #[test]
    fn max_pages_counts_across_a_resume() {
        let mut p = Paginator::new(page(), base(), 3);
        page_through(&mut p, &[Step(2, None, None); 2]);
        let state = round_trip(&p.state());
        let mut p = Paginator::resume(page(), base(), 3, state).unwrap();
        page_through(&mut p, &[Step(2, None, None)]);
        assert_eq!(p.pages(), 3);
        assert_eq!(
            p.next_url(),
            Err(PaginationError::TooManyPages { max_pages: 3 })
        );
    }

    #[test]
    fn resume_refuses_a_cursor_of_another_kind() {
        let url = || CursorState::Url("http://127.0.0.1:1/v?cursor=c2".into());
        let cursors = [
            CursorState::Token("t".into()),
            url(),
            CursorState::Offset(4),
            CursorState::Page(2),
        ];
        for (pagination, takes, expected) in [
            (token(), "token", "token"),
            (next_url(), "url", "url"),
            (Pagination::LinkHeader, "url", "url"),
            (offset(Some(2)), "offset", "offset"),
            (offset(None), "offset", "offset"),
            (page(), "page", "page"),
            (Pagination::None, "", "start or done"),
        ] {
            let name = pagination_kind(&pagination);
            for cursor in [CursorState::Start, CursorState::Done] {
                let state = PagingState {
                    cursor,
                    pages: 1,
                    records: 2,
                    seen: vec![1],
                };
                assert!(Paginator::resume(pagination.clone(), base(), 10, state).is_ok());
            }
            for cursor in cursors.iter().cloned() {
                let found = cursor.kind();
                let state = PagingState {
                    cursor,
                    pages: 1,
                    records: 2,
                    seen: vec![1],
                };
                let resumed = Paginator::resume(pagination.clone(), base(), 10, state);
                if found == takes {
                    assert!(resumed.is_ok(), "{name} from {found}");
                } else {
                    assert_eq!(
                        resumed.unwrap_err(),
                        PaginationError::ResumeMismatch {
                            pagination: name,
                            expected,
                            found
                        },
                        "{name} from {found}"
                    );
                }
            }
        }
        let err = Paginator::resume(
            token(),
            base(),
            10,
            PagingState {
                cursor: CursorState::Offset(400),
                pages: 4,
                records: 400,
                seen: vec![],
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot continue token pagination from a checkpoint whose cursor is of kind offset: \
             it takes a cursor of kind token; was [source.pagination] changed since the checkpoint?"
        );
    }

    #[test]
    fn resume_refuses_a_url_on_another_origin_or_not_a_url() {
        let state = |url: &str| PagingState {
            cursor: CursorState::Url(url.into()),
            pages: 1,
            records: 2,
            seen: vec![],
        };
        for url in [
            "http://evil.example/v?page=2",
            "https://127.0.0.1:1/v",
            "http://127.0.0.1:2/v",
        ] {
            let err =
                Paginator::resume(Pagination::LinkHeader, base(), 10, state(url)).unwrap_err();
            assert!(
                matches!(err, PaginationError::ResumeCrossOrigin { .. }),
                "{url}: {err}"
            );
        }
        assert_eq!(
            Paginator::resume(next_url(), base(), 10, state("http://evil.example/v"))
                .unwrap_err()
                .to_string(),
            "the checkpoint's next-page URL is on http://evil.example, not on the source's origin \
             http://127.0.0.1:1; landline does not send the source's headers to another host \
             (was [source] url changed since the checkpoint?)"
        );
        for url in ["/v?page=2", "", "http://[::1"] {
            let err = Paginator::resume(next_url(), base(), 10, state(url)).unwrap_err();
            assert!(
                matches!(err, PaginationError::ResumeBadUrl { .. }),
                "{url}: {err}"
            );
        }
        // The kind is checked first.
        assert!(matches!(
            Paginator::resume(page(), base(), 10, state("http://evil.example/v")),
            Err(PaginationError::ResumeMismatch { .. })
        ));
    }

    #[test]
    fn a_cursor_of_another_kind_is_an_error_not_the_end() {
        let mut p = Paginator::new(page(), base(), 10);
        p.cursor = Cursor::Token("t".into());
        assert_eq!(
            p.next_url(),
            Err(PaginationError::ResumeMismatch {
                pagination: "page",
                expected: "page",
                found: "token"
            })
        );
        let mut p = Paginator::new(Pagination::None, base(), 10);
        p.cursor = Cursor::Url(base());
        assert!(matches!(
            p.next_url(),
            Err(PaginationError::ResumeMismatch { found: "url", .. })
        ));
    }

    #[test]
    fn the_stored_form_is_pinned() {
        // Checkpoints depend on this form: a change breaks resuming from the stored ones.
        let p = Paginator::new(token(), base(), 10);
        assert_eq!(
            serde_json::to_string(&p.state()).unwrap(),
            r#"{"cursor":{"kind":"start"},"pages":0,"records":0,"seen":[]}"#
        );
        let cases = [
            (
                token(),
                vec![Step(2, Some(r#""a b""#), None)],
                r#"{"cursor":{"kind":"token","value":"a b"},"pages":1,"records":2,"seen":["09ca188a4e26d435"]}"#,
            ),
            (
                Pagination::LinkHeader,
                vec![Step(2, None, Some("?count=2&page=2"))],
                r#"{"cursor":{"kind":"url","value":"http://127.0.0.1:1/v?count=2&page=2"},"pages":1,"records":2,"seen":["09ca188a4e26d435"]}"#,
            ),
            (
                offset(Some(2)),
                vec![Step(2, None, None), Step(2, None, None)],
                r#"{"cursor":{"kind":"offset","value":14},"pages":2,"records":4,"seen":["21508752b522fffb","b6a53d2df09cb277"]}"#,
            ),
            (
                page(),
                vec![Step(2, None, None)],
                r#"{"cursor":{"kind":"page","value":2},"pages":1,"records":2,"seen":["5db4c445e0a6aa3f"]}"#,
            ),
            (
                Pagination::None,
                vec![Step(5, None, None)],
                r#"{"cursor":{"kind":"done"},"pages":1,"records":5,"seen":["09ca188a4e26d435"]}"#,
            ),
        ];
        for (pagination, steps, json) in cases {
            let mut p = Paginator::new(pagination.clone(), base(), 10);
            page_through(&mut p, &steps);
            assert_eq!(serde_json::to_string(&p.state()).unwrap(), json);
            let read: PagingState = serde_json::from_str(json).unwrap();
            assert_eq!(read, p.state());
        }
        // The hashes above are XXH3-64 of the URL texts (sorted, not in page order).
        for (hash, url) in [
            ("09ca188a4e26d435", "http://127.0.0.1:1/v?count=2"),
            (
                "21508752b522fffb",
                "http://127.0.0.1:1/v?count=2&offset=12&limit=2",
            ),
            (
                "b6a53d2df09cb277",
                "http://127.0.0.1:1/v?count=2&offset=10&limit=2",
            ),
            (
                "5db4c445e0a6aa3f",
                "http://127.0.0.1:1/v?count=2&page=1&per_page=2",
            ),
        ] {
            assert_eq!(
                u64::from_str_radix(hash, 16).unwrap(),
                xxhash_rust::xxh3::xxh3_64(url.as_bytes()),
                "{url}"
            );
        }
    }

    #[test]
    fn a_stored_form_that_is_not_this_one_is_refused() {
        let ok = r#"{"cursor":{"kind":"page","value":2},"pages":1,"records":2,"seen":["00000000000000ff"]}"#;
        let state: PagingState = serde_json::from_str(ok).unwrap();
        assert_eq!(state.seen, [255]);
        for bad in [
            // A hash as a number, short, long, not hexadecimal.
            r#"{"cursor":{"kind":"page","value":2},"pages":1,"records":2,"seen":[255]}"#,
            r#"{"cursor":{"kind":"page","value":2},"pages":1,"records":2,"seen":["ff"]}"#,
            r#"{"cursor":{"kind":"page","value":2},"pages":1,"records":2,"seen":["000000000000000ff"]}"#,
            r#"{"cursor":{"kind":"page","value":2},"pages":1,"records":2,"seen":["+00000000000000f"]}"#,
            // Unknown fields, kinds and values; missing fields.
            r#"{"cursor":{"kind":"page","value":2},"pages":1,"records":2,"seen":[],"v":2}"#,
            r#"{"cursor":{"kind":"page","value":2,"x":1},"pages":1,"records":2,"seen":[]}"#,
            r#"{"cursor":{"kind":"cursor","value":2},"pages":1,"records":2,"seen":[]}"#,
            r#"{"cursor":{"kind":"page","value":"2"},"pages":1,"records":2,"seen":[]}"#,
            r#"{"cursor":{"kind":"page"},"pages":1,"records":2,"seen":[]}"#,
            r#"{"cursor":{"kind":"page","value":2},"records":2,"seen":[]}"#,
        ] {
            assert!(serde_json::from_str::<PagingState>(bad).is_err(), "{bad}");
        }
    }
}
