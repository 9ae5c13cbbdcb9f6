//! Timestamp normalisation: rewrites the JSON value of a timestamp field as the JSON string
//! `"YYYY-MM-DDTHH:MM:SS.fffZ"` (UTC), or keeps `null`; and of a date field as `"YYYY-MM-DD"`.
//!
//! Accepted values:
//! - JSON numbers, read as Unix epoch seconds, milliseconds, microseconds or nanoseconds by
//!   their magnitude: seconds below 10^11 (so seconds after the year 5138 cannot be
//!   expressed), then milliseconds up to the last millisecond of 9999
//!   (`253402300799999`), then microseconds up to the last microsecond of 9999, then
//!   nanoseconds up to the last nanosecond of 9999. So any instant from 1978 to 5138 reads
//!   right in every unit, as does every millisecond value landline read before. Decimal
//!   fractions and exponents are computed exactly, not through floating point.
//! - JSON strings `YYYY-MM-DD(T|t| )HH:MM:SS[.f+]` followed by an offset (`Z`, `z`, `±HH:MM`,
//!   `±HHMM`, `±HH`), converted to UTC; without an offset they are naive and read in the
//!   configured [`TimeZone`]. In a named zone, a local time repeated by a daylight-saving fold
//!   takes the earlier instant and a local time skipped by a gap is an error. The fraction
//!   may have any number of digits; those past the ninth are truncated.
//!
//! **Precision.** The instant is kept to the nanosecond through parsing and zone conversion.
//! With a [`TimestampPrecision`], the fraction has exactly 3, 6 or 9 digits. Without one
//! (the default), it has the digits the value gave, rounded up to a whole group of three
//! (milliseconds, microseconds, nanoseconds: the forms readers such as Spark, DuckDB and
//! Athena parse best), and at least three: `:05Z` → `.000`, `.5` → `.500`, `.123456` →
//! `.123456`, `.1234567` → `.123456700`. A string gives the digits it has, trailing zeros
//! included (`.500000` → `.500000`). A number gives its unit's digits (0 for seconds, 3 for
//! milliseconds, 6 and 9) plus the decimal places of its exact value, trailing zeros not
//! counted (`1700000000.500` → `.500`, `1700000000.1239` → `.123900`, `1.7e9` → `.000`).
//!
//! Extra precision is truncated toward the earlier instant (never rounded up, so never into
//! the next second). Everything else is an error: dates without a time (except for dates,
//! see [`normalise_date`]), numeric strings, leap seconds (`:60`), hour 24, impossible
//! calendar dates, and instants outside the years 0000 to 9999.
//!
//! Not done here: finding the fields in a record, or deciding what an invalid value means for
//! the run (the caller adds the page, record and field to the error). The common shapes are
//! parsed by hand without allocating; chrono does the calendar checks and zone conversion.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::TimeZone as _;
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, Timelike};
use chrono_tz::Tz;

/// 0000-01-01T00:00:00Z in seconds since the Unix epoch: the earliest writable instant.
const MIN_SECS: i64 = -62_167_219_200;
/// 9999-12-31T23:59:59Z in seconds since the Unix epoch: the latest writable second.
const MAX_SECS: i64 = 253_402_300_799;
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

/// How many fractional digits normalised timestamps get (`timestamp_precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampPrecision {
    /// Milliseconds: exactly three digits, further ones truncated.
    Ms,
    /// Microseconds: exactly six digits, further ones truncated.
    Us,
    /// Nanoseconds: exactly nine digits.
    Ns,
}

impl TimestampPrecision {
    /// The number of fractional digits: 3, 6 or 9.
    pub fn digits(self) -> usize {
        match self {
            Self::Ms => 3,
            Self::Us => 6,
            Self::Ns => 9,
        }
    }
}

/// The fractional digits written for a value whose source gave `given` (0 to 9): the
/// setting's, or by default `given` rounded up to a whole group of three, at least three.
fn out_digits(given: u8, precision: Option<TimestampPrecision>) -> usize {
    match precision {
        Some(p) => p.digits(),
        None => (usize::from(given).max(3).div_ceil(3) * 3).min(9),
    }
}

/// An exact instant: whole seconds since the Unix epoch (rounded down) and the nanoseconds
/// after them, with the number of fractional digits (0 to 9) its source gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instant {
    secs: i64,
    nanos: u32,
    digits: u8,
}

impl Instant {
    fn in_range(self) -> Result<Self, Fault> {
        if (MIN_SECS..=MAX_SECS).contains(&self.secs) {
            Ok(self)
        } else {
            Err(Fault::OutOfRange)
        }
    }
}

/// Appends to `out` the normalised JSON text of `raw`, a field's value as raw JSON text
/// (surrounding JSON whitespace allowed): `"YYYY-MM-DDTHH:MM:SS.fffZ"` with the fractional
/// digits `precision` asks for (by default: those the value gave, see the module docs), or
/// `null` for `null`.
///
/// Naive strings are read in `tz`; numbers and strings with an offset ignore it.
///
/// # Errors
///
/// [`TimestampError`] when `raw` is not one of the accepted forms (see the module docs); `out`
/// is then left as it was.
pub fn normalise(
    raw: &str,
    tz: &TimeZone,
    precision: Option<TimestampPrecision>,
    out: &mut Vec<u8>,
) -> Result<(), TimestampError> {
    let text = raw.trim_matches([' ', '\t', '\n', '\r']);
    if text == "null" {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let instant = match text.as_bytes().first() {
        Some(b'"') => unquote(text)
            .ok_or(Fault::Unrecognised)
            .and_then(|s| parse_datetime(&s)?.instant(tz)),
        Some(b'-' | b'0'..=b'9') => epoch_instant(text.as_bytes()),
        _ => Err(Fault::NotNumberOrString),
    }
    .map_err(|fault| fault.into_error(text))?;
    out.push(b'"');
    format_utc(
        instant.secs,
        instant.nanos,
        out_digits(instant.digits, precision),
        out,
    );
    out.push(b'"');
    Ok(())
}

/// The instant of `raw`, a field's value as raw JSON text (a string or a number, read as
/// [`normalise`] reads them; naive strings in `tz`): whole seconds since the Unix epoch and the
/// nanoseconds after them. `null` is an error here.
///
/// # Errors
///
/// [`TimestampError`] when `raw` is not one of the accepted forms.
pub fn instant(raw: &str, tz: &TimeZone) -> Result<(i64, u32), TimestampError> {
    let text = raw.trim_matches([' ', '\t', '\n', '\r']);
    let instant = match text.as_bytes().first() {
        Some(b'"') => unquote(text)
            .ok_or(Fault::Unrecognised)
            .and_then(|s| parse_datetime(&s)?.instant(tz)),
        Some(b'-' | b'0'..=b'9') => epoch_instant(text.as_bytes()),
        _ => Err(Fault::NotNumberOrString),
    }
    .map_err(|fault| fault.into_error(text))?;
    Ok((instant.secs, instant.nanos))
}

/// Appends to `out` the JSON string `"YYYY-MM-DD"` of `raw`'s calendar day, or `null` for
/// `null`.
///
/// A date string `YYYY-MM-DD` is checked and kept. A naive date-time string gives the date
/// written (it is already in `tz`); an epoch number or a string with an offset is an instant,
/// and gives its date in `tz`.
///
/// # Errors
///
/// As [`normalise`] (a naive time in a daylight-saving gap is not one: its date is clear).
pub fn normalise_date(raw: &str, tz: &TimeZone, out: &mut Vec<u8>) -> Result<(), TimestampError> {
    let text = raw.trim_matches([' ', '\t', '\n', '\r']);
    if text == "null" {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let date = match text.as_bytes().first() {
        Some(b'"') => unquote(text)
            .ok_or(Fault::Unrecognised)
            .and_then(|s| parse_date(&s, tz)),
        Some(b'-' | b'0'..=b'9') => epoch_instant(text.as_bytes()).and_then(|i| local_date(i, tz)),
        _ => Err(Fault::NotNumberOrString),
    }
    .map_err(|fault| fault.into_error(text))?;
    let mut buf = *b"\"0000-00-00\"";
    put_digits(&mut buf[1..5], date.year().unsigned_abs());
    put_digits(&mut buf[6..8], date.month());
    put_digits(&mut buf[9..11], date.day());
    out.extend_from_slice(&buf);
    Ok(())
}

/// The date of a date or date-time string (see [`normalise_date`]).
fn parse_date(s: &str, tz: &TimeZone) -> Result<NaiveDate, Fault> {
    let b = s.as_bytes();
    if b.len() == 10 {
        if b[4] != b'-' || b[7] != b'-' {
            return Err(Fault::Unrecognised);
        }
        let field = |from: usize, to: usize| digits(&b[from..to]).ok_or(Fault::Unrecognised);
        let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
        return NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day))
            .ok_or(Fault::InvalidDateTime);
    }
    let parsed = parse_datetime(s)?;
    match parsed.offset {
        None => Ok(parsed.naive.date()),
        Some(_) => local_date(parsed.instant(tz)?, tz),
    }
}

/// The calendar day of `instant` in `tz`, in the years 0000 to 9999.
fn local_date(instant: Instant, tz: &TimeZone) -> Result<NaiveDate, Fault> {
    let utc = DateTime::from_timestamp(instant.secs, 0).ok_or(Fault::OutOfRange)?;
    let date = match tz {
        TimeZone::Utc => utc.date_naive(),
        TimeZone::Fixed(zone) => utc.with_timezone(zone).date_naive(),
        TimeZone::Named(zone) => utc.with_timezone(zone).date_naive(),
    };
    if (0..=9999).contains(&date.year()) {
        Ok(date)
    } else {
        Err(Fault::OutOfRange)
    }
}

/// Appends `YYYY-MM-DDTHH:MM:SS.sssZ` (no quotes) for `ms` milliseconds since the Unix epoch.
///
/// Instants outside 0000-01-01T00:00:00.000Z ..= 9999-12-31T23:59:59.999Z are clamped to
/// that range, the only one this format can express; [`normalise`] never produces them.
pub fn format_utc_millis(ms: i64, out: &mut Vec<u8>) {
    let ms = ms.clamp(MIN_SECS * 1000, MAX_SECS * 1000 + 999);
    let nanos = ms.rem_euclid(1000) as u32 * 1_000_000;
    format_utc(ms.div_euclid(1000), nanos, 3, out);
}

/// Appends `YYYY-MM-DDTHH:MM:SS.fZ` (no quotes) for the instant `secs` seconds and `nanos`
/// nanoseconds after the Unix epoch, with the first `digits` (at most 9) of the nanoseconds
/// as the fraction (truncated; no fraction when `digits` is 0).
///
/// Instants outside 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999999999Z are clamped to
/// that range, the only one this format can express; [`normalise`] never produces them.
pub fn format_utc(secs: i64, nanos: u32, digits: usize, out: &mut Vec<u8>) {
    let (secs, nanos) = if secs < MIN_SECS {
        (MIN_SECS, 0)
    } else if secs > MAX_SECS {
        (MAX_SECS, 999_999_999)
    } else {
        (secs, nanos.min(999_999_999))
    };
    // In range, so the default (the epoch) is never used.
    let t = DateTime::from_timestamp(secs, nanos).unwrap_or_default();
    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut buf[0..4], t.year().unsigned_abs());
    put_digits(&mut buf[5..7], t.month());
    put_digits(&mut buf[8..10], t.day());
    put_digits(&mut buf[11..13], t.hour());
    put_digits(&mut buf[14..16], t.minute());
    put_digits(&mut buf[17..19], t.second());
    put_digits(&mut buf[20..29], nanos);
    let digits = digits.min(9);
    if digits == 0 {
        out.extend_from_slice(&buf[..19]);
    } else {
        out.extend_from_slice(&buf[..20 + digits]);
    }
    out.push(b'Z');
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

/// A date-time string as written: the local date and time (nanoseconds included), its offset
/// in seconds east of UTC if it has one, and how many fractional digits it gave (at most 9).
struct Written {
    naive: NaiveDateTime,
    offset: Option<i32>,
    digits: u8,
}

impl Written {
    /// The instant, naive times read in `tz`.
    fn instant(&self, tz: &TimeZone) -> Result<Instant, Fault> {
        let as_utc = self.naive.and_utc().timestamp();
        let secs = match (self.offset, tz) {
            (Some(secs), _) => as_utc - i64::from(secs),
            (None, TimeZone::Utc) => as_utc,
            (None, TimeZone::Fixed(zone)) => as_utc - i64::from(zone.local_minus_utc()),
            (None, TimeZone::Named(zone)) => zone
                .from_local_datetime(&self.naive)
                .earliest()
                .ok_or(Fault::Nonexistent(*zone))?
                .timestamp(),
        };
        Instant {
            secs,
            nanos: self.naive.nanosecond(),
            digits: self.digits,
        }
        .in_range()
    }
}

/// Reads `YYYY-MM-DD(T|t| )HH:MM:SS[.f+][offset]`.
fn parse_datetime(s: &str) -> Result<Written, Fault> {
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
    let (mut nanos, mut given) = (0, 0);
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = leading_digits(fraction);
        if n == 0 {
            return Err(Fault::Unrecognised);
        }
        // The first nine digits, zero-padded; later ones are truncated.
        nanos = fraction[..n]
            .iter()
            .chain(b"00000000")
            .take(9)
            .fold(0, |acc, c| acc * 10 + u32::from(c - b'0'));
        given = n.min(9) as u8;
        rest = &fraction[n..];
    }
    let offset = match rest {
        [] => None,
        [b'Z' | b'z'] => Some(0),
        _ => Some(parse_offset(rest).ok_or(Fault::Unrecognised)?),
    };
    let naive = NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day))
        .and_then(|date| {
            date.and_hms_nano_opt(u32::from(hour), u32::from(minute), u32::from(second), nanos)
        })
        .ok_or(Fault::InvalidDateTime)?;
    Ok(Written {
        naive,
        offset,
        digits: given,
    })
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

/// Epoch numbers at least this large (in magnitude) are not seconds but milliseconds.
const MIN_EPOCH_MILLIS: i128 = 100_000_000_000;
/// The first magnitude past the last millisecond of 9999: from here on, microseconds; a
/// thousand times it, nanoseconds; a million times it, out of range.
const PAST_MAX_MILLIS: i128 = 253_402_300_800_000;

/// The instant of a JSON number, in epoch seconds, milliseconds, microseconds or nanoseconds
/// by its magnitude (see the module docs). Exact decimal arithmetic, rounded toward the
/// earlier nanosecond.
fn epoch_instant(b: &[u8]) -> Result<Instant, Fault> {
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
    let total = int.len() + frac.len();
    let zeros = all_digits().take_while(|&d| d == 0).count();
    if zeros == total {
        return Ok(Instant {
            secs: 0,
            nanos: 0,
            digits: 0,
        });
    }
    // The value is 0.d1d2d3... * 10^point with d1 != 0: 10^(point-1) <= |value| < 10^point.
    let point = int.len() as i64 - zeros as i64 + exp;
    if point > 21 {
        // At least 10^21 in any unit: after the year 9999.
        return Err(Fault::OutOfRange);
    }
    // |value| * 10^9, truncated: at most 30 digits.
    let mut significant = all_digits().skip(zeros);
    let mut scaled = 0i128;
    for _ in 0..(point + 9).max(0) {
        scaled = scaled * 10 + i128::from(significant.next().unwrap_or(0));
    }
    let mut inexact = significant.any(|d| d != 0);
    // Decimal places of the value's exact value: up to its last non-zero digit.
    let trailing = int
        .iter()
        .chain(frac)
        .rev()
        .take_while(|&&c| c == b'0')
        .count();
    let last = (total - zeros - trailing) as i64;
    let places = (last - point).max(0);
    let whole = scaled / 1_000_000_000;
    let unit_digits: u32 = if whole < MIN_EPOCH_MILLIS {
        0
    } else if whole < PAST_MAX_MILLIS {
        3
    } else if whole < PAST_MAX_MILLIS * 1000 {
        6
    } else if whole < PAST_MAX_MILLIS * 1_000_000 {
        9
    } else {
        return Err(Fault::OutOfRange);
    };
    let unit = 10i128.pow(unit_digits);
    inexact |= scaled % unit != 0;
    let nanos = scaled / unit;
    let nanos = if negative {
        -nanos - i128::from(inexact)
    } else {
        nanos
    };
    Instant {
        secs: nanos.div_euclid(1_000_000_000) as i64,
        nanos: nanos.rem_euclid(1_000_000_000) as u32,
        digits: (places + i64::from(unit_digits)).min(9) as u8,
    }
    .in_range()
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
        let result = normalise(raw, &tz, None, &mut out);
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
            ("UTC", "-0.0001", "1969-12-31T23:59:59.999900Z"),
            ("UTC", "-100000000000", "1966-10-31T14:13:20.000Z"),
            ("UTC", "1.7e9", "2023-11-14T22:13:20.000Z"),
            ("UTC", "1.7E+9", "2023-11-14T22:13:20.000Z"),
            ("UTC", "17000000001230e-1", "2023-11-14T22:13:20.123Z"),
            ("UTC", "1700000000.5", "2023-11-14T22:13:20.500Z"),
            ("UTC", "1700000000.1239", "2023-11-14T22:13:20.123900Z"),
            ("UTC", "1700000000123.9", "2023-11-14T22:13:20.123900Z"),
            ("UTC", "0.0000000000000000000000001", "1970-01-01T00:00:00.000000000Z"),
            ("UTC", "-62167219200", "0000-01-01T00:00:00.000Z"),
            ("UTC", "253402300799999", "9999-12-31T23:59:59.999Z"),
            ("Europe/Berlin", "1700000000", "2023-11-14T22:13:20.000Z"),
            // Strings with an offset.
            ("UTC", r#""2024-02-13T14:04:10.045Z""#, "2024-02-13T14:04:10.045Z"),
            ("UTC", r#""2024-02-13T14:04:10Z""#, "2024-02-13T14:04:10.000Z"),
            ("UTC", r#""2024-02-13T16:04:10.045+02:00""#, "2024-02-13T14:04:10.045Z"),
            ("UTC", r#""2024-02-13T14:04:10.045123456Z""#, "2024-02-13T14:04:10.045123456Z"),
            ("UTC", r#""2024-02-13T14:04:10.0451234567Z""#, "2024-02-13T14:04:10.045123456Z"),
            ("UTC", r#""2024-02-13t14:04:10.4z""#, "2024-02-13T14:04:10.400Z"),
            ("UTC", r#""2024-02-13 14:04:10.04Z""#, "2024-02-13T14:04:10.040Z"),
            ("UTC", r#""2024-02-13T09:34:10-0430""#, "2024-02-13T14:04:10.000Z"),
            ("UTC", r#""2024-02-13T16:04:10+02""#, "2024-02-13T14:04:10.000Z"),
            ("UTC", r#""2024-02-14T01:04:10+11:00""#, "2024-02-13T14:04:10.000Z"),
            ("UTC", r#""2024-02-29T00:00:00-00:00""#, "2024-02-29T00:00:00.000Z"),
            ("Europe/Berlin", r#""2024-07-01T12:00:00Z""#, "2024-07-01T12:00:00.000Z"),
            ("UTC", r#""0000-01-01T00:00:00Z""#, "0000-01-01T00:00:00.000Z"),
            ("UTC", r#""9999-12-31T23:59:59.999999Z""#, "9999-12-31T23:59:59.999999Z"),
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
            ("UTC", "-1e21", RANGE),
            ("UTC", "253402300800000000000", RANGE),
            ("UTC", "-62167219201", RANGE),
            ("UTC", "1e999999999999999999", RANGE),
            ("UTC", r#""""#, SHAPE),
            ("UTC", r#""2024-01-01""#, SHAPE),
            ("UTC", r#""24:00""#, SHAPE),
            ("UTC", r#""1700000000""#, SHAPE),
            ("UTC", r#""2024-02-13T14:04:10.Z""#, SHAPE),
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
        // Long but tiny numbers are exact: the sign decides which nanosecond they fall in.
        let tiny = format!("0.{}1", "0".repeat(10_000));
        assert_eq!(
            run("UTC", &tiny).unwrap(),
            r#""1970-01-01T00:00:00.000000000Z""#
        );
        assert_eq!(
            run("UTC", &format!("-{tiny}")).unwrap(),
            r#""1969-12-31T23:59:59.999999999Z""#
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
            (MIN_SECS * 1000, "0000-01-01T00:00:00.000Z"),
            (MAX_SECS * 1000 + 999, "9999-12-31T23:59:59.999Z"),
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
            normalise(text, &TimeZone::Utc, None, &mut normalised).unwrap();
            assert_eq!(normalised, formatted, "{ms}");
            // The same instant as epoch seconds with a fraction, and as epoch milliseconds.
            let mut epochs = vec![format!("{}.{:03}", ms / 1000, ms % 1000)];
            if ms >= 100_000_000_000 {
                epochs.push(ms.to_string());
            }
            for epoch in epochs {
                normalised.clear();
                normalise(&epoch, &TimeZone::Utc, None, &mut normalised).unwrap();
                assert_eq!(normalised, formatted, "{epoch}");
            }
        }
    }

    fn with_precision(raw: &str, tz: &str, precision: Option<TimestampPrecision>) -> String {
        let mut out = Vec::new();
        let tz: TimeZone = tz.parse().unwrap();
        normalise(raw, &tz, precision, &mut out).unwrap_or_else(|e| panic!("{raw}: {e}"));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn precision_of_each_form_and_setting() {
        use TimestampPrecision::{Ms, Ns, Us};
        #[rustfmt::skip]
        let cases: &[(&str, &str, [&str; 4])] = &[
            // Strings: the digits given, in groups of three, at least three; >9 truncated.
            ("UTC", r#""2024-02-13T14:04:05Z""#, ["05.000", "05.000", "05.000000", "05.000000000"]),
            ("UTC", r#""2024-02-13T14:04:05.5Z""#, ["05.500", "05.500", "05.500000", "05.500000000"]),
            ("UTC", r#""2024-02-13T14:04:05.1234Z""#, ["05.123400", "05.123", "05.123400", "05.123400000"]),
            ("UTC", r#""2024-02-13T14:04:05.123456Z""#, ["05.123456", "05.123", "05.123456", "05.123456000"]),
            ("UTC", r#""2024-02-13T14:04:05.500000Z""#, ["05.500000", "05.500", "05.500000", "05.500000000"]),
            ("UTC", r#""2024-02-13T14:04:05.1234567Z""#, ["05.123456700", "05.123", "05.123456", "05.123456700"]),
            ("UTC", r#""2024-02-13T14:04:05.123456789Z""#, ["05.123456789", "05.123", "05.123456", "05.123456789"]),
            ("UTC", r#""2024-02-13T14:04:05.123456789987Z""#, ["05.123456789", "05.123", "05.123456", "05.123456789"]),
            ("UTC", r#""2024-02-13 14:04:05.999999""#, ["05.999999", "05.999", "05.999999", "05.999999000"]),
            // Offsets and zones move the seconds, never the fraction.
            ("UTC", r#""2024-02-13T16:04:05.000001+02:00""#, ["05.000001", "05.000", "05.000001", "05.000001000"]),
            ("Europe/Berlin", r#""2024-02-13 15:04:05.123456789""#, ["05.123456789", "05.123", "05.123456", "05.123456789"]),
            // Epoch numbers: the unit's digits plus the exact value's decimal places.
            ("UTC", "1707833045", ["05.000", "05.000", "05.000000", "05.000000000"]),
            ("UTC", "1707833045.5", ["05.500", "05.500", "05.500000", "05.500000000"]),
            ("UTC", "1707833045.500", ["05.500", "05.500", "05.500000", "05.500000000"]),
            ("UTC", "1707833045.123456", ["05.123456", "05.123", "05.123456", "05.123456000"]),
            ("UTC", "1.7078330451234567e9", ["05.123456700", "05.123", "05.123456", "05.123456700"]),
            ("UTC", "1707833045123", ["05.123", "05.123", "05.123000", "05.123000000"]),
            ("UTC", "1707833045123.25", ["05.123250", "05.123", "05.123250", "05.123250000"]),
            ("UTC", "1707833045123456", ["05.123456", "05.123", "05.123456", "05.123456000"]),
            ("UTC", "1707833045123000", ["05.123000", "05.123", "05.123000", "05.123000000"]),
            ("UTC", "1707833045123456789", ["05.123456789", "05.123", "05.123456", "05.123456789"]),
            ("UTC", "1707833045123456789.9", ["05.123456789", "05.123", "05.123456", "05.123456789"]),
        ];
        for &(tz, raw, want) in cases {
            for (precision, want) in [None, Some(Ms), Some(Us), Some(Ns)].into_iter().zip(want) {
                assert_eq!(
                    with_precision(raw, tz, precision),
                    format!("\"2024-02-13T14:04:{want}Z\""),
                    "{raw} in {tz} at {precision:?}"
                );
            }
        }
        // Truncation never carries into the next second (or year).
        let last = r#""2024-12-31T23:59:59.9999999999Z""#;
        assert_eq!(
            with_precision(last, "UTC", Some(Ms)),
            r#""2024-12-31T23:59:59.999Z""#
        );
        assert_eq!(
            with_precision(last, "UTC", None),
            r#""2024-12-31T23:59:59.999999999Z""#
        );
        // Negative epochs round toward the earlier nanosecond.
        assert_eq!(
            with_precision("-1.0000005", "UTC", None),
            r#""1969-12-31T23:59:58.999999500Z""#
        );
        assert_eq!(
            with_precision("-1.0000005", "UTC", Some(Ms)),
            r#""1969-12-31T23:59:58.999Z""#
        );
        assert_eq!(TimestampPrecision::Us.digits(), 6);
    }

    #[test]
    fn epoch_units_follow_the_magnitude() {
        #[rustfmt::skip]
        let cases = [
            ("99999999999", "5138-11-16T09:46:39.000"),
            ("100000000000", "1973-03-03T09:46:40.000"),
            ("253402300799999", "9999-12-31T23:59:59.999"),
            ("253402300800000", "1978-01-11T21:31:40.800000"),
            ("253402300799999999", "9999-12-31T23:59:59.999999"),
            ("253402300800000000", "1978-01-11T21:31:40.800000000"),
            ("253402300799999999999", "9999-12-31T23:59:59.999999999"),
            ("-1e16", "1653-02-10T06:13:20.000000"),
            ("1.7e18", "2023-11-14T22:13:20.000000000"),
        ];
        for (raw, want) in cases {
            assert_eq!(run("UTC", raw).unwrap(), format!("\"{want}Z\""), "{raw}");
        }
    }

    fn date(tz: &str, raw: &str) -> Result<String, TimestampError> {
        let mut out = b"prefix:".to_vec();
        let result = normalise_date(raw, &tz.parse().unwrap(), &mut out);
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
    fn normalises_dates() {
        #[rustfmt::skip]
        let cases = [
            ("UTC", r#""2024-02-29""#, r#""2024-02-29""#),
            ("Europe/Berlin", r#""2024-02-29""#, r#""2024-02-29""#),
            ("UTC", r#""0000-01-01""#, r#""0000-01-01""#),
            // Naive date-times: the date written (it is in the zone already), gaps included.
            ("UTC", r#""2024-02-13 23:30:00""#, r#""2024-02-13""#),
            ("Asia/Tokyo", r#""2024-02-13T23:30:00.5""#, r#""2024-02-13""#),
            ("Europe/Berlin", r#""2024-03-31 02:30:00""#, r#""2024-03-31""#),
            // Instants: their date in the zone.
            ("UTC", r#""2024-02-13T23:30:00-05:00""#, r#""2024-02-14""#),
            ("-08:00", r#""2024-02-13T23:30:00-05:00""#, r#""2024-02-13""#),
            ("UTC", "1700000000", r#""2023-11-14""#),
            ("Europe/Berlin", "1700000000", r#""2023-11-14""#),
            ("Asia/Tokyo", "1700000000", r#""2023-11-15""#),
            ("UTC", "1700000000123", r#""2023-11-14""#),
            ("UTC", " null ", "null"),
        ];
        for (tz, raw, want) in cases {
            assert_eq!(date(tz, raw).unwrap(), want, "{raw} in {tz}");
        }
        for (tz, raw, want) in [
            ("UTC", r#""2023-02-29""#, "invalid date or time"),
            ("UTC", r#""2024-2-29""#, "not a recognised timestamp"),
            ("UTC", r#""2024/02/29""#, "not a recognised timestamp"),
            ("UTC", r#""yesterday""#, "not a recognised timestamp"),
            ("UTC", "true", "not a number or a string"),
            (
                "-01:00",
                r#""0000-01-01T00:00:00Z""#,
                "timestamp out of range (years 0000 to 9999)",
            ),
            (
                "+01:00",
                r#""9999-12-31T23:30:00Z""#,
                "timestamp out of range (years 0000 to 9999)",
            ),
        ] {
            let err = date(tz, raw).unwrap_err().to_string();
            assert_eq!(err, format!("{want}: {raw}"), "{raw} in {tz}");
        }
    }

    #[test]
    fn formats_each_precision() {
        let mut out = Vec::new();
        for (digits, want) in [
            (0, "2023-11-14T22:13:20Z"),
            (3, "2023-11-14T22:13:20.123Z"),
            (6, "2023-11-14T22:13:20.123456Z"),
            (9, "2023-11-14T22:13:20.123456789Z"),
            (12, "2023-11-14T22:13:20.123456789Z"),
        ] {
            out.clear();
            format_utc(1_700_000_000, 123_456_789, digits, &mut out);
            assert_eq!(String::from_utf8_lossy(&out), want, "{digits}");
        }
        out.clear();
        format_utc(i64::MAX, 0, 9, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "9999-12-31T23:59:59.999999999Z"
        );
    }
}
