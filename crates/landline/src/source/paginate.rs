//! Pagination: which URL to request next, from what the last page said.
//!
//! The cursor is explicit state ([`Cursor`]), not hidden in an iterator, so that a run can
//! report where it stopped (and, later, resume there). The paginator also guards against the
//! two ways paging goes wrong silently: a cursor that repeats (a loop) and more pages than
//! `max_pages`; both are errors, never a quiet stop.

use std::collections::HashSet;

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
        }
    }

    /// The cursor for the next page.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Pages requested so far.
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
            (Cursor::Url(url), _) => url.clone(),
            (Cursor::Offset(n), Pagination::Offset { param, limit, .. })
            | (Cursor::Page(n), Pagination::Page { param, limit, .. }) => {
                with_params(&self.base, param, *n, limit.as_ref())
            }
            // A cursor of another kind cannot arise: `advance` only makes matching ones.
            (_, _) => return Ok(None),
        };
        if self.pages >= self.max_pages {
            return Err(PaginationError::TooManyPages {
                max_pages: self.max_pages,
            });
        }
        if !self.seen.insert(hash_url(&url)) {
            return Err(PaginationError::Loop { page: self.pages });
        }
        self.pages += 1;
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
            Pagination::Offset { limit, .. } => {
                let offset = match &self.cursor {
                    Cursor::Offset(n) => *n,
                    _ => match &self.pagination {
                        Pagination::Offset { start, .. } => *start,
                        _ => 0,
                    },
                };
                if past_total || is_last(outcome.records, limit.as_ref()) {
                    Cursor::Done
                } else {
                    Cursor::Offset(offset + outcome.records)
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
                    Cursor::Page(page + 1)
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
}
