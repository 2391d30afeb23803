//! Randomness for epochs and jitter, from the standard library alone.

use std::hash::{BuildHasher, Hasher};
use std::ops::RangeInclusive;
use std::time::Duration;

/// A random 64-bit number from the standard library's randomly seeded hasher, mixed with a
/// counter so that consecutive calls differ. Not for cryptography.
pub(crate) fn u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A random fraction in `[0, 1)`.
fn random_unit() -> f64 {
    // The top 53 bits fill an f64 mantissa exactly.
    (u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// `duration` shortened by a random part of up to `fraction` of it: uniform in
/// `[duration * (1 - fraction), duration]`.
pub(crate) fn shorten(duration: Duration, fraction: f64) -> Duration {
    duration.mul_f64(1.0 - fraction.clamp(0.0, 1.0) * random_unit())
}

/// A delay uniform in `[0, window]`: when one client of many should come back.
pub(crate) fn within(window: Duration) -> Duration {
    shorten(window, 1.0)
}

/// A whole number of seconds, uniform in `range`.
pub(crate) fn seconds(range: RangeInclusive<u64>) -> u64 {
    let (low, high) = (*range.start(), *range.end());
    low + u64() % (high - low + 1)
}

/// The `Retry-After` of a refused request (shutdown, overload): 1 to 5 seconds, at random, so
/// that the clients refused together do not come back together.
pub(crate) fn retry_after() -> Duration {
    Duration::from_secs(seconds(1..=5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortened_durations_stay_in_range_and_spread() {
        let base = Duration::from_secs(100);
        let samples: Vec<_> = (0..1000).map(|_| shorten(base, 0.2)).collect();
        assert!(samples
            .iter()
            .all(|d| *d >= Duration::from_secs(80) && *d <= base));
        let low = samples
            .iter()
            .filter(|d| **d < Duration::from_secs(90))
            .count();
        assert!((300..700).contains(&low), "{low} of 1000 in the lower half");
        assert_eq!(shorten(base, 0.0), base);
    }

    #[test]
    fn retry_after_is_one_to_five_seconds() {
        for _ in 0..100 {
            assert!((1..=5).contains(&retry_after().as_secs()));
        }
    }

    #[test]
    fn seconds_cover_the_whole_range() {
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let s = seconds(1..=5);
            assert!((1..=5).contains(&s));
            seen[s as usize - 1] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
