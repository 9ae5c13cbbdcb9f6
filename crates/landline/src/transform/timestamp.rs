//! Timestamp normalisation: rewrites the JSON value of a timestamp field as the JSON string
//! `"YYYY-MM-DDTHH:MM:SS.sssZ"` (UTC, exactly three fractional digits), or keeps `null`.
//!
//! Accepted values:
//! - JSON numbers, read as Unix epoch seconds, or milliseconds when the magnitude is at least
//!   10^11 (so seconds after the year 5138 cannot be expressed). Decimal fractions and exponents
//!   are computed exactly, not through floating point.
//! - JSON strings `YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,9}]` followed by an offset (`Z`, `z`, `±HH:MM`,
//!   `±HHMM`, `±HH`), converted to UTC; without an offset they are naive and read in the
//!   configured [`TimeZone`]. In a named zone, a local time repeated by a daylight-saving fold
//!   takes the earlier instant and a local time skipped by a gap is an error.
//!
//! Extra precision is truncated toward the earlier instant. Everything else is an error:
//! dates without a time, numeric strings, leap seconds (`:60`), hour 24, impossible calendar
//! dates, and instants outside the years 0000 to 9999.
//!
//! Not done here: finding the fields in a record, or deciding what an invalid value means for
//! the run (the caller adds the page, record and field to the error). The common shapes are
//! parsed by hand without allocating; chrono does the calendar checks and zone conversion.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::TimeZone as _;
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike};
use chrono_tz::Tz;

/// 0000-01-01T00:00:00.000Z in milliseconds since the Unix epoch: the earliest writable instant.
const MIN_MILLIS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z in milliseconds since the Unix epoch: the latest writable instant.
const MAX_MILLIS: i64 = 253_402_300_799_999;
/// Values and zone names in error messages are cut to this many characters.
const EXCERPT_CHARS: usize = 64;

/// The zone in which naive timestamps (those without an offset) are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeZone {
    /// Coordinated Universal Time (the default).
    #[default]
    Utc,
    /// A fixed offset from UTC, such as `+05:30`.
    Fixed(FixedOffset),
    /// An IANA time zone with its daylight-saving rules, such as `Europe/Berlin`.
    Named(Tz),
}

impl FromStr for TimeZone {
    type Err = TimeZoneError;

    /// Parses `UTC` or `Z` (any case), an offset `±HH:MM`, `±HHMM` or `±HH`, or an IANA name
    /// (case-sensitive, as in the tz database). Surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let zone = if s.eq_ignore_ascii_case("UTC") || s.eq_ignore_ascii_case("Z") {
            Some(Self::Utc)
        } else if s.starts_with(['+', '-']) {
            parse_offset(s.as_bytes())
                .and_then(FixedOffset::east_opt)
                .map(Self::Fixed)
        } else {
            s.parse::<Tz>().ok().map(Self::Named)
        };
        zone.ok_or_else(|| TimeZoneError { value: excerpt(s) })
    }
}

impl fmt::Display for TimeZone {
    /// `UTC`, `+05:30` or `Europe/Berlin`: text that [`TimeZone::from_str`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Utc => f.write_str("UTC"),
            Self::Fixed(offset) => fmt::Display::fmt(offset, f),
            Self::Named(tz) => f.write_str(tz.name()),
        }
    }
}

/// A time zone setting that is neither UTC, nor an offset, nor a known IANA name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown time zone {value:?}: expected \"UTC\", an offset such as \"+02:00\", \
     or an IANA name such as \"Europe/Berlin\""
)]
pub struct TimeZoneError {
    value: String,
}

/// Why a value could not be normalised. Each variant carries an excerpt (at most 64
/// characters, cut with `…`) of the value's JSON text, without the page, record or field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// Not a JSON number, string or `null` (a boolean, object, array or malformed JSON).
    #[error("not a number or a string: {0}")]
    NotNumberOrString(String),
    /// A string whose shape is none of the accepted formats, or a malformed JSON string.
    #[error("not a recognised timestamp: {0}")]
    Unrecognised(String),
    /// The shape is right but the date or time does not exist in the calendar (February 30th,
    /// hour 24, a leap second).
    #[error("invalid date or time: {0}")]
    InvalidDateTime(String),
    /// The instant is before the year 0000 or after 9999 (epoch numbers and strings alike).
    #[error("timestamp out of range (years 0000 to 9999): {0}")]
    OutOfRange(String),
    /// A naive local time that a daylight-saving gap skips in the configured zone.
    #[error("nonexistent local time in {zone}: {value}")]
    Nonexistent {
        /// The configured zone.
        zone: Tz,
        /// The value, as an excerpt of its JSON text.
        value: String,
    },
}

/// What went wrong, before the value's excerpt is attached (only on the error path).
enum Fault {
    NotNumberOrString,
    Unrecognised,
    InvalidDateTime,
    OutOfRange,
    Nonexistent(Tz),
}

impl Fault {
    fn into_error(self, text: &str) -> TimestampError {
        let value = excerpt(text);
        match self {
            Self::NotNumberOrString => TimestampError::NotNumberOrString(value),
            Self::Unrecognised => TimestampError::Unrecognised(value),
            Self::InvalidDateTime => TimestampError::InvalidDateTime(value),
            Self::OutOfRange => TimestampError::OutOfRange(value),
            Self::Nonexistent(zone) => TimestampError::Nonexistent { zone, value },
        }
    }
}

/// Appends to `out` the normalised JSON text of `raw`, a field's value as raw JSON text
/// (surrounding JSON whitespace allowed): `"YYYY-MM-DDTHH:MM:SS.sssZ"`, or `null` for `null`.
///
/// Naive strings are read in `tz`; numbers and strings with an offset ignore it.
///
/// # Errors
///
/// [`TimestampError`] when `raw` is not one of the accepted forms (see the module docs); `out`
/// is then left as it was.
pub fn normalise(raw: &str, tz: &TimeZone, out: &mut Vec<u8>) -> Result<(), TimestampError> {
    let text = raw.trim_matches([' ', '\t', '\n', '\r']);
    if text == "null" {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let ms = match text.as_bytes().first() {
        Some(b'"') => unquote(text)
            .ok_or(Fault::Unrecognised)
            .and_then(|s| datetime_millis(&s, tz)),
        Some(b'-' | b'0'..=b'9') => epoch_millis(text.as_bytes()),
        _ => Err(Fault::NotNumberOrString),
    }
    .map_err(|fault| fault.into_error(text))?;
    out.push(b'"');
    format_utc_millis(ms, out);
    out.push(b'"');
    Ok(())
}

/// Appends `YYYY-MM-DDTHH:MM:SS.sssZ` (no quotes) for `ms` milliseconds since the Unix epoch.
///
/// Instants outside 0000-01-01T00:00:00.000Z ..= 9999-12-31T23:59:59.999Z are clamped to
/// that range, the only one this format can express; [`normalise`] never produces them.
pub fn format_utc_millis(ms: i64, out: &mut Vec<u8>) {
    // The clamped value is always representable, so the default (the epoch) is never used.
    let t = DateTime::from_timestamp_millis(ms.clamp(MIN_MILLIS, MAX_MILLIS)).unwrap_or_default();
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut buf[0..4], t.year().unsigned_abs());
    put_digits(&mut buf[5..7], t.month());
    put_digits(&mut buf[8..10], t.day());
    put_digits(&mut buf[11..13], t.hour());
    put_digits(&mut buf[14..16], t.minute());
    put_digits(&mut buf[17..19], t.second());
    put_digits(&mut buf[20..23], t.timestamp_subsec_millis());
    out.extend_from_slice(&buf);
}

/// Writes the lowest `field.len()` decimal digits of `value`, zero-padded.
fn put_digits(field: &mut [u8], mut value: u32) {
    for c in field.iter_mut().rev() {
        *c = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The contents of the JSON string literal `text`; borrowed unless it has escapes.
fn unquote(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.bytes().any(|b| b == b'\\' || b == b'"') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// Milliseconds since the epoch of a date-time string, naive ones read in `tz`.
fn datetime_millis(s: &str, tz: &TimeZone) -> Result<i64, Fault> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(Fault::Unrecognised);
    }
    let field = |from: usize, to: usize| digits(&b[from..to]).ok_or(Fault::Unrecognised);
    let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
    let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    let mut rest = &b[19..];
    let mut milli = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return Err(Fault::Unrecognised);
        }
        // The first three digits, zero-padded; later ones are truncated.
        milli = fraction[..n]
            .iter()
            .chain(b"00")
            .take(3)
            .fold(0, |acc, c| acc * 10 + u32::from(c - b'0'));
        rest = &fraction[n..];
    }
    let offset = match rest {
        [] => None,
        [b'Z' | b'z'] => Some(0),
        _ => Some(parse_offset(rest).ok_or(Fault::Unrecognised)?),
    };
    let naive = NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day))
        .and_then(|date| {
            date.and_hms_milli_opt(u32::from(hour), u32::from(minute), u32::from(second), milli)
        })
        .ok_or(Fault::InvalidDateTime)?;
    let as_utc = naive.and_utc().timestamp_millis();
    let ms = match (offset, tz) {
        (Some(secs), _) => as_utc - i64::from(secs) * 1000,
        (None, TimeZone::Utc) => as_utc,
        (None, TimeZone::Fixed(zone)) => as_utc - i64::from(zone.local_minus_utc()) * 1000,
        (None, TimeZone::Named(zone)) => zone
            .from_local_datetime(&naive)
            .earliest()
            .ok_or(Fault::Nonexistent(*zone))?
            .timestamp_millis(),
    };
    if (MIN_MILLIS..=MAX_MILLIS).contains(&ms) {
        Ok(ms)
    } else {
        Err(Fault::OutOfRange)
    }
}

/// Seconds east of UTC of `±HH:MM`, `±HHMM` or `±HH` (hours up to 23), or `None`.
fn parse_offset(b: &[u8]) -> Option<i32> {
    let (negative, rest) = match b.split_first()? {
        (b'+', rest) => (false, rest),
        (b'-', rest) => (true, rest),
        _ => return None,
    };
    let (hh, mm) = match rest.len() {
        2 => (rest, &b"00"[..]),
        4 => rest.split_at(2),
        5 if rest[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return None,
    };
    let (h, m) = (digits(hh)?, digits(mm)?);
    if h > 23 || m > 59 {
        return None;
    }
    let secs = i32::from(h) * 3600 + i32::from(m) * 60;
    Some(if negative { -secs } else { secs })
}

/// The value of up to four ASCII digits, or `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<u16> {
    b.iter().try_fold(0u16, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u16::from(c - b'0'))
    })
}

/// Milliseconds since the epoch of a JSON number: seconds, or milliseconds when its magnitude
/// is at least 10^11. Exact decimal arithmetic, rounded toward the earlier instant.
fn epoch_millis(b: &[u8]) -> Result<i64, Fault> {
    let (negative, b) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let (int, rest) = b.split_at(leading_digits(b));
    let (frac, rest) = match rest.strip_prefix(b".") {
        Some(after) if leading_digits(after) == 0 => return Err(Fault::NotNumberOrString),
        Some(after) => after.split_at(leading_digits(after)),
        None => (&[][..], rest),
    };
    let exp = match rest {
        [] => Some(0),
        [b'e' | b'E', rest @ ..] => exponent(rest),
        _ => None,
    };
    let (false, Some(exp)) = (int.is_empty(), exp) else {
        return Err(Fault::NotNumberOrString);
    };
    let all_digits = || int.iter().chain(frac).map(|c| c - b'0');
    let zeros = all_digits().take_while(|&d| d == 0).count();
    if zeros == int.len() + frac.len() {
        return Ok(0);
    }
    // The value is 0.d1d2d3... * 10^point with d1 != 0: 10^(point-1) <= |value| < 10^point.
    let point = int.len() as i64 - zeros as i64 + exp;
    if point > 15 {
        // At least 10^15 in either unit: after the year 9999.
        return Err(Fault::OutOfRange);
    }
    // |value| >= 10^11 means milliseconds; seconds are scaled by 10^3.
    let ms_digits = if point >= 12 { point } else { point + 3 };
    let mut significant = all_digits().skip(zeros);
    let mut ms = 0i64;
    for _ in 0..ms_digits {
        ms = ms * 10 + i64::from(significant.next().unwrap_or(0));
    }
    let inexact = significant.any(|d| d != 0);
    let ms = if negative {
        -ms - i64::from(inexact)
    } else {
        ms
    };
    if (MIN_MILLIS..=MAX_MILLIS).contains(&ms) {
        Ok(ms)
    } else {
        Err(Fault::OutOfRange)
    }
}

fn leading_digits(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// The exponent after `e`: optional sign, at least one digit; saturates at ±10^6, far beyond
/// any exponent that could be in range.
fn exponent(b: &[u8]) -> Option<i64> {
    let (negative, b) = match b.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, b),
    };
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let e = b.iter().fold(0i64, |acc, c| {
        (acc * 10 + i64::from(c - b'0')).min(1_000_000)
    });
    Some(if negative { -e } else { e })
}

/// At most [`EXCERPT_CHARS`] characters of `text`, the last one `…` when it was cut.
fn excerpt(text: &str) -> String {
    if text.chars().nth(EXCERPT_CHARS).is_none() {
        return text.to_owned();
    }
    let cut = text
        .char_indices()
        .nth(EXCERPT_CHARS - 1)
        .map_or(text.len(), |(i, _)| i);
    format!("{}…", &text[..cut])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn run(tz: &str, raw: &str) -> Result<String, TimestampError> {
        let mut out = b"prefix:".to_vec();
        let tz: TimeZone = tz.parse().unwrap();
        let result = normalise(raw, &tz, &mut out);
        let text = String::from_utf8(out).unwrap();
        match result {
            Ok(()) => Ok(text.strip_prefix("prefix:").unwrap().to_owned()),
            Err(e) => {
                assert_eq!(text, "prefix:", "out changed on error for {raw:?}");
                Err(e)
            }
        }
    }

    #[test]
    fn normalises_accepted_values() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // Epoch numbers: seconds below 10^11, milliseconds from there.
            ("UTC", "1700000000", "2023-11-14T22:13:20.000Z"),
            ("UTC", "1700000000123", "2023-11-14T22:13:20.123Z"),
            ("UTC", "99999999999", "5138-11-16T09:46:39.000Z"),
            ("UTC", "100000000000", "1973-03-03T09:46:40.000Z"),
            ("UTC", "0", "1970-01-01T00:00:00.000Z"),
            ("UTC", "-0", "1970-01-01T00:00:00.000Z"),
            ("UTC", "-1", "1969-12-31T23:59:59.000Z"),
            ("UTC", "-1.5", "1969-12-31T23:59:58.500Z"),
            ("UTC", "-0.0001", "1969-12-31T23:59:59.999Z"),
            ("UTC", "-100000000000", "1966-10-31T14:13:20.000Z"),
            ("UTC", "1.7e9", "2023-11-14T22:13:20.000Z"),
            ("UTC", "1.7E+9", "2023-11-14T22:13:20.000Z"),
            ("UTC", "17000000001230e-1", "2023-11-14T22:13:20.123Z"),
            ("UTC", "1700000000.5", "2023-11-14T22:13:20.500Z"),
            ("UTC", "1700000000.1239", "2023-11-14T22:13:20.123Z"),
            ("UTC", "1700000000123.9", "2023-11-14T22:13:20.123Z"),
            ("UTC", "0.0000000000000000000000001", "1970-01-01T00:00:00.000Z"),
            ("UTC", "-62167219200", "0000-01-01T00:00:00.000Z"),
            ("UTC", "253402300799999", "9999-12-31T23:59:59.999Z"),
            ("Europe/Berlin", "1700000000", "2023-11-14T22:13:20.000Z"),
            // Strings with an offset.
            ("UTC", r#""2024-02-13T14:04:10.045Z""#, "2024-02-13T14:04:10.045Z"),
            ("UTC", r#""2024-02-13T14:04:10Z""#, "2024-02-13T14:04:10.000Z"),
            ("UTC", r#""2024-02-13T16:04:10.045+02:00""#, "2024-02-13T14:04:10.045Z"),
            ("UTC", r#""2024-02-13T14:04:10.045123456Z""#, "2024-02-13T14:04:10.045Z"),
            ("UTC", r#""2024-02-13t14:04:10.4z""#, "2024-02-13T14:04:10.400Z"),
            ("UTC", r#""2024-02-13 14:04:10.04Z""#, "2024-02-13T14:04:10.040Z"),
            ("UTC", r#""2024-02-13T09:34:10-0430""#, "2024-02-13T14:04:10.000Z"),
            ("UTC", r#""2024-02-13T16:04:10+02""#, "2024-02-13T14:04:10.000Z"),
            ("UTC", r#""2024-02-14T01:04:10+11:00""#, "2024-02-13T14:04:10.000Z"),
            ("UTC", r#""2024-02-29T00:00:00-00:00""#, "2024-02-29T00:00:00.000Z"),
            ("Europe/Berlin", r#""2024-07-01T12:00:00Z""#, "2024-07-01T12:00:00.000Z"),
            ("UTC", r#""0000-01-01T00:00:00Z""#, "0000-01-01T00:00:00.000Z"),
            ("UTC", r#""9999-12-31T23:59:59.999999Z""#, "9999-12-31T23:59:59.999Z"),
            // Naive strings, read in the configured zone.
            ("UTC", r#""2023-11-18 23:49:19""#, "2023-11-18T23:49:19.000Z"),
            ("UTC", r#""2023-11-18T23:49:19.5""#, "2023-11-18T23:49:19.500Z"),
            ("Europe/Berlin", r#""2024-07-01 12:00:00""#, "2024-07-01T10:00:00.000Z"),
            ("Europe/Berlin", r#""2024-01-15T12:00:00.250""#, "2024-01-15T11:00:00.250Z"),
            ("Europe/Berlin", r#""2024-10-27 02:30:00""#, "2024-10-27T00:30:00.000Z"),
            ("+05:30", r#""2024-01-01 00:00:00""#, "2023-12-31T18:30:00.000Z"),
            ("-0530", r#""2024-01-01 00:00:00""#, "2024-01-01T05:30:00.000Z"),
            // null, whitespace and escapes.
            ("UTC", "null", "null"),
            ("Europe/Berlin", " \n null\t", "null"),
            ("UTC", " \n 1700000000 \t", "2023-11-14T22:13:20.000Z"),
            ("UTC", "\t\"2024-02-13T14:04:10Z\"\r\n", "2024-02-13T14:04:10.000Z"),
            ("UTC", r#""2024-02-13T14:04:10\u002e045\u005A""#, "2024-02-13T14:04:10.045Z"),
        ];
        for &(tz, raw, want) in cases {
            let want = match want {
                "null" => want.to_owned(),
                _ => format!("\"{want}\""),
            };
            match run(tz, raw) {
                Ok(got) => assert_eq!(got, want, "{raw:?} in {tz}"),
                Err(e) => panic!("{raw:?} in {tz}: {e}"),
            }
        }
    }

    #[test]
    fn rejects_everything_else() {
        const TYPE: &str = "not a number or a string";
        const SHAPE: &str = "not a recognised timestamp";
        const DATE: &str = "invalid date or time";
        const RANGE: &str = "timestamp out of range (years 0000 to 9999)";
        const GAP: &str = "nonexistent local time in Europe/Berlin";
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("UTC", "", TYPE),
            ("UTC", " \ttrue\n", TYPE),
            ("UTC", "true", TYPE),
            ("UTC", "{}", TYPE),
            ("UTC", "[1]", TYPE),
            ("UTC", "abc", TYPE),
            ("UTC", "NaN", TYPE),
            ("UTC", "nullx", TYPE),
            ("UTC", "-", TYPE),
            ("UTC", "1.", TYPE),
            ("UTC", ".5", TYPE),
            ("UTC", "+1", TYPE),
            ("UTC", "1e", TYPE),
            ("UTC", "1e+", TYPE),
            ("UTC", "1x", TYPE),
            ("UTC", "0x10", TYPE),
            ("UTC", "1 2", TYPE),
            ("UTC", "1e300", RANGE),
            ("UTC", "-1e16", RANGE),
            ("UTC", "253402300800000", RANGE),
            ("UTC", "-62167219201", RANGE),
            ("UTC", "1e999999999999999999", RANGE),
            ("UTC", r#""""#, SHAPE),
            ("UTC", r#""2024-01-01""#, SHAPE),
            ("UTC", r#""24:00""#, SHAPE),
            ("UTC", r#""1700000000""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10.Z""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10.0451234567Z""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10+2:00""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10+24:00""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10+02:60""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10Z ""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10 +02:00""#, SHAPE),
            ("UTC", r#"" 2024-02-13T14:04:10Z""#, SHAPE),
            ("UTC", r#""2024-02-13X14:04:10Z""#, SHAPE),
            ("UTC", r#""2024/02/13 14:04:10""#, SHAPE),
            ("UTC", r#""+2024-02-13T14:04:10Z""#, SHAPE),
            ("UTC", r#""２０２４-02-13T14:04:10Z""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10Zé""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10Z"#, SHAPE),
            ("UTC", r#"""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10Z\""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10\x""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10Z"x"#, SHAPE),
            ("UTC", r#""2024-02-30 00:00:00""#, DATE),
            ("UTC", r#""2023-02-29T00:00:00Z""#, DATE),
            ("UTC", r#""2024-13-01T00:00:00Z""#, DATE),
            ("UTC", r#""2024-00-01T00:00:00Z""#, DATE),
            ("UTC", r#""2024-01-01T24:00:00Z""#, DATE),
            ("UTC", r#""2024-02-13T14:60:00Z""#, DATE),
            // Leap seconds are rejected: UTC-millisecond output cannot express them.
            ("UTC", r#""2016-12-31T23:59:60Z""#, DATE),
            ("UTC", r#""0000-01-01T00:00:00+01:00""#, RANGE),
            ("-01:00", r#""9999-12-31T23:30:00""#, RANGE),
            ("Europe/Berlin", r#""2024-03-31 02:30:00""#, GAP),
        ];
        for &(tz, raw, want) in cases {
            match run(tz, raw) {
                Ok(got) => panic!("{raw:?} in {tz} gave {got}"),
                Err(e) => assert_eq!(e.to_string(), format!("{want}: {}", raw.trim())),
            }
        }
    }

    #[test]
    fn long_values_are_excerpted() {
        let long_string = format!("\"{}\"", "9".repeat(1000));
        let long_number = format!("1{}", "0".repeat(10_000));
        let long_word = "é".repeat(100);
        for raw in [&long_string, &long_number, &long_word] {
            let message = run("UTC", raw).unwrap_err().to_string();
            let value = message.rsplit(' ').next().unwrap();
            assert_eq!(value.chars().count(), EXCERPT_CHARS, "{message}");
            assert!(value.ends_with('…'), "{message}");
        }
        // Long but tiny numbers are exact: the sign decides which millisecond they fall in.
        let tiny = format!("0.{}1", "0".repeat(10_000));
        assert_eq!(run("UTC", &tiny).unwrap(), r#""1970-01-01T00:00:00.000Z""#);
        assert_eq!(
            run("UTC", &format!("-{tiny}")).unwrap(),
            r#""1969-12-31T23:59:59.999Z""#
        );
    }

    #[test]
    fn parses_time_zones() {
        let berlin = TimeZone::Named(chrono_tz::Europe::Berlin);
        let east = |secs| TimeZone::Fixed(FixedOffset::east_opt(secs).unwrap());
        let cases = [
            ("UTC", TimeZone::Utc, "UTC"),
            ("utc", TimeZone::Utc, "UTC"),
            ("Z", TimeZone::Utc, "UTC"),
            ("+02:00", east(7200), "+02:00"),
            ("-0530", east(-19800), "-05:30"),
            ("+02", east(7200), "+02:00"),
            ("-00:00", east(0), "+00:00"),
            ("Europe/Berlin", berlin, "Europe/Berlin"),
            (" Europe/Berlin ", berlin, "Europe/Berlin"),
        ];
        for (text, want, display) in cases {
            let tz: TimeZone = text.parse().unwrap();
            assert_eq!(tz, want, "{text:?}");
            assert_eq!(tz.to_string(), display, "{text:?}");
            assert_eq!(display.parse::<TimeZone>().unwrap(), want, "{display:?}");
        }
        assert_eq!(TimeZone::default(), TimeZone::Utc);
        for bad in [
            "",
            "Mars/Base",
            "europe/berlin",
            "+24:00",
            "+2",
            "+02:0",
            "02:00",
            "+02:60",
        ] {
            let err = bad.parse::<TimeZone>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("unknown time zone {bad:?}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn formats_and_clamps_millis() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (MIN_MILLIS, "0000-01-01T00:00:00.000Z"),
            (MAX_MILLIS, "9999-12-31T23:59:59.999Z"),
            (i64::MIN, "0000-01-01T00:00:00.000Z"),
            (i64::MAX, "9999-12-31T23:59:59.999Z"),
        ];
        for (ms, want) in cases {
            let mut out = Vec::new();
            format_utc_millis(ms, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{ms}");
        }
    }

    #[test]
    fn formatted_millis_parse_back_identically() {
        let mut rng = StdRng::seed_from_u64(0x1a4d);
        let (mut formatted, mut normalised) = (Vec::new(), Vec::new());
        for _ in 0..10_000 {
            // 1970-01-01 ..= 2099-12-31T23:59:59.999Z
            let ms = rng.random_range(0..4_102_444_800_000_i64);
            formatted.clear();
            formatted.push(b'"');
            format_utc_millis(ms, &mut formatted);
            formatted.push(b'"');
            let text = std::str::from_utf8(&formatted).unwrap();
            normalised.clear();
            normalise(text, &TimeZone::Utc, &mut normalised).unwrap();
            assert_eq!(normalised, formatted, "{ms}");
            // The same instant as epoch seconds with a fraction, and as epoch milliseconds.
            let mut epochs = vec![format!("{}.{:03}", ms / 1000, ms % 1000)];
            if ms >= 100_000_000_000 {
                epochs.push(ms.to_string());
            }
            for epoch in epochs {
                normalised.clear();
                normalise(&epoch, &TimeZone::Utc, &mut normalised).unwrap();
                assert_eq!(normalised, formatted, "{epoch}");
            }
        }
    }
}
