//! The client-side rules of blocking queries (Consul's `features/blocking`, applied to Nomad
//! too), shared by every watch loop:
//!
//! - [`next_index`]: reset when the index goes backwards; never block on 0 again after an answer.
//! - [`ChurnLimiter`]: let the happy path run unthrottled, but bound the request rate when
//!   answers keep coming back at once (churn, or a server that returns without blocking).
//! - [`Backoff`]: jittered exponential delays after errors.
//!
//! A blocking answer is not proof of a change (timeouts and idempotent writes also return, and
//! indexes cover whole tables): compare the content, not just the index.

use std::time::Duration;

use tokio::time::Instant;

/// The index to block on next, given the `previous` one sent and the one `returned`
/// (`X-Consul-Index` / `X-Nomad-Index`).
///
/// - `returned < previous`: the index went backwards (snapshot restore, the highest key under a
///   KV prefix deleted, a server change): reset to 0, so the next read answers at once and
///   re-establishes the baseline.
/// - otherwise at least 1: an index of 0 would turn every following read into an immediate
///   answer, a busy loop.
pub fn next_index(previous: u64, returned: u64) -> u64 {
    if returned < previous {
        0
    } else {
        returned.max(1)
    }
}

/// A token bucket for watch loops: up to `burst` requests at once, then at most one per
/// `min_interval`. Call [`acquire`](Self::acquire) before each request.
///
/// Idle time refills the bucket, so a loop whose requests block (the normal case) never waits
/// here; one whose answers come back immediately is held to the configured rate. Uses tokio's
/// clock (pausable in tests).
#[derive(Clone, Debug)]
pub struct ChurnLimiter {
    /// How far ahead of "now" the next request may be scheduled before one has to wait.
    burst_window: Duration,
    min_interval: Duration,
    /// The theoretical time of the next conforming request (GCRA).
    next: Option<Instant>,
}

impl ChurnLimiter {
    /// Default burst (Consul's suggestion).
    pub const DEFAULT_BURST: u32 = 2;
    /// Default spacing once the burst is used: Consul's suggestion of about one request every
    /// 15 s when results churn. A proxy wants much less (e.g. `new(5, 100 ms)`).
    pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(15);

    /// `burst` requests may go at once (at least 1), then one every `min_interval`.
    pub fn new(burst: u32, min_interval: Duration) -> Self {
        ChurnLimiter {
            burst_window: min_interval * burst.max(1).saturating_sub(1),
            min_interval,
            next: None,
        }
    }

    /// Waits until another request is allowed, and takes the permit.
    pub async fn acquire(&mut self) {
        let now = Instant::now();
        let next = self.next.map_or(now, |next| next.max(now));
        if next > now + self.burst_window {
            tokio::time::sleep_until(next - self.burst_window).await;
        }
        self.next = Some(next + self.min_interval);
    }

    /// Forgets past requests: the full burst is available again.
    pub fn reset(&mut self) {
        self.next = None;
    }
}

impl Default for ChurnLimiter {
    /// Burst 2, then one request every 15 s.
    fn default() -> Self {
        ChurnLimiter::new(Self::DEFAULT_BURST, Self::DEFAULT_MIN_INTERVAL)
    }
}

/// Jittered exponential backoff for retrying after errors.
///
/// The n-th delay (from 0) is drawn uniformly from `[d/2, d]` where `d = min(base * 2^n, max)`:
/// it grows, never exceeds `max`, and spreads retries of many clients apart.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Delays start near `base` and double up to `max` (a `max` below `base` is raised to it).
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .checked_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .map_or(self.max, |d| d.min(self.max));
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.rng.u64(0..=spread))
    }

    /// Call after a success: the next delay starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_index_resets_backwards_and_clamps() {
        assert_eq!(next_index(0, 0), 1, "never block on 0 after an answer");
        assert_eq!(next_index(0, 17), 17);
        assert_eq!(next_index(17, 17), 17, "unchanged");
        assert_eq!(next_index(17, 42), 42);
        assert_eq!(next_index(42, 17), 0, "backwards: reset");
        assert_eq!(next_index(42, 0), 0, "backwards to 0: reset");
        assert_eq!(next_index(1, 0), 0);
        assert_eq!(next_index(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn backoff_grows_bounded_and_jittered() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let mut b = Backoff::new(base, max);
        let mut ceiling = base;
        for _ in 0..80 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(max);
        }
        // Capped at max from now on, with jitter: not all the same.
        let delays: Vec<_> = (0..50).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= max && *d >= max / 2));
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "no jitter: {delays:?}"
        );

        b.reset();
        let d = b.next_delay();
        assert!(d >= base / 2 && d <= base, "after reset: {d:?}");
    }

    #[test]
    fn backoff_edge_cases() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_millis(1));
        assert!(b.next_delay() <= Duration::from_secs(1));
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::ZERO);
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            b.next_delay();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn churn_limiter_bursts_then_spaces() {
        let interval = Duration::from_millis(100);
        let mut limiter = ChurnLimiter::new(3, interval);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..6 {
            limiter.acquire().await;
            times.push(Instant::now() - start);
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(times, [ms(0), ms(0), ms(0), ms(100), ms(200), ms(300)]);

        // Idle time refills the bucket: after a long pause the burst is available again.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let resumed = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), resumed);
        limiter.acquire().await;
        assert_eq!(Instant::now() - resumed, interval);
    }

    #[tokio::test(start_paused = true)]
    async fn churn_limiter_does_not_delay_slow_loops() {
        // A loop whose requests take longer than the interval (blocking reads) never waits.
        let mut limiter = ChurnLimiter::new(1, Duration::from_secs(1));
        for _ in 0..5 {
            let before = Instant::now();
            limiter.acquire().await;
            assert_eq!(Instant::now(), before);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn churn_limiter_default_and_reset() {
        let mut limiter = ChurnLimiter::default();
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(Instant::now(), start, "default burst of 2");
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, ChurnLimiter::DEFAULT_MIN_INTERVAL);

        limiter.reset();
        let after_reset = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(Instant::now(), after_reset);
    }
}
