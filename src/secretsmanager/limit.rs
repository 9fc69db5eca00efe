//! A token bucket: the client-side rate limit of one Secrets Manager source.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// Seconds calls waited for the client-side rate limit, over all sources.
pub type Waited = Counter<f64, AtomicU64>;

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
    waited: Waited,
}

impl TokenBucket {
    pub fn new(limit: RateLimit, waited: Waited) -> Self {
        TokenBucket {
            limit,
            state: Mutex::new((limit.burst, Instant::now())),
            waited,
        }
    }

    /// How long to wait for the next token (zero when one is there, and then taken if `take`).
    fn wait(&self, now: Instant, take: bool) -> Duration {
        let mut s = self.state.lock().expect("token bucket");
        let refill = now.duration_since(s.1).as_secs_f64() * self.limit.per_second;
        s.0 = (s.0 + refill).min(self.limit.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= f64::from(u8::from(take));
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - s.0) / self.limit.per_second)
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        self.wait_until(true).await;
    }

    /// Waits until a token is there, without taking it. A caller that sends what others have
    /// queued takes its batch after this, not before: whatever queued while it waited for the
    /// rate limit goes in the same call.
    pub async fn ready(&self) {
        self.wait_until(false).await;
    }

    async fn wait_until(&self, take: bool) {
        loop {
            let wait = self.wait(Instant::now(), take);
            if wait.is_zero() {
                return;
            }
            self.waited.inc_by(wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ten_per_second(burst: f64) -> TokenBucket {
        let per_second = 10.0;
        TokenBucket::new(RateLimit { per_second, burst }, Waited::default())
    }

    #[test]
    fn burst_then_rate() {
        let b = ten_per_second(3.0);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.wait(t, true), Duration::ZERO);
        }
        let wait = b.wait(t, true);
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert_eq!(b.wait(t + Duration::from_millis(100), true), Duration::ZERO);
    }

    #[test]
    fn waiting_until_ready_takes_nothing() {
        let b = ten_per_second(1.0);
        let t = Instant::now();
        assert_eq!(b.wait(t, false), Duration::ZERO);
        assert_eq!(b.wait(t, true), Duration::ZERO);
        assert!(b.wait(t, false) > Duration::ZERO);
    }
}
