//! Outlier ejection (doubling, trial, return, never the last server), slow
//! start, stickiness, and backups, observed from the servers' side.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_drained, config, connect_from, dead_addr, start, wait_until, Backend, Behaviour,
};
use ringlb::balance::client_key;
use ringlb::clock;
use ringlb::config::{BalanceKind, Config, ForwardMode, OutlierConfig, StickConfig};
use ringlb::pool::Pool;

/// The id byte of the server a new connection reached (the connection is
/// closed at once).
fn id_of(s: &mut TcpStream) -> u8 {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut id = [0u8; 1];
    s.read_exact(&mut id).unwrap();
    id[0]
}

fn visit(addr: SocketAddr) -> u8 {
    id_of(&mut TcpStream::connect(addr).unwrap())
}

fn visit_from(src: &str, addr: SocketAddr) -> u8 {
    id_of(&mut connect_from(src, addr))
}

fn id_backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend::start(Behaviour::Id(b'a' + i as u8)))
        .collect()
}

fn pool_config(servers: &[SocketAddr], balance: BalanceKind) -> Config {
    let s: Vec<_> = servers.iter().map(|&a| (a, 1)).collect();
    config(&s, balance, 1, ForwardMode::Copy)
}

fn failures(pool: &Pool, i: usize) -> u64 {
    pool.servers[i]
        .live
        .attempts
        .connect_failures
        .load(Ordering::SeqCst)
}

/// Keeps connecting (each served by a live server) until `f` holds.
fn traffic_until(addr: SocketAddr, limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    wait_until(limit, || {
        visit(addr);
        f()
    })
}

#[test]
fn a_failing_server_is_ejected_for_doubling_times_then_returns_after_one_trial() {
    let live = id_backends(2);
    let dead = dead_addr();
    let mut cfg = pool_config(&[live[0].addr, live[1].addr, dead], BalanceKind::RoundRobin);
    cfg.pools[0].policy.outlier = Some(OutlierConfig {
        consecutive_failures: 3,
        ejection: Duration::from_millis(400),
        max_ejection: Duration::from_millis(1000),
    });
    let (rt, addr) = start(&cfg);
    let pool = &rt.pools().pools[0];
    // Every client is served (redispatch); three failures eject the server.
    for _ in 0..30 {
        assert!(visit(addr) != b'c');
    }
    let ejected_at = Instant::now();
    assert_eq!(failures(pool, 2), 3);
    assert_eq!(pool.servers[2].live.outlier.ejections(), 1);
    // Ejected: no attempt until the ejection is over, then one trial that
    // fails and doubles it.
    assert!(traffic_until(addr, Duration::from_secs(3), || failures(
        pool, 2
    ) == 4));
    let trial = ejected_at.elapsed();
    assert!(
        trial >= Duration::from_millis(390),
        "first trial after {trial:?}"
    );
    assert_eq!(pool.servers[2].live.outlier.ejections(), 2);
    let second = Instant::now();
    assert!(traffic_until(addr, Duration::from_secs(3), || failures(
        pool, 2
    ) == 5));
    let gap = second.elapsed();
    assert!(
        gap >= Duration::from_millis(780),
        "second trial after {gap:?}"
    );
    // Capped at max_ejection.
    let third = Instant::now();
    assert!(traffic_until(addr, Duration::from_secs(3), || failures(
        pool, 2
    ) == 6));
    let gap = third.elapsed();
    assert!(
        gap >= Duration::from_millis(980) && gap < Duration::from_millis(1800),
        "third trial after {gap:?}"
    );
    // The server comes back: its trial succeeds and it takes clients again.
    let back = Backend::start_on(dead, Behaviour::Id(b'c'));
    assert!(traffic_until(addr, Duration::from_secs(3), || back
        .accepted
        .load(Ordering::SeqCst)
        > 0));
    let seen: Vec<u8> = (0..9).map(|_| visit(addr)).collect();
    assert!(seen.contains(&b'c'), "{seen:?}");
    assert!(pool.servers[2].live.outlier.serving());
    assert_eq!(failures(pool, 2), 6);
    assert_drained(&rt);
}

#[test]
fn the_last_usable_server_is_never_ejected() {
    let (d1, d2) = (dead_addr(), dead_addr());
    let mut cfg = pool_config(&[d1, d2], BalanceKind::RoundRobin);
    cfg.pools[0].policy.retries = 0;
    cfg.pools[0].policy.outlier = Some(OutlierConfig {
        consecutive_failures: 2,
        ejection: Duration::from_secs(30),
        max_ejection: Duration::from_secs(60),
    });
    let (rt, addr) = start(&cfg);
    let pool = &rt.pools().pools[0];
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    }
    let ejections: Vec<u64> = pool
        .servers
        .iter()
        .map(|s| s.live.outlier.ejections())
        .collect();
    assert_eq!(ejections.iter().sum::<u64>(), 1, "{ejections:?}");
    // The one left keeps taking (and failing) connections.
    let kept = ejections.iter().position(|&e| e == 0).unwrap();
    assert!(failures(pool, kept) >= 16, "{}", failures(pool, kept));
    assert!(pool.servers[kept].live.outlier.serving());
    assert_drained(&rt);
}

#[test]
fn slow_start_ramps_a_returning_server_from_a_tenth_to_full() {
    let backends = id_backends(2);
    let mut cfg = pool_config(
        &[backends[0].addr, backends[1].addr],
        BalanceKind::RoundRobin,
    );
    cfg.pools[0].policy.slowstart = Some(Duration::from_secs(3));
    let (rt, addr) = start(&cfg);
    let pool = &rt.pools().pools[0];
    let returned = Instant::now();
    pool.servers[1]
        .live
        .outlier
        .mark_returned(clock::millis(returned));
    let share = |n: usize| (0..n).filter(|_| visit(addr) == b'b').count();
    // At first about 10/110 of the picks (smooth round robin is exact).
    let early = share(110);
    assert!((9..=16).contains(&early), "{early} of 110 early");
    // Half way, about 55%: (100 + 900 x 1/2) / (1000 + 550).
    thread::sleep(Duration::from_millis(1500).saturating_sub(returned.elapsed()));
    let mid = share(100);
    assert!((28..=45).contains(&mid), "{mid} of 100 half way");
    thread::sleep(Duration::from_millis(3000).saturating_sub(returned.elapsed()));
    let full = share(100);
    assert_eq!(full, 50);
    assert_drained(&rt);
}

#[test]
fn a_sticky_client_keeps_its_server_until_expiry_or_failure() {
    let backends = id_backends(3);
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let mut cfg = pool_config(&addrs, BalanceKind::RoundRobin);
    cfg.pools[0].policy.stick = Some(StickConfig {
        expire: Duration::from_secs(1),
        size: 64,
    });
    let (rt, addr) = start(&cfg);
    let pool = &rt.pools().pools[0];
    let table = pool.stick.as_ref().unwrap();
    // Each source keeps its first server (round robin would rotate).
    for src in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        let first = visit_from(src, addr);
        for _ in 0..5 {
            assert_eq!(visit_from(src, addr), first, "{src}");
        }
    }
    // Its server goes down: the client moves, and stays on the new one.
    let first = visit_from("127.0.0.2", addr);
    let i = (first - b'a') as usize;
    pool.servers[i]
        .live
        .set_flag(ringlb::pool::HEALTH_DOWN, true);
    let moved = visit_from("127.0.0.2", addr);
    assert_ne!(moved, first);
    pool.servers[i]
        .live
        .set_flag(ringlb::pool::HEALTH_DOWN, false);
    for _ in 0..5 {
        assert_eq!(visit_from("127.0.0.2", addr), moved);
    }
    // Unused, the entry expires.
    let key = client_key(&"127.0.0.2:0".parse().unwrap(), false);
    assert!(table.get(key, clock::millis(Instant::now())).is_some());
    thread::sleep(Duration::from_millis(2100));
    assert_eq!(table.get(key, clock::millis(Instant::now())), None);
    // 300 sources: the table stays within its size.
    for n in 0..300 {
        visit_from(&format!("127.0.{}.{}", 1 + n / 250, 1 + n % 250), addr);
    }
    let len = table.len(clock::millis(Instant::now()));
    assert!(
        len <= table.capacity() && table.capacity() <= 72,
        "{len} of {}",
        table.capacity()
    );
    assert_drained(&rt);
}

#[test]
fn backups_take_over_when_every_primary_is_gone_and_give_back() {
    let backends = id_backends(4);
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    for all in [false, true] {
        let mut cfg = pool_config(&addrs, BalanceKind::RoundRobin);
        cfg.pools[0].servers[2].backup = true;
        cfg.pools[0].servers[3].backup = true;
        cfg.pools[0].policy.allbackups = all;
        let (rt, addr) = start(&cfg);
        let pool = &rt.pools().pools[0];
        let seen = |n| {
            let mut v: Vec<u8> = (0..n).map(|_| visit(addr)).collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(seen(8), b"ab");
        pool.servers[0]
            .live
            .set_flag(ringlb::pool::HEALTH_DOWN, true);
        assert_eq!(seen(8), b"b");
        pool.servers[1]
            .live
            .set_flag(ringlb::pool::HEALTH_DOWN, true);
        assert_eq!(seen(8), if all { b"cd".to_vec() } else { b"c".to_vec() });
        pool.servers[0]
            .live
            .set_flag(ringlb::pool::HEALTH_DOWN, false);
        pool.servers[1]
            .live
            .set_flag(ringlb::pool::HEALTH_DOWN, false);
        assert_eq!(seen(8), b"ab");
        assert_drained(&rt);
    }
}

/// Backups replace primaries that are gone, not primaries that are full:
/// a client beyond the primaries' maxconn waits for them.
#[test]
fn full_primaries_queue_rather_than_spill_to_backups() {
    let backends = id_backends(2);
    let mut cfg = pool_config(
        &[backends[0].addr, backends[1].addr],
        BalanceKind::RoundRobin,
    );
    cfg.pools[0].servers[0].maxconn = 1;
    cfg.pools[0].servers[1].backup = true;
    let (rt, addr) = start(&cfg);
    let mut holder = TcpStream::connect(addr).unwrap();
    assert_eq!(id_of(&mut holder), b'a');
    let waiter = thread::spawn(move || visit(addr));
    assert!(wait_until(Duration::from_secs(2), || rt
        .counters()
        .queue_len
        == 1));
    drop(holder);
    assert_eq!(waiter.join().unwrap(), b'a');
    assert_eq!(backends[1].accepted.load(Ordering::SeqCst), 0);
    assert_drained(&rt);
}
