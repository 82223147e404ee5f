//! Exponential backoff with jitter, capped.

use std::time::Duration;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, capped, then
    /// "equal jitter" (half fixed, half random) so replicas that failed together do not
    /// retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        let half = exp / 2;
        half + half.mul_f64(unit_random())
    }
}

impl Backoff {
    /// `attempt`, again after each transient error (waiting [`Backoff::delay`]) until
    /// `patience` has passed; a permanent error or success ends it. For tools that read a
    /// source outside the engine (the engine has its own retry and failure states).
    pub async fn retry_transient<T, F, Fut>(&self, patience: Duration, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + patience;
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Err(e) if e.is_transient() => {
                    let delay = self.delay(tries);
                    if tokio::time::Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }
}

/// A uniform value in [0, 1): jitter needs spread, not cryptographic quality.
fn unit_random() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 1..=4 {
            let full = Duration::from_millis(100 * (1 << (attempt - 1)));
            let d = b.delay(attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        for _ in 0..50 {
            let d = b.delay(30);
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1));
        }
    }

    #[test]
    fn jitter_spreads() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(10),
        };
        let distinct: std::collections::BTreeSet<_> = (0..20).map(|_| b.delay(1)).collect();
        assert!(distinct.len() > 10, "jitter must vary: {distinct:?}");
    }
}
