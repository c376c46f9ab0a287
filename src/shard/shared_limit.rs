//! Limits shared through a store (`crate::limit::shared`) on the data
//! path: asking the store client for a source's allowance, holding the
//! clients that wait for it, and deciding for them when the answer comes
//! or does not come in time.
//!
//! A client whose source has no allowance left is held like a client the
//! leaky bucket delays (`PairState::Shaped`, unread, holding a unit of the
//! connection budget) with `awaiting_lease` set and its timer at the
//! limit's `store_timeout`. The answer decides for every client of that
//! source waiting on this shard, oldest first; the timer, for one whose
//! answer did not come, decides by `on_store_error`. Either way the shard
//! never waits: the store client runs on its own thread.

use std::collections::HashMap;
use std::time::Duration;

use smallvec::SmallVec;

use super::Shard;
use crate::access_log::Cause;
use crate::clock::micros;
use crate::limit::shared::LeaseRequest;
use crate::limit::table::Key;
use crate::limit::{key_of, Limiter, OnStoreError, Verdict};

/// Per listener and source, the clients waiting for the store's answer,
/// oldest first: (slot, generation).
pub(super) type LeaseWaiters = HashMap<(u32, Key), SmallVec<[(u32, u32); 2]>>;

impl Shard {
    /// Asks the store client for `want` units of `key` under listener
    /// `l`'s shared limit. A full queue drops the request: the source's
    /// clients then wait until the store timeout.
    pub(super) fn ask_lease(&mut self, l: usize, key: Key, want: u32) {
        let Some((_, Limiter::Shared(leases))) = &self.listeners[l].limit else {
            return;
        };
        let request = LeaseRequest {
            listener: self.listeners[l].id,
            key,
            want,
            limit: leases.limit.clone(),
        };
        if self.lease_queues.requests.push(request).is_err() {
            self.counters.lease_requests_dropped += 1;
            return;
        }
        self.counters.lease_requests += 1;
        if let Some(store) = &self.store_waker {
            store.unpark();
        }
    }

    /// Holds the client of `slot` (listener `l`, source `key`) until the
    /// store answers for its source, or its timeout.
    pub(super) fn await_lease(&mut self, slot: usize, key: Key) {
        let l = self.pairs[slot].listener as usize;
        let timeout = match &self.listeners[l].limit {
            Some((_, Limiter::Shared(leases))) => leases.limit.timeout,
            _ => Duration::ZERO,
        };
        // Held like a delayed client, until the timeout at the latest.
        self.shape(slot, timeout.as_micros() as u64);
        let p = &mut self.pairs[slot];
        p.awaiting_lease = true;
        let entry = (slot as u32, p.generation);
        self.lease_waiters
            .entry((l as u32, key))
            .or_default()
            .push(entry);
    }

    /// Takes the store client's answers (the eventfd rang).
    pub(super) fn on_lease_replies(&mut self) {
        let now_us = micros(self.now);
        while let Some(reply) = self.lease_queues.replies.pop() {
            let Some(l) = self
                .listeners
                .iter()
                .position(|x| x.id == reply.listener && !x.removed)
            else {
                continue;
            };
            if let Some((_, Limiter::Shared(leases))) = &mut self.listeners[l].limit {
                leases.answer(reply.key, now_us, reply.grant);
            } else {
                continue;
            }
            if reply.grant.is_none() {
                self.counters.lease_failures += 1;
            }
            let Some(waiters) = self.lease_waiters.remove(&(l as u32, reply.key)) else {
                continue;
            };
            for (slot, generation) in waiters {
                let p = &self.pairs[slot as usize];
                if p.generation == generation && p.awaiting_lease {
                    self.decide_waiter(slot as usize, l, reply.key);
                }
            }
        }
    }

    /// A client that waited for its source's allowance tries again.
    fn decide_waiter(&mut self, slot: usize, l: usize, key: Key) {
        let now_us = micros(self.now);
        let Some((_, Limiter::Shared(leases))) = &mut self.listeners[l].limit else {
            return;
        };
        let (verdict, ask) = leases.arrive(key, now_us);
        if let Some(want) = ask {
            self.ask_lease(l, key, want);
        }
        match verdict {
            Verdict::Wait => {
                // Another round: it keeps its deadline.
                let generation = self.pairs[slot].generation;
                self.lease_waiters
                    .entry((l as u32, key))
                    .or_default()
                    .push((slot as u32, generation));
            }
            Verdict::Admit => self.lease_admitted(slot, None),
            Verdict::Delay(us) => self.lease_admitted(slot, Some(us)),
            Verdict::Refuse => {
                self.pairs[slot].awaiting_lease = false;
                self.listeners[l].counts.limited += 1;
                self.listener_counts_changed = true;
                self.abort(slot, Cause::Proxy);
            }
            Verdict::Fallback(admit) => self.fall_back(slot, l, admit),
        }
    }

    /// The store let the client of `slot` through, after `delay` µs
    /// (leaky bucket) or now.
    fn lease_admitted(&mut self, slot: usize, delay: Option<u64>) {
        self.pairs[slot].awaiting_lease = false;
        match delay {
            Some(us) => {
                let l = self.pairs[slot].listener as usize;
                self.listeners[l].counts.shaped += 1;
                self.listener_counts_changed = true;
                self.shape(slot, us);
            }
            None => self.release_shaped(slot),
        }
    }

    /// `on_store_error` decides for the client of `slot`.
    fn fall_back(&mut self, slot: usize, l: usize, admit: bool) {
        self.pairs[slot].awaiting_lease = false;
        self.listeners[l].counts.store_fallbacks += 1;
        self.listener_counts_changed = true;
        if admit {
            self.release_shaped(slot);
        } else {
            self.abort(slot, Cause::Proxy);
        }
    }

    /// No answer within the store timeout.
    pub(super) fn lease_timeout(&mut self, slot: usize) {
        self.forget_lease_wait(slot);
        let l = self.pairs[slot].listener as usize;
        let admit = match &self.listeners[l].limit {
            Some((_, Limiter::Shared(leases))) => leases.limit.on_error == OnStoreError::Allow,
            _ => true,
        };
        self.fall_back(slot, l, admit);
    }

    /// Takes the client of `slot` out of its source's waiters.
    pub(super) fn forget_lease_wait(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        if !std::mem::take(&mut p.awaiting_lease) {
            return;
        }
        let (l, generation) = (p.listener, p.generation);
        let Some(key) = p.client_addr.map(|a| key_of(a.ip())) else {
            return;
        };
        if let Some(w) = self.lease_waiters.get_mut(&(l, key)) {
            w.retain(|e| !(e.0 as usize == slot && e.1 == generation));
            if w.is_empty() {
                self.lease_waiters.remove(&(l, key));
            }
        }
    }
}
