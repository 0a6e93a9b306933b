//! One backoff for every retry loop: exponential from `base`, capped, with
//! "equal jitter" (a delay lies in [d/2, d]) so that the many callers a
//! failure hits at once (a partition's batch, every gateway's publishes, a
//! provider's queued notifications) do not come back in lockstep.
//!
//! The jitter is drawn from a key the caller names (a stream position, an
//! event id, a notification id) rather than from a random source: a delay
//! is reproducible for the same key and attempt, so pure cores stay pure
//! and tests can name exact values, while different keys spread out.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    /// The undithered delay before retry `attempt` (1 = the first retry).
    pub fn ceiling(&self, attempt: u64) -> Duration {
        let exponent = attempt.clamp(1, 31) as u32 - 1;
        self.base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.cap)
    }

    /// The delay before retry `attempt` for `key`: within [ceiling/2,
    /// ceiling], the same for the same key and attempt.
    pub fn delay(&self, attempt: u64, key: &str) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = im_events::partition::fnv1a64(format!("{key}\u{0}{attempt}").as_bytes());
        let fraction = (spread % 1_000) as u32;
        half + (ceiling - half) * fraction / 1_000
    }
}

#[cfg(test)]
mod tests;
