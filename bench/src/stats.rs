//! Latency percentiles and rates.

use std::time::Duration;

/// Percentiles of a latency sample, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Computes nearest-rank percentiles of `samples` (nanoseconds); sorts them in place.
pub fn percentiles(samples: &mut [u64]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let rank = |fraction: f64| {
        let index = ((fraction * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index] as f64 / 1_000.0
    };
    Percentiles { p50_us: rank(0.50), p99_us: rank(0.99), max_us: rank(1.0) }
}

/// Events per second over `elapsed`.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|i| i * 1_000).collect();
        samples.reverse();
        let result = percentiles(&mut samples);
        assert_eq!(result.p50_us, 50.0);
        assert_eq!(result.p99_us, 99.0);
        assert_eq!(result.max_us, 100.0);
    }

    #[test]
    fn percentiles_single_sample() {
        let result = percentiles(&mut [7_000]);
        assert_eq!(result.p50_us, 7.0);
        assert_eq!(result.p99_us, 7.0);
    }

    #[test]
    fn percentiles_empty() {
        assert_eq!(percentiles(&mut []), Percentiles::default());
    }

    #[test]
    fn rate_zero_elapsed() {
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(rate(10, Duration::from_millis(500)), 20.0);
    }
}
