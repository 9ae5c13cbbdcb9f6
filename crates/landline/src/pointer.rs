//! JSON pointers (RFC 6901), parsed once from the pipeline file.
//!
//! Only parsing lives here; walking a page body along a pointer is done in one streaming pass
//! by [`crate::source::page`], never by building a `serde_json::Value`.

use std::fmt;

/// A parsed JSON pointer such as `/variants` or `/data/items`; `""` is the whole document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonPointer {
    text: String,
    tokens: Vec<String>,
}

/// Why a JSON pointer is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    #[error("JSON pointer {0:?} must be empty or start with '/'")]
    NoLeadingSlash(String),
    /// `~` must be followed by `0` or `1`.
    #[error("JSON pointer {0:?} has a '~' not followed by 0 or 1")]
    BadEscape(String),
}

impl JsonPointer {
    /// Parses an RFC 6901 pointer.
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        if text.is_empty() {
            return Ok(JsonPointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash(text.to_owned()));
        };
        let tokens = rest
            .split('/')
            .map(|raw| unescape(raw).ok_or_else(|| PointerError::BadEscape(text.to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(JsonPointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The reference tokens, unescaped.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Whether `self` is `other` or one of its ancestors.
    pub fn is_prefix_of(&self, other: &JsonPointer) -> bool {
        other.tokens.starts_with(&self.tokens)
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            f.write_str("\"\" (the whole body)")
        } else {
            f.write_str(&self.text)
        }
    }
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pointers() {
        let cases: [(&str, &[&str]); 6] = [
            ("", &[]),
            ("/variants", &["variants"]),
            ("/data/items", &["data", "items"]),
            ("/a~1b/c~0d", &["a/b", "c~d"]),
            ("/", &[""]),
            ("/0/x", &["0", "x"]),
        ];
        for (text, want) in cases {
            let p = JsonPointer::parse(text).unwrap();
            assert_eq!(p.tokens(), want, "{text}");
        }
    }

    #[test]
    fn rejects_bad_pointers() {
        assert!(matches!(
            JsonPointer::parse("variants"),
            Err(PointerError::NoLeadingSlash(_))
        ));
        assert!(matches!(
            JsonPointer::parse("/a~2"),
            Err(PointerError::BadEscape(_))
        ));
        assert!(matches!(
            JsonPointer::parse("/a~"),
            Err(PointerError::BadEscape(_))
        ));
    }

    #[test]
    fn prefixes() {
        let data = JsonPointer::parse("/data").unwrap();
        let items = JsonPointer::parse("/data/items").unwrap();
        assert!(data.is_prefix_of(&items));
        assert!(!items.is_prefix_of(&data));
        assert!(JsonPointer::parse("").unwrap().is_prefix_of(&data));
    }
}
