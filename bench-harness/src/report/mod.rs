//! Reports of a run: the [`Report`] model (everything measured, also the JSON
//! schema), the wrk-style summary, the percentile spectrum, the HdrHistogram
//! interval log and the live progress line.

pub mod hdrlog;
pub mod json;
pub mod progress;
pub mod spectrum;
pub mod summary;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::engine::{RunConfig, RunOutcome};
use crate::stats::ErrorCounts;
use spectrum::SpectrumPoint;

/// Summary of one histogram; all values in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistSummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub stdev_us: f64,
    pub max_us: u64,
    /// Share of samples within mean ± stdev, in percent.
    pub within_stdev_pct: f64,
    pub p50_us: u64,
    pub p75_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub p99_99_us: u64,
    pub spectrum: Vec<SpectrumPoint>,
}

/// The percentiles every report shows.
pub const PERCENTILES: [f64; 6] = [0.5, 0.75, 0.9, 0.99, 0.999, 0.9999];

impl HistSummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let (mean, stdev) = if h.is_empty() {
            (0.0, 0.0)
        } else {
            (h.mean(), h.stdev())
        };
        let within = if h.is_empty() {
            0.0
        } else {
            let lo = (mean - stdev).max(0.0).ceil() as u64;
            let hi = (mean + stdev).floor() as u64;
            let n: u64 = h
                .iter_recorded()
                .filter(|v| (lo..=hi).contains(&v.value_iterated_to()))
                .map(|v| v.count_at_value())
                .sum();
            100.0 * n as f64 / h.len() as f64
        };
        let q = |p| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        HistSummary {
            count: h.len(),
            min_us: if h.is_empty() { 0 } else { h.min() },
            mean_us: mean,
            stdev_us: stdev,
            max_us: if h.is_empty() { 0 } else { h.max() },
            within_stdev_pct: within,
            p50_us: q(0.5),
            p75_us: q(0.75),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            spectrum: spectrum::points(h),
        }
    }

    /// The six standard percentiles in [`PERCENTILES`] order.
    pub fn percentiles(&self) -> [u64; 6] {
        [
            self.p50_us,
            self.p75_us,
            self.p90_us,
            self.p99_us,
            self.p99_9_us,
            self.p99_99_us,
        ]
    }
}

/// Errors by kind, and their total (in JSON, one flat object).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Errors {
    #[serde(flatten)]
    pub by_kind: ErrorCounts,
    pub total: u64,
}

/// Responses by status class.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct StatusClasses {
    #[serde(rename = "1xx")]
    pub s1xx: u64,
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
}

/// CPU time of the whole load-generator process in the measured window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Cpu {
    pub user_s: f64,
    pub sys_s: f64,
    /// (user + sys) / completed requests, in microseconds.
    pub us_per_request: f64,
}

/// Everything a run measured; serialized as the `--json` file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// Curve label for plots (`--label`, default the target).
    pub label: String,
    pub target: String,
    /// `http`, `http-close`, `tcp-echo` or `tcp-stream`.
    pub workload: String,
    /// `closed` (as fast as possible) or `open` (constant rate).
    pub model: String,
    pub rate: Option<f64>,
    pub threads: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Responses (or echoed messages) completed.
    pub requests: u64,
    /// Requests started.
    pub issued: u64,
    /// Requests unanswered when the run ended (not errors).
    pub in_flight_at_end: u64,
    pub requests_per_sec: f64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Bytes read per second.
    pub transfer_bytes_per_sec: f64,
    /// Bytes moved both ways, in Gbit/s.
    pub gbit_per_sec: f64,
    pub errors: Errors,
    pub status: StatusClasses,
    /// Latency from the intended send time (coordinated-omission corrected).
    pub latency: HistSummary,
    /// Latency from the actual send.
    pub latency_uncorrected: HistSummary,
    pub connect: HistSummary,
    pub ttfb: HistSummary,
    pub cpu: Cpu,
}

impl Report {
    pub fn new(cfg: &RunConfig, out: &RunOutcome, label: Option<&str>) -> Report {
        let s = &out.stats;
        let secs = s.elapsed_ns as f64 / 1e9;
        let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        let e = &s.errors;
        let cpu_total = out.cpu.user_s + out.cpu.sys_s;
        Report {
            tool: "ringlb-bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            label: label.unwrap_or(&cfg.target.original).to_string(),
            target: cfg.target.original.clone(),
            workload: cfg.workload.name().into(),
            model: if cfg.rate.is_some() { "open" } else { "closed" }.into(),
            rate: cfg.rate,
            threads: cfg.threads,
            connections: cfg.connections,
            duration_s: secs,
            warmup_s: cfg.warmup.as_secs_f64(),
            requests: s.completed,
            issued: s.issued,
            in_flight_at_end: s.in_flight_at_end,
            requests_per_sec: per_s(s.completed as f64),
            bytes_read: s.bytes_read,
            bytes_written: s.bytes_written,
            transfer_bytes_per_sec: per_s(s.bytes_read as f64),
            gbit_per_sec: per_s((s.bytes_read + s.bytes_written) as f64 * 8.0 / 1e9),
            errors: Errors {
                by_kind: *e,
                total: e.total(),
            },
            status: StatusClasses {
                s1xx: s.status_classes[0],
                s2xx: s.status_classes[1],
                s3xx: s.status_classes[2],
                s4xx: s.status_classes[3],
                s5xx: s.status_classes[4],
            },
            latency: HistSummary::from_histogram(&s.latency),
            latency_uncorrected: HistSummary::from_histogram(&s.uncorrected),
            connect: HistSummary::from_histogram(&s.connect),
            ttfb: HistSummary::from_histogram(&s.ttfb),
            cpu: Cpu {
                user_s: out.cpu.user_s,
                sys_s: out.cpu.sys_s,
                us_per_request: if s.completed > 0 {
                    cpu_total * 1e6 / s.completed as f64
                } else {
                    0.0
                },
            },
        }
    }
}
