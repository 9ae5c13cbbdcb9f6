//! Verification of AWS Signature Version 4 in its header form ([`super::Auth::SigV4`]).
//!
//! The request's `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
//! SignedHeaders=…, Signature=…` is checked against the configured key, region and service, its
//! `X-Amz-Date` against the server's clock (at most 15 minutes apart), its
//! `X-Amz-Security-Token` against the session token if one is configured, and its signature
//! against the one this server computes: the canonical request as the AWS documentation builds
//! it ("Create a canonical request for Signature Version 4"), in the form the `aws-sigv4` crate
//! produces with `SigningSettings::default()` (`percent_encoding_mode = Double`,
//! `uri_path_normalization_mode = Enabled`):
//!
//! - method;
//! - the path as sent, with dot segments removed (RFC 3986 §5.2.4), then URI-encoded once more
//!   (every byte but `A-Z a-z 0-9 - . _ ~` and `/`; so `%` becomes `%25`: each segment
//!   encoded twice, as AWS wants for every service but S3);
//! - the query decoded as `application/x-www-form-urlencoded` (as aws-sigv4 reads it), each
//!   name and value URI-encoded (RFC 3986 unreserved characters kept, space as `%20`), sorted
//!   by name then value, joined with `&`;
//! - each signed header `name:value`, lowercase, the value trimmed with runs of spaces made
//!   one, repeated headers joined with `,`, in the order of `SignedHeaders` (which must be
//!   sorted, lowercase, and hold `host` and `x-amz-date`);
//! - the signed header list, and the payload hash: `X-Amz-Content-Sha256` if sent, else the
//!   SHA-256 of an empty body (data requests are `GET`s).
//!
//! The string to sign is `AWS4-HMAC-SHA256\n<X-Amz-Date>\n<scope>\n<hex SHA-256 of the
//! canonical request>`, the key `HMAC("AWS4" + secret, date)` → region → service →
//! `aws4_request`, and the signatures are compared in constant time. Errors name what did not
//! match, never a secret.

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::generator::parse_rfc3339;

/// The algorithm of the header form.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far `X-Amz-Date` may be from the server's clock, as AWS allows.
pub(super) const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Hex SHA-256 of an empty payload.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The key a request must be signed with.
pub(super) struct SigV4Key<'a> {
    pub(super) access_key_id: &'a str,
    pub(super) secret_access_key: &'a str,
    pub(super) session_token: Option<&'a str>,
    pub(super) region: &'a str,
    pub(super) service: &'a str,
}

/// The parts of a request that are signed.
pub(super) struct SignedRequest<'a> {
    pub(super) method: &'a str,
    /// The path as sent (still percent-encoded).
    pub(super) path: &'a str,
    /// The query as sent, without `?`.
    pub(super) query: &'a str,
    pub(super) headers: &'a HeaderMap,
}

/// Verifies the request's signature at time `now`; the error says what did not match.
pub(super) fn verify(
    key: &SigV4Key<'_>,
    request: &SignedRequest<'_>,
    now: SystemTime,
) -> Result<(), String> {
    let headers = request.headers;
    let authorization = headers
        .get(AUTHORIZATION)
        .ok_or("missing Authorization header (AWS4-HMAC-SHA256)")?
        .to_str()
        .map_err(|_| "malformed Authorization header: not visible ASCII")?;
    let Some(fields) = authorization
        .strip_prefix(ALGORITHM)
        .filter(|rest| rest.starts_with(' '))
    else {
        return Err("Authorization is not AWS4-HMAC-SHA256 (Signature Version 4)".into());
    };
    let auth = Authorization::parse(fields)?;

    let scope: Vec<&str> = auth.credential.split('/').collect();
    let &[access_key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(
            "malformed Credential: expected AKID/YYYYMMDD/REGION/SERVICE/aws4_request".into(),
        );
    };
    if !ct_eq(access_key_id.as_bytes(), key.access_key_id.as_bytes()) {
        return Err("unknown access key id in Credential".into());
    }
    if region != key.region {
        return Err(format!(
            "Credential region {region:?} does not match the server's region {:?}",
            key.region
        ));
    }
    if service != key.service {
        return Err(format!(
            "Credential service {service:?} does not match the server's service {:?}",
            key.service
        ));
    }

    let amz_date = header_text(headers, "x-amz-date")?.ok_or("missing X-Amz-Date header")?;
    let signed_at = parse_amz_date(amz_date)?;
    if !amz_date.starts_with(date) || date.len() != 8 {
        return Err(format!(
            "Credential date {date:?} does not match the day of X-Amz-Date {amz_date:?}"
        ));
    }
    let skew = match now.duration_since(signed_at) {
        Ok(behind) => behind,
        Err(ahead) => ahead.duration(),
    };
    if skew > MAX_SKEW {
        return Err(format!(
            "X-Amz-Date {amz_date} is more than 15 minutes from the server's clock \
             ({} s apart)",
            skew.as_secs()
        ));
    }

    if let Some(expected) = key.session_token {
        let token = header_text(headers, "x-amz-security-token")?
            .ok_or("missing X-Amz-Security-Token header (a session token is required)")?;
        if !ct_eq(token.as_bytes(), expected.as_bytes()) {
            return Err("X-Amz-Security-Token does not match the session token".into());
        }
    }

    let signed: Vec<&str> = auth.signed_headers.split(';').collect();
    let well_formed = signed.iter().all(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
    });
    if !well_formed || !signed.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(
            "malformed SignedHeaders: expected lowercase names, sorted, separated by ';'".into(),
        );
    }
    for required in ["host", "x-amz-date"] {
        if !signed.contains(&required) {
            return Err(format!("SignedHeaders must include {required}"));
        }
    }
    if signed.contains(&"authorization") {
        return Err("SignedHeaders must not include authorization".into());
    }

    let payload_hash = header_text(headers, "x-amz-content-sha256")?.unwrap_or(EMPTY_SHA256);
    let canonical = canonical_request(request, &signed, payload_hash)?;
    let credential_scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = string_to_sign(amz_date, &credential_scope, &canonical);
    let signing_key = signing_key(key.secret_access_key, date, region, service);

    let presented = decode_hex(auth.signature)
        .filter(|bytes| bytes.len() == 32)
        .ok_or("malformed Signature: expected 64 hex digits")?;
    let mut mac = hmac_sha256_mac(&signing_key);
    mac.update(to_sign.as_bytes());
    mac.verify_slice(&presented).map_err(|_| {
        format!(
            "signature does not match (the secret access key, or the signed request, differs); \
             the server's canonical request hashes to {}",
            sha256_hex(canonical.as_bytes())
        )
    })
}

/// The fields of an `AWS4-HMAC-SHA256` Authorization header.
struct Authorization<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

impl<'a> Authorization<'a> {
    /// `Credential=…, SignedHeaders=…, Signature=…` (any order, spaces around commas).
    fn parse(fields: &'a str) -> Result<Authorization<'a>, String> {
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for field in fields.split(',') {
            let Some((name, value)) = field.trim().split_once('=') else {
                return Err("malformed Authorization: expected name=value fields".into());
            };
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(format!("malformed Authorization: {name} twice"));
            }
        }
        let missing = |name: &str| format!("malformed Authorization: no {name}");
        Ok(Authorization {
            credential: credential.ok_or_else(|| missing("Credential"))?,
            signed_headers: signed_headers.ok_or_else(|| missing("SignedHeaders"))?,
            signature: signature.ok_or_else(|| missing("Signature"))?,
        })
    }
}

/// The value of header `name` as text, if present (repeated: the first).
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| format!("malformed {name} header: not visible ASCII"))
        })
        .transpose()
}

/// `YYYYMMDDTHHMMSSZ` as an instant.
pub(super) fn parse_amz_date(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("malformed X-Amz-Date {text:?}: expected YYYYMMDDTHHMMSSZ");
    let b = text.as_bytes();
    let digits_at =
        |range: std::ops::Range<usize>| range.into_iter().all(|i| b[i].is_ascii_digit());
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !digits_at(0..8) || !digits_at(9..15) {
        return Err(bad());
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &text[0..4],
        &text[4..6],
        &text[6..8],
        &text[9..11],
        &text[11..13],
        &text[13..15]
    );
    let (secs, _) = parse_rfc3339(&rfc3339).map_err(|_| bad())?;
    let since_epoch = Duration::from_secs(secs.unsigned_abs());
    let at = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(since_epoch)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(since_epoch)
    };
    at.ok_or_else(bad)
}

/// The canonical request of `request` over the `signed` headers (sorted, lowercase).
pub(super) fn canonical_request(
    request: &SignedRequest<'_>,
    signed: &[&str],
    payload_hash: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(256);
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_uri(request.path));
    out.push('\n');
    out.push_str(&canonical_query(request.query));
    out.push('\n');
    for name in signed {
        let mut values = Vec::new();
        for value in request.headers.get_all(*name) {
            let text = std::str::from_utf8(value.as_bytes())
                .map_err(|_| format!("signed header {name} is not UTF-8"))?;
            values.push(trim_all(text));
        }
        if values.is_empty() {
            return Err(format!("signed header {name} is missing from the request"));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// The path with dot segments removed (RFC 3986 §5.2.4, as aws-sigv4 normalises it), then
/// URI-encoded once more, `/` kept.
pub(super) fn canonical_uri(path: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let normalized = if path.contains('.') {
        let mut segments: Vec<&str> = Vec::new();
        for segment in path.split('/') {
            match segment {
                "." => {}
                ".." => {
                    segments.pop();
                }
                other => segments.push(other),
            }
        }
        let mut result = segments.join("/");
        if !result.starts_with('/') {
            result.insert(0, '/');
        }
        let ends_with_slash = ["/", "/.", "/./", "/..", "/../"]
            .iter()
            .any(|end| path.ends_with(end));
        if ends_with_slash && !result.ends_with('/') {
            result.push('/');
        }
        result
    } else {
        path
    };
    uri_encode(&normalized, true)
}

/// The query's parameters, decoded as a form, re-encoded, sorted and joined.
pub(super) fn canonical_query(query: &str) -> String {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (uri_encode(&name, false), uri_encode(&value, false)))
        .collect();
    params.sort();
    let pairs: Vec<String> = params
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    pairs.join("&")
}

/// Every byte but the RFC 3986 unreserved characters (and `/`, if `keep_slash`) as `%XX`.
pub(super) fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `text` without leading and trailing spaces, and runs of spaces made one.
fn trim_all(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(' ').filter(|word| !word.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The string to sign.
pub(super) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// `kSigning`: the HMAC chain from the secret through date, region and service.
pub(super) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

fn hmac_sha256_mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this never fails.
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac_sha256_mac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex SHA-256.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits (either case) as bytes.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| char::from(c).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// Whether `a == b`, in time that depends on their lengths only.
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// The AWS documentation's example: "GET https://iam.amazonaws.com/?Action=ListUsers&
    /// Version=2010-05-08", signed with AKIDEXAMPLE on 2015-08-30 at 12:36:00 UTC.
    fn aws_example() -> (HeaderMap, SigV4Key<'static>) {
        let mut headers = HeaderMap::new();
        let mut add = |name: &'static str, value: &'static str| {
            headers.append(name, HeaderValue::from_static(value));
        };
        add(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        );
        add("host", "iam.amazonaws.com");
        add("x-amz-date", "20150830T123600Z");
        add(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        );
        let key = SigV4Key {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
            service: "iam",
        };
        (headers, key)
    }

    const QUERY: &str = "Action=ListUsers&Version=2010-05-08";

    fn example_time() -> SystemTime {
        parse_amz_date("20150830T123600Z").expect("a date")
    }

    fn request<'a>(query: &'a str, headers: &'a HeaderMap) -> SignedRequest<'a> {
        SignedRequest {
            method: "GET",
            path: "/",
            query,
            headers,
        }
    }

    #[test]
    fn the_aws_documentation_example_verifies() {
        let (headers, key) = aws_example();
        // Each step as the documentation shows it.
        let signed = ["content-type", "host", "x-amz-date"];
        let canonical =
            canonical_request(&request(QUERY, &headers), &signed, EMPTY_SHA256).expect("built");
        assert_eq!(
            canonical,
            "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
             content-type:application/x-www-form-urlencoded; charset=utf-8\n\
             host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             content-type;host;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        assert_eq!(
            hex(&signing_key(
                key.secret_access_key,
                "20150830",
                "us-east-1",
                "iam"
            )),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        assert_eq!(
            verify(&key, &request(QUERY, &headers), example_time()),
            Ok(())
        );
        // Up to 15 minutes either way.
        for offset in [-900i64, 900] {
            let now = if offset < 0 {
                example_time() - Duration::from_secs(900)
            } else {
                example_time() + Duration::from_secs(900)
            };
            assert_eq!(verify(&key, &request(QUERY, &headers), now), Ok(()));
        }
    }

    #[test]
    fn what_does_not_match_is_named() {
        let (headers, key) = aws_example();
        let now = example_time();
        let check = |key: &SigV4Key<'_>, query: &str, headers: &HeaderMap, now| {
            verify(key, &request(query, headers), now).expect_err("refused")
        };
        let wrong_secret = SigV4Key {
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEX",
            ..aws_example().1
        };
        let error = check(&wrong_secret, QUERY, &headers, now);
        assert!(error.starts_with("signature does not match"), "{error}");
        assert!(!error.contains("EXAMPLEKE"), "{error}");
        let error = check(&key, "Action=ListUsers&Version=2010-05-09", &headers, now);
        assert!(error.starts_with("signature does not match"), "{error}");
        let wrong_key = SigV4Key {
            access_key_id: "AKIDOTHER",
            ..aws_example().1
        };
        assert_eq!(
            check(&wrong_key, QUERY, &headers, now),
            "unknown access key id in Credential"
        );
        let wrong_region = SigV4Key {
            region: "eu-west-1",
            ..aws_example().1
        };
        assert!(check(&wrong_region, QUERY, &headers, now).contains("region \"us-east-1\""));
        let late = now + Duration::from_secs(901);
        assert!(check(&key, QUERY, &headers, late).contains("more than 15 minutes"));
        let early = now - Duration::from_secs(901);
        assert!(check(&key, QUERY, &headers, early).contains("more than 15 minutes"));
        let with_token = SigV4Key {
            session_token: Some("session-token-secret"),
            ..aws_example().1
        };
        assert!(check(&with_token, QUERY, &headers, now).contains("missing X-Amz-Security-Token"));
        let mut wrong_token = headers.clone();
        wrong_token.insert("x-amz-security-token", HeaderValue::from_static("other"));
        let error = check(&with_token, QUERY, &wrong_token, now);
        assert_eq!(
            error,
            "X-Amz-Security-Token does not match the session token"
        );

        let with_auth = |value: &'static str| {
            let mut headers = headers.clone();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        for (authorization, expected) in [
            ("Bearer x", "not AWS4-HMAC-SHA256"),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date",
                "no Signature",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam, SignedHeaders=host;x-amz-date, Signature=00",
                "malformed Credential",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=x-amz-date;host, Signature=00",
                "malformed SignedHeaders",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;x-amz-date, Signature=00",
                "must include host",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature=zz",
                "malformed Signature",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150831/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
                "Credential date",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date;x-custom, Signature=00",
                "x-custom is missing",
            ),
        ] {
            let error = check(&key, QUERY, &with_auth(authorization), now);
            assert!(error.contains(expected), "{authorization}: {error}");
        }
        let mut no_date = headers.clone();
        no_date.remove("x-amz-date");
        assert_eq!(
            check(&key, QUERY, &no_date, now),
            "missing X-Amz-Date header"
        );
        let mut no_auth = headers.clone();
        no_auth.remove(AUTHORIZATION);
        assert!(check(&key, QUERY, &no_auth, now).starts_with("missing Authorization"));
    }

    #[test]
    fn canonical_forms() {
        // Paths: normalised, then encoded once more.
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/variants"), "/variants");
        assert_eq!(canonical_uri("/a/./b/../c/"), "/a/c/");
        assert_eq!(canonical_uri("/a%20b/c:d"), "/a%2520b/c%3Ad");
        assert_eq!(canonical_uri("/foo%2F.%2Fbar"), "/foo%252F.%252Fbar");
        // Queries: decoded as a form, re-encoded, sorted by name then value.
        assert_eq!(
            canonical_query("b=2&a=x+y&a=%41%3a&c&updated_since=2024-01-01T00%3A00%3A00Z"),
            "a=A%3A&a=x%20y&b=2&c=&updated_since=2024-01-01T00%3A00%3A00Z"
        );
        assert_eq!(canonical_query(""), "");
        assert_eq!(trim_all("  a   b c  "), "a b c");
        assert_eq!(
            uri_encode("AZaz09-._~ /+=é", false),
            "AZaz09-._~%20%2F%2B%3D%C3%A9"
        );
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert_eq!(decode_hex("0aFf"), Some(vec![10, 255]));
        assert_eq!(decode_hex("0"), None);
        assert!(parse_amz_date("20150830T123600").is_err());
        assert!(parse_amz_date("20150230T123600Z").is_err());
        assert!(parse_amz_date("2015083ÀT12360Z").is_err());
    }
}
