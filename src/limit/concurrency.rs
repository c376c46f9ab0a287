//! Concurrent connections through a listener (`maxconn`) and per client
//! address (`conn_per_src`), counted once for every shard.
//!
//! Both are shared atomics rather than a per-shard split: a count of open
//! connections is exact only when every shard sees every other's, and a
//! source's connections land on shards by the kernel's 4-tuple hash, so a
//! split would refuse it early on the shard it happens to favour.
//!
//! - [`ConnGate::try_enter`]: the listener's count, never granted past
//!   `maxconn` (an increment that overshoots is undone at once).
//! - [`SrcCounts`]: a count-min sketch, two rows of [`BUCKETS`] counters,
//!   each row indexed by its own keyed hash of the address. A source's true
//!   count is at most the smaller of its two counters, so admitting only
//!   while that is within the limit never lets a source past it; sources
//!   that share both counters with busy ones may be refused early (with
//!   `k` sources open, a new one shares both with probability about
//!   `(k / BUCKETS)²`: 0.15% with 10,000 sources open). Memory is fixed
//!   (two rows of 4-byte counters, 2 MiB, allocated for a listener with
//!   `conn_per_src` only) whatever the number of sources, so a flood of distinct or
//!   spoofed addresses cannot grow it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

use super::table::Key;

/// Counters per row of the per-source sketch (a power of two).
pub const BUCKETS: usize = 1 << 18;

/// A listener's shared counts: it lives as long as the listener's bound
/// socket group, across reloads.
#[derive(Debug, Default)]
pub struct ConnGate {
    active: CachePadded<AtomicUsize>,
    per_src: OnceLock<SrcCounts>,
}

/// The two buckets a source was counted in.
pub type SrcSlots = [u32; 2];

impl ConnGate {
    /// Takes a place among at most `max` connections; false when all are
    /// taken.
    pub fn try_enter(&self, max: usize) -> bool {
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back a place taken by [`ConnGate::try_enter`].
    pub fn leave(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether a place is free now (a hint: another shard may take it).
    pub fn has_room(&self, max: usize) -> bool {
        self.active.load(Ordering::Acquire) < max
    }

    /// Places taken now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Counts a connection of `key` unless that would put it over `max`.
    pub fn try_enter_src(&self, key: Key, max: u32) -> Option<SrcSlots> {
        self.per_src.get_or_init(SrcCounts::new).try_enter(key, max)
    }

    /// Gives back what [`ConnGate::try_enter_src`] counted.
    pub fn leave_src(&self, slots: SrcSlots) {
        if let Some(c) = self.per_src.get() {
            c.leave(slots);
        }
    }
}

/// Open connections per source, approximated from above (module doc).
#[derive(Debug)]
pub struct SrcCounts {
    rows: [Box<[AtomicU32]>; 2],
    /// Keyed per listener (SipHash with random keys): an attacker cannot
    /// choose addresses that share a counter with a victim's.
    hashers: [RandomState; 2],
}

impl SrcCounts {
    fn new() -> SrcCounts {
        let row = || (0..BUCKETS).map(|_| AtomicU32::new(0)).collect();
        SrcCounts {
            rows: [row(), row()],
            hashers: [RandomState::new(), RandomState::new()],
        }
    }

    fn slots(&self, key: Key) -> SrcSlots {
        let mask = (BUCKETS - 1) as u64;
        [0, 1].map(|r| (self.hashers[r].hash_one(key) & mask) as u32)
    }

    fn try_enter(&self, key: Key, max: u32) -> Option<SrcSlots> {
        let slots = self.slots(key);
        for (row, &i) in self.rows.iter().zip(&slots) {
            row[i as usize].fetch_add(1, Ordering::SeqCst);
        }
        // Read again once both are counted: of two shards racing for a
        // source's last place, the one that reads last sees both counts
        // in both counters (one total order of these operations), so they
        // cannot both pass; both may be refused, which is safe.
        let smallest = self
            .rows
            .iter()
            .zip(&slots)
            .map(|(row, &i)| row[i as usize].load(Ordering::SeqCst))
            .min()
            .unwrap_or(0);
        if smallest > max {
            self.leave(slots);
            return None;
        }
        Some(slots)
    }

    fn leave(&self, slots: SrcSlots) {
        for (row, &i) in self.rows.iter().zip(&slots) {
            row[i as usize].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::key_of;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    fn key(n: u32) -> Key {
        key_of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[test]
    fn maxconn_is_never_exceeded_by_racing_shards() {
        let gate = Arc::new(ConnGate::default());
        let held: Vec<_> = (0..4)
            .map(|_| {
                let gate = gate.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| gate.try_enter(100)).count())
            })
            .collect();
        let taken: usize = held.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(taken, 100);
        assert_eq!(gate.active(), 100);
        assert!(!gate.has_room(100));
        gate.leave();
        assert!(gate.try_enter(100));
    }

    #[test]
    fn a_source_never_passes_its_limit_and_others_are_not_refused() {
        let gate = ConnGate::default();
        // 10,000 sources with 3 connections each, under a limit of 3.
        let mut slots = Vec::new();
        let mut refused = 0;
        for s in 0..10_000 {
            for _ in 0..3 {
                match gate.try_enter_src(key(s), 3) {
                    Some(x) => slots.push(x),
                    None => refused += 1,
                }
            }
            // A fourth is always refused.
            assert!(gate.try_enter_src(key(s), 3).is_none());
        }
        // Early refusals need both counters shared with busy sources.
        // A new source is refused when both its counters are shared:
        // 3 × Σ (s / BUCKETS)² ≈ 15 expected.
        assert!(refused < 100, "{refused} refused early");
        for s in slots {
            gate.leave_src(s);
        }
        let counts = gate.per_src.get().unwrap();
        assert!(counts
            .rows
            .iter()
            .all(|r| r.iter().all(|c| c.load(Ordering::Relaxed) == 0)));
    }
}
