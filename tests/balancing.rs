//! Round-robin order and weights, and least-connections spread across
//! shards, observed from the backends' side.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{assert_drained, config, start, wait_until, Backend, Behaviour};
use ringlb::config::{BalanceKind, ForwardMode};

/// Opens a connection and returns it with the id byte its server wrote.
fn open(addr: std::net::SocketAddr) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut id = [0u8; 1];
    s.read_exact(&mut id).unwrap();
    (s, id[0])
}

fn id_backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend::start(Behaviour::Id(b'a' + i as u8)))
        .collect()
}

#[test]
fn round_robin_order_and_weights_are_exact() {
    let backends = id_backends(3);
    let servers: Vec<_> = backends
        .iter()
        .zip([5, 1, 1])
        .map(|(b, w)| (b.addr, w))
        .collect();
    let (rt, addr) = start(&config(
        &servers,
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    ));
    let seq: String = (0..14).map(|_| open(addr).1 as char).collect();
    assert_eq!(seq, "aabacaaaabacaa");

    let backends = id_backends(3);
    let servers: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let (rt2, addr) = start(&config(
        &servers,
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    ));
    let seq: String = (0..7).map(|_| open(addr).1 as char).collect();
    assert_eq!(seq, "abcabca");
    assert_drained(&rt);
    assert_drained(&rt2);
}

/// Holds 200 connections through 2 shards and checks each server's share.
fn spread(weights: [u32; 4]) {
    let backends = id_backends(4);
    let servers: Vec<_> = backends
        .iter()
        .zip(weights)
        .map(|(b, w)| (b.addr, w))
        .collect();
    let (rt, addr) = start(&config(
        &servers,
        BalanceKind::LeastConn,
        2,
        ForwardMode::Copy,
    ));
    let held: Vec<_> = (0..200).map(|_| open(addr)).collect();
    let per_shard = rt.shard_counters();
    assert!(
        per_shard.iter().all(|c| c.active > 0),
        "both shards take connections: {per_shard:?}"
    );
    let total: u32 = weights.iter().sum();
    for (i, b) in backends.iter().enumerate() {
        let got = held.iter().filter(|(_, id)| *id == b'a' + i as u8).count() as f64;
        let ideal = 200.0 * f64::from(weights[i]) / f64::from(total);
        assert!(
            (got - ideal).abs() <= 0.05 * 200.0,
            "weights {weights:?}: server {i} holds {got}, ideal {ideal}"
        );
        assert_eq!(b.active.load(Ordering::SeqCst) as f64, got);
    }
    let live: u64 = rt.pools().pools[0]
        .servers
        .iter()
        .map(|s| s.live.active())
        .sum();
    assert_eq!(live, 200, "the reconciled totals count every pair");
    drop(held);
    assert_drained(&rt);
    assert!(wait_until(Duration::from_secs(2), || {
        rt.pools().pools[0]
            .servers
            .iter()
            .all(|s| s.live.active() == 0)
    }));
}

#[test]
fn least_connections_spreads_equal_weights() {
    spread([1, 1, 1, 1]);
}

#[test]
fn least_connections_spreads_by_weight() {
    spread([3, 1, 1, 1]);
}
