//! One write limit per user, shared by every write path of this gateway
//! (WebSocket frames and HTTP events alike): a GCRA rate limiter keyed by
//! user (governor), whose idle keys are forgotten so it stays bounded.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct WriteLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    pub per_second: f64,
}

impl WriteLimit {
    pub fn new(per_second: f64, burst: f64) -> WriteLimit {
        let period = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        let burst = NonZeroU32::new(burst.max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        WriteLimit {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            per_second,
        }
    }

    /// One write by `user`: allowed, or how long until the next one is.
    pub fn check(&self, user: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&user.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forget users whose bucket is full again (nothing to remember).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn users_tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests;
