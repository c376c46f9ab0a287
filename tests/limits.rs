//! Per-listener connection limits through ringlb: the token bucket admits
//! its burst per source and resets the rest before any server sees them,
//! the leaky bucket delays clients to its rate instead of dropping them (up
//! to its bound), the sliding log holds exactly; counted per listener.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{echoed_from, wait_until, Backend, Behaviour};
use ringlb::config::LimitConfig;
use ringlb::limit::{Algorithm, Rate};
use ringlb::Runtime;

fn start(echo: &Backend, algorithm: Algorithm, rate: &str, burst: u32) -> Runtime {
    let cfg = common::limited_config(
        echo.addr,
        1,
        LimitConfig {
            algorithm,
            rate: Rate::parse(rate).unwrap(),
            burst,
            size: 1000,
            store: None,
        },
    );
    Runtime::start(&cfg).unwrap()
}

#[test]
fn token_bucket_admits_its_burst_per_source_and_resets_the_rest() {
    let echo = Backend::start(Behaviour::Echo);
    let rt = start(&echo, Algorithm::TokenBucket, "1/m", 5);
    let addr = rt.listener_addr("test").unwrap();
    let got: Vec<bool> = (0..10).map(|_| echoed_from("127.0.0.30", addr)).collect();
    assert_eq!(got, [[true; 5], [false; 5]].concat());
    // Another source has its own bucket.
    assert!(echoed_from("127.0.0.31", addr));
    assert!(wait_until(Duration::from_secs(5), || rt.listeners()[0]
        .stats
        .read()
        .limited
        == 5));
    assert_eq!(
        echo.accepted.load(Ordering::SeqCst),
        6,
        "the server never saw the refused"
    );
}

#[test]
fn leaky_bucket_delays_to_its_rate_instead_of_dropping() {
    let echo = Backend::start(Behaviour::Echo);
    // 20/s: one every 50 ms; at most 3 waiting.
    let rt = start(&echo, Algorithm::LeakyBucket, "20/s", 3);
    let addr = rt.listener_addr("test").unwrap();
    let t0 = Instant::now();
    let clients: Vec<_> = (0..5)
        .map(|_| {
            std::thread::spawn(move || {
                let ok = echoed_from("127.0.0.40", addr);
                (ok, t0.elapsed())
            })
        })
        .collect();
    let mut results: Vec<(bool, Duration)> =
        clients.into_iter().map(|c| c.join().unwrap()).collect();
    results.sort_by_key(|r| (!r.0, r.1));
    let ok: Vec<Duration> = results.iter().filter(|r| r.0).map(|r| r.1).collect();
    assert_eq!(
        ok.len(),
        4,
        "one immediately, three delayed, one over the bound: {results:?}"
    );
    // Spaced at the rate (50 ms apart), give or take the threads' start.
    for (i, took) in ok.iter().enumerate().skip(1) {
        assert!(
            *took >= Duration::from_millis(50 * i as u64 - 20),
            "client {i}: {took:?}"
        );
    }
    assert!(ok[3] < Duration::from_secs(2), "{ok:?}");
    let c = rt.listeners()[0].stats.read();
    assert_eq!((c.shaped, c.limited), (3, 1), "{c:?}");
}

#[test]
fn sliding_log_holds_exactly() {
    let echo = Backend::start(Behaviour::Echo);
    let rt = start(&echo, Algorithm::SlidingLog, "3/m", 0);
    let addr = rt.listener_addr("test").unwrap();
    let got: Vec<bool> = (0..6).map(|_| echoed_from("127.0.0.50", addr)).collect();
    assert_eq!(got, [true, true, true, false, false, false]);
}

/// A flood of distinct sources (carried in PROXY headers) keeps the
/// limit's state within its size, and every newcomer still gets its burst.
#[test]
fn a_flood_of_sources_stays_within_the_size() {
    let echo = Backend::start(Behaviour::Echo);
    let mut cfg = common::accept_proxy_config(echo.addr);
    cfg.listeners[0].proxy_trusted = vec![ringlb::config::Prefix::parse("127.0.0.0/8").unwrap()];
    cfg.listeners[0].limit = Some(LimitConfig {
        algorithm: Algorithm::TokenBucket,
        rate: Rate::parse("1/m").unwrap(),
        burst: 1,
        size: 100,
        store: None,
    });
    let rt = Runtime::start(&cfg).unwrap();
    let addr = rt.listener_addr("test").unwrap();
    const SOURCES: u32 = 3000;
    for i in 0..SOURCES {
        let src = std::net::Ipv4Addr::from(0xC633_0000 + i); // 198.51.0.0 on
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(format!("PROXY TCP4 {src} 192.0.2.1 1000 443\r\nx").as_bytes())
            .unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"x", "source {i} has its burst");
        if i % 500 == 499 {
            assert!(rt.listeners()[0].stats.read().limit_sources <= 100);
        }
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            let c = rt.listeners()[0].stats.read();
            c.accepted == u64::from(SOURCES) && c.limit_sources == 100
        }),
        "{:?}",
        rt.listeners()[0].stats.read()
    );
    assert_eq!(rt.listeners()[0].stats.read().limited, 0);
}

/// The per-shard split, measured on 2 shards: a source far over the limit
/// gets the whole limit (its connections' ports spread it over both
/// shards, each enforcing half), and one paced at exactly the limit is
/// hardly refused (each shard's half of the burst absorbs the unevenness
/// of the spread).
#[test]
fn the_per_shard_split_holds_the_limit_across_shards() {
    let echo = Backend::start(Behaviour::Echo);
    let cfg = common::limited_config(
        echo.addr,
        2,
        LimitConfig {
            algorithm: Algorithm::TokenBucket,
            rate: Rate::parse("100/s").unwrap(),
            burst: 20,
            size: 1000,
            store: None,
        },
    );
    let rt = Runtime::start(&cfg).unwrap();
    let addr = rt.listener_addr("test").unwrap();
    // Far over: two threads as fast as they can for 2 s.
    let start = Instant::now();
    let hammer: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut ok = 0u32;
                while start.elapsed() < Duration::from_secs(2) {
                    ok += u32::from(echoed_from("127.0.0.90", addr));
                }
                ok
            })
        })
        .collect();
    let over: u32 = hammer.into_iter().map(|h| h.join().unwrap()).sum();
    let allowed = 20.0 + 100.0 * start.elapsed().as_secs_f64();
    // Paced at the limit: 100/s for 2 s from a fresh source.
    let (mut paced, start) = (0u32, Instant::now());
    for i in 0..200u32 {
        let due = start + Duration::from_millis(10 * u64::from(i));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        paced += u32::from(echoed_from("127.0.0.91", addr));
    }
    println!(
        "over the limit: {over} admitted of {allowed:.0} allowed ({:.3}); paced at the limit: {paced} of 200",
        f64::from(over) / allowed
    );
    assert!(
        (f64::from(over) - allowed).abs() <= 0.1 * allowed,
        "{over} admitted, {allowed:.0} allowed"
    );
    assert!(paced >= 190, "{paced} of 200 paced at the limit");
}
