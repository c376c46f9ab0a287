//! A server's latency as a peak-sensitive moving average (Finagle's and
//! Linkerd's peak EWMA), shared by every shard in one atomic word.
//!
//! A sample above the average replaces it at once (a server that turns slow
//! is avoided at once); a sample below it pulls it down with weight
//! `1 - e^(-dt/window)`, where `dt` is the time since the last sample. Read
//! back, the average decays the same way toward zero with the time since
//! its last sample, so a server avoided for being slow is tried again after
//! about a window, and a new sample tells the truth.
//!
//! The word packs the average (f32 microseconds, high half) with the time
//! of its last sample (`crate::clock` milliseconds, low half, wrapping every
//! 49 days; 0 means no sample yet). Updates are a CAS loop: two shards
//! sampling at once both count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct PeakEwma(AtomicU64);

fn pack(us: f32, at_ms: u64) -> u64 {
    (u64::from(us.to_bits()) << 32) | (at_ms as u32).max(1) as u64
}

fn unpack(w: u64) -> Option<(f64, u32)> {
    let at = w as u32;
    (at != 0).then(|| (f64::from(f32::from_bits((w >> 32) as u32)), at))
}

/// `e^(-dt/window)`, for `dt` milliseconds between two 32-bit stamps. A
/// stamp a little ahead of `now_ms` (another shard's clock read later than
/// this one's) is no time at all, not 49 days.
fn decay(now_ms: u64, at: u32, window: Duration) -> f64 {
    let dt = ((now_ms as u32).wrapping_sub(at) as i32).max(0) as f64;
    let w = window.as_millis().max(1) as f64;
    exp_neg(dt / w)
}

/// `e^(-x)` for `x >= 0`, to within 1e-6 relative: `2^(-x log2 e)`, the
/// integer part of the exponent set in the float's bits and the fraction
/// by a degree-6 series. A tenth of libm's cost; every pick of
/// `leasttime` computes it once per server.
fn exp_neg(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    let y = x * std::f64::consts::LOG2_E;
    if y >= 1022.0 {
        return 0.0;
    }
    let n = y.round();
    // 2^-f = e^(-f ln 2), f in [-1/2, 1/2].
    let t = -(y - n) * std::f64::consts::LN_2;
    let poly = 1.0
        + t * (1.0
            + t * (0.5 + t * (1.0 / 6.0 + t * (1.0 / 24.0 + t * (1.0 / 120.0 + t / 720.0)))));
    poly * f64::from_bits((1023 - n as u64) << 52)
}

impl PeakEwma {
    pub fn observe(&self, sample: Duration, now_ms: u64, window: Duration) {
        let s = sample.as_secs_f64() * 1e6;
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = match unpack(cur) {
                Some((avg, at)) if s < avg => {
                    let keep = decay(now_ms, at, window);
                    avg * keep + s * (1.0 - keep)
                }
                _ => s,
            };
            match self.0.compare_exchange_weak(
                cur,
                pack(next as f32, now_ms),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The average in microseconds at `now_ms`, decayed since its last
    /// sample; `None` before the first sample.
    pub fn micros(&self, now_ms: u64, window: Duration) -> Option<f64> {
        let (avg, at) = unpack(self.0.load(Ordering::Relaxed))?;
        Some(avg * decay(now_ms, at, window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    #[test]
    fn peaks_at_once_and_comes_down_slowly() {
        let e = PeakEwma::default();
        assert_eq!(e.micros(5, W), None);
        e.observe(Duration::from_micros(100), 10, W);
        assert!((e.micros(10, W).unwrap() - 100.0).abs() < 0.01);
        e.observe(Duration::from_millis(20), 20, W);
        assert!((e.micros(20, W).unwrap() - 20_000.0).abs() < 1.0);
        // One fast sample a second later moves it by about a tenth.
        e.observe(Duration::from_micros(100), 1020, W);
        let after = e.micros(1020, W).unwrap();
        assert!((17_000.0..19_000.0).contains(&after), "{after}");
    }

    #[test]
    fn the_fast_exponential_is_close_to_libm() {
        let mut x = 0.0;
        while x < 700.0 {
            let (fast, exact) = (exp_neg(x), (-x).exp());
            assert!(
                ((fast - exact) / exact).abs() < 1e-6,
                "e^-{x}: {fast} vs {exact}"
            );
            x = x * 1.01 + 1e-4;
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-3.0), 1.0);
        assert_eq!(exp_neg(1e9), 0.0);
    }

    #[test]
    fn a_stamp_from_a_shard_a_little_ahead_is_no_time() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(20), 1001, W);
        // Read by a shard whose clock says 1000: still 20 ms, not zero.
        assert!((e.micros(1000, W).unwrap() - 20_000.0).abs() < 1.0);
        // A fast sample from that shard moves it a little, not all the way.
        e.observe(Duration::from_micros(100), 1000, W);
        assert!(e.micros(1001, W).unwrap() > 19_000.0);
    }

    #[test]
    fn decays_without_samples() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(20), 1, W);
        let later = e.micros(1 + 10_000, W).unwrap();
        assert!(
            (later - 20_000.0 / std::f64::consts::E).abs() < 5.0,
            "{later}"
        );
    }
}
