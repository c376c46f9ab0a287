//! Access-list microbenchmark: `cargo bench -p ringlb --bench acl`.
//!
//! Builds lists of 1,000, 10,000 and 100,000 random prefixes (IPv4 /8 to
//! /32 with half of them denied, nested and overlapping as they fall; and
//! the same counts of IPv6 /16 to /64), then measures one check
//! (`Acl::allows`) per address over 1,000,000 random addresses read from an
//! array filled up front, and the build time. Prints the machine and a
//! Markdown table of medians of `REPS` runs.

#[path = "common/machine.rs"]
mod machine;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringlb::acl::{Acl, Prefix};

const REPS: usize = 5;
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const LOOKUPS: usize = 1_000_000;

fn v4_prefix(rng: &mut StdRng) -> Prefix {
    let len = rng.random_range(8..=32u8);
    let bits = rng.random::<u32>() & (u32::MAX << (32 - len));
    Prefix::parse(&format!("{}/{len}", Ipv4Addr::from(bits))).unwrap()
}

fn v6_prefix(rng: &mut StdRng) -> Prefix {
    let len = rng.random_range(16..=64u8);
    // Within 2000::/3, as real lists are.
    let bits = ((0x2000u128 << 112) | (rng.random::<u128>() >> 3)) & (u128::MAX << (128 - len));
    Prefix::parse(&format!("{}/{len}", Ipv6Addr::from(bits))).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    println!("Machine: {}", machine::machine());
    println!(
        "One Acl::allows per address, {LOOKUPS} random addresses; half the prefixes denied, \
         allow list not empty; medians of {REPS} runs."
    );
    println!();
    println!("| prefixes | family | ns per check | build ms | boundaries |");
    println!("|---:|---|---:|---:|---:|");
    for &n in &SIZES {
        for family in ["IPv4", "IPv6"] {
            let list: Vec<Prefix> = (0..n)
                .map(|_| {
                    if family == "IPv4" {
                        v4_prefix(&mut rng)
                    } else {
                        v6_prefix(&mut rng)
                    }
                })
                .collect();
            let (allow, deny) = list.split_at(n / 2);
            let addrs: Vec<IpAddr> = (0..LOOKUPS)
                .map(|_| {
                    if family == "IPv4" {
                        IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()))
                    } else {
                        IpAddr::V6(Ipv6Addr::from(
                            (0x2000u128 << 112) | (rng.random::<u128>() >> 3),
                        ))
                    }
                })
                .collect();
            let mut builds = Vec::new();
            let mut checks = Vec::new();
            let mut acl = Acl::default();
            for _ in 0..REPS {
                let t = Instant::now();
                acl = Acl::new(allow, deny);
                builds.push(t.elapsed());
                let t = Instant::now();
                let mut allowed = 0usize;
                for &a in &addrs {
                    allowed += black_box(&acl).allows(black_box(a)) as usize;
                }
                black_box(allowed);
                checks.push(t.elapsed());
            }
            println!(
                "| {n} | {family} | {:.0} | {:.1} | {} |",
                median(checks).as_nanos() as f64 / LOOKUPS as f64,
                median(builds).as_secs_f64() * 1000.0,
                acl.boundaries()
            );
        }
    }
}
