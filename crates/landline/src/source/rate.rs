//! Client-side rate limiting for the HTTP source: the pipeline's own limit
//! (`[source.rate_limit] requests_per_second = F, burst = N`) as a token bucket, and the
//! API's rate-limit headers, so that requests slow down *before* the API answers 429.
//!
//! [`TokenBucket`] is the configured limit, in the GCRA ("theoretical arrival time") form: a
//! caller that cannot go now is given the next free slot and that slot is reserved for it, so
//! concurrent callers queue up at successive slots instead of all retrying at once.
//! [`parse_rate_headers`] reads the remaining budget and its reset from a response (the IETF
//! draft's `RateLimit` forms and the common `X-RateLimit-*` ones) into a [`RateHint`].
//! [`RateLimiter`] combines the bucket, the latest hint and any pause after a 429 for all the
//! concurrent requests of one run; its decisions are pure functions of the time passed in
//! (`LimiterState::plan`), and only [`RateLimiter::acquire`] reads the clock and sleeps.
//!
//! Not here: deciding whether to retry and parsing `Retry-After` (the `retry` module), sending
//! requests and counting attempts (the fetch loop). A caller that drops an `acquire` future
//! while it sleeps gives up its reserved slot without handing it back; that only makes the
//! limiter a little more conservative.
//!
//! Memory: O(1): a few numbers behind one mutex, however many requests wait.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;

/// The longest reset honoured from a rate-limit header (1 hour), so a wrong or hostile
/// header (a reset in the next century, an epoch in milliseconds read as seconds, a skewed
/// server clock) cannot stall a run for days. Hourly windows are the longest common ones.
pub const MAX_RESET: Duration = Duration::from_secs(3600);

/// `X-RateLimit-Reset` values at least this large are epoch seconds (GitHub sends them so),
/// smaller ones are delta seconds (as many APIs send). 10^9 s is September 2001 as an epoch,
/// and almost 32 years as a delta.
const EPOCH_SECONDS_FROM: u64 = 1_000_000_000;

/// `X-RateLimit-Reset` values at least this large are epoch *milliseconds*: 10^12 s is the
/// year 33658 as an epoch in seconds, and September 2001 in milliseconds.
const EPOCH_MILLIS_FROM: u64 = 1_000_000_000_000;

/// How far ahead a slot is placed when the exact one does not fit in an [`Instant`]; only
/// an absurd rate (a token every few centuries) gets there. 30 years, as tokio's far future.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// The pipeline's `[source.rate_limit]` setting.
///
/// Validated when the pipeline file is read: `requests_per_second` is finite and above zero,
/// and `burst` is at least 1 (its default in the pipeline file). Out-of-range values do not
/// panic here: a `burst` of 0 counts as 1, and a rate too small for a [`Duration`] saturates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// The sustained rate: one request every `1 / requests_per_second` seconds.
    pub requests_per_second: f64,
    /// Requests that may go at once after an idle spell (the bucket's capacity; default 1).
    pub burst: u32,
}

/// A token bucket of `burst` tokens refilled at `requests_per_second`, starting full.
///
/// Kept as a GCRA: instead of a token count it holds the *theoretical arrival time* (TAT), the
/// time at which the bucket would be full again if nobody took a token. A request at `t` may go
/// at `max(t, TAT - (burst - 1) × interval)`, and each request pushes the TAT one interval
/// later, whether it goes now or later. So a request that must wait has its slot reserved (the
/// bucket goes "negative"), and the next caller gets the slot after it.
///
/// Pure: the clock is passed in. Times before the bucket's creation count as its creation.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// The `now` of [`new`](Self::new); the times below are offsets from it, so the arithmetic
    /// saturates instead of overflowing an `Instant`.
    origin: Instant,
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of the TAT a request may go: `(burst - 1) × interval`.
    tolerance: Duration,
    /// The theoretical arrival time, as an offset from `origin`.
    tat: Duration,
}

impl TokenBucket {
    /// A full bucket (`burst` tokens) at `now`.
    pub fn new(config: RateLimitConfig, now: Instant) -> Self {
        // Infinite rates give a zero interval (no limit); zero, negative or NaN rates (refused
        // by validation) saturate to the longest interval instead of panicking.
        let interval = if config.requests_per_second > 0.0 {
            Duration::try_from_secs_f64(1.0 / config.requests_per_second).unwrap_or(Duration::MAX)
        } else {
            Duration::MAX
        };
        Self {
            origin: now,
            interval,
            tolerance: interval.saturating_mul(config.burst.max(1) - 1),
            tat: Duration::ZERO,
        }
    }

    /// Takes a token at `now`: `None` if one was available, else the wait until the caller's
    /// slot, which is reserved for it (the caller must go then, without calling again).
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        let wait = self.reserve(now).saturating_duration_since(now);
        (!wait.is_zero()).then_some(wait)
    }

    /// Reserves the first slot at or after `not_before`, and returns it.
    fn reserve(&mut self, not_before: Instant) -> Instant {
        let earliest = not_before.saturating_duration_since(self.origin);
        let slot = earliest.max(self.tat.saturating_sub(self.tolerance));
        self.tat = self.tat.max(slot).saturating_add(self.interval);
        if slot == earliest {
            // Exact even when `not_before` precedes the origin.
            return not_before.max(self.origin);
        }
        // A slot that does not fit in an Instant is centuries away: 30 years from now fit on
        // every platform, and the last fallback is never reached.
        self.origin
            .checked_add(slot)
            .or_else(|| not_before.checked_add(FAR_FUTURE))
            .unwrap_or(not_before)
    }
}

/// What a response said about the API's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHint {
    /// Requests the API will still accept in the current window.
    pub remaining: u64,
    /// Time until the window resets (zero if the reset has passed), at most [`MAX_RESET`].
    pub reset_in: Duration,
}

/// The rate-limit hint in a response's headers, if it has one that parses.
///
/// Forms read, first match wins (header names are case-insensitive):
/// 1. `RateLimit: "default";r=50;t=30`, the IETF draft's structured field: `r` remaining, `t`
///    delta seconds to the reset. With several policies, the one with the fewest remaining
///    (of those, the latest reset) binds. The draft's older dictionary form in the same header,
///    `RateLimit: limit=100, remaining=50, reset=30`, is read too.
/// 2. `RateLimit-Remaining` and `RateLimit-Reset` (delta seconds), the draft's separate fields.
/// 3. `X-RateLimit-Remaining` and `X-RateLimit-Reset`, then `X-Rate-Limit-Remaining` and
///    `X-Rate-Limit-Reset`: a reset of at least 10^12 is epoch milliseconds, of at least 10^9
///    epoch seconds (as GitHub sends), and below that delta seconds. Epochs are read against
///    `now`, so a skewed server clock shifts them (within [`MAX_RESET`]).
///
/// A form needs both the remaining count and the reset; a value that does not parse (not a
/// non-negative integer count, not a non-negative decimal number of seconds) makes that form
/// absent, never an error. Counts too large for `u64` saturate. A reset in the past gives a
/// zero `reset_in`, and resets beyond [`MAX_RESET`] are cut to it.
pub fn parse_rate_headers(headers: &HeaderMap, now: SystemTime) -> Option<RateHint> {
    let separate = |remaining: &str, reset: &str| {
        let remaining = parse_count(header_str(headers, remaining)?)?;
        let reset = parse_seconds(header_str(headers, reset)?)?;
        Some((remaining, reset))
    };
    let (remaining, reset_in) = structured_rate_limit(headers)
        .or_else(|| separate("ratelimit-remaining", "ratelimit-reset"))
        .or_else(|| {
            let (remaining, reset) = separate("x-ratelimit-remaining", "x-ratelimit-reset")
                .or_else(|| separate("x-rate-limit-remaining", "x-rate-limit-reset"))?;
            Some((remaining, reset_from_delta_or_epoch(reset, now)))
        })?;
    Some(RateHint {
        remaining,
        reset_in: reset_in.min(MAX_RESET),
    })
}

/// A header's first value as text, trimmed (`None` if absent or not visible ASCII).
fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    Some(headers.get(name)?.to_str().ok()?.trim())
}

/// `(remaining, reset)` from the `RateLimit` header lines, in either of its forms.
fn structured_rate_limit(headers: &HeaderMap) -> Option<(u64, Duration)> {
    // The binding policy of the structured form so far.
    let mut policy: Option<(u64, Duration)> = None;
    // The dictionary form's members.
    let (mut remaining, mut reset) = (None, None);
    let lines = headers.get_all("ratelimit").iter();
    for member in lines
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| Unquoted::split(line, b','))
    {
        let mut parts = Unquoted::split(member, b';').map(str::trim);
        let head = parts.next().unwrap_or_default();
        match head.split_once('=') {
            // `remaining=50` (its parameters, if any, say nothing we use).
            Some((key, value)) if !head.starts_with('"') => match key.trim() {
                k if k.eq_ignore_ascii_case("remaining") => remaining = parse_count(value.trim()),
                k if k.eq_ignore_ascii_case("reset") => reset = parse_seconds(value.trim()),
                _ => {}
            },
            // `"policy";r=50;t=30`: the item is the policy's name, the parameters its state.
            _ => {
                let (mut r, mut t) = (None, None);
                for (key, value) in parts.filter_map(|p| p.split_once('=')) {
                    match key.trim() {
                        k if k.eq_ignore_ascii_case("r") => r = parse_count(value.trim()),
                        k if k.eq_ignore_ascii_case("t") => t = parse_seconds(value.trim()),
                        _ => {}
                    }
                }
                if let (Some(r), Some(t)) = (r, t) {
                    let binds = policy.is_none_or(|(pr, pt)| r < pr || (r == pr && t > pt));
                    if binds {
                        policy = Some((r, t));
                    }
                }
            }
        }
    }
    policy.or(remaining.zip(reset))
}

/// An `X-RateLimit-Reset` value as the wait until the reset (see [`parse_rate_headers`]).
fn reset_from_delta_or_epoch(value: Duration, now: SystemTime) -> Duration {
    let epoch = if value.as_secs() >= EPOCH_MILLIS_FROM {
        value / 1000
    } else if value.as_secs() >= EPOCH_SECONDS_FROM {
        value
    } else {
        return value;
    };
    match SystemTime::UNIX_EPOCH.checked_add(epoch) {
        Some(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        // Beyond what SystemTime can hold: far in the future, cut to MAX_RESET by the caller.
        None => Duration::MAX,
    }
}

/// A non-negative integer (ASCII digits only); too large for `u64` saturates.
fn parse_count(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits, so parsing fails only by overflow.
    Some(value.parse().unwrap_or(u64::MAX))
}

/// A non-negative number of seconds, `digits` or `digits.digits` (nanosecond precision; more
/// fractional digits are dropped); whole seconds too large for `u64` saturate.
fn parse_seconds(value: &str) -> Option<Duration> {
    let (whole, fraction) = match value.split_once('.') {
        Some((_, "")) => return None,
        Some((whole, fraction)) if fraction.bytes().all(|b| b.is_ascii_digit()) => {
            (whole, fraction)
        }
        Some(_) => return None,
        None => (value, ""),
    };
    let secs = parse_count(whole)?;
    let nanos = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0u32, |n, digit| n * 10 + u32::from(digit - b'0'));
    Some(Duration::new(secs, nanos))
}

/// Splits a header value at a separator that is not inside a quoted string (structured-field
/// strings may hold commas and semicolons, and escape quotes with a backslash), without
/// allocating.
struct Unquoted<'a> {
    /// What is left to split; `None` once the last piece has been returned.
    rest: Option<&'a str>,
    /// The separator, an ASCII byte.
    separator: u8,
}

impl<'a> Unquoted<'a> {
    fn split(value: &'a str, separator: u8) -> Self {
        Self {
            rest: Some(value),
            separator,
        }
    }
}

impl<'a> Iterator for Unquoted<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in rest.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                // ASCII, so `i` and `i + 1` are character boundaries.
                _ if b == self.separator && !quoted => {
                    self.rest = Some(&rest[i + 1..]);
                    return Some(&rest[..i]);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// How much waiting the limiter has imposed, for the run report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateStats {
    /// [`RateLimiter::acquire`] calls that had to wait (and saw their wait through).
    pub waits: u64,
    /// Their waits, added up.
    pub waited: Duration,
}

/// The rate limit shared by all the concurrent requests of one run: the configured
/// [`TokenBucket`], the latest [`RateHint`], and pauses after a 429. Share it as
/// `Arc<RateLimiter>`; every method takes `&self`.
///
/// Each request calls [`acquire`](Self::acquire) before it is sent and
/// [`observe`](Self::observe) with the hint of its response, if any. What a hint does:
/// - the latest hint replaces the earlier one, and lasts until its reset;
/// - until then, at most `remaining` more requests start (a local budget, counted down by
///   `acquire`), so with `remaining == 0` none starts before the reset. This does not pace
///   the budget evenly: requests go at full speed (or at the configured rate) until it is
///   spent, which is the quickest schedule that stays within it; `requests_per_second` paces;
/// - the server's count lags requests still in flight; their responses bring later hints.
///
/// [`pause_until`](Self::pause_until) (after a 429 with `Retry-After`) holds back every
/// request, not only the one that got the 429. The configured bucket applies last, so the
/// configured rate holds even when requests held back by a hint or a pause are released.
#[derive(Debug)]
pub struct RateLimiter {
    /// Held only to decide, never across an await.
    state: Mutex<LimiterState>,
}

impl RateLimiter {
    /// A limiter with the pipeline's limit, or with none (`None`: only the server's hints and
    /// pauses hold requests back). Its bucket starts full.
    pub fn new(config: Option<RateLimitConfig>) -> Self {
        Self {
            state: Mutex::new(LimiterState::new(config, now())),
        }
    }

    /// Waits until a request may be sent, and reserves its slot: the time waited, or `None`
    /// if the request may go at once.
    pub async fn acquire(&self) -> Option<Duration> {
        let start = tokio::time::Instant::now();
        // The guard is dropped at the end of this statement, before the sleep.
        let at = self.lock().plan(start.into_std())?;
        // One event per wait, before it. A wait under a second is the configured rate pacing
        // requests (every request waits a little at `requests_per_second`): debug, or a
        // paced run would log a warning per page. A longer one (a server's hint spent, a
        // pause after a 429, a slow configured rate) is worth seeing: warn.
        let seconds = at.saturating_duration_since(start.into_std()).as_secs_f64();
        if seconds >= 1.0 {
            tracing::warn!(wait_seconds = seconds, "waiting for the rate limit");
        } else {
            tracing::debug!(wait_seconds = seconds, "waiting for the rate limit");
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let waited = start.elapsed();
        let mut state = self.lock();
        state.stats.waits += 1;
        state.stats.waited = state.stats.waited.saturating_add(waited);
        Some(waited)
    }

    /// Takes in a response's rate-limit hint, replacing the previous one; its reset counts
    /// from now, and is cut to [`MAX_RESET`].
    pub fn observe(&self, hint: RateHint) {
        self.lock().observe(hint, now());
    }

    /// Holds back every request until `at` (after a 429 with `Retry-After`; the caller caps the
    /// wait, see [`super::retry::RetryPolicy::max_retry_after`]). An earlier pause that ends
    /// later is kept. Take `at` from [`tokio::time::Instant::now`] (or use
    /// [`pause_for`](Self::pause_for)), the clock [`acquire`](Self::acquire) reads.
    pub fn pause_until(&self, at: Instant) {
        self.lock().pause_until(at);
    }

    /// [`pause_until`](Self::pause_until) `wait` from now.
    pub fn pause_for(&self, wait: Duration) {
        let now = now();
        let at = now
            .checked_add(wait)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        self.pause_until(at);
    }

    /// The waits so far.
    pub fn stats(&self) -> RateStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, LimiterState> {
        // The state is a few plain numbers that no panic can leave half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The clock [`RateLimiter`] reads: tokio's, so that paused time in tests applies to it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A server's budget until its reset, as [`RateLimiter`] counts it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// Requests that may still start before `reset_at`.
    budget: u64,
    /// When the server's window resets, and the budget stops applying.
    reset_at: Instant,
}

/// [`RateLimiter`]'s decisions, pure: every method takes the current time.
#[derive(Debug)]
struct LimiterState {
    bucket: Option<TokenBucket>,
    /// The latest hint, until its reset.
    window: Option<Window>,
    /// No request starts before this (after a 429).
    paused_until: Option<Instant>,
    stats: RateStats,
}

impl LimiterState {
    fn new(config: Option<RateLimitConfig>, now: Instant) -> Self {
        Self {
            bucket: config.map(|config| TokenBucket::new(config, now)),
            window: None,
            paused_until: None,
            stats: RateStats::default(),
        }
    }

    /// When a request asked for at `now` may go (`None`: at once), reserving its slot: the end
    /// of any pause, then the hint's budget (its reset if spent), then the bucket's next slot.
    fn plan(&mut self, now: Instant) -> Option<Instant> {
        let mut at = now;
        match self.paused_until {
            Some(until) if until > now => at = until,
            _ => self.paused_until = None,
        }
        match &mut self.window {
            Some(window) if window.reset_at <= now => self.window = None,
            // Going at or after the reset, the request starts in a new window.
            Some(window) if at < window.reset_at => match window.budget.checked_sub(1) {
                Some(budget) => window.budget = budget,
                None => at = window.reset_at,
            },
            _ => {}
        }
        if let Some(bucket) = &mut self.bucket {
            at = bucket.reserve(at);
        }
        (at > now).then_some(at)
    }

    fn observe(&mut self, hint: RateHint, now: Instant) {
        let reset_in = hint.reset_in.min(MAX_RESET);
        self.window = Some(Window {
            budget: hint.remaining,
            // An hour from now fits in any Instant; `now` is only the type's fallback.
            reset_at: now.checked_add(reset_in).unwrap_or(now),
        });
    }

    fn pause_until(&mut self, at: Instant) {
        self.paused_until = Some(self.paused_until.map_or(at, |until| until.max(at)));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use std::sync::Arc;

    use http::{HeaderName, HeaderValue};

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    fn config(requests_per_second: f64, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            requests_per_second,
            burst,
        }
    }

    fn hint(remaining: u64, reset_in: Duration) -> RateHint {
        RateHint {
            remaining,
            reset_in,
        }
    }

    /// Offsets from `t0` of `plan`'s answers for `n` callers asking at `now` (0 = at once).
    fn slots(state: &mut LimiterState, t0: Instant, now: Instant, n: usize) -> Vec<Duration> {
        (0..n)
            .map(|_| state.plan(now).unwrap_or(now) - t0)
            .collect()
    }

    #[test]
    fn bucket_bursts_then_keeps_the_steady_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(config(10.0, 2), t0);
        // Each caller goes when told to, then the next one asks.
        let mut now = t0;
        let mut went = Vec::new();
        for _ in 0..6 {
            now += bucket.take(now).unwrap_or_default();
            went.push(now - t0);
        }
        assert_eq!(went, [0, 0, 100, 200, 300, 400].map(|ms| ms * MS));
        // Asking exactly at the next slot: no wait.
        assert_eq!(bucket.take(t0 + 500 * MS), None);
        // Halfway between slots: the rest of the interval.
        assert_eq!(bucket.take(t0 + 550 * MS), Some(50 * MS));
    }

    #[test]
    fn bucket_refills_up_to_burst_only() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(config(10.0, 3), t0);
        let waits: Vec<_> = (0..4).map(|_| bucket.take(t0)).collect();
        assert_eq!(waits, [None, None, None, Some(100 * MS)]);
        // Idle for a minute: full again, but with 3 tokens, not 600.
        let later = t0 + 60 * SEC;
        let waits: Vec<_> = (0..5).map(|_| bucket.take(later)).collect();
        assert_eq!(waits, [None, None, None, Some(100 * MS), Some(200 * MS)]);
        // Partly refilled: one token 100 ms after the last reserved slot left the bucket empty.
        let mut bucket = TokenBucket::new(config(10.0, 3), t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), None);
        }
        assert_eq!(bucket.take(t0 + 150 * MS), None);
        assert_eq!(bucket.take(t0 + 150 * MS), Some(50 * MS));
    }

    #[test]
    fn bucket_reserves_successive_slots_for_concurrent_callers() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(config(4.0, 1), t0);
        let waits: Vec<_> = (0..5).map(|_| bucket.take(t0)).collect();
        let ms = |n| Some(n * MS);
        assert_eq!(waits, [None, ms(250), ms(500), ms(750), ms(1000)]);
        // A newcomer queues behind the reservations, not beside them.
        assert_eq!(bucket.take(t0 + 600 * MS), ms(650));
    }

    #[test]
    fn bucket_survives_out_of_range_configs_and_clocks() {
        let t0 = Instant::now();
        // Burst 0 counts as 1.
        let mut bucket = TokenBucket::new(config(10.0, 0), t0);
        assert_eq!(bucket.take(t0), None);
        assert_eq!(bucket.take(t0), Some(100 * MS));
        // An infinite rate never waits.
        let mut bucket = TokenBucket::new(config(f64::INFINITY, 1), t0);
        assert!((0..1000).all(|_| bucket.take(t0).is_none()));
        // A rate too small for a Duration, zero, negative or NaN: one request, then a wait far
        // beyond any run, and no panic however many ask.
        for rps in [1e-300, 0.0, -1.0, f64::NAN] {
            let mut bucket = TokenBucket::new(config(rps, 1), t0);
            assert_eq!(bucket.take(t0), None, "{rps}");
            for _ in 0..3 {
                assert!(bucket.take(t0).unwrap() >= 365 * 24 * 3600 * SEC, "{rps}");
            }
            // The largest burst saturates its tolerance: all of it goes at once.
            let mut bucket = TokenBucket::new(config(rps, u32::MAX), t0);
            assert!((0..1000).all(|_| bucket.take(t0).is_none()), "{rps}");
        }
        // A large burst at a real rate: one slot per interval after it.
        let mut bucket = TokenBucket::new(config(1000.0, 1_000_000), t0);
        assert!((0..1_000_000).all(|_| bucket.take(t0).is_none()));
        assert_eq!(bucket.take(t0), Some(MS));
        // A clock reading before the bucket's creation counts as its creation.
        let mut bucket = TokenBucket::new(config(10.0, 1), t0 + SEC);
        assert_eq!(bucket.take(t0), Some(SEC));
        assert_eq!(bucket.take(t0), Some(SEC + 100 * MS));
        // Fractional rates.
        let mut bucket = TokenBucket::new(config(0.5, 1), t0);
        assert_eq!(bucket.take(t0), None);
        assert_eq!(bucket.take(t0), Some(2 * SEC));
    }

    #[test]
    fn without_a_limit_or_hints_nothing_waits() {
        let t0 = Instant::now();
        let mut state = LimiterState::new(None, t0);
        assert!((0..1000).all(|_| state.plan(t0).is_none()));
    }

    #[test]
    fn hint_with_nothing_remaining_blocks_until_the_reset() {
        let t0 = Instant::now();
        let mut state = LimiterState::new(None, t0);
        state.observe(hint(0, 30 * SEC), t0);
        // Every caller before the reset is told the reset.
        assert_eq!(slots(&mut state, t0, t0, 3), [30 * SEC; 3]);
        assert_eq!(state.plan(t0 + 10 * SEC), Some(t0 + 30 * SEC));
        // From the reset on, the hint is spent and no longer applies.
        assert_eq!(state.plan(t0 + 30 * SEC), None);
        assert_eq!(state.window, None);
        assert!((0..100).all(|_| state.plan(t0 + 31 * SEC).is_none()));
        // A reset already past holds nothing back.
        state.observe(hint(0, Duration::ZERO), t0 + 40 * SEC);
        assert_eq!(state.plan(t0 + 40 * SEC), None);
    }

    #[test]
    fn small_remaining_budget_is_counted_down() {
        let t0 = Instant::now();
        let mut state = LimiterState::new(None, t0);
        state.observe(hint(3, 10 * SEC), t0);
        let got: Vec<_> = (0..5).map(|_| state.plan(t0 + SEC)).collect();
        let reset = Some(t0 + 10 * SEC);
        assert_eq!(got, [None, None, None, reset, reset]);
        // A later hint replaces the earlier one (here the window reset early).
        state.observe(hint(2, 60 * SEC), t0 + 2 * SEC);
        let got: Vec<_> = (0..3).map(|_| state.plan(t0 + 2 * SEC)).collect();
        assert_eq!(got, [None, None, Some(t0 + 62 * SEC)]);
        // Also when it tightens the budget.
        state.observe(hint(1000, 60 * SEC), t0 + 3 * SEC);
        state.observe(hint(0, 5 * SEC), t0 + 4 * SEC);
        assert_eq!(state.plan(t0 + 4 * SEC), Some(t0 + 9 * SEC));
    }

    #[test]
    fn observe_caps_the_reset() {
        let t0 = Instant::now();
        let mut state = LimiterState::new(None, t0);
        state.observe(hint(0, Duration::MAX), t0);
        assert_eq!(state.plan(t0), Some(t0 + MAX_RESET));
    }

    #[test]
    fn the_bucket_spreads_requests_released_by_a_hint() {
        let t0 = Instant::now();
        let mut state = LimiterState::new(Some(config(10.0, 1)), t0);
        state.observe(hint(0, SEC), t0);
        let ms = |n| n * MS;
        assert_eq!(
            slots(&mut state, t0, t0, 4),
            [ms(1000), ms(1100), ms(1200), ms(1300)]
        );
        // A hint with budget left leaves the pace to the bucket.
        let mut state = LimiterState::new(Some(config(10.0, 2)), t0);
        state.observe(hint(100, 60 * SEC), t0);
        assert_eq!(
            slots(&mut state, t0, t0, 4),
            [ms(0), ms(0), ms(100), ms(200)]
        );
        assert_eq!(state.window.unwrap().budget, 96);
    }

    #[test]
    fn pause_holds_back_every_request() {
        let t0 = Instant::now();
        let mut state = LimiterState::new(None, t0);
        state.pause_until(t0 + 5 * SEC);
        assert_eq!(slots(&mut state, t0, t0, 3), [5 * SEC; 3]);
        // A shorter pause does not cut a longer one short; a longer one extends it.
        state.pause_until(t0 + 2 * SEC);
        assert_eq!(state.plan(t0 + SEC), Some(t0 + 5 * SEC));
        state.pause_until(t0 + 7 * SEC);
        assert_eq!(state.plan(t0 + SEC), Some(t0 + 7 * SEC));
        // Over, it is forgotten; a pause in the past holds nothing back.
        assert_eq!(state.plan(t0 + 7 * SEC), None);
        assert_eq!(state.paused_until, None);
        state.pause_until(t0);
        assert_eq!(state.plan(t0 + 8 * SEC), None);
    }

    #[test]
    fn pause_then_the_bucket_then_the_hint() {
        let t0 = Instant::now();
        let ms = |n| n * MS;
        // After a pause, the bucket (refilled meanwhile) bursts, then keeps its rate.
        let mut state = LimiterState::new(Some(config(10.0, 2)), t0);
        assert_eq!(slots(&mut state, t0, t0, 2), [ms(0), ms(0)]);
        state.pause_until(t0 + SEC);
        assert_eq!(
            slots(&mut state, t0, t0, 4),
            [ms(1000), ms(1000), ms(1100), ms(1200)]
        );
        // A pause that outlasts the hint's reset: the requests start in a new window, and do
        // not spend the old one's budget.
        let mut state = LimiterState::new(None, t0);
        state.observe(hint(1, 2 * SEC), t0);
        state.pause_until(t0 + 3 * SEC);
        assert_eq!(slots(&mut state, t0, t0, 3), [ms(3000); 3]);
        assert_eq!(state.window.unwrap().budget, 1);
        // A pause shorter than the reset: the budget still counts, then the reset holds.
        let mut state = LimiterState::new(None, t0);
        state.observe(hint(1, 5 * SEC), t0);
        state.pause_until(t0 + SEC);
        assert_eq!(slots(&mut state, t0, t0, 3), [ms(1000), ms(5000), ms(5000)]);
    }

    /// Header lines, as (name, value).
    type Headers<'a> = &'a [(&'a str, &'a str)];

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn parses_rate_limit_headers() {
        // Tue, 14 Nov 2023 22:13:20 GMT
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let got = |r, s| Some(hint(r, Duration::from_secs(s)));
        let cases: &[(Headers, Option<RateHint>)] = &[
            (&[], None),
            // The IETF draft's structured field.
            (&[("RateLimit", "\"default\";r=50;t=30")], got(50, 30)),
            (&[("ratelimit", "\"default\"; t=30; r=50")], got(50, 30)),
            (&[("RateLimit", "default;r=0;t=7")], got(0, 7)),
            (&[("RateLimit", "\"a,b;r=9\";r=3;t=4")], got(3, 4)),
            (&[("RateLimit", "\"q\\\"\";r=3;t=4")], got(3, 4)),
            (&[("RateLimit", "\"x\";r=3;t=4;extra;pk=1")], got(3, 4)),
            // Several policies, in one line or several: the fewest remaining bind, and of
            // those the latest reset.
            (
                &[("RateLimit", "\"burst\";r=5;t=1, \"day\";r=0;t=3600")],
                got(0, 3600),
            ),
            (
                &[
                    ("RateLimit", "\"a\";r=2;t=9"),
                    ("RateLimit", "\"b\";r=2;t=20"),
                ],
                got(2, 20),
            ),
            (&[("RateLimit", "\"a\";r=2;t=9, \"b\";r=7;t=1")], got(2, 9)),
            // A policy without both parameters does not count.
            (&[("RateLimit", "\"a\";r=0, \"b\";r=5;t=2")], got(5, 2)),
            (&[("RateLimit", "\"default\";r=50")], None),
            (&[("RateLimit", "\"default\";t=30")], None),
            (&[("RateLimit", "\"default\";r=-1;t=30")], None),
            (&[("RateLimit", "\"default\";r=abc;t=30")], None),
            (&[("RateLimit", "\"default\";r=5;t=soon")], None),
            (&[("RateLimit", "")], None),
            (&[("RateLimit", "garbage")], None),
            // The draft's older dictionary form.
            (
                &[("RateLimit", "limit=100, remaining=50, reset=30")],
                got(50, 30),
            ),
            (&[("RateLimit", "reset=30,remaining=50")], got(50, 30)),
            (
                &[("RateLimit", "Limit=100, Remaining=0, Reset=60")],
                got(0, 60),
            ),
            (&[("RateLimit", "limit=100, remaining=50")], None),
            (&[("RateLimit", "limit=100, remaining=x, reset=30")], None),
            // The draft's separate fields: delta seconds, even large ones (then capped).
            (
                &[("RateLimit-Remaining", "50"), ("RateLimit-Reset", "30")],
                got(50, 30),
            ),
            (
                &[
                    ("ratelimit-remaining", "0"),
                    ("RATELIMIT-RESET", "1700000060"),
                ],
                got(0, 3600),
            ),
            (&[("RateLimit-Remaining", "50")], None),
            (&[("RateLimit-Reset", "30")], None),
            // X-RateLimit-*: epoch seconds (GitHub), epoch milliseconds, delta seconds.
            (
                &[
                    ("X-RateLimit-Remaining", "4999"),
                    ("X-RateLimit-Reset", "1700000060"),
                ],
                got(4999, 60),
            ),
            (
                &[
                    ("x-ratelimit-remaining", "1"),
                    ("x-ratelimit-reset", "1700000060000"),
                ],
                got(1, 60),
            ),
            (
                &[("X-RATELIMIT-REMAINING", "10"), ("X-RATELIMIT-RESET", "60")],
                got(10, 60),
            ),
            (
                &[
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", "999999999"),
                ],
                got(0, 3600),
            ),
            (
                &[("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "0")],
                got(0, 0),
            ),
            // An epoch reset already past, or now.
            (
                &[
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", "1699999000"),
                ],
                got(0, 0),
            ),
            (
                &[
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", "1700000000"),
                ],
                got(0, 0),
            ),
            (
                &[
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", "1000000000"),
                ],
                got(0, 0),
            ),
            // Epochs far ahead are capped.
            (
                &[
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", "9999999999"),
                ],
                got(0, 3600),
            ),
            (
                &[
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", "99999999999999999999"),
                ],
                got(0, 3600),
            ),
            (
                &[
                    ("X-Rate-Limit-Remaining", "7"),
                    ("X-Rate-Limit-Reset", "12"),
                ],
                got(7, 12),
            ),
            (&[("X-RateLimit-Remaining", "7")], None),
            (
                &[("X-RateLimit-Remaining", "7"), ("X-Rate-Limit-Reset", "12")],
                None,
            ),
            // Values that do not parse.
            (
                &[("X-RateLimit-Remaining", ""), ("X-RateLimit-Reset", "60")],
                None,
            ),
            (
                &[("X-RateLimit-Remaining", "-1"), ("X-RateLimit-Reset", "60")],
                None,
            ),
            (
                &[("X-RateLimit-Remaining", "+1"), ("X-RateLimit-Reset", "60")],
                None,
            ),
            (
                &[
                    ("X-RateLimit-Remaining", "1.0"),
                    ("X-RateLimit-Reset", "60"),
                ],
                None,
            ),
            (
                &[("X-RateLimit-Remaining", " 1"), ("X-RateLimit-Reset", "60")],
                got(1, 60),
            ),
            (
                &[("X-RateLimit-Remaining", "1"), ("X-RateLimit-Reset", "-60")],
                None,
            ),
            (
                &[("X-RateLimit-Remaining", "1"), ("X-RateLimit-Reset", "60s")],
                None,
            ),
            (
                &[("X-RateLimit-Remaining", "1"), ("X-RateLimit-Reset", "1.")],
                None,
            ),
            (
                &[("X-RateLimit-Remaining", "1"), ("X-RateLimit-Reset", ".5")],
                None,
            ),
            (
                &[
                    ("X-RateLimit-Remaining", "1"),
                    ("X-RateLimit-Reset", "1.2.3"),
                ],
                None,
            ),
            (
                &[
                    ("X-RateLimit-Remaining", "1"),
                    ("X-RateLimit-Reset", "Tue, 14 Nov 2023 22:14:20 GMT"),
                ],
                None,
            ),
            // Counts too large for u64 saturate.
            (
                &[
                    ("X-RateLimit-Remaining", "99999999999999999999"),
                    ("X-RateLimit-Reset", "5"),
                ],
                got(u64::MAX, 5),
            ),
            // First form that parses wins: structured, then separate, then X-, then X-Rate-.
            (
                &[
                    ("RateLimit", "\"d\";r=1;t=2"),
                    ("RateLimit-Remaining", "3"),
                    ("RateLimit-Reset", "4"),
                ],
                got(1, 2),
            ),
            (
                &[
                    ("RateLimit", "\"d\";r=x;t=2"),
                    ("RateLimit-Remaining", "3"),
                    ("RateLimit-Reset", "4"),
                ],
                got(3, 4),
            ),
            (
                &[
                    ("RateLimit-Remaining", "3"),
                    ("RateLimit-Reset", "4"),
                    ("X-RateLimit-Remaining", "5"),
                    ("X-RateLimit-Reset", "6"),
                ],
                got(3, 4),
            ),
            (
                &[
                    ("RateLimit-Remaining", "?"),
                    ("RateLimit-Reset", "4"),
                    ("X-RateLimit-Remaining", "5"),
                    ("X-RateLimit-Reset", "6"),
                ],
                got(5, 6),
            ),
            (
                &[
                    ("X-RateLimit-Remaining", "5"),
                    ("X-RateLimit-Reset", "6"),
                    ("X-Rate-Limit-Remaining", "7"),
                    ("X-Rate-Limit-Reset", "8"),
                ],
                got(5, 6),
            ),
            (
                &[
                    ("X-RateLimit-Remaining", "5"),
                    ("X-RateLimit-Reset", "x"),
                    ("X-Rate-Limit-Remaining", "7"),
                    ("X-Rate-Limit-Reset", "8"),
                ],
                got(7, 8),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(parse_rate_headers(&headers(pairs), now), *want, "{pairs:?}");
        }
    }

    #[test]
    fn parses_fractional_resets() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let reset = |value: &str| {
            let map = headers(&[("X-RateLimit-Remaining", "1"), ("X-RateLimit-Reset", value)]);
            parse_rate_headers(&map, now).map(|h| h.reset_in)
        };
        assert_eq!(reset("1.5"), Some(1500 * MS));
        assert_eq!(reset("0.000000001"), Some(Duration::from_nanos(1)));
        assert_eq!(reset("0.0000000019"), Some(Duration::from_nanos(1)));
        assert_eq!(reset("1700000001.25"), Some(1250 * MS));
        let map = headers(&[("RateLimit", "\"d\";r=0;t=2.5")]);
        assert_eq!(parse_rate_headers(&map, now), Some(hint(0, 2500 * MS)));
    }

    #[test]
    fn ignores_values_that_are_not_text() {
        let now = SystemTime::UNIX_EPOCH;
        let mut map = headers(&[("X-RateLimit-Reset", "60")]);
        map.insert(
            "x-ratelimit-remaining",
            HeaderValue::from_bytes(b"\xff5").unwrap(),
        );
        assert_eq!(parse_rate_headers(&map, now), None);
        let mut map = headers(&[("RateLimit", "\"d\";r=1;t=2")]);
        map.insert(
            "ratelimit",
            HeaderValue::from_bytes(b"\"\xff\";r=1;t=2").unwrap(),
        );
        assert_eq!(parse_rate_headers(&map, now), None);
        // A line that is not text does not hide the others.
        map.append("ratelimit", HeaderValue::from_static("\"d\";r=4;t=5"));
        assert_eq!(parse_rate_headers(&map, now), Some(hint(4, 5 * SEC)));
    }

    #[test]
    fn splits_outside_quoted_strings() {
        let split = |value, sep| Unquoted::split(value, sep).collect::<Vec<_>>();
        assert_eq!(split("a,b,,c", b','), ["a", "b", "", "c"]);
        assert_eq!(split("", b','), [""]);
        assert_eq!(split("\"x,y\",z", b','), ["\"x,y\"", "z"]);
        assert_eq!(split("\"x\\\",y\",z", b','), ["\"x\\\",y\"", "z"]);
        assert_eq!(split("\"unterminated,a", b','), ["\"unterminated,a"]);
        assert_eq!(split("a;b=\"c;d\";e", b';'), ["a", "b=\"c;d\"", "e"]);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_bursts_then_waits_for_the_rate() {
        let limiter = RateLimiter::new(Some(config(10.0, 2)));
        let t0 = tokio::time::Instant::now();
        let mut waits = Vec::new();
        for _ in 0..5 {
            waits.push(limiter.acquire().await);
        }
        let ms = |n| Some(n * MS);
        assert_eq!(waits, [None, None, ms(100), ms(100), ms(100)]);
        assert_eq!(t0.elapsed(), 300 * MS);
        let stats = limiter.stats();
        assert_eq!(
            stats,
            RateStats {
                waits: 3,
                waited: 300 * MS
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_without_limits_never_waits() {
        let limiter = RateLimiter::new(None);
        let t0 = tokio::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(limiter.acquire().await, None);
        }
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(limiter.stats(), RateStats::default());
    }

    /// Starts `n` tasks that each acquire once, and returns when each went, from `t0`, sorted.
    async fn concurrent_acquires(limiter: &Arc<RateLimiter>, n: usize) -> Vec<Duration> {
        let t0 = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let limiter = Arc::clone(limiter);
                tokio::spawn(async move {
                    limiter.acquire().await;
                    t0.elapsed()
                })
            })
            .collect();
        let mut went = Vec::new();
        for task in tasks {
            went.push(task.await.unwrap());
        }
        went.sort();
        went
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_get_successive_slots() {
        let limiter = Arc::new(RateLimiter::new(Some(config(10.0, 1))));
        let went = concurrent_acquires(&limiter, 5).await;
        assert_eq!(went, [0, 100, 200, 300, 400].map(|ms| ms * MS));
        assert_eq!(
            limiter.stats(),
            RateStats {
                waits: 4,
                waited: 1000 * MS
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_honours_hints_and_pauses() {
        let limiter = Arc::new(RateLimiter::new(None));
        limiter.observe(hint(0, 5 * SEC));
        assert_eq!(concurrent_acquires(&limiter, 3).await, [5 * SEC; 3]);
        assert_eq!(limiter.acquire().await, None);
        limiter.observe(hint(2, 10 * SEC));
        let went = concurrent_acquires(&limiter, 4).await;
        assert_eq!(went, [Duration::ZERO, Duration::ZERO, 10 * SEC, 10 * SEC]);
        limiter.pause_for(3 * SEC);
        assert_eq!(concurrent_acquires(&limiter, 2).await, [3 * SEC; 2]);
        limiter.pause_until(now() + 2 * SEC);
        assert_eq!(limiter.acquire().await, Some(2 * SEC));
        assert_eq!(
            limiter.stats(),
            RateStats {
                waits: 3 + 2 + 2 + 1,
                waited: 15 * SEC + 20 * SEC + 6 * SEC + 2 * SEC,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_is_not_counted() {
        let limiter = RateLimiter::new(None);
        limiter.pause_for(10 * SEC);
        let gave_up = tokio::time::timeout(SEC, limiter.acquire()).await;
        assert!(gave_up.is_err());
        assert_eq!(limiter.stats(), RateStats::default());
        assert_eq!(limiter.acquire().await, Some(9 * SEC));
        assert_eq!(
            limiter.stats(),
            RateStats {
                waits: 1,
                waited: 9 * SEC
            }
        );
    }

    #[test]
    fn acquire_can_run_on_any_thread() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_shared<T: Send + Sync>() {}
        assert_shared::<RateLimiter>();
        let limiter = RateLimiter::new(None);
        assert_send(&limiter.acquire());
    }
}
