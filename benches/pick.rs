//! Server-pick microbenchmark: `cargo bench -p ringlb --bench pick`.
//!
//! For each algorithm and pools of 2, 16, 256 and 1,000 servers (weights
//! 1-4, no `maxconn`), measures one pick as a shard makes it: through
//! `ringlb::balance::choose` (tiers, slot reservation, stickiness check),
//! the slot released right after, and the client key different on every
//! pick (uniform keys, read from an array filled up front). `leasttime`'s
//! servers all have latency samples (100 µs to 1.1 ms). Also measures the
//! Maglev table build (`source`/`hash`) for each size: 65,537 entries up to
//! 256 servers, 655,373 for 1,000.
//!
//! Then what stickiness and the client address cost: `roundrobin` with a
//! stick table (every pick a lookup and a refresh, 65,536 distinct clients
//! in a 100,000-entry table); the stick table alone against a
//! `Mutex<HashMap>` doing the same work, from one and two threads; and one
//! `getpeername(2)` on a loopback connection (what a shard pays per client
//! in pools that hash or stick).
//!
//! Prints the machine and Markdown tables of medians of `REPS` runs.

#[path = "common/machine.rs"]
mod machine;

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringlb::balance::{self, Choice, Maglev};
use ringlb::config::BalanceKind;
use ringlb::pool::{Pool, Server};
use ringlb::stick::StickTable;

const REPS: usize = 5;
const SIZES: [usize; 4] = [2, 16, 256, 1_000];
const KINDS: [BalanceKind; 7] = [
    BalanceKind::RoundRobin,
    BalanceKind::LeastConn,
    BalanceKind::Random,
    BalanceKind::P2c,
    BalanceKind::Source,
    BalanceKind::First,
    BalanceKind::LeastTime,
];
/// Keys cycled through (a power of two).
const KEYS: usize = 1 << 16;
const NOW_MS: u64 = 1_000;

fn table_size(n: usize) -> u32 {
    if n <= 256 {
        65_537
    } else {
        655_373
    }
}

fn pool(kind: BalanceKind, n: usize) -> Pool {
    let servers = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 8080));
            Server::new(&format!("s{i}"), addr, 1 + (i % 4) as u32, false, 0)
        })
        .collect();
    let mut p = Pool::with_servers(kind, servers);
    p.policy.table_size = table_size(n);
    for (i, s) in p.servers.iter().enumerate() {
        let us = 100 + (i as u64 * 7919) % 1_000;
        s.live
            .latency
            .observe(Duration::from_micros(us), NOW_MS, p.policy.ewma_window);
    }
    p
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per pick, median of `REPS` runs.
fn picks(kind: BalanceKind, n: usize, keys: &[u64]) -> f64 {
    picks_in(&pool(kind, n), keys)
}

fn picks_in(p: &Pool, keys: &[u64]) -> f64 {
    let n = p.servers.len();
    let mut b = balance::for_pool(p);
    // About the same time per run whatever the pick costs.
    let count = (4_000_000 / n).clamp(20_000, 1_000_000);
    let mask = keys.len() - 1;
    let samples = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            for k in 0..count {
                let key = keys[k & mask];
                match balance::choose(b.as_mut(), p, 0, NOW_MS, black_box(key)) {
                    Choice::Server(pick) => p.servers[pick.server].release(),
                    other => panic!("{other:?}"),
                }
            }
            start.elapsed().as_nanos() as f64 / count as f64
        })
        .collect();
    median(samples)
}

/// ms per Maglev build (both tiers), median of `REPS` builds.
fn build(n: usize) -> f64 {
    let p = pool(BalanceKind::Source, n);
    let samples = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            black_box(Maglev::new(black_box(&p)));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(samples)
}

/// ns per lookup-and-refresh of a sticky client, from `threads` threads at
/// once (each with its own clients), for the lock-free table and for a
/// `Mutex<HashMap>`.
fn stick_ops(threads: usize, keys: &[u64]) -> (f64, f64) {
    const OPS: usize = 2_000_000;
    let run = |op: &(dyn Fn(u64) + Sync)| {
        let samples = (0..REPS)
            .map(|_| {
                let start = Instant::now();
                std::thread::scope(|sc| {
                    for t in 0..threads {
                        sc.spawn(move || {
                            for k in 0..OPS {
                                op(keys[(k * threads + t) & (keys.len() - 1)]);
                            }
                        });
                    }
                });
                start.elapsed().as_nanos() as f64 / OPS as f64
            })
            .collect();
        median(samples)
    };
    let table = StickTable::new(100_000, Duration::from_secs(1800));
    let lock_free = run(&|key| {
        let s = table.get(key, NOW_MS).unwrap_or(key as u32 % 16);
        table.put(key, black_box(s), NOW_MS);
    });
    let map: Mutex<HashMap<u64, (u32, u64)>> = Mutex::new(HashMap::with_capacity(100_000));
    let locked = run(&|key| {
        let mut m = map.lock().unwrap();
        let s = m.get(&key).map_or(key as u32 % 16, |e| e.0);
        m.insert(key, (black_box(s), NOW_MS));
    });
    (lock_free, locked)
}

/// ns per getpeername(2) on a connected loopback socket.
fn peer_addr_ns() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let fd = server.as_raw_fd();
    const N: usize = 200_000;
    let samples = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..N {
                black_box(ringlb::net::peer_addr(black_box(fd)));
            }
            start.elapsed().as_nanos() as f64 / N as f64
        })
        .collect();
    drop(client);
    median(samples)
}

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    let keys: Vec<u64> = (0..KEYS).map(|_| rng.random()).collect();
    println!("Machine: {}", machine::machine());
    println!(
        "One pick through balance::choose (slot reserved and released), a new key \
         each pick; medians of {REPS} runs."
    );
    println!();
    let head: Vec<String> = SIZES.iter().map(|n| format!("{n} servers")).collect();
    println!("| algorithm | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(SIZES.len()));
    // Warm-up (caches, page faults, frequency).
    picks(BalanceKind::RoundRobin, 16, &keys);
    for kind in KINDS {
        let cells: Vec<String> = SIZES
            .iter()
            .map(|&n| format!("{:.1} ns", picks(kind, n, &keys)))
            .collect();
        let name = match kind {
            BalanceKind::Source => "source (maglev)",
            k => k.as_str(),
        };
        println!("| {name} | {} |", cells.join(" | "));
    }
    let cells: Vec<String> = SIZES
        .iter()
        .map(|&n| format!("{:.2} ms ({} entries)", build(n), table_size(n)))
        .collect();
    println!("| maglev table build | {} |", cells.join(" | "));

    println!();
    let mut sticky = pool(BalanceKind::RoundRobin, 16);
    sticky.stick = Some(std::sync::Arc::new(StickTable::new(
        100_000,
        Duration::from_secs(1800),
    )));
    println!(
        "roundrobin over 16 servers with `stick` (lookup and refresh every pick): {:.1} ns per pick \
         (without: {:.1} ns)",
        picks_in(&sticky, &keys),
        picks(BalanceKind::RoundRobin, 16, &keys)
    );
    println!();
    println!("| stick lookup + refresh | 1 thread | 2 threads at once |");
    println!("|---|---:|---:|");
    let (one, one_locked) = stick_ops(1, &keys);
    let (two, two_locked) = stick_ops(2, &keys);
    println!("| lock-free table (ringlb) | {one:.1} ns | {two:.1} ns |");
    println!("| Mutex<HashMap> | {one_locked:.1} ns | {two_locked:.1} ns |");
    println!();
    println!(
        "Client address (getpeername(2), pools that hash or stick): {:.0} ns per client",
        peer_addr_ns()
    );
}
