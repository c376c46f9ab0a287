//! Constant-rate runs: the schedule holds the rate, and latency is measured
//! from the intended send time so a server stall is not hidden
//! (coordinated omission), while the uncorrected figure does hide it.

mod common;

use std::time::Duration;

use common::*;
use ringlb_bench::report::HistSummary;
use ringlb_bench::serve::Mode;

#[test]
fn rate_2000_for_3s_sends_6000() {
    let srv = http_server();
    let mut cfg = http_run(srv.local_addr(), 1, 4);
    cfg.rate = Some(2000.0);
    cfg.duration = Some(Duration::from_secs(3));
    let out = run(&cfg);
    let n = out.stats.completed as f64;
    assert!((n - 6000.0).abs() <= 180.0, "completed {n}");
    assert_eq!(out.stats.errors.total(), 0);
    let secs = out.stats.elapsed_ns as f64 / 1e9;
    assert!((secs - 3.0).abs() < 0.05, "elapsed {secs}");
    srv.stop().unwrap();
}

#[test]
fn stall_shows_in_corrected_not_uncorrected() {
    let mut sc = serve_cfg(Mode::Http {
        status: 200,
        body_size: 16,
    });
    sc.stall_once_after = Some(2000);
    sc.stall = Duration::from_millis(200);
    let srv = start(sc);
    let mut cfg = http_run(srv.local_addr(), 1, 2);
    cfg.rate = Some(2000.0);
    cfg.duration = Some(Duration::from_secs(3));
    let out = run(&cfg);
    let c = HistSummary::from_histogram(&out.stats.latency);
    let u = HistSummary::from_histogram(&out.stats.uncorrected);
    // ~400 requests were due during the stall: the corrected tail shows it.
    assert!(c.p99_9_us >= 150_000, "corrected p99.9 {}us", c.p99_9_us);
    assert!(c.p99_us >= 50_000, "corrected p99 {}us", c.p99_us);
    // Only the 2 requests in flight saw it from their actual send time.
    assert!(u.p99_9_us < 50_000, "uncorrected p99.9 {}us", u.p99_9_us);
    assert!(u.max_us >= 150_000, "uncorrected max {}us", u.max_us);
    assert_eq!(out.stats.errors.total(), 0);
    srv.stop().unwrap();
}
