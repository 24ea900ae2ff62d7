//! The one exponential backoff: after the n-th failure in a row, wait
//! `min × 2^(n-1)`, capped at `max`, stretched by up to `jitter` so that
//! many waiters that failed together do not retry together.

use std::time::Duration;

/// How long to wait after failures in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub min: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Up to this share is added at random (0.2: up to 20 % longer).
    pub jitter: f64,
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (1 for the first),
    /// jitter included, never above `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        self.stretch(self.base(failures))
    }

    /// The same without jitter: what tests and logs can rely on.
    pub fn base(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.min.saturating_mul(1 << doublings).min(self.max)
    }

    fn stretch(&self, wait: Duration) -> Duration {
        wait.mul_f64(1.0 + fastrand::f64() * self.jitter)
            .min(self.max.max(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_min_up_to_max_with_bounded_jitter() {
        let b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.25,
        };
        let bases: Vec<u64> = (1..=8).map(|n| b.base(n).as_secs()).collect();
        assert_eq!(bases, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.base(0), Duration::from_secs(1));
        assert_eq!(b.base(u32::MAX), Duration::from_secs(60));
        for n in 1..10 {
            let d = b.delay(n);
            assert!(d >= b.base(n) && d <= b.max, "{n}: {d:?}");
            assert!(d <= b.base(n).mul_f64(1.25), "{n}: {d:?}");
        }
    }
}
