//! Turning a [`Record`] into a line: `text` (positional, in the spirit of
//! HAProxy's TCP log) or `json` (one object per line). Runs on the writer
//! thread only.
//!
//! Text fields, space-separated:
//! `time client listener pool/server server_addr Tw/Tc/Tt bytes_in bytes_out code attempts`
//! - `time`: when the client was accepted, RFC 3339 UTC with milliseconds;
//! - `Tw`, `Tc`, `Tt`: milliseconds (three decimals) waited before the
//!   first connect, taken by the connect that succeeded, and from accept to
//!   close; `-1` for a step never reached;
//! - `-` for a field that does not apply (no server, address unknown).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::record::Record;
use crate::config::AccessFormat;

/// Converts the shards' monotonic instants to wall-clock time, from one
/// reading of both clocks taken for each batch.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    wall: SystemTime,
}

impl WallClock {
    pub fn now() -> WallClock {
        WallClock {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    pub fn at(&self, t: Instant) -> SystemTime {
        match self.instant.checked_duration_since(t) {
            Some(ago) => self.wall - ago,
            None => self.wall + (t - self.instant),
        }
    }
}

struct Ms(Option<Duration>);

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => {
                let us = d.as_micros();
                write!(f, "{}.{:03}", us / 1000, us % 1000)
            }
            None => f.write_str("-1"),
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn addr_or_dash(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "-".to_string(), |a| a.to_string())
}

/// Appends `r` as one line (with its newline) to `out`.
pub fn line(out: &mut String, r: &Record, clock: &WallClock, format: AccessFormat) {
    let time = humantime::format_rfc3339_millis(clock.at(r.accepted));
    let [c, p] = r.code();
    match format {
        AccessFormat::Text => {
            let _ = writeln!(
                out,
                "{time} {} {} {}/{} {} {}/{}/{} {} {} {c}{p} {}",
                addr_or_dash(r.client),
                r.listener.as_str(),
                or_dash(r.pool.as_str()),
                or_dash(r.server.as_str()),
                addr_or_dash(r.server_addr),
                Ms(r.queued),
                Ms(r.connect),
                Ms(Some(r.total)),
                r.bytes_in,
                r.bytes_out,
                r.attempts
            );
        }
        AccessFormat::Json => {
            let ms = |d: Option<Duration>| d.map(|d| d.as_micros() as f64 / 1000.0);
            let v = serde_json::json!({
                "time": time.to_string(),
                "client": r.client.map(|a| a.to_string()),
                "listener": r.listener.as_str(),
                "pool": (!r.pool.is_empty()).then(|| r.pool.as_str()),
                "server": (!r.server.is_empty()).then(|| r.server.as_str()),
                "server_addr": r.server_addr.map(|a| a.to_string()),
                "queue_ms": ms(r.queued),
                "connect_ms": ms(r.connect),
                "duration_ms": ms(Some(r.total)),
                "bytes_in": r.bytes_in,
                "bytes_out": r.bytes_out,
                "termination": format!("{c}{p}"),
                "attempts": r.attempts,
                "reset": r.reset,
                "shard": r.shard,
            });
            let _ = writeln!(out, "{v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::record::{Cause, Name, Phase};

    fn record(clock: &WallClock) -> Record {
        Record {
            shard: 1,
            accepted: clock.instant - Duration::from_millis(1500),
            client: Some("127.0.0.9:40000".parse().unwrap()),
            listener: Name::new("web"),
            pool: Name::new("app"),
            server: Name::new("s1"),
            server_addr: Some("127.0.0.1:9001".parse().unwrap()),
            queued: Some(Duration::from_micros(12)),
            connect: Some(Duration::from_micros(1_234)),
            total: Duration::from_millis(1500),
            bytes_in: 10,
            bytes_out: 20,
            cause: Cause::Normal,
            phase: Phase::Done,
            attempts: 1,
            reset: false,
        }
    }

    #[test]
    fn text_line_has_every_field_in_place() {
        let clock = WallClock {
            instant: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        let mut out = String::new();
        line(&mut out, &record(&clock), &clock, AccessFormat::Text);
        assert_eq!(
            out,
            "2027-01-15T07:59:58.500Z 127.0.0.9:40000 web app/s1 127.0.0.1:9001 0.012/1.234/1500.000 10 20 -- 1\n"
        );
        let mut r = record(&clock);
        r.server = Name::EMPTY;
        r.server_addr = None;
        r.queued = None;
        r.connect = None;
        r.cause = Cause::Server;
        r.phase = Phase::Connecting;
        out.clear();
        line(&mut out, &r, &clock, AccessFormat::Text);
        assert!(
            out.ends_with(" web app/- - -1/-1/1500.000 10 20 SC 1\n"),
            "{out}"
        );
    }

    #[test]
    fn json_line_is_one_object() {
        let clock = WallClock::now();
        let mut out = String::new();
        line(&mut out, &record(&clock), &clock, AccessFormat::Json);
        assert_eq!(out.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["termination"], "--");
        assert_eq!(v["server"], "s1");
        assert_eq!(v["connect_ms"], 1.234);
        assert_eq!(v["bytes_out"], 20);
    }
}
