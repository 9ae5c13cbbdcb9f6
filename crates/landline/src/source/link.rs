//! The next page's address from HTTP `Link` headers (RFC 8288), as sent by GitHub-style APIs:
//! `Link: <https://api.example.com/items?page=3>; rel="next", <…?page=9>; rel="last"`.
//!
//! `next_link` finds the first link whose `rel` contains the token `next`, and `resolve`
//! turns its URI-Reference into an absolute `http`/`https` URL against the request URL. Both
//! are internal to the crate: the fetch task reads the header, the paginator resolves it.
//!
//! Not done here: other relation types, the `anchor` parameter, RFC 8187 extended parameters
//! (`title*=`), or backslash escapes inside a quoted `rel` (`rel="n\ext"` does not match). A
//! malformed header value yields no link rather than an error.

use url::Url;

/// Why a next-page reference could not be turned into a URL. The caller names the reference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LinkError {
    /// The reference does not parse, even relative to the request URL.
    #[error(transparent)]
    Parse(#[from] url::ParseError),
    /// The reference resolves to a URL that is neither `http` nor `https`.
    #[error("scheme {scheme:?} is not http or https")]
    UnsupportedScheme {
        /// The scheme of the resolved URL.
        scheme: String,
    },
}

/// The URI-Reference (between `<` and `>`, surrounding whitespace trimmed, otherwise verbatim)
/// of the first link with relation type `next`, across all `Link` header values in order.
///
/// `rel` is matched case-insensitively as one of its space-separated tokens, quoted or not;
/// only the first `rel` of a link counts. A link that does not parse ends the search within
/// its header value, which then contributes no further links.
pub(crate) fn next_link<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    header_values.into_iter().find_map(|mut rest| {
        std::iter::from_fn(|| link_value(&mut rest))
            .find(|&(_, is_next)| is_next)
            .map(|(uri, _)| uri)
    })
}

/// Resolves `reference` against `base` (the URL of the request whose response carried it).
///
/// # Errors
///
/// [`LinkError`] when the reference does not parse or is not an `http`/`https` URL.
pub(crate) fn resolve(base: &Url, reference: &str) -> Result<Url, LinkError> {
    let url = base.join(reference)?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        scheme => Err(LinkError::UnsupportedScheme {
            scheme: scheme.to_owned(),
        }),
    }
}

/// Consumes one link-value (and empty list elements before it) from the front of `rest`:
/// its URI-Reference and whether its relation types include `next`. `None` at the end or on
/// malformed input.
fn link_value<'a>(rest: &mut &'a str) -> Option<(&'a str, bool)> {
    let (uri, after) = rest
        .trim_start_matches(|c| c == ',' || is_ows(c))
        .strip_prefix('<')?
        .split_once('>')?;
    *rest = after;
    let mut rel = None;
    loop {
        *rest = rest.trim_start_matches(is_ows);
        if let Some(after) = rest.strip_prefix(';') {
            *rest = after;
            let (name, value) = param(rest)?;
            if rel.is_none() && name.eq_ignore_ascii_case("rel") {
                rel = Some(value);
            }
        } else if rest.is_empty() || rest.starts_with(',') {
            break;
        } else {
            return None;
        }
    }
    let is_next = rel.is_some_and(|types| {
        types
            .split_ascii_whitespace()
            .any(|t| t.eq_ignore_ascii_case("next"))
    });
    Some((uri.trim(), is_next))
}

/// Consumes one `name[=value]` parameter from the front of `rest`; the value is a token (read
/// leniently: up to whitespace, `;` or `,`) or the inside of a quoted string (`""` if absent).
fn param<'a>(rest: &mut &'a str) -> Option<(&'a str, &'a str)> {
    let s = rest.trim_start_matches(is_ows);
    let end = s
        .find(|c| matches!(c, '=' | ';' | ',') || is_ows(c))
        .unwrap_or(s.len());
    let (name, after) = s.split_at(end);
    if name.is_empty() {
        return None;
    }
    let after = after.trim_start_matches(is_ows);
    let Some(value) = after.strip_prefix('=') else {
        *rest = after;
        return Some((name, ""));
    };
    let value = value.trim_start_matches(is_ows);
    let (value, after) = match value.strip_prefix('"') {
        Some(quoted) => quoted_string(quoted)?,
        None => value.split_at(
            value
                .find(|c| matches!(c, ';' | ',') || is_ows(c))
                .unwrap_or(value.len()),
        ),
    };
    *rest = after;
    Some((name, value))
}

/// Splits `s`, which follows an opening `"`, into the raw inside of the quoted string and the
/// text after its closing `"`. `None` if the string is unterminated.
fn quoted_string(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            // Skips the escaped byte; a non-ASCII one only skips into its continuation bytes,
            // which are never `"` or `\`.
            b'\\' => i += 2,
            b'"' => return Some((&s[..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn finds_the_next_link() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (
                &[
                    r#"<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=5>; rel="last""#,
                ],
                Some("https://api.github.com/repositories/1/issues?page=2"),
            ),
            (
                &[r#"<https://x/?page=1>; rel="prev", <https://x/?page=3>; rel="next""#],
                Some("https://x/?page=3"),
            ),
            (
                &[r#"<https://x/?p=1>; rel="first", <?p=3>; rel=next"#],
                Some("?p=3"),
            ),
            (
                &[r#"<https://x/?p=3>; rel="prev next""#],
                Some("https://x/?p=3"),
            ),
            (
                &[r#"<https://x/?p=3>; rel=" next  last ""#],
                Some("https://x/?p=3"),
            ),
            (&[r#"<https://x/?p=3>; REL="NEXT""#], Some("https://x/?p=3")),
            (&[r#"<https://x/?p=3>; Rel=Next"#], Some("https://x/?p=3")),
            (
                &[
                    r#"<https://x/a>; title="a, b; c <d>"; rel="prev", <https://x/b>; title="e, \"f\"; g"; rel="next""#,
                ],
                Some("https://x/b"),
            ),
            (
                &[r#"<https://x/a,b;c>; rel="next""#],
                Some("https://x/a,b;c"),
            ),
            (
                &[r#"<https://x/a>; rel="nextpage", <https://x/b>; rel="next""#],
                Some("https://x/b"),
            ),
            (
                &[r#"<https://x/a>; rel="next"; rel="prev""#],
                Some("https://x/a"),
            ),
            (&[r#"<https://x/a>; rel="prev"; rel="next""#], None),
            (
                &[r#"<https://x/a>; anchor; rel="next""#],
                Some("https://x/a"),
            ),
            (
                &["<https://x/a>\t;\trel\t=\t\"next\"\t"],
                Some("https://x/a"),
            ),
            (&[" , ,<https://x/a>;rel=next,"], Some("https://x/a")),
            (&["< https://x/a >; rel=next"], Some("https://x/a")),
            (&["<>; rel=next"], Some("")),
            (
                &[
                    r#"<https://x/?p=1>; rel="prev""#,
                    r#"<https://x/?p=3>; rel="next""#,
                ],
                Some("https://x/?p=3"),
            ),
            (
                &[
                    r#"<https://x/?p=3>; rel="next""#,
                    r#"<https://x/?p=9>; rel="next""#,
                ],
                Some("https://x/?p=3"),
            ),
            // No next link.
            (&[], None),
            (&[""], None),
            (
                &[r#"<https://x/?p=1>; rel="prev", <https://x/?p=9>; rel="last""#],
                None,
            ),
            (&[r#"<https://x/?p=1>; title="next""#], None),
            (&[r#"<https://x/?p=1>; rel="""#], None),
            (&["<https://x/?p=1>; rel"], None),
            // Malformed: no link, no panic; a later header value still counts.
            (&[r#"https://x/?p=3; rel="next""#], None),
            (&[r#"<https://x/?p=3; rel="next""#], None),
            (&[r#"<https://x/?p=3>; rel="next"#], None),
            (&[r#"<https://x/?p=3>; title="a\"; rel="next""#], None),
            (&[r#"<https://x/?p=3>; title="\"#], None),
            (&[r#"<https://x/?p=3>; ; rel="next""#], None),
            (&[r#"<https://x/?p=3>; rel="next" junk"#], None),
            (&[r#"<https://x/?p=3> rel="next""#], None),
            (&[r#"<https://x/?p=3>; ="next""#], None),
            (
                &["<https://x/é>; titlé=\"\\é\"; rel=next"],
                Some("https://x/é"),
            ),
            (
                &[
                    r#"garbage <https://x/?p=2>; rel="next""#,
                    r#"<https://x/?p=3>; rel="next""#,
                ],
                Some("https://x/?p=3"),
            ),
        ];
        for &(values, want) in cases {
            assert_eq!(next_link(values.iter().copied()), want, "{values:?}");
        }
    }

    #[test]
    fn resolves_references_against_the_request_url() {
        let base = Url::parse("https://api.example.com/v1/items?page=2&per_page=50").unwrap();
        let cases = [
            ("?page=3", "https://api.example.com/v1/items?page=3"),
            ("items?page=3", "https://api.example.com/v1/items?page=3"),
            ("more/items", "https://api.example.com/v1/more/items"),
            (
                "../v2/items?page=3",
                "https://api.example.com/v2/items?page=3",
            ),
            ("/v2/items", "https://api.example.com/v2/items"),
            (
                "https://other.example.com/x?y=1",
                "https://other.example.com/x?y=1",
            ),
            (
                "HTTP://Other.Example.com:8080/x",
                "http://other.example.com:8080/x",
            ),
            ("//cdn.example.com/p?x=1", "https://cdn.example.com/p?x=1"),
            ("", "https://api.example.com/v1/items?page=2&per_page=50"),
        ];
        for (reference, want) in cases {
            assert_eq!(
                resolve(&base, reference).unwrap().as_str(),
                want,
                "{reference:?}"
            );
        }
        let errors = [
            ("http://[::1", "invalid IPv6 address"),
            ("https://example.com:99999/", "invalid port number"),
            ("//", "empty host"),
            (
                "ftp://example.com/x",
                r#"scheme "ftp" is not http or https"#,
            ),
            (
                "mailto:someone@example.com",
                r#"scheme "mailto" is not http or https"#,
            ),
        ];
        for (reference, want) in errors {
            assert_eq!(
                resolve(&base, reference).unwrap_err().to_string(),
                want,
                "{reference:?}"
            );
        }
    }
}
