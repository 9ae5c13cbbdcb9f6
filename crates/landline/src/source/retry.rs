//! Retry policy primitives: which HTTP statuses are worth retrying, and how long to wait
//! before the next attempt (the server's `Retry-After`, else exponential backoff with jitter).
//!
//! No I/O, no clock and no global randomness here: the HTTP client's loop passes in the current
//! time and a random number generator, and does the waiting and the counting of attempts.
//!
//! Public: [`RetryPolicy`], the settings ([`SourceConfig::retry`](super::SourceConfig::retry)).
//! Which statuses are retried (408, 429, 5xx) and how `Retry-After` is read are the fetch
//! task's business, internal to the crate.

use std::time::{Duration, SystemTime};

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (default 5); 1 means no retries.
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry, doubled for each further one (default 500 ms).
    pub initial_backoff: Duration,
    /// Largest backoff ceiling (default 30 s).
    pub max_backoff: Duration,
    /// Largest wait honoured from a server's `Retry-After` (default 120 s).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry), with "equal jitter": for
    /// the ceiling `min(initial_backoff × 2^retry, max_backoff)`, half of it plus a uniformly
    /// random amount up to the other half, so the wait is always in `[ceiling / 2, ceiling]`.
    pub fn backoff(&self, retry: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_backoff);
        let half = ceiling / 2;
        // Spans beyond u64 nanoseconds (584 years) lose their upper jitter; harmless.
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rng.random_range(0..=span))
    }

    /// The wait before retry number `retry`: the server's `Retry-After` if it sent one, capped
    /// at [`max_retry_after`](Self::max_retry_after) (a shorter request is honoured as is),
    /// else [`backoff`](Self::backoff).
    pub fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut impl rand::Rng,
    ) -> Duration {
        match retry_after {
            Some(wait) => wait.min(self.max_retry_after),
            None => self.backoff(retry, rng),
        }
    }
}

/// The wait a `Retry-After` header value asks for: delta-seconds (a non-negative integer;
/// values too large for `u64` saturate) or an HTTP-date (a date not after `now` gives zero).
/// `None` for anything else.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so parsing fails only by overflow.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a response with this status may succeed when retried: 408 Request Timeout, 429 Too
/// Many Requests and every 5xx. Other statuses (2xx, 3xx, other 4xx) are final.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        let ceilings = [
            (0, 500 * MS),
            (1, 1000 * MS),
            (2, 2000 * MS),
            (3, 4000 * MS),
            (4, 8000 * MS),
            (5, 16_000 * MS),
            (6, 30_000 * MS),
            (7, 30_000 * MS),
            (64, 30_000 * MS),
            (u32::MAX, 30_000 * MS),
        ];
        for (retry, ceiling) in ceilings {
            let waits: Vec<_> = (0..200).map(|_| policy.backoff(retry, &mut rng)).collect();
            let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
            assert!(
                *min >= ceiling / 2 && *max <= ceiling,
                "{retry}: {min:?}..{max:?}"
            );
            assert!(max > min, "{retry}: no jitter");
        }
        let zero = RetryPolicy {
            initial_backoff: Duration::ZERO,
            ..RetryPolicy::default()
        };
        assert_eq!(zero.backoff(3, &mut rng), Duration::ZERO);
        let huge = RetryPolicy {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            ..RetryPolicy::default()
        };
        assert!(huge.backoff(u32::MAX, &mut rng) >= Duration::MAX / 2);
    }

    #[test]
    fn backoff_is_deterministic_under_a_seed() {
        let policy = RetryPolicy::default();
        let waits = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..8)
                .map(|r| policy.backoff(r, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(waits(42), waits(42));
        assert_ne!(waits(42), waits(43));
    }

    #[test]
    fn delay_prefers_the_servers_retry_after_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        let cases = [
            (Some(Duration::from_secs(10)), Duration::from_secs(10)),
            (Some(Duration::ZERO), Duration::ZERO),
            (Some(Duration::from_secs(120)), Duration::from_secs(120)),
            (Some(Duration::from_secs(500)), Duration::from_secs(120)),
            (Some(Duration::MAX), Duration::from_secs(120)),
        ];
        for (retry_after, want) in cases {
            assert_eq!(
                policy.delay(4, retry_after, &mut rng),
                want,
                "{retry_after:?}"
            );
        }
        let backoff = policy.delay(2, None, &mut rng);
        assert!((1000 * MS..=2000 * MS).contains(&backoff), "{backoff:?}");
    }

    #[test]
    fn parses_retry_after() {
        // Tue, 14 Nov 2023 22:13:20 GMT
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let secs = |s| Some(Duration::from_secs(s));
        let cases = [
            ("120", secs(120)),
            ("0", secs(0)),
            (" 30\t", secs(30)),
            ("007", secs(7)),
            ("99999999999999999999999", secs(u64::MAX)),
            ("Tue, 14 Nov 2023 22:14:20 GMT", secs(60)),
            ("Tuesday, 14-Nov-23 22:14:20 GMT", secs(60)),
            ("Tue Nov 14 22:14:20 2023", secs(60)),
            ("Tue, 14 Nov 2023 22:13:20 GMT", secs(0)),
            ("Mon, 13 Nov 2023 00:00:00 GMT", secs(0)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", secs(0)),
            ("", None),
            ("-5", None),
            ("+5", None),
            ("1.5", None),
            ("5s", None),
            ("soon", None),
            ("Tue, 14 Nov 2023 22:14:20 +0000", None),
            ("Wed, 14 Nov 2023 22:14:20 GMT", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), want, "{value:?}");
        }
    }

    #[test]
    fn classifies_statuses() {
        let cases = [
            (200, false),
            (204, false),
            (301, false),
            (304, false),
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (408, true),
            (409, false),
            (422, false),
            (429, true),
            (500, true),
            (501, true),
            (502, true),
            (503, true),
            (504, true),
            (599, true),
            (600, false),
            (100, false),
        ];
        for (status, want) in cases {
            assert_eq!(is_retryable_status(status), want, "{status}");
        }
    }
}
