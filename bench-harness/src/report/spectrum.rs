//! The full percentile spectrum of a histogram, as data and as HdrHistogram's
//! classic text ("Value Percentile TotalCount 1/(1-Percentile)"), the format
//! `outputPercentileDistribution` prints and the HdrHistogram plotters read.
//! Values are recorded in microseconds and printed in milliseconds.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Ticks per half distance, as in HdrHistogram's default output.
pub const TICKS_PER_HALF: u32 = 5;

/// One line of the spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpectrumPoint {
    /// Highest value (µs) at or below which `percentile` of samples fall.
    pub value_us: u64,
    /// Percentile level as a fraction in [0, 1].
    pub percentile: f64,
    /// Samples at or below `value_us`.
    pub total_count: u64,
}

/// The spectrum points of `h` (empty for an empty histogram).
pub fn points(h: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut total = 0;
    h.iter_quantiles(TICKS_PER_HALF)
        .map(|v| {
            total += v.count_since_last_iteration();
            SpectrumPoint {
                value_us: v.value_iterated_to(),
                percentile: v.quantile_iterated_to(),
                total_count: total,
            }
        })
        .collect()
}

/// Classic HdrHistogram text, values in milliseconds with 3 decimals.
pub fn classic_text(h: &Histogram<u64>) -> String {
    let scale = 1000.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let pts = points(h);
    for p in &pts {
        let v = p.value_us as f64 / scale;
        if p.percentile < 1.0 {
            let _ = writeln!(
                s,
                "{:12.3} {:2.12} {:10} {:14.2}",
                v,
                p.percentile,
                p.total_count,
                1.0 / (1.0 - p.percentile)
            );
        } else {
            let _ = writeln!(s, "{:12.3} {:2.12} {:10}", v, p.percentile, p.total_count);
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(crate::stats::SIGFIG as i32))
        .log2()
        .ceil()
        .exp2() as u64;
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    s
}

/// Reads (value in ms, percentile, total count) lines back from classic text.
pub fn parse_classic(text: &str) -> Vec<(f64, f64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let v = it.next()?.parse().ok()?;
            let p = it.next()?.parse().ok()?;
            let c = it.next()?.parse().ok()?;
            Some((v, p, c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn text_round_trips_and_brackets_percentiles() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        let text = classic_text(&h);
        let lines = parse_classic(&text);
        assert!(lines.len() > 50);
        let last = lines.last().unwrap();
        assert_eq!(last.1, 1.0);
        assert_eq!(last.2, 10_000);
        assert!((last.0 - h.max() as f64 / 1000.0).abs() < 1e-9);
        for q in [0.5, 0.9, 0.99, 0.999] {
            let want = h.value_at_quantile(q) as f64 / 1000.0;
            let above = lines.iter().find(|l| l.1 >= q).unwrap();
            let below = lines.iter().rev().find(|l| l.1 < q).unwrap();
            assert!(
                below.0 <= want && want <= above.0,
                "q {q}: {below:?} {want} {above:?}"
            );
        }
        assert!(text.contains("#[Mean    ="));
        assert!(text.contains("SubBuckets     =         2048"));
    }

    #[test]
    fn empty_histogram_has_no_points() {
        assert!(points(&new_histogram()).is_empty());
    }
}
