//! Pacing for the status writer: a token bucket for API writes and an
//! exponential backoff for retries. Time is an argument, so both are tested
//! without sleeping.

use std::time::{Duration, Instant};

/// `qps` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// Starts full, so a new leader writes its first `burst` statuses at once.
    pub fn new(qps: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps: qps.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / self.qps).max(Duration::from_millis(1)))
        }
    }
}

/// Delay before retry number `failures` (1, 2, …): 1 s doubling to 60 s.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_the_burst_then_paces_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20.0, 50, t0);
        for i in 0..50 {
            assert!(b.take(t0).is_ok(), "token {i} of the burst");
        }
        let wait = b.take(t0).unwrap_err();
        assert!(
            (Duration::from_millis(49)..=Duration::from_millis(51)).contains(&wait),
            "{wait:?}"
        );
        let t1 = t0 + Duration::from_secs(1);
        let taken = (0..100).filter(|_| b.take(t1).is_ok()).count();
        assert_eq!(taken, 20, "one second refills qps tokens");
    }

    #[test]
    fn an_idle_bucket_saves_no_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 5, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(later).is_ok()).count(), 5);
    }

    #[test]
    fn backoff_doubles_from_one_second_and_stops_at_a_minute() {
        let got: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
