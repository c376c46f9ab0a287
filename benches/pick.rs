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
//! Prints the machine and a Markdown table of medians of `REPS` runs.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringlb::balance::{self, Choice, Maglev};
use ringlb::config::BalanceKind;
use ringlb::pool::{Pool, Server};

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
    p.table_size = table_size(n);
    for (i, s) in p.servers.iter().enumerate() {
        let us = 100 + (i as u64 * 7919) % 1_000;
        s.live
            .latency
            .observe(Duration::from_micros(us), NOW_MS, p.ewma_window);
    }
    p
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per pick, median of `REPS` runs.
fn picks(kind: BalanceKind, n: usize, keys: &[u64]) -> f64 {
    let p = pool(kind, n);
    let mut b = balance::for_pool(&p);
    // About the same time per run whatever the pick costs.
    let count = (4_000_000 / n).clamp(20_000, 1_000_000);
    let mask = keys.len() - 1;
    let samples = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            for k in 0..count {
                let key = keys[k & mask];
                match balance::choose(b.as_mut(), &p, 0, NOW_MS, black_box(key)) {
                    Choice::Server(i) => p.servers[i].release(),
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

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::process::Command::new("uname")
        .arg("-sr")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown kernel".into());
    format!("{cpus} CPUs ({model}), {kernel}")
}

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    let keys: Vec<u64> = (0..KEYS).map(|_| rng.random()).collect();
    println!("Machine: {}", machine());
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
}
