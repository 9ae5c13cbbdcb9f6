//! Walking error sources, for messages that give the root cause on one line.

use std::error::Error;

/// `e` and its sources, outermost first. Unlike `source()` alone, this looks inside
/// `std::io::Error`s, whose `source()` skips the error they wrap (TLS errors hide there).
pub(crate) fn chain<'a>(
    e: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&e: &&'a (dyn Error + 'static)| match e
        .downcast_ref::<std::io::Error>()
    {
        Some(io) => io
            .get_ref()
            .map(|inner| inner as &(dyn Error + 'static))
            .or_else(|| e.source()),
        None => e.source(),
    })
}

/// `e` and its sources on one line, each part once (reqwest's and object_store's own
/// `Display` stop at the first level; servers' XML bodies come with line breaks).
pub(crate) fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    for e in chain(e) {
        let part = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !part.is_empty() && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// Whether TLS refused the peer's certificate somewhere in `e`'s sources: retrying will not
/// help.
pub(crate) fn is_certificate_error(e: &(dyn Error + 'static)) -> bool {
    chain(e).any(|e| {
        matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
            )
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_errors_wrapped_in_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(inner);
        assert!(is_certificate_error(&outer));
        assert!(
            one_line(&outer).contains("UnknownIssuer"),
            "{}",
            one_line(&outer)
        );
        let plain = std::io::Error::other("connection reset\n by peer");
        assert!(!is_certificate_error(&plain));
        assert_eq!(one_line(&plain), "connection reset by peer");
    }
}
