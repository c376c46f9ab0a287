//! The wrk-style text summary printed after every run: threads and
//! connections, latency avg/stdev/max, the standard percentiles (corrected
//! and, in open loop, uncorrected side by side), connect time and time to
//! first byte, requests/s, transfer/s and errors by kind.

use std::fmt::Write;

use super::{HistSummary, Report, PERCENTILES};

/// Formats microseconds the way wrk does (`us`, `ms`, `s`).
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.2}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// Formats a byte count (binary multiples, as wrk does).
pub fn fmt_bytes(b: f64) -> String {
    const U: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", U[i])
}

fn pct_label(p: f64) -> String {
    let s = format!("{:.3}", p * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn dist_line(s: &mut String, name: &str, h: &HistSummary) {
    let _ = writeln!(
        s,
        "  {name:<8} p50 {}  p99 {}  max {}  ({} samples)",
        fmt_us(h.p50_us as f64),
        fmt_us(h.p99_us as f64),
        fmt_us(h.max_us as f64),
        h.count
    );
}

/// The summary text of a report.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let model = match r.rate {
        Some(rate) => format!("open loop at {rate:.0} req/s"),
        None => "closed loop".to_string(),
    };
    let _ = writeln!(
        s,
        "Running {:.2}s test @ {} ({}, {})",
        r.duration_s, r.target, r.workload, model
    );
    let _ = writeln!(
        s,
        "  {} threads and {} connections",
        r.threads, r.connections
    );
    let stream = r.workload == "tcp-stream";
    if !stream {
        let l = &r.latency;
        let _ = writeln!(s, "  Thread Stats   Avg      Stdev     Max   +/- Stdev");
        let _ = writeln!(
            s,
            "    Latency {:>9} {:>9} {:>9} {:>8.2}%",
            fmt_us(l.mean_us),
            fmt_us(l.stdev_us),
            fmt_us(l.max_us as f64),
            l.within_stdev_pct
        );
        let open = r.model == "open";
        if open {
            let _ = writeln!(s, "  Latency Distribution   corrected  uncorrected");
        } else {
            let _ = writeln!(s, "  Latency Distribution");
        }
        let c = r.latency.percentiles();
        let u = r.latency_uncorrected.percentiles();
        for k in 0..PERCENTILES.len() {
            if open {
                let _ = writeln!(
                    s,
                    "  {:>7}  {:>18} {:>12}",
                    pct_label(PERCENTILES[k]),
                    fmt_us(c[k] as f64),
                    fmt_us(u[k] as f64)
                );
            } else {
                let _ = writeln!(
                    s,
                    "  {:>7}  {:>10}",
                    pct_label(PERCENTILES[k]),
                    fmt_us(c[k] as f64)
                );
            }
        }
        if open {
            let _ = writeln!(
                s,
                "  {:>7}  {:>18} {:>12}",
                "max",
                fmt_us(r.latency.max_us as f64),
                fmt_us(r.latency_uncorrected.max_us as f64)
            );
        } else {
            let _ = writeln!(s, "  {:>7}  {:>10}", "max", fmt_us(r.latency.max_us as f64));
        }
        dist_line(&mut s, "Connect", &r.connect);
        dist_line(&mut s, "TTFB", &r.ttfb);
        let _ = writeln!(
            s,
            "  {} requests in {:.2}s, {} read",
            r.requests,
            r.duration_s,
            fmt_bytes(r.bytes_read as f64)
        );
        if r.in_flight_at_end > 0 {
            let _ = writeln!(
                s,
                "  {} requests still in flight at the end",
                r.in_flight_at_end
            );
        }
    } else {
        dist_line(&mut s, "Connect", &r.connect);
        let _ = writeln!(
            s,
            "  {} read, {} written in {:.2}s",
            fmt_bytes(r.bytes_read as f64),
            fmt_bytes(r.bytes_written as f64),
            r.duration_s
        );
    }
    let e = &r.errors;
    if e.total > 0 {
        let _ = writeln!(
            s,
            "  Errors: connect {}, read {}, write {}, timeout {}, status>=400 {}, protocol {}",
            e.by_kind.connect,
            e.by_kind.read,
            e.by_kind.write,
            e.by_kind.timeout,
            e.by_kind.status,
            e.by_kind.protocol
        );
    }
    if stream {
        let _ = writeln!(s, "Throughput: {:.2} Gbit/s", r.gbit_per_sec);
    } else {
        let _ = writeln!(s, "Requests/sec: {:>10.2}", r.requests_per_sec);
        let _ = writeln!(
            s,
            "Transfer/sec: {:>10}",
            fmt_bytes(r.transfer_bytes_per_sec)
        );
    }
    let _ = writeln!(
        s,
        "CPU: {:.2}s user, {:.2}s sys{}",
        r.cpu.user_s,
        r.cpu.sys_s,
        if stream {
            String::new()
        } else {
            format!(", {:.2}us per request", r.cpu.us_per_request)
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_us(523.0), "523.00us");
        assert_eq!(fmt_us(1234.0), "1.23ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50s");
        assert_eq!(fmt_bytes(2048.0), "2.00KB");
        assert_eq!(pct_label(0.999), "99.9%");
        assert_eq!(pct_label(0.5), "50%");
        assert_eq!(pct_label(0.9999), "99.99%");
    }
}
