//! A token bucket: the client-side rate limit of one Secrets Manager source.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Calls per second and burst of one source (`--secrets-manager-qps`, `--secrets-manager-burst`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 20.0,
            burst: 40.0,
        }
    }
}

/// Tokens refill at `per_second` up to `burst`; each call takes one, waiting when none is left.
#[derive(Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> Self {
        TokenBucket {
            limit,
            state: Mutex::new((limit.burst, Instant::now())),
        }
    }

    /// How long to wait for the next token (zero when one is taken now).
    fn take(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().expect("token bucket");
        let refill = now.duration_since(s.1).as_secs_f64() * self.limit.per_second;
        s.0 = (s.0 + refill).min(self.limit.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - s.0) / self.limit.per_second)
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = self.take(Instant::now());
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let b = TokenBucket::new(RateLimit {
            per_second: 10.0,
            burst: 3.0,
        });
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take(t), Duration::ZERO);
        }
        let wait = b.take(t);
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert_eq!(b.take(t + Duration::from_millis(100)), Duration::ZERO);
    }
}
