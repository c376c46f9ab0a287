//! The waiting room on a shard: clients that found every usable server of
//! their pool at its `maxconn` wait here, connected and unread (what they
//! send stays in their socket until a server takes them, so it arrives
//! intact), oldest first, until a slot frees, `timeouts.queue` passes, or
//! the pool's `maxqueue` turns them away on arrival.
//!
//! Each shard keeps its own FIFO per pool; the order across shards comes
//! from the pool's shared tickets ([`crate::waiting_room`]). When a slot
//! frees (a pair closes or a connect fails, on any shard) the shard that
//! freed it claims the oldest head over all shards and, if it is not its
//! own, hands it over (`handoff.rs`). The served client picks its server
//! like any other (so `source` keeps its key, with spill-over when its
//! server is full); a slot that another shard took meanwhile leaves the
//! head where it was.
//!
//! Newcomers queue behind waiters: while the pool has any, a new client
//! does not take a freed slot ahead of them. A client that queues looks
//! for a free slot right after joining, and a shard that frees a slot looks
//! for waiters right after freeing it (both with a full fence), so a slot
//! freed at the moment a client joins is never missed. Capacity that
//! appears without a close (an ejection ending) is found by a poll every
//! [`QUEUE_POLL`] while the shard has waiters.
//!
//! FIFO bound: a waiter can be overtaken only by a waiter on another shard
//! while a slot is on its way to its own shard's head (one queue hop and a
//! ring wake-up), or while it is between taking its ticket and publishing
//! it (a few instructions). Waiters that joined further apart than that are
//! served in the order they joined.

use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use io_uring::opcode;
use io_uring::squeue::Flags;
use io_uring::types::Fd;

use super::log_limit::LogKind;
use super::pair::PairState;
use super::timers::Timer;
use super::token::{Op, Tag};
use super::Shard;
use crate::access_log::{Cause, Phase};
use crate::balance::{self, Choice};
use crate::waiting_room::EMPTY;

/// How often a shard with waiters looks for capacity that appeared without
/// a close.
pub const QUEUE_POLL: Duration = Duration::from_millis(50);

impl Shard {
    /// The client of `slot` waits for a slot of its pool.
    pub(super) fn enqueue(&mut self, slot: usize) {
        let pool_i = self.pairs[slot].pool as usize;
        let pool = &self.pools.pools[pool_i];
        let Some(ticket) = pool.queue.join(pool.policy.maxqueue) else {
            pool.queue.full.fetch_add(1, Ordering::Relaxed);
            self.counters.queue_full += 1;
            if self.log.admit(LogKind::QueueFull, self.now) {
                tracing::warn!(
                    shard = self.id,
                    pool = %pool.name,
                    maxqueue = pool.policy.maxqueue,
                    "queue full: closing a new client"
                );
            }
            self.arm_log_summary();
            self.reject(slot);
            // Turned away at the queue's door.
            self.pairs[slot].phase = Some(Phase::Waiting);
            self.abort(slot, Cause::Proxy);
            return;
        };
        self.prune_queue(pool_i);
        let first = self.queues[pool_i].is_empty();
        let p = &mut self.pairs[slot];
        p.state = PairState::Queued;
        p.queued_at = self.now;
        p.ticket = ticket;
        let generation = p.generation;
        self.queues[pool_i].push_back((slot as u32, generation));
        self.counters.queued += 1;
        self.counters.queue_len += 1;
        if first {
            self.pools.pools[pool_i]
                .queue
                .publish_head(self.id, ticket, false);
        }
        // Its deadline is now the queue timeout.
        if let Some(key) = self.pairs[slot].timer.take() {
            self.timers.cancel(key);
        }
        let at = self.pairs[slot]
            .idle_deadline(self.now, &self.timeouts)
            .unwrap_or(self.now);
        self.arm_idle(slot, at);
        self.arm_queue_poll();
        // Joined, then look: see the module doc.
        fence(Ordering::SeqCst);
        self.mark_queue_dirty(pool_i);
    }

    /// Drops entries of pairs that left the queue from the front.
    fn prune_queue(&mut self, pool_i: usize) {
        while let Some(&(slot, generation)) = self.queues[pool_i].front() {
            let p = &self.pairs[slot as usize];
            if p.generation == generation && p.state == PairState::Queued {
                return;
            }
            self.queues[pool_i].pop_front();
        }
    }

    /// Publishes this shard's oldest waiter in `pool_i` (or none). `force`
    /// when answering a claim.
    fn publish_head(&mut self, pool_i: usize, force: bool) {
        self.prune_queue(pool_i);
        let head = self.queues[pool_i]
            .front()
            .map_or(EMPTY, |&(slot, _)| self.pairs[slot as usize].ticket);
        self.pools.pools[pool_i]
            .queue
            .publish_head(self.id, head, force);
    }

    /// A slot of `pool_i` was given back on this shard.
    pub(super) fn slot_freed(&mut self, pool_i: usize) {
        // Freed, then look: see the module doc.
        fence(Ordering::SeqCst);
        if !self.pools.pools[pool_i].queue.is_empty() {
            self.mark_queue_dirty(pool_i);
        }
    }

    /// Asks the loop to look for a waiter of `pool_i` to serve.
    fn mark_queue_dirty(&mut self, pool_i: usize) {
        self.queue_dirty[pool_i] = true;
        self.queue_any_dirty = true;
    }

    /// Runs the dispatches handlers asked for (from the loop, between
    /// handlers).
    #[inline]
    pub(super) fn run_queue_dispatch(&mut self) {
        if std::mem::take(&mut self.queue_any_dirty) {
            self.dispatch_dirty();
        }
    }

    #[cold]
    fn dispatch_dirty(&mut self) {
        for pool_i in 0..self.queue_dirty.len() {
            if std::mem::take(&mut self.queue_dirty[pool_i]) {
                self.dispatch_queue(pool_i);
            }
        }
    }

    /// While some server of the pool has a free slot and some shard has a
    /// waiter, gives the slot to the oldest waiter.
    fn dispatch_queue(&mut self, pool_i: usize) {
        loop {
            let pool = &self.pools.pools[pool_i];
            if pool.queue.is_empty() {
                return;
            }
            if !pool.any_up() {
                // No server is up: no wait can help; each shard resets its
                // own waiters (this one now, the others at their poll).
                self.give_up_queued(pool_i, Cause::Server);
                return;
            }
            if !pool.has_free_slot(crate::clock::millis(self.now)) {
                return;
            }
            let Some(target) = pool.queue.claim_oldest() else {
                return;
            };
            if target == self.id {
                if !self.serve_queued(pool_i) {
                    return;
                }
                continue;
            }
            self.hand_over(target, pool_i);
            return;
        }
    }

    /// Sends shard `target` the claim on its head waiter in `pool_i`.
    fn hand_over(&mut self, target: usize, pool_i: usize) {
        if !self
            .mesh
            .send(self.id, target, self.pools.pools[pool_i].uid)
        {
            // Cannot happen (one claim per pool and target); never leave
            // the head claimed with nobody told.
            tracing::error!(shard = self.id, target, "hand-off queue full");
            self.pools.pools[pool_i]
                .queue
                .publish_head(target, EMPTY, true);
            return;
        }
        self.counters.handoffs_sent += 1;
        let fd = self.mesh.ring_fd(target);
        if fd < 0 {
            // Its poll finds the message.
            return;
        }
        let entry =
            opcode::MsgRingData::new(Fd(fd), 0, Tag::new(Op::Handoff, 0, 0, 0).encode(), None)
                .build()
                .flags(Flags::SKIP_SUCCESS)
                .user_data(Tag::new(Op::Ignore, 0, 0, 0).encode());
        // SAFETY: no pointers; the target ring's fd stays open while the
        // process runs its shards.
        unsafe { self.push(&[entry]) };
    }

    /// Takes every hand-off sent to this shard.
    pub(super) fn on_handoff(&mut self) {
        for from in 0..self.mesh.shards() {
            while let Some(uid) = self.mesh.receive(from, self.id) {
                self.counters.handoffs_received += 1;
                // Named by identity: the sender may be on another snapshot.
                // A pool this shard no longer has has no waiters here (they
                // were reset, and the head cleared, when it went).
                let Some(pool_i) = self.pools.index_of_uid(uid) else {
                    continue;
                };
                self.serve_queued(pool_i);
                // More room, or the slot this claim was for went unused
                // here: the next waiter (on any shard) may take it.
                self.mark_queue_dirty(pool_i);
            }
        }
    }

    /// Serves this shard's oldest waiter in `pool_i`, whose head was
    /// claimed (by this shard or another). Returns whether one was served.
    /// Always answers the claim: the new head is published.
    fn serve_queued(&mut self, pool_i: usize) -> bool {
        loop {
            self.prune_queue(pool_i);
            let Some(&(slot, _)) = self.queues[pool_i].front() else {
                self.publish_head(pool_i, true);
                return false;
            };
            let slot = slot as usize;
            let now_ms = crate::clock::millis(self.now);
            let p = &self.pairs[slot];
            let choice = balance::choose(
                self.balancers[pool_i].as_mut(),
                &self.pools.pools[pool_i],
                p.tried,
                now_ms,
                p.key,
            );
            match choice {
                Choice::Full => {
                    // Another shard took the slot: the head stays. Published,
                    // then look again (a slot freed meanwhile by a shard that
                    // saw the head claimed is found then).
                    self.publish_head(pool_i, true);
                    fence(Ordering::SeqCst);
                    self.mark_queue_dirty(pool_i);
                    return false;
                }
                Choice::Nothing => {
                    self.leave_queue(slot);
                    self.pairs[slot].phase = Some(Phase::Waiting);
                    self.give_up(slot);
                }
                Choice::Server(pick) => {
                    self.leave_queue(slot);
                    let pool = &self.pools.pools[pool_i];
                    pool.queue.served.fetch_add(1, Ordering::Relaxed);
                    pool.queue
                        .waited
                        .record(self.now - self.pairs[slot].queued_at);
                    self.publish_head(pool_i, true);
                    let p = &mut self.pairs[slot];
                    p.state = PairState::Connecting;
                    // Back to the client's own idle deadline.
                    if let Some(key) = p.timer.take() {
                        self.timers.cancel(key);
                    }
                    self.arm_idle(slot, self.now + self.timeouts.client_idle);
                    if !self.start_connect(slot, pick) {
                        // Served already: it picks again without queueing
                        // behind the others.
                        self.connect_with(slot, false);
                    }
                    return true;
                }
            }
        }
    }

    /// Takes the client of `slot` out of the pool's count of waiters (its
    /// entry in the shard's FIFO is dropped lazily).
    fn leave_queue(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        debug_assert_eq!(p.state, PairState::Queued);
        // Not queued any more, whatever comes next.
        p.state = PairState::Connecting;
        self.pools.pools[p.pool as usize].queue.leave();
        self.counters.queue_len -= 1;
    }

    /// The client of `slot` waited `timeouts.queue` without a slot.
    pub(super) fn queue_timeout(&mut self, slot: usize) {
        let pool_i = self.pairs[slot].pool as usize;
        self.leave_queue(slot);
        self.pairs[slot].phase = Some(Phase::Waiting);
        self.pools.pools[pool_i]
            .queue
            .timeouts
            .fetch_add(1, Ordering::Relaxed);
        self.counters.queue_timeouts += 1;
        if self.log.admit(LogKind::QueueTimeout, self.now) {
            tracing::warn!(
                shard = self.id,
                pool = %self.pools.pools[pool_i].name,
                "a client waited {:?} in the queue without a server slot; closing it",
                self.timeouts.queue
            );
        }
        self.arm_log_summary();
        // If it was this shard's head, the next waiter is.
        self.publish_head(pool_i, false);
        self.reject(slot);
        self.abort(slot, Cause::ServerTimeout);
    }

    /// Arms the poll for capacity that appears without a close.
    fn arm_queue_poll(&mut self) {
        if self.queue_poll.is_none() {
            self.queue_poll = Some(self.arm_timer(self.now + QUEUE_POLL, Timer::QueuePoll));
        }
    }

    pub(super) fn on_queue_poll(&mut self) {
        self.queue_poll = None;
        self.on_handoff();
        let mut waiting = false;
        for pool_i in 0..self.queues.len() {
            self.prune_queue(pool_i);
            if !self.queues[pool_i].is_empty() {
                waiting = true;
                // A head cleared without this shard answering (a hand-off
                // that found no room) is published again.
                self.publish_head(pool_i, false);
                let pool = &self.pools.pools[pool_i];
                let now_ms = crate::clock::millis(self.now);
                if pool.has_free_slot(now_ms) && !pool.queue.any_claimed() {
                    // A slot sat free while clients waited and none was on
                    // its way to them: capacity that came without a close
                    // (an ejection over), or a missed wake-up.
                    self.counters.queue_poll_finds += 1;
                }
                self.mark_queue_dirty(pool_i);
            }
        }
        if waiting {
            self.arm_queue_poll();
        }
    }

    /// Resets every waiter of this shard in `pool_i`: no server is up, or
    /// the pool is going.
    pub(super) fn give_up_queued(&mut self, pool_i: usize, cause: Cause) {
        while let Some((slot, generation)) = self.queues[pool_i].pop_front() {
            let slot = slot as usize;
            let p = &self.pairs[slot];
            if p.generation == generation && p.state == PairState::Queued {
                self.leave_queue(slot);
                let p = &mut self.pairs[slot];
                p.phase = Some(Phase::Waiting);
                p.end_by(cause);
                self.give_up(slot);
            }
        }
        self.publish_head(pool_i, true);
    }

    /// Aborts every waiter (the shard is stopping).
    pub(super) fn abort_queued(&mut self) {
        for pool_i in 0..self.queues.len() {
            while let Some((slot, generation)) = self.queues[pool_i].pop_front() {
                let slot = slot as usize;
                let p = &self.pairs[slot];
                if p.generation == generation && p.state == PairState::Queued {
                    self.leave_queue(slot);
                    self.pairs[slot].phase = Some(Phase::Waiting);
                    self.abort(slot, Cause::Killed);
                }
            }
            self.pools.pools[pool_i]
                .queue
                .publish_head(self.id, EMPTY, true);
        }
    }
}
