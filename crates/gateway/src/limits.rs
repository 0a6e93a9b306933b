//! A token bucket (pure; time is passed in).

#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    pub fn new(per_second: f64, burst: f64, now_ms: i64) -> Self {
        TokenBucket {
            capacity: burst,
            per_second,
            tokens: burst,
            last_ms: now_ms,
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now_ms: i64) -> bool {
        let elapsed = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(10.0, 5.0, 0);
        assert_eq!((0..8).filter(|_| bucket.try_take(0)).count(), 5);
        assert!(!bucket.try_take(50));
        assert!(bucket.try_take(100), "one token refills in 100 ms");
        assert_eq!(
            (0..20).filter(|_| bucket.try_take(10_000)).count(),
            5,
            "never more than the burst"
        );
    }
}
