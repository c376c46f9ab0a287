//! 10,000 short connections leave no fd and no memory behind, and neither do
//! pairs ended by a reset from either side. Alone in its own test binary so
//! the process's fd count is ours to read.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{assert_drained, config, open_fds, rss_kib, start, Backend, Behaviour};
use ringlb::config::{BalanceKind, ForwardMode};

fn one_exchange(addr: std::net::SocketAddr, i: u32) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&i.to_le_bytes()).unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, i.to_le_bytes());
    if i.is_multiple_of(10) {
        // Every tenth client aborts instead of closing.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
}

/// A pair whose server resets it after the first byte: the client must see
/// the reset itself, not a clean end.
fn reset_by_server(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"x").unwrap();
    let mut buf = [0u8; 16];
    let end = s.read(&mut buf);
    assert!(
        matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server's reset reaches the client: {end:?}"
    );
}

#[test]
fn short_connections_leak_nothing() {
    let backend = Backend::start(Behaviour::Echo);
    let (rt, addr) = start(&config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        2,
        ForwardMode::Auto,
    ));
    let resetter = Backend::start(Behaviour::ResetAfterByte);
    let (rt_reset, reset_addr) = start(&config(
        &[(resetter.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    ));
    // Warm up: slabs, buffers, the allocator and this process's own
    // backends (a thread per connection) reach their working size; the
    // reset backend's threads take about a thousand connections to.
    for i in 0..1000 {
        one_exchange(addr, i);
    }
    for _ in 0..1000 {
        reset_by_server(reset_addr);
    }
    assert_drained(&rt);
    assert_drained(&rt_reset);
    common::wait_until(Duration::from_secs(5), || {
        backend.active.load(std::sync::atomic::Ordering::SeqCst) == 0
    });
    let fds_before = open_fds();
    let rss_before = rss_kib();
    let mut rss_half = 0;
    for i in 0..10_000 {
        one_exchange(addr, i);
        if i % 10 == 5 {
            reset_by_server(reset_addr);
        }
        if i == 4_999 {
            rss_half = rss_kib();
        }
    }
    assert_drained(&rt);
    assert_drained(&rt_reset);
    common::wait_until(Duration::from_secs(5), || {
        resetter.active.load(std::sync::atomic::Ordering::SeqCst) == 0
    });
    common::wait_until(Duration::from_secs(5), || {
        backend.active.load(std::sync::atomic::Ordering::SeqCst) == 0
    });
    // Closes go through the ring; give the last ones a moment.
    let settled = common::wait_until(Duration::from_secs(5), || open_fds() <= fds_before);
    let (fds_after, rss_after) = (open_fds(), rss_kib());
    assert!(settled, "fds grew from {fds_before} to {fds_after}");
    // A leak grows with the connections; what the allocator, thread stacks
    // and the backend's threads settle into does not. So the second 5,000
    // connections may add little (1 MiB is 200 bytes a connection), while
    // the first may also absorb the machine's noise.
    assert!(
        rss_after <= rss_half + 1024,
        "RSS grew from {rss_half} KiB to {rss_after} KiB over the last 5,000 connections"
    );
    assert!(
        rss_after <= rss_before + 8192,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over 10,000 connections"
    );
    assert_eq!(rt.counters().accepted, 11_000);
    assert_eq!(rt_reset.counters().accepted, 2_000);
}
