//! Measurements of one thread and of a whole run: latency histograms
//! (corrected from the intended send time, uncorrected from the actual send),
//! connect time and time to first byte, counters and errors by kind. Values
//! are microseconds. Per-thread stats are merged at the end.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable value: one hour in microseconds.
pub const MAX_US: u64 = 3_600_000_000;
/// Significant figures kept by every histogram.
pub const SIGFIG: u8 = 3;

/// A new empty histogram with the run's bounds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("static histogram bounds are valid")
}

/// Kinds of failure, counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP connect failed (refused, unreachable, out of sockets).
    Connect,
    /// Receive failed or the peer closed before the response was complete.
    Read,
    /// Send failed.
    Write,
    /// No complete response within `--timeout`.
    Timeout,
    /// The response status was 400 or above.
    Status,
    /// The response was not valid HTTP, or echoed bytes differed.
    Protocol,
}

/// Error counters by kind.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorCounts {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
    pub status: u64,
    pub protocol: u64,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.connect += 1,
            ErrorKind::Read => self.read += 1,
            ErrorKind::Write => self.write += 1,
            ErrorKind::Timeout => self.timeout += 1,
            ErrorKind::Status => self.status += 1,
            ErrorKind::Protocol => self.protocol += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.status + self.protocol
    }

    pub fn merge(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.status += o.status;
        self.protocol += o.protocol;
    }
}

/// Everything one thread (or, merged, the whole run) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency from the intended send time (equals `uncorrected` in closed loop).
    pub latency: Histogram<u64>,
    /// Latency from the actual send.
    pub uncorrected: Histogram<u64>,
    pub connect: Histogram<u64>,
    pub ttfb: Histogram<u64>,
    pub errors: ErrorCounts,
    /// Responses (or echoed messages) completed within the measured window.
    pub completed: u64,
    /// Requests started within the measured window.
    pub issued: u64,
    /// Requests still unanswered when the run ended.
    pub in_flight_at_end: u64,
    /// Response status classes 1xx..5xx.
    pub status_classes: [u64; 5],
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Measured window in nanoseconds.
    pub elapsed_ns: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: new_histogram(),
            uncorrected: new_histogram(),
            connect: new_histogram(),
            ttfb: new_histogram(),
            errors: ErrorCounts::default(),
            completed: 0,
            issued: 0,
            in_flight_at_end: 0,
            status_classes: [0; 5],
            bytes_read: 0,
            bytes_written: 0,
            elapsed_ns: 0,
        }
    }
}

/// Nanoseconds to whole microseconds, rounding to nearest.
#[inline]
pub fn ns_to_us(ns: u64) -> u64 {
    (ns + 500) / 1000
}

impl Stats {
    /// Records one completed request.
    pub fn record_latency(&mut self, corrected_ns: u64, uncorrected_ns: u64) {
        self.latency.saturating_record(ns_to_us(corrected_ns));
        self.uncorrected.saturating_record(ns_to_us(uncorrected_ns));
    }

    pub fn record_status(&mut self, status: u16) {
        if (100..600).contains(&status) {
            self.status_classes[(status / 100 - 1) as usize] += 1;
        }
        if status >= 400 {
            self.errors.add(ErrorKind::Status);
        }
    }

    /// Adds another thread's figures.
    pub fn merge(&mut self, o: &Stats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.uncorrected.add(&o.uncorrected);
        let _ = self.connect.add(&o.connect);
        let _ = self.ttfb.add(&o.ttfb);
        self.errors.merge(&o.errors);
        self.completed += o.completed;
        self.issued += o.issued;
        self.in_flight_at_end += o.in_flight_at_end;
        for (a, b) in self.status_classes.iter_mut().zip(o.status_classes) {
            *a += b;
        }
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.elapsed_ns = self.elapsed_ns.max(o.elapsed_ns);
    }
}

/// One thread's figures for one interval (one second of the measured window).
#[derive(Debug, Clone)]
pub struct IntervalSample {
    pub thread: usize,
    /// Interval number, 0 = first second after warm-up.
    pub index: u64,
    /// Start and length, relative to the start of measurement.
    pub start_ns: u64,
    pub len_ns: u64,
    pub latency: Histogram<u64>,
    pub completed: u64,
    pub errors: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats::default();
        a.record_latency(2_000_000, 1_000_000);
        a.record_status(200);
        a.completed = 1;
        let mut b = Stats::default();
        b.record_latency(4_000_000, 3_000_000);
        b.record_status(503);
        b.errors.add(ErrorKind::Timeout);
        b.completed = 1;
        a.merge(&b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.latency.max(), a.latency.highest_equivalent(4000));
        assert_eq!(a.uncorrected.min(), 1000);
        assert_eq!(a.errors.status, 1);
        assert_eq!(a.errors.timeout, 1);
        assert_eq!(a.errors.total(), 2);
        assert_eq!(a.status_classes, [0, 1, 0, 0, 1]);
        assert_eq!(a.completed, 2);
    }
}
