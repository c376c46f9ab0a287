//! A listener's concurrency limits through ringlb: at `maxconn` accepting
//! pauses and new clients wait (in the backlog, or held unread) instead of
//! being dropped, each served as a place frees; `conn_per_src` resets a
//! source's connection past its limit before any server sees it, and
//! counts it.

mod common;

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{connect_from, wait_until, Backend, Behaviour};
use ringlb::config::{BalanceKind, Config, ForwardMode};
use ringlb::Runtime;

/// A client that got the backend's id byte, or None (reset or closed).
fn served(src: &str, addr: SocketAddr, wait: Duration) -> Option<TcpStream> {
    let mut c = connect_from(src, addr);
    c.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 1];
    loop {
        match c.read(&mut b) {
            Ok(1) => return Some(c),
            // A signal to the process (as `read_to_end` does, try again).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => return None,
        }
    }
}

fn start(backend: &Backend, shards: usize, f: impl FnOnce(&mut Config)) -> (Runtime, SocketAddr) {
    let mut cfg = common::config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        shards,
        ForwardMode::Auto,
    );
    f(&mut cfg);
    common::start(&cfg)
}

/// Stays true for `d`: the condition is steady, not on its way to change.
fn holds_for(d: Duration, mut f: impl FnMut() -> bool) -> bool {
    !wait_until(d, || !f())
}

#[test]
fn maxconn_pauses_accepting_and_serves_the_waiting_in_turn() {
    let backend = Backend::start(Behaviour::Id(7));
    let (rt, addr) = start(&backend, 2, |c| c.listeners[0].maxconn = Some(4));
    let first: Vec<TcpStream> = (0..4)
        .map(|_| served("127.0.0.60", addr, Duration::from_secs(5)).expect("under maxconn"))
        .collect();
    // Six more: their connects complete (the backlog), but they wait.
    let release = Arc::new(AtomicBool::new(false));
    let waiting: Vec<_> = (0..6)
        .map(|_| {
            let release = release.clone();
            std::thread::spawn(move || {
                let c = served("127.0.0.61", addr, Duration::from_secs(20));
                // Hold the place until told, then give it up.
                wait_until(Duration::from_secs(20), || release.load(Ordering::SeqCst));
                c.is_some()
            })
        })
        .collect();
    let accepted = || backend.accepted.load(Ordering::SeqCst);
    assert!(
        holds_for(Duration::from_millis(500), || accepted() == 4),
        "no server connection past maxconn"
    );
    let c = rt.listeners()[0].stats.read();
    assert_eq!(c.active, 4, "held clients have no pair: {c:?}");
    assert!(
        c.maxconn_waits <= 2,
        "at most one accepted past the limit per shard: {c:?}"
    );
    // One place frees: exactly one more is served.
    let mut first = first.into_iter();
    drop(first.next());
    assert!(wait_until(Duration::from_secs(5), || accepted() == 5));
    assert!(holds_for(Duration::from_millis(300), || accepted() == 5));
    // The rest free: every waiting client is served, none dropped.
    release.store(true, Ordering::SeqCst);
    drop(first);
    for w in waiting {
        assert!(w.join().unwrap(), "a waiting client was dropped");
    }
    assert_eq!(accepted(), 10);
    assert!(
        backend.peak.load(Ordering::SeqCst) <= 5,
        "peak {} (4, plus a server connection still closing)",
        backend.peak.load(Ordering::SeqCst)
    );
    assert!(!backend.saw_reset.load(Ordering::SeqCst));
    common::assert_drained(&rt);
}

#[test]
fn conn_per_src_resets_a_source_past_its_limit_and_counts_it() {
    let backend = Backend::start(Behaviour::Id(3));
    let (rt, addr) = start(&backend, 2, |c| c.listeners[0].conn_per_src = Some(2));
    let wait = Duration::from_secs(5);
    let a = served("127.0.0.70", addr, wait).expect("first");
    let b = served("127.0.0.70", addr, wait).expect("second");
    assert!(served("127.0.0.70", addr, wait).is_none(), "third refused");
    // Other sources have their own count.
    let other = served("127.0.0.71", addr, wait).expect("another source");
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
    assert!(wait_until(wait, || rt.listeners()[0].stats.read().over_src == 1));
    // A connection that closes gives its place back to its source.
    a.shutdown(Shutdown::Both).unwrap();
    drop(a);
    // ringlb's own count: its pair is gone (and its place given back).
    assert!(wait_until(wait, || rt.listeners()[0].stats.read().active == 2));
    let again = served("127.0.0.70", addr, wait)
        .unwrap_or_else(|| panic!("a place freed: {:?}", rt.listeners()[0].stats.read()));
    assert!(
        served("127.0.0.70", addr, wait).is_none(),
        "at its limit again"
    );
    drop((b, other, again));
    common::assert_drained(&rt);
}

#[test]
fn concurrency_limits_are_checked() {
    let text = |extra: &str| {
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\npool = \"app\"\n{extra}\n\n\
             [[pool]]\nname = \"app\"\n[[pool.servers]]\nname = \"a\"\naddr = \"127.0.0.1:9\"\n"
        )
    };
    let c = Config::parse(
        &text("maxconn = 100\nconn_per_src = 5"),
        Path::new("lb.toml"),
    )
    .unwrap();
    assert_eq!(
        (c.listeners[0].maxconn, c.listeners[0].conn_per_src),
        (Some(100), Some(5))
    );
    let errs = Config::parse(
        &text("maxconn = 0\nconn_per_src = -1"),
        Path::new("lb.toml"),
    )
    .unwrap_err()
    .0;
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(shown.len(), 2, "{shown:#?}");
    assert!(
        shown[0].starts_with("lb.toml:5: key `listener[0].maxconn`"),
        "{shown:#?}"
    );
    assert!(
        shown[1].starts_with("lb.toml:6: key `listener[0].conn_per_src`"),
        "{shown:#?}"
    );
}

/// A reload that sets `maxconn` on a listener already accepting holds it
/// from then on (its accept is re-armed as a single accept); connections
/// open before it are not counted.
#[test]
fn a_reload_that_sets_maxconn_takes_effect() {
    let backend = Backend::start(Behaviour::Id(9));
    let mut cfg = common::config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        2,
        ForwardMode::Auto,
    );
    let (mut rt, addr) = common::start(&cfg);
    let wait = Duration::from_secs(5);
    let before = served("127.0.0.62", addr, wait).expect("no limit yet");
    cfg.listeners[0].maxconn = Some(2);
    rt.apply(cfg).unwrap();
    let second = served("127.0.0.62", addr, wait).expect("a place");
    let _third = served("127.0.0.62", addr, wait).expect("the last place");
    // The fourth waits (its connect completes in the backlog).
    let fourth = std::thread::spawn(move || served("127.0.0.62", addr, Duration::from_secs(10)));
    let accepted = || backend.accepted.load(Ordering::SeqCst);
    assert!(holds_for(Duration::from_millis(400), || accepted() == 3));
    drop(second);
    assert!(
        fourth.join().unwrap().is_some(),
        "served once a place freed"
    );
    assert_eq!(accepted(), 4);
    drop(before);
}
