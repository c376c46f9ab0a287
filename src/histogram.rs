//! A lock-free log-linear histogram of durations: every shard records into
//! the same atomics, anyone reads quantiles. Buckets are powers of two of
//! microseconds, each split in [`SUB`] linear steps, so a quantile is known
//! to within 1/`SUB` (12.5%) of its value, from 1 µs to about 35 minutes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB: usize = 8;
const SUB_BITS: u32 = 3;
const POWERS: usize = 32;

#[derive(Debug)]
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    /// The sum of every sample, in microseconds.
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..POWERS * SUB).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The bucket of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let power = 63 - us.leading_zeros(); // >= SUB_BITS
    let step = (us >> (power - SUB_BITS)) as usize & (SUB - 1);
    let i = (power - SUB_BITS + 1) as usize * SUB + step;
    i.min(POWERS * SUB - 1)
}

/// The highest value bucket `i` holds.
fn upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let power = (i / SUB) as u32 + SUB_BITS - 1;
    let step = (i % SUB) as u64;
    ((SUB as u64 + step + 1) << (power - SUB_BITS)) - 1
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Samples per bucket of `bounds` (seconds, ascending; each counts
    /// what is above the previous bound and at most its own), then a last
    /// bucket at +Inf for the rest; with the total count and the sum in
    /// seconds: what a Prometheus histogram is made of (the encoder makes
    /// the counts cumulative). A sample belongs below a bound when the top
    /// of its own bucket does, so a bound is exact to within 12.5%.
    pub fn by_bounds(&self, bounds: &[f64]) -> (Vec<(f64, u64)>, u64, f64) {
        let mut out: Vec<(f64, u64)> = bounds.iter().map(|&b| (b, 0)).collect();
        out.push((f64::INFINITY, 0));
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            total += n;
            let top = upper(i) as f64 / 1e6;
            let slot = bounds
                .iter()
                .position(|&b| top <= b)
                .unwrap_or(bounds.len());
            out[slot].1 += n;
        }
        (out, total, self.sum_us.load(Ordering::Relaxed) as f64 / 1e6)
    }

    /// The value below which a share `q` (0 to 1) of the samples fall (the
    /// top of its bucket); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let n: u64 = counts.iter().sum();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(upper(i)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut last = 0;
        for us in 0..100_000u64 {
            let b = bucket(us);
            assert!(b == last || b == last + 1, "{us}");
            assert!(upper(b) >= us);
            assert!(
                upper(b) as f64 <= us as f64 * 1.125 + 1.0,
                "{us}: {}",
                upper(b)
            );
            last = b;
        }
    }

    #[test]
    fn by_bounds_puts_each_sample_in_one_bucket() {
        let h = Histogram::default();
        for us in [50, 90, 300, 2_000, 5_000_000] {
            h.record(Duration::from_micros(us));
        }
        let (buckets, count, sum) = h.by_bounds(&[0.0001, 0.001, 0.01]);
        assert_eq!(
            buckets,
            vec![(0.0001, 2), (0.001, 1), (0.01, 1), (f64::INFINITY, 1)]
        );
        assert_eq!(count, 5);
        assert!((sum - 5.00244).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn quantiles_within_an_eighth() {
        let h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        let p99 = h.quantile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((500.0..=563.0).contains(&p50), "{p50}");
        assert!((990.0..=1114.0).contains(&p99), "{p99}");
    }
}
