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
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_with_the_wait() {
        let limit = WriteLimit::new(10.0, 5.0);
        assert_eq!((0..8).filter(|_| limit.check("a").is_ok()).count(), 5);
        let wait = limit.check("a").unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limit.check("b").is_ok(), "another user has their own");
        std::thread::sleep(Duration::from_millis(120));
        assert!(limit.check("a").is_ok(), "one write refills in 100 ms");
    }

    #[test]
    fn idle_users_are_forgotten() {
        let limit = WriteLimit::new(1000.0, 2.0);
        for user in 0..100 {
            let _ = limit.check(&format!("u{user}"));
        }
        assert_eq!(limit.users_tracked(), 100);
        std::thread::sleep(Duration::from_millis(10));
        limit.forget_idle();
        assert_eq!(limit.users_tracked(), 0);
    }
}
