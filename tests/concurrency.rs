//! Many pairs at once through two shards, each carrying its own bytes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{assert_drained, config, start, Backend, Behaviour};
use ringlb::config::{BalanceKind, ForwardMode};

#[test]
fn two_thousand_concurrent_connections_stay_intact() {
    let backends: Vec<_> = (0..2).map(|_| Backend::start(Behaviour::Echo)).collect();
    let servers: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let (rt, addr) = start(&config(
        &servers,
        BalanceKind::LeastConn,
        2,
        ForwardMode::Auto,
    ));
    const THREADS: usize = 8;
    const PER_THREAD: usize = 250;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                // Open every connection first so all 2,000 are up at once.
                let mut conns: Vec<TcpStream> = (0..PER_THREAD)
                    .map(|_| {
                        let s = TcpStream::connect(addr).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                        s
                    })
                    .collect();
                let msg = |i: usize| -> Vec<u8> {
                    let tag = format!("t{t}c{i}:");
                    tag.bytes().cycle().take(1000 + i).collect()
                };
                for (i, s) in conns.iter_mut().enumerate() {
                    s.write_all(&msg(i)).unwrap();
                }
                for (i, s) in conns.iter_mut().enumerate() {
                    let want = msg(i);
                    let mut got = vec![0u8; want.len()];
                    s.read_exact(&mut got).unwrap();
                    assert_eq!(got, want, "connection {t}/{i}");
                }
                conns.len()
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, THREADS * PER_THREAD);
    let c = rt.counters();
    assert_eq!(c.accepted as usize, THREADS * PER_THREAD);
    assert_drained(&rt);
    assert!(
        rt.shard_counters().iter().all(|s| s.accepted > 0),
        "both shards accept"
    );
}
