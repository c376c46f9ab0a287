//! Active health checks: a server killed under load is marked down within
//! fall × interval + timeout and takes no client after that; restarted, it
//! is up again after `rise`; an HTTP check follows the status; a server
//! with `check = false` is left alone.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_drained, config, dead_addr, start, wait_until, Backend, Behaviour};
use ringlb::config::{BalanceKind, CheckConfig, CheckKind, Config, Expect, ForwardMode};

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(100);
/// Slack for scheduling on a loaded machine, over the ideal bounds.
const SLACK: Duration = Duration::from_millis(1500);

fn checked(servers: &[SocketAddr], kind: CheckKind) -> Config {
    let s: Vec<_> = servers.iter().map(|&a| (a, 1)).collect();
    let mut c = config(&s, BalanceKind::RoundRobin, 2, ForwardMode::Copy);
    c.pools[0].policy.check = Some(CheckConfig {
        kind,
        interval: INTERVAL,
        timeout: TIMEOUT,
        rise: 2,
        fall: 2,
        jitter_permille: 0,
        ..CheckConfig::default()
    });
    c
}

/// Echo round trips in a loop until `stop`: (when it started, ok).
fn load(addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<(Instant, bool)>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let ok = (|| -> std::io::Result<()> {
                let mut s = TcpStream::connect(addr)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"x")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                Ok(())
            })()
            .is_ok();
            out.push((t, ok));
            thread::sleep(Duration::from_millis(2));
        }
        out
    })
}

#[test]
fn a_killed_server_is_marked_down_in_time_and_comes_back_after_rise() {
    let a = Backend::start(Behaviour::Echo);
    let b = Backend::start(Behaviour::Echo);
    let b_addr = b.addr;
    let mut cfg = checked(&[a.addr, b_addr], CheckKind::Tcp);
    // No redispatch: a client sent to the dead server would fail.
    cfg.pools[0].policy.retries = 0;
    let (rt, addr) = start(&cfg);
    let pool = &rt.pools().pools[0];
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(addr, stop.clone());
    thread::sleep(Duration::from_millis(300));
    assert!(!pool.servers[1].live.has_flag(ringlb::pool::HEALTH_DOWN));

    let killed = Instant::now();
    drop(b);
    assert!(wait_until(Duration::from_secs(3), || pool.servers[1]
        .live
        .has_flag(ringlb::pool::HEALTH_DOWN)));
    let down_after = killed.elapsed();
    let down_at = Instant::now();
    // fall x interval + timeout, and a tick of slack for the loop.
    assert!(
        down_after <= INTERVAL * 2 + TIMEOUT + SLACK,
        "down after {down_after:?}"
    );
    thread::sleep(Duration::from_millis(300));

    let back = Backend::start_on(b_addr, Behaviour::Echo);
    let restarted = Instant::now();
    assert!(wait_until(Duration::from_secs(3), || !pool.servers[1]
        .live
        .has_flag(ringlb::pool::HEALTH_DOWN)));
    let up_after = restarted.elapsed();
    assert!(up_after <= INTERVAL * 2 + SLACK, "up after {up_after:?}");
    assert!(wait_until(Duration::from_secs(2), || back
        .accepted
        .load(Ordering::SeqCst)
        > 2));
    stop.store(true, Ordering::Relaxed);
    let results = clients.join().unwrap();
    let after: Vec<_> = results.iter().filter(|(t, _)| *t > down_at).collect();
    assert!(
        after.len() > 50,
        "{} clients after the mark-down",
        after.len()
    );
    assert!(
        after.iter().all(|(_, ok)| *ok),
        "a client failed after the mark-down"
    );
    assert_drained(&rt);
}

/// A minimal HTTP server answering every request with `status`.
fn http_server(status: Arc<AtomicU16>, paths: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            paths.lock().unwrap().push(line);
            let code = status.load(Ordering::SeqCst);
            let _ = s.write_all(
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    addr
}

#[test]
fn an_http_check_follows_the_status_and_unchecked_servers_are_left_alone() {
    let status = Arc::new(AtomicU16::new(200));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let web = http_server(status.clone(), lines.clone());
    let mut cfg = checked(&[web, dead_addr()], CheckKind::Http);
    cfg.pools[0].servers[1].check = false;
    if let Some(c) = &mut cfg.pools[0].policy.check {
        c.path = "/healthz".into();
        c.expect = Expect::parse("2xx").unwrap();
    }
    let (rt, _addr) = start(&cfg);
    let pool = &rt.pools().pools[0];
    let down = |i: usize| pool.servers[i].live.has_flag(ringlb::pool::HEALTH_DOWN);
    assert!(wait_until(Duration::from_secs(2), || lines
        .lock()
        .unwrap()
        .len()
        >= 3));
    assert!(lines.lock().unwrap()[0].starts_with("GET /healthz HTTP/1.1"));
    assert!(!down(0));
    status.store(503, Ordering::SeqCst);
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(3), || down(0)));
    assert!(
        t.elapsed() <= INTERVAL * 2 + TIMEOUT + SLACK,
        "{:?}",
        t.elapsed()
    );
    status.store(204, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(3), || !down(0)));
    // The dead server without checks was never marked.
    assert!(!down(1));
    drop(rt);
}

/// A server that accepts and never answers, and one that sends half a
/// status line and stalls: each check ends on its timeout, and both are
/// marked down within fall × (interval + timeout).
#[test]
fn silent_and_stalled_servers_are_marked_down_on_the_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = [silent.local_addr().unwrap(), stalled.local_addr().unwrap()];
    for (l, partial) in [(silent, false), (stalled, true)] {
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                // Never answers (or half answers); hangs on until the
                // checker closes its side.
                thread::spawn(move || {
                    if partial {
                        let _ = s.write_all(b"HTTP/1.1 2");
                    }
                    let mut buf = [0u8; 512];
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
    }
    let cfg = checked(&addrs, CheckKind::Http);
    let (rt, _addr) = start(&cfg);
    let pool = &rt.pools().pools[0];
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || {
        pool.servers
            .iter()
            .all(|s| s.live.has_flag(ringlb::pool::HEALTH_DOWN))
    }));
    // The first check starts within an interval; each takes the timeout.
    let bound = INTERVAL + (INTERVAL + TIMEOUT) * 2 + SLACK;
    assert!(t.elapsed() <= bound, "{:?}", t.elapsed());
    // Every check that timed out closed its socket: nothing piles up
    // (each end of a check in progress is open, at most two per server).
    thread::sleep(Duration::from_millis(300));
    let open_before = common::open_fds();
    thread::sleep(Duration::from_millis(800));
    assert!(
        common::open_fds() <= open_before + 4,
        "{open_before} fds, then {}",
        common::open_fds()
    );
    drop(rt);
}
