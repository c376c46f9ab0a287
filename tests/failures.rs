//! Resets, refused and blackholed servers, idle timeouts: every failure ends
//! with the client told and no pair, buffer or fd left behind.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{assert_drained, config, start, wait_until, Backend, Behaviour};
use ringlb::config::{BalanceKind, ForwardMode};
use std::sync::atomic::Ordering;

/// Reads until EOF or an error; returns how it ended (`Ok(bytes)` on EOF).
fn read_to_close(s: &mut TcpStream) -> std::io::Result<usize> {
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// An address on which nothing listens.
fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

#[test]
fn server_reset_closes_the_client() {
    for forward in [ForwardMode::Copy, ForwardMode::Splice] {
        let backend = Backend::start(Behaviour::ResetAfterByte);
        let (rt, addr) = start(&config(
            &[(backend.addr, 1)],
            BalanceKind::RoundRobin,
            1,
            forward,
        ));
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"x").unwrap();
        let end = read_to_close(&mut s);
        assert!(
            matches!(&end, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "{forward}: client should see the reset, got {end:?}"
        );
        assert_drained(&rt);
    }
}

#[test]
fn client_reset_closes_the_server_side() {
    let backend = Backend::start(Behaviour::Echo);
    let (rt, addr) = start(&config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    ));
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert!(wait_until(Duration::from_secs(2), || backend
        .active
        .load(Ordering::SeqCst)
        == 1));
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    assert!(
        wait_until(Duration::from_secs(5), || backend
            .active
            .load(Ordering::SeqCst)
            == 0),
        "the server side must be closed"
    );
    assert!(
        backend.saw_reset.load(Ordering::SeqCst),
        "the reset is passed on to the server"
    );
    assert_drained(&rt);
}

#[test]
fn refused_server_is_skipped() {
    let backend = Backend::start(Behaviour::Echo);
    let dead = refused_addr();
    let (rt, addr) = start(&config(
        &[(dead, 1), (backend.addr, 1)],
        BalanceKind::RoundRobin,
        2,
        ForwardMode::Copy,
    ));
    for i in 0..40u32 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = i.to_le_bytes();
        s.write_all(&msg).unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        assert_eq!(back, msg);
    }
    assert_drained(&rt);
    let c = rt.counters();
    assert_eq!(c.unserved, 0);
    assert!(
        c.redispatches >= 1 && c.connect_failures == c.redispatches,
        "{c:?}"
    );
}

/// A listener that never accepts, with its backlog filled so further SYNs
/// go unanswered.
fn blackhole() -> (socket2::Socket, Vec<TcpStream>, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let f = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        f.set_nonblocking(true).unwrap();
        let _ = f.connect(&addr.into());
        fillers.push(TcpStream::from(f));
    }
    std::thread::sleep(Duration::from_millis(50));
    (s, fillers, addr)
}

#[test]
fn connect_timeout_is_bounded_and_redispatches() {
    let (_hole, _fillers, hole_addr) = blackhole();
    let backend = Backend::start(Behaviour::Echo);

    // Only the blackhole, no retries: the client is closed after the timeout.
    let mut cfg = config(
        &[(hole_addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    );
    cfg.timeouts.connect = Duration::from_millis(300);
    cfg.pools[0].policy.retries = 0;
    let (rt, addr) = start(&cfg);
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let end = read_to_close(&mut s);
    let took = t.elapsed();
    assert!(
        matches!(&end, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "a client no server could take is reset, never closed cleanly: {end:?}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    assert_drained(&rt);
    assert_eq!(rt.counters().connect_failures, 1);
    drop(rt);

    // Blackhole first, then a live server: the client is served after one timeout.
    let mut cfg = config(
        &[(hole_addr, 1), (backend.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    );
    cfg.timeouts.connect = Duration::from_millis(200);
    let (rt, addr) = start(&cfg);
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(s);
    assert_drained(&rt);
    let c = rt.counters();
    assert_eq!(
        (c.unserved, c.connect_failures, c.redispatches),
        (0, 1, 1),
        "one timeout, redispatched once: {c:?}"
    );
    let servers = &rt.pools().pools[0].servers;
    let attempts = |i: usize| {
        let a = &servers[i].live.attempts;
        (
            a.connect_failures.load(Ordering::Relaxed),
            a.connections.load(Ordering::Relaxed),
        )
    };
    assert_eq!(attempts(0), (1, 0), "the blackhole is blamed once");
    assert_eq!(attempts(1), (0, 1), "the live server took the client");
}

#[test]
fn idle_timeout_closes_a_stalled_pair() {
    let backend = Backend::start(Behaviour::Echo);
    let mut cfg = config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    );
    cfg.timeouts.client_idle = Duration::from_millis(300);
    cfg.timeouts.server_idle = Duration::from_millis(300);
    let (rt, addr) = start(&cfg);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hi").unwrap();
    let mut back = [0u8; 2];
    s.read_exact(&mut back).unwrap();
    let t = Instant::now();
    let end = read_to_close(&mut s);
    let took = t.elapsed();
    assert!(end.is_ok(), "idle close is a FIN: {end:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    assert!(wait_until(Duration::from_secs(2), || backend
        .active
        .load(Ordering::SeqCst)
        == 0));
    assert_drained(&rt);
    assert_eq!(rt.counters().idle_timeouts, 1);
}

#[test]
fn no_server_left_means_the_client_is_closed() {
    let (rt, addr) = start(&config(
        &[(refused_addr(), 1), (refused_addr(), 1)],
        BalanceKind::LeastConn,
        1,
        ForwardMode::Copy,
    ));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let end = read_to_close(&mut s);
    assert!(
        matches!(&end, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{end:?}"
    );
    assert_drained(&rt);
    let c = rt.counters();
    assert_eq!((c.unserved, c.connect_failures), (1, 3), "{c:?}");
}
