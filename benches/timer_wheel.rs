//! Timer wheel microbenchmark: `cargo bench -p ringlb --bench timer_wheel`.
//!
//! For 1k to 1M pending timers with deadlines uniform in 30-60 s (idle
//! timeouts at a 1 ms tick), measures:
//! - a tick with nothing due (advancing 1 ms at a time over the first 10 s),
//!   for the wheel and for the O(n) design it replaces (every deadline of a
//!   `Vec` compared on each tick);
//! - arm and cancel, amortized: cancel every timer in random order, then arm
//!   them all again in that order (into the freed entries, so at random
//!   places in the slab), and the first fill of an empty wheel (the slab
//!   growing, entries in address order);
//! - expiring everything: one advance to 61 s, and 61,000 advances of 1 ms
//!   (that total, idle ticks included, divided by the number of timers).
//!
//! Prints the machine and a Markdown table of medians of `REPS` runs.

#[path = "common/machine.rs"]
mod machine;

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringlb::timer_wheel::{TimerKey, TimerWheel};

const TICK: Duration = Duration::from_millis(1);
/// 10 s of ticks: before the first deadline (30 s) and before the first
/// cascade (the level-2 slot starting at 28.7 s).
const IDLE_TICKS: u64 = 10_000;
/// Past the last deadline (60 s).
const END_TICKS: u64 = 61_000;
const REPS: usize = 5;
const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];

struct Row {
    n: usize,
    idle_wheel: f64,
    idle_scan: f64,
    first_arm: f64,
    arm: f64,
    cancel: f64,
    expire_jump: f64,
    expire_steps: f64,
}

fn per(start: Instant, count: u64) -> f64 {
    start.elapsed().as_nanos() as f64 / count as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A wheel holding a timer for each deadline, its keys, and the time the
/// fill took per timer.
fn filled(origin: Instant, deadlines: &[Instant]) -> (TimerWheel<u32>, Vec<TimerKey>, f64) {
    let mut w = TimerWheel::new(TICK, origin);
    let mut keys = Vec::with_capacity(deadlines.len());
    let start = Instant::now();
    for (i, &d) in deadlines.iter().enumerate() {
        keys.push(w.arm(black_box(d), i as u32));
    }
    let took = per(start, deadlines.len() as u64);
    (w, keys, took)
}

fn run(n: usize, origin: Instant, ticks: &[Instant]) -> Row {
    // Seeded: the same timers every run.
    let mut rng = StdRng::seed_from_u64(n as u64);
    let deadlines: Vec<Instant> = (0..n)
        .map(|_| {
            origin
                + Duration::from_secs(30)
                + Duration::from_nanos(rng.random_range(0..30_000_000_000))
        })
        .collect();
    // Cancel and re-arm in random order, read from arrays permuted up
    // front so that only the wheel's own memory accesses are random.
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let rearm: Vec<(Instant, u32)> = order.iter().map(|&i| (deadlines[i], i as u32)).collect();
    let scan_ticks = (50_000_000 / n as u64).clamp(20, IDLE_TICKS);
    let mut out: Vec<u32> = Vec::with_capacity(n);
    let mut samples: [Vec<f64>; 7] = Default::default();
    for _ in 0..REPS {
        // A tick with nothing due.
        let (mut w, _, first_arm) = filled(origin, &deadlines);
        samples[2].push(first_arm);
        let start = Instant::now();
        for &t in &ticks[1..=IDLE_TICKS as usize] {
            w.advance(black_box(t), &mut out);
        }
        samples[0].push(per(start, IDLE_TICKS));
        assert!(out.is_empty() && w.len() == n);
        drop(w);

        // The same tick, scanning every deadline.
        let start = Instant::now();
        for &t in &ticks[1..=scan_ticks as usize] {
            let now = black_box(t);
            black_box(deadlines.iter().filter(|&&d| d <= now).count());
        }
        samples[1].push(per(start, scan_ticks));

        // Cancel in random order, then arm again into the freed entries.
        let (mut w, keys, _) = filled(origin, &deadlines);
        let cancels: Vec<TimerKey> = order.iter().map(|&i| keys[i]).collect();
        drop(keys);
        let start = Instant::now();
        for &k in &cancels {
            black_box(w.cancel(k));
        }
        samples[4].push(per(start, n as u64));
        assert!(w.is_empty());
        let start = Instant::now();
        for &(d, i) in &rearm {
            black_box(w.arm(black_box(d), i));
        }
        samples[3].push(per(start, n as u64));
        drop(w);

        // Expire everything in one advance.
        let (mut w, _, _) = filled(origin, &deadlines);
        out.clear();
        let start = Instant::now();
        w.advance(black_box(ticks[END_TICKS as usize]), &mut out);
        samples[5].push(per(start, n as u64));
        assert!(out.len() == n && w.is_empty());
        drop(w);

        // Expire everything 1 ms at a time.
        let (mut w, _, _) = filled(origin, &deadlines);
        out.clear();
        let start = Instant::now();
        for &t in &ticks[1..] {
            w.advance(black_box(t), &mut out);
        }
        samples[6].push(per(start, n as u64));
        assert!(out.len() == n && w.is_empty());
        black_box(&out);
        out.clear();
    }
    let [idle_wheel, idle_scan, first_arm, arm, cancel, expire_jump, expire_steps] =
        samples.map(median);
    Row {
        n,
        idle_wheel,
        idle_scan,
        first_arm,
        arm,
        cancel,
        expire_jump,
        expire_steps,
    }
}

/// `1234567.8` as `1,234,568`; below 100 with one decimal.
fn num(x: f64) -> String {
    if x < 100.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{:.0}", x);
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    s
}

fn main() {
    let origin = Instant::now();
    let ticks: Vec<Instant> = (0..=END_TICKS).map(|k| origin + TICK * k as u32).collect();
    println!("Machine: {}", machine::machine());
    println!(
        "Timers: deadlines uniform in 30-60 s, 1 ms tick; medians of {REPS} runs; \
         idle window: the first {} s.",
        IDLE_TICKS / 1000
    );
    println!();
    println!(
        "| pending timers | idle tick, wheel (ns) | idle tick, Vec scan (ns) | arm (ns) \
         | arm, slab growing (ns) | cancel (ns) | expire all, one advance (ns/timer) \
         | expire all, 1 ms advances (ns/timer) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Warm-up (caches, page faults, clock): the first size would pay for it.
    run(SIZES[0], origin, &ticks);
    for n in SIZES {
        let r = run(n, origin, &ticks);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            num(r.n as f64),
            num(r.idle_wheel),
            num(r.idle_scan),
            num(r.arm),
            num(r.first_arm),
            num(r.cancel),
            num(r.expire_jump),
            num(r.expire_steps),
        );
    }
}
