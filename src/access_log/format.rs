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

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Formats lines. Text lines are written byte by byte (integers, IPv4
/// addresses and the time by hand, the date part of the time kept for the
/// second it names): through `core::fmt` a line cost about 8,200
/// instructions, half of them in `Ipv4Addr`'s and integers' `Display`.
#[derive(Debug)]
pub struct LineFormat {
    format: AccessFormat,
    /// `YYYY-MM-DDTHH:MM:SS` of the second last formatted.
    second: Option<(u64, [u8; 19])>,
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Milliseconds with three decimals, or `-1`.
fn push_ms(out: &mut Vec<u8>, d: Option<Duration>) {
    let Some(d) = d else {
        out.extend_from_slice(b"-1");
        return;
    };
    let us = d.as_micros() as u64;
    push_u64(out, us / 1000);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn push_addr(out: &mut Vec<u8>, a: Option<SocketAddr>) {
    match a {
        None => out.push(b'-'),
        Some(SocketAddr::V4(v4)) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
            out.push(b':');
            push_u64(out, u64::from(v4.port()));
        }
        Some(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

fn push_name(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() {
        out.push(b'-');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

impl LineFormat {
    pub fn new(format: AccessFormat) -> LineFormat {
        LineFormat {
            format,
            second: None,
        }
    }

    /// RFC 3339, UTC, milliseconds.
    fn push_time(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let date = match self.second {
            Some((s, date)) if s == secs => date,
            _ => {
                let full =
                    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
                        .to_string();
                let mut date = [b'0'; 19];
                let n = full.len().min(19);
                date[..n].copy_from_slice(&full.as_bytes()[..n]);
                self.second = Some((secs, date));
                date
            }
        };
        out.extend_from_slice(&date);
        let ms = since.subsec_millis();
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    }

    /// Appends `r` as one line (with its newline) to `out`.
    pub fn line(&mut self, out: &mut Vec<u8>, r: &Record, clock: &WallClock) {
        let [c, p] = r.code();
        match self.format {
            AccessFormat::Text => {
                self.push_time(out, clock.at(r.accepted));
                out.push(b' ');
                push_addr(out, r.client);
                out.push(b' ');
                out.extend_from_slice(r.listener.as_str().as_bytes());
                out.push(b' ');
                push_name(out, r.pool.as_str());
                out.push(b'/');
                push_name(out, r.server.as_str());
                out.push(b' ');
                push_addr(out, r.server_addr);
                out.push(b' ');
                push_ms(out, r.queued);
                out.push(b'/');
                push_ms(out, r.connect);
                out.push(b'/');
                push_ms(out, Some(r.total));
                out.push(b' ');
                push_u64(out, r.bytes_in);
                out.push(b' ');
                push_u64(out, r.bytes_out);
                out.extend_from_slice(&[b' ', c as u8, p as u8, b' ']);
                push_u64(out, u64::from(r.attempts));
                out.push(b'\n');
            }
            AccessFormat::Json => {
                let ms = |d: Option<Duration>| d.map(|d| d.as_micros() as f64 / 1000.0);
                let mut time = Vec::with_capacity(24);
                self.push_time(&mut time, clock.at(r.accepted));
                let v = serde_json::json!({
                    "time": String::from_utf8_lossy(&time),
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
                let _ = serde_json::to_writer(&mut *out, &v);
                out.push(b'\n');
            }
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
        let mut f = LineFormat::new(AccessFormat::Text);
        let mut out = Vec::new();
        f.line(&mut out, &record(&clock), &clock);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "2027-01-15T07:59:58.500Z 127.0.0.9:40000 web app/s1 127.0.0.1:9001 0.012/1.234/1500.000 10 20 -- 1\n"
        );
        let mut r = record(&clock);
        r.server = Name::EMPTY;
        r.server_addr = None;
        r.queued = None;
        r.connect = None;
        r.cause = Cause::Server;
        r.phase = Phase::Connecting;
        r.client = Some("[2001:db8::1]:443".parse().unwrap());
        r.accepted += Duration::from_millis(1501);
        out.clear();
        f.line(&mut out, &r, &clock);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2027-01-15T08:00:00.001Z [2001:db8::1]:443 web app/- - -1/-1/1500.000 10 20 SC 1\n"
        );
    }

    #[test]
    fn json_line_is_one_object() {
        let clock = WallClock::now();
        let mut out = Vec::new();
        LineFormat::new(AccessFormat::Json).line(&mut out, &record(&clock), &clock);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["termination"], "--");
        assert_eq!(v["server"], "s1");
        assert_eq!(v["connect_ms"], 1.234);
        assert_eq!(v["bytes_out"], 20);
    }
}
