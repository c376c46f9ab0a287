//! A shard's allowances under a shared limit: per source, the units the
//! store granted it, used without asking again until they run low, run
//! out or expire. No I/O: the shard sends the requests this asks for and
//! feeds the answers back.
//!
//! An arrival for a source:
//! - with units left: takes one (leaky bucket: the next departure, never
//!   sooner than the rate) and, once a quarter of a batch or less is left
//!   (batches of 4 or more), asks for the next batch ahead of need;
//! - refused for now by the store (`retry` not yet due): refused;
//! - otherwise: waits for the answer to a request (one in flight per
//!   source).
//!
//! While the store is down (an answer failed) arrivals are decided by
//! `on_store_error` for [`DOWN_HOLD`] before asking again.
//!
//! Tolerance. The store grants each unit once, so instances never admit
//! more than the limit together, except through `on_store_error = "allow"`
//! while the store is down, and by what a lease's life allows: a unit is
//! counted when granted but may be used up to a lease period later, so a
//! token bucket can pass its burst by the units leased before a quiet
//! spell (at most a batch per shard and instance). The sliding log counts
//! its units at the end of their lease instead, and stays exact. They may admit less: units a shard leased and
//! did not use expire with the lease, at most a batch (a twentieth of the
//! rate's count, 1 to 256) per shard and source every lease period (a
//! tenth of the window, 10 ms to 1 s), plus a quarter of a batch left over
//! when the next batch comes.

use std::sync::Arc;

use super::shared::{Grant, OnStoreError, SharedLimit};
use super::table::{Clock, Key};
use super::Algorithm;

/// How long a failed answer keeps the store taken as down.
pub const DOWN_HOLD_US: u64 = 1_000_000;

#[derive(Debug, Default, Clone)]
struct Lease {
    units: u32,
    valid_until: u64,
    /// No unit before this (the store said so).
    denied_until: u64,
    /// A request in flight since (forgotten after the store's timeout).
    asked_at: Option<u64>,
    /// Leaky bucket: the next departure.
    next_slot: u64,
}

/// What becomes of an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Leaky bucket: admitted after this many microseconds.
    Delay(u64),
    Refuse,
    /// Waits for the store's answer (the caller holds the client).
    Wait,
    /// The store is down: `on_store_error` decided (true: admitted).
    Fallback(bool),
}

/// One shard's leases for one shared limit.
pub struct Leases {
    pub limit: Arc<SharedLimit>,
    batch: u32,
    ttl_us: u64,
    interval_us: u64,
    timeout_us: u64,
    clock: Clock<Lease>,
    down_until: u64,
}

impl Leases {
    /// `size`: the most sources this shard keeps leases for.
    pub fn new(limit: Arc<SharedLimit>, size: usize) -> Leases {
        let rate = limit.rate;
        Leases {
            batch: (rate.limit / 20).clamp(1, 256),
            ttl_us: limit.lease_us,
            interval_us: (rate.window_us / u64::from(rate.limit.max(1))).max(1),
            timeout_us: limit.timeout.as_micros() as u64,
            limit,
            clock: Clock::new(size),
            down_until: 0,
        }
    }

    /// Sources held now.
    pub fn len(&self) -> usize {
        self.clock.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clock.is_empty()
    }

    /// Units asked for at once.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// Whether the store is taken as down at `now`.
    pub fn store_down(&self, now: u64) -> bool {
        now < self.down_until
    }

    /// Decides on an arrival of `key` at `now` (µs); `Some(want)`: send a
    /// request for that many units.
    pub fn arrive(&mut self, key: Key, now: u64) -> (Verdict, Option<u32>) {
        if self.store_down(now) {
            return (
                Verdict::Fallback(self.limit.on_error == OnStoreError::Allow),
                None,
            );
        }
        let (batch, timeout, interval) = (self.batch, self.timeout_us, self.interval_us);
        let leaky = self.limit.algorithm == Algorithm::LeakyBucket;
        let lease = self.clock.get_or_insert_with(key, Lease::default);
        if now >= lease.valid_until {
            lease.units = 0;
        }
        if lease.asked_at.is_some_and(|t| now >= t + timeout) {
            // Its answer is lost or late: ask again.
            lease.asked_at = None;
        }
        if leaky && lease.units > 0 && now >= lease.next_slot + interval {
            // Departures wholly past are lost: the store reserved them and
            // no client took them. Keeping to the store's schedule (never
            // moving a departure later) keeps every instance's departures
            // apart.
            let missed = ((now - lease.next_slot) / interval).min(u64::from(lease.units));
            lease.units -= missed as u32;
            lease.next_slot += missed * interval;
        }
        if lease.units > 0 {
            lease.units -= 1;
            let verdict = if leaky {
                let slot = lease.next_slot;
                lease.next_slot = slot + interval;
                if slot > now {
                    Verdict::Delay(slot - now)
                } else {
                    Verdict::Admit
                }
            } else {
                Verdict::Admit
            };
            // Small batches are not asked for ahead: a unit fetched for a
            // client that does not come is lost to every instance.
            let low = batch >= 4 && lease.units <= batch / 4;
            let ask = (low && lease.asked_at.is_none() && now >= lease.denied_until).then(|| {
                lease.asked_at = Some(now);
                batch
            });
            return (verdict, ask);
        }
        if now < lease.denied_until {
            return (Verdict::Refuse, None);
        }
        let ask = lease.asked_at.is_none().then(|| {
            lease.asked_at = Some(now);
            batch
        });
        (Verdict::Wait, ask)
    }

    /// The store's answer for `key` at `now`; `None`: it failed, and the
    /// store is taken as down for [`DOWN_HOLD_US`].
    pub fn answer(&mut self, key: Key, now: u64, grant: Option<Grant>) {
        let Some(g) = grant else {
            self.down_until = now + DOWN_HOLD_US;
            if let Some(lease) = self.clock.get_mut(key) {
                lease.asked_at = None;
            }
            return;
        };
        self.down_until = 0;
        let ttl = self.ttl_us.min(g.valid_us.max(1));
        let lease = self.clock.get_or_insert_with(key, Lease::default);
        lease.asked_at = None;
        // What is left of the last batch goes: its validity is its own.
        lease.units = g.granted;
        lease.valid_until = now + ttl;
        lease.denied_until = if g.retry_us > 0 { now + g.retry_us } else { 0 };
        lease.next_slot = now + g.first_delay_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::shared::StoreConfig;
    use crate::limit::Rate;
    use std::time::Duration;

    fn leases(algorithm: Algorithm, rate: &str, on_error: OnStoreError) -> Leases {
        let store = StoreConfig {
            url: "redis://127.0.0.1/0".into(),
            scope: "t".into(),
            on_error,
            timeout: Duration::from_millis(50),
        };
        let limit = SharedLimit::new(&store, algorithm, Rate::parse(rate).unwrap(), 10);
        Leases::new(Arc::new(limit), 100)
    }

    fn grant(granted: u32, retry_us: u64) -> Option<Grant> {
        Some(Grant {
            granted,
            retry_us,
            valid_us: 1_000_000,
            first_delay_us: 0,
        })
    }

    #[test]
    fn a_new_source_waits_once_then_uses_its_batch_and_asks_ahead() {
        let mut l = leases(Algorithm::TokenBucket, "200/s", OnStoreError::Allow);
        assert_eq!(l.batch(), 10);
        assert_eq!(l.arrive(1, 0), (Verdict::Wait, Some(10)));
        // One request in flight per source.
        assert_eq!(l.arrive(1, 10), (Verdict::Wait, None));
        l.answer(1, 100, grant(10, 0));
        for i in 0..7 {
            assert_eq!(l.arrive(1, 200 + i), (Verdict::Admit, None), "unit {i}");
        }
        // Two left (a quarter of the batch): the next batch is asked for.
        assert_eq!(l.arrive(1, 300), (Verdict::Admit, Some(10)));
        assert_eq!(l.arrive(1, 301), (Verdict::Admit, None));
        assert_eq!(l.arrive(1, 302), (Verdict::Admit, None));
        assert_eq!(l.arrive(1, 303), (Verdict::Wait, None));
    }

    #[test]
    fn the_store_refusing_refuses_until_its_retry() {
        let mut l = leases(Algorithm::TokenBucket, "200/s", OnStoreError::Allow);
        l.arrive(1, 0);
        l.answer(1, 0, grant(1, 5_000));
        assert_eq!(l.arrive(1, 10).0, Verdict::Admit);
        assert_eq!(l.arrive(1, 20), (Verdict::Refuse, None));
        assert_eq!(l.arrive(1, 4_999), (Verdict::Refuse, None));
        assert_eq!(l.arrive(1, 5_000), (Verdict::Wait, Some(10)));
    }

    #[test]
    fn units_expire_with_their_lease() {
        let mut l = leases(Algorithm::FixedWindow, "200/s", OnStoreError::Allow);
        l.arrive(1, 0);
        l.answer(
            1,
            0,
            Some(Grant {
                granted: 10,
                retry_us: 0,
                valid_us: 3_000,
                first_delay_us: 0,
            }),
        );
        assert_eq!(l.arrive(1, 2_999).0, Verdict::Admit);
        assert_eq!(l.arrive(1, 3_000), (Verdict::Wait, Some(10)));
    }

    #[test]
    fn a_lost_answer_is_asked_again_after_the_timeout() {
        let mut l = leases(Algorithm::TokenBucket, "200/s", OnStoreError::Allow);
        assert_eq!(l.arrive(1, 0).1, Some(10));
        assert_eq!(l.arrive(1, 49_999).1, None);
        assert_eq!(l.arrive(1, 50_000).1, Some(10));
    }

    #[test]
    fn a_down_store_falls_back_to_on_store_error_for_a_while() {
        for (on_error, admitted) in [(OnStoreError::Allow, true), (OnStoreError::Deny, false)] {
            let mut l = leases(Algorithm::TokenBucket, "200/s", on_error);
            l.arrive(1, 0);
            l.answer(1, 10, None);
            assert_eq!(l.arrive(2, 20), (Verdict::Fallback(admitted), None));
            assert_eq!(
                l.arrive(1, 10 + DOWN_HOLD_US - 1),
                (Verdict::Fallback(admitted), None)
            );
            assert_eq!(l.arrive(1, 10 + DOWN_HOLD_US), (Verdict::Wait, Some(10)));
        }
    }

    #[test]
    fn leaky_departures_keep_the_rate_locally() {
        // 100/s: one every 10 ms.
        let mut l = leases(Algorithm::LeakyBucket, "100/s", OnStoreError::Allow);
        l.arrive(1, 0);
        l.answer(
            1,
            0,
            Some(Grant {
                granted: 5,
                retry_us: 0,
                valid_us: 1_000_000,
                first_delay_us: 20_000,
            }),
        );
        assert_eq!(l.arrive(1, 0).0, Verdict::Delay(20_000));
        assert_eq!(l.arrive(1, 0).0, Verdict::Delay(30_000));
        // Arriving after its slot: goes at once, and the next one keeps
        // its distance.
        assert_eq!(l.arrive(1, 50_000).0, Verdict::Admit);
        assert_eq!(l.arrive(1, 50_000).0, Verdict::Delay(10_000));
    }
}
