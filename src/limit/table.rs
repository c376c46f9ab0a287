//! A shard's per-source limiter state: at most `size` keys, in a hash map
//! from key to slot and a slot array swept by a CLOCK hand. A key seen
//! again since the hand last passed keeps its slot; a new key when the
//! table is full takes the first slot the hand finds not seen again since
//! its last pass (an approximate LRU, O(1) amortised). A key's first
//! arrival does not protect it, so sources that come once are the first
//! to go. A flood of distinct or spoofed
//! sources therefore costs `size` entries, never more: old keys are
//! forgotten (they start afresh, with a full bucket) rather than memory
//! growing.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::net::IpAddr;

use super::algorithm::{Decision, Params, State};

/// A key: the client's IP as 128 bits (IPv4 v4-mapped).
pub type Key = u128;

pub fn key_of(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

struct Slot<S> {
    key: Key,
    state: S,
    used: bool,
}

/// At most `size` keys with a state each, evicted by the CLOCK hand.
pub struct Clock<S> {
    size: usize,
    /// Keyed with a random seed per table (SipHash): an attacker who
    /// chooses its source addresses cannot make them collide.
    map: HashMap<Key, u32, RandomState>,
    slots: Vec<Slot<S>>,
    hand: usize,
    /// Keys forgotten to make room.
    pub evictions: u64,
}

impl<S> Clock<S> {
    pub fn new(size: usize) -> Clock<S> {
        let size = size.max(1);
        Clock {
            size,
            map: HashMap::with_capacity_and_hasher(size.min(1 << 16), RandomState::new()),
            slots: Vec::new(),
            hand: 0,
            evictions: 0,
        }
    }

    /// Keys held now (never more than the size).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The state of `key`, made by `init` if the key is new (taking the
    /// place of one the hand finds unused when the table is full).
    pub fn get_or_insert_with(&mut self, key: Key, init: impl FnOnce() -> S) -> &mut S {
        let i = match self.map.get(&key) {
            Some(&i) => {
                // Only a key seen again is protected from the hand: a flood
                // of one-time sources evicts itself first.
                self.slots[i as usize].used = true;
                i as usize
            }
            None => self.insert(key, init()),
        };
        &mut self.slots[i].state
    }

    /// The state of `key`, if held (not marked as seen again).
    pub fn get_mut(&mut self, key: Key) -> Option<&mut S> {
        let i = *self.map.get(&key)?;
        Some(&mut self.slots[i as usize].state)
    }

    fn insert(&mut self, key: Key, state: S) -> usize {
        if self.slots.len() < self.size {
            self.slots.push(Slot {
                key,
                state,
                used: false,
            });
            let i = self.slots.len() - 1;
            self.map.insert(key, i as u32);
            return i;
        }
        // CLOCK: the first slot not used since the hand last passed.
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            if slot.used {
                slot.used = false;
                continue;
            }
            self.map.remove(&slot.key);
            *slot = Slot {
                key,
                state,
                used: false,
            };
            self.map.insert(key, i as u32);
            self.evictions += 1;
            return i;
        }
    }
}

/// One shard's table for one limit.
pub struct Table {
    params: Params,
    clock: Clock<State>,
}

impl Table {
    pub fn new(params: Params, size: usize) -> Table {
        Table {
            params,
            clock: Clock::new(size),
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Keys held now (never more than the size).
    pub fn len(&self) -> usize {
        self.clock.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clock.is_empty()
    }

    /// Decides on an arrival of `key` at `now_us`.
    pub fn arrive(&mut self, key: Key, now_us: u64) -> Decision {
        let params = &self.params;
        self.clock
            .get_or_insert_with(key, || State::new(params, now_us))
            .arrive(params, now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::algorithm::{Algorithm, Rate};

    fn params() -> Params {
        Params {
            algorithm: Algorithm::TokenBucket,
            rate: Rate {
                limit: 1,
                window_us: 1_000_000,
            },
            burst: 1,
        }
    }

    #[test]
    fn a_flood_of_sources_stays_within_the_size() {
        let mut t = Table::new(params(), 1000);
        for i in 0..100_000u128 {
            assert_eq!(
                t.arrive(i, 5),
                Decision::Admit,
                "a new source has its burst"
            );
            assert!(t.len() <= 1000);
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.clock.map.len(), 1000);
        assert_eq!(t.clock.evictions, 99_000);
    }

    #[test]
    fn a_busy_source_keeps_its_state_through_a_flood() {
        let mut t = Table::new(params(), 100);
        let busy = key_of("192.0.2.1".parse().unwrap());
        assert_eq!(t.arrive(busy, 0), Decision::Admit);
        for i in 0..10_000u128 {
            t.arrive(i, 0);
            // The busy source comes back between every few newcomers: the
            // hand always finds it used, so it is never evicted, and its
            // bucket stays empty.
            if i % 10 == 0 {
                assert_eq!(t.arrive(busy, 0), Decision::Refuse, "at {i}");
            }
        }
    }

    #[test]
    fn v4_and_v4_mapped_are_one_key() {
        assert_eq!(
            key_of("10.1.2.3".parse().unwrap()),
            key_of("::ffff:10.1.2.3".parse().unwrap())
        );
        assert_ne!(
            key_of("10.1.2.3".parse().unwrap()),
            key_of("::1".parse().unwrap())
        );
    }
}
