//! The stick table: which server a client address was last sent to, shared
//! by every shard without a lock.
//!
//! A fixed array of 64-bit words, grouped in sets of [`WAYS`] (one cache
//! line each). A client key picks a set; each word packs a fingerprint of
//! the key (24 bits), the server index (16 bits) and the time of last use
//! (24 bits of seconds, wrapping every 194 days; an entry is compared by
//! wrapping age, so `expire` must stay below 97 days). Reads are plain
//! loads; a write is one compare-and-swap on one word: the key's own entry
//! if present, else an empty or expired word of the set, else the set's
//! least recently used. So the table never holds more than `size` entries
//! (rounded up to whole sets), a flood of new clients evicts the oldest of
//! each set (an approximate LRU), and two shards touching the table contend
//! only when their clients share a set. A write that loses a race is
//! dropped: stickiness is best effort at that instant, never wrong.
//!
//! Two keys share a word only if they fall in the same set and their 24-bit
//! fingerprints agree (about 1 in 2 million per lookup at full sets); the
//! second client then follows the first one's server, which is harmless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// Entries per set.
pub const WAYS: usize = 8;

const TIME_BITS: u32 = 24;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const SERVER_SHIFT: u32 = TIME_BITS;
const FP_SHIFT: u32 = 40;

/// The longest `expire` the packed time can tell apart.
pub const MAX_EXPIRE: Duration = Duration::from_secs(1 << (TIME_BITS - 1));

pub struct StickTable {
    sets: Box<[CachePadded<[AtomicU64; WAYS]>]>,
    expire_s: u64,
}

impl std::fmt::Debug for StickTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StickTable")
            .field("capacity", &self.capacity())
            .field("expire_s", &self.expire_s)
            .finish()
    }
}

/// The fingerprint of a key: its top 24 bits, never zero (0 is empty).
fn fingerprint(key: u64) -> u64 {
    (key >> FP_SHIFT) | 1
}

fn seconds(now_ms: u64) -> u64 {
    (now_ms / 1000) & TIME_MASK
}

fn pack(fp: u64, server: u32, secs: u64) -> u64 {
    (fp << FP_SHIFT) | (u64::from(server & 0xffff) << SERVER_SHIFT) | secs
}

impl StickTable {
    /// A table of at least `size` entries whose entries expire `expire`
    /// after their last use (at least a second).
    pub fn new(size: usize, expire: Duration) -> StickTable {
        let sets = size.div_ceil(WAYS).max(1);
        StickTable {
            sets: (0..sets)
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            expire_s: expire.min(MAX_EXPIRE).as_secs().max(1),
        }
    }

    /// How many entries it can hold.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    fn set(&self, key: u64) -> &[AtomicU64; WAYS] {
        // The low 32 bits pick the set (the fingerprint is the top 24).
        let i = ((key & 0xffff_ffff) * self.sets.len() as u64) >> 32;
        &self.sets[i as usize]
    }

    /// Age in seconds of a word at `now` (wrapping), or `None` when empty.
    /// A word written by a shard whose clock is a little ahead (an age in
    /// the upper half of the range) is 0 seconds old.
    fn age(word: u64, now: u64) -> Option<u64> {
        (word != 0).then(|| {
            let age = now.wrapping_sub(word & TIME_MASK) & TIME_MASK;
            if age >= 1 << (TIME_BITS - 1) {
                0
            } else {
                age
            }
        })
    }

    fn live(&self, word: u64, now: u64) -> bool {
        Self::age(word, now).is_some_and(|a| a < self.expire_s)
    }

    /// The server `key` sticks to, if its entry has not expired.
    pub fn get(&self, key: u64, now_ms: u64) -> Option<u32> {
        let fp = fingerprint(key);
        let now = seconds(now_ms);
        self.set(key).iter().find_map(|w| {
            let word = w.load(Ordering::Relaxed);
            (word >> FP_SHIFT == fp && self.live(word, now))
                .then_some(((word >> SERVER_SHIFT) & 0xffff) as u32)
        })
    }

    /// Records that `key` uses `server` now (refreshing its entry).
    pub fn put(&self, key: u64, server: u32, now_ms: u64) {
        let fp = fingerprint(key);
        let now = seconds(now_ms);
        let new = pack(fp, server, now);
        let set = self.set(key);
        for _ in 0..3 {
            let words: [u64; WAYS] = std::array::from_fn(|i| set[i].load(Ordering::Relaxed));
            // Its own entry, else an empty or expired one, else the oldest.
            let target = words
                .iter()
                .position(|&w| w != 0 && w >> FP_SHIFT == fp)
                .or_else(|| words.iter().position(|&w| !self.live(w, now)))
                .unwrap_or_else(|| {
                    (0..WAYS)
                        .max_by_key(|&i| Self::age(words[i], now))
                        .unwrap_or(0)
                });
            if words[target] == new {
                return;
            }
            if set[target]
                .compare_exchange(words[target], new, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Entries that have not expired (a scan of the whole table).
    pub fn len(&self, now_ms: u64) -> usize {
        let now = seconds(now_ms);
        self.sets
            .iter()
            .flat_map(|s| s.iter())
            .filter(|w| self.live(w.load(Ordering::Relaxed), now))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::key::fmix64;

    #[test]
    fn remembers_refreshes_and_expires() {
        let t = StickTable::new(1000, Duration::from_secs(30));
        let k = fmix64(42);
        assert_eq!(t.get(k, 1000), None);
        t.put(k, 3, 1000);
        assert_eq!(t.get(k, 1000), Some(3));
        assert_eq!(t.get(k, 30_000), Some(3));
        // Used again at 20 s: good until 50 s.
        t.put(k, 3, 20_000);
        assert_eq!(t.get(k, 49_000), Some(3));
        assert_eq!(t.get(k, 51_000), None);
        // A new server replaces the old one.
        t.put(k, 5, 60_000);
        assert_eq!(t.get(k, 60_000), Some(5));
        assert_eq!(t.len(60_000), 1);
    }

    #[test]
    fn an_entry_from_a_shard_a_second_ahead_is_fresh() {
        let t = StickTable::new(64, Duration::from_secs(30));
        let k = fmix64(7);
        t.put(k, 2, 10_000);
        assert_eq!(t.get(k, 9_999), Some(2));
        // Its age is 0 (not 2^24 - 1), so it is not the first evicted.
        let word = t
            .set(k)
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .max()
            .unwrap();
        assert_eq!(StickTable::age(word, seconds(9_999)), Some(0));
    }

    #[test]
    fn stays_within_size_and_evicts_the_oldest() {
        let size = 1000;
        let t = StickTable::new(size, Duration::from_secs(3600));
        for i in 0..100_000u64 {
            t.put(fmix64(i), (i % 7) as u32, 1000 + i);
        }
        assert!(t.len(200_000) <= t.capacity());
        assert!(t.capacity() < size + WAYS);
        // The newest keys survived; the oldest did not.
        let recent = (99_000..100_000u64)
            .filter(|&i| t.get(fmix64(i), 200_000) == Some((i % 7) as u32))
            .count();
        let old = (0..1000u64)
            .filter(|&i| t.get(fmix64(i), 200_000).is_some())
            .count();
        assert!(recent > 500, "{recent} of the last 1000 kept");
        assert!(old < 20, "{old} of the first 1000 kept");
    }

    #[test]
    fn shards_share_it_without_a_lock() {
        // At half load few sets overflow (Poisson mean 4 for 8 ways).
        let t = std::sync::Arc::new(StickTable::new(200_000, Duration::from_secs(600)));
        let threads: Vec<_> = (0..2u64)
            .map(|th| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        let k = fmix64(i * 2 + th);
                        t.put(k, th as u32, 5000);
                        assert_eq!(t.get(k, 5000), Some(th as u32));
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let kept = (0..100_000u64)
            .filter(|&i| t.get(fmix64(i), 5000) == Some((i % 2) as u32))
            .count();
        assert!(kept > 98_000, "{kept}");
    }
}
