//! A pool's waiting room, as every shard shares it: the global order of
//! queued clients, each shard's oldest waiter, and what operators read
//! (length, time queued, estimated wait).
//!
//! The clients themselves stay on the shard that accepted them (a queue per
//! shard and pool, `shard/queue.rs`). What is shared:
//! - a ticket counter: every queued client takes the next ticket, so
//!   tickets order arrivals across shards;
//! - per shard, the ticket of its oldest waiter not yet promised a slot
//!   ([`EMPTY`] when it has none, [`CLAIMED`] while a slot is on its way
//!   to it): the shard that frees a slot claims the smallest one by
//!   compare-and-swap and hands the slot over, so no two shards serve
//!   the same head and the oldest client goes first;
//! - the number of clients waiting (`maxqueue`, and whether newcomers must
//!   queue behind them rather than take a freed slot);
//! - counters, a histogram of time queued, and the mean time a connection
//!   holds a slot (for the estimated wait).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::histogram::Histogram;

/// A shard with no waiter in this pool.
pub const EMPTY: u64 = u64::MAX;
/// A shard whose head waiter has been promised a slot.
pub const CLAIMED: u64 = u64::MAX - 1;

#[derive(Debug)]
pub struct WaitingRoom {
    next_ticket: CachePadded<AtomicU64>,
    len: CachePadded<AtomicU64>,
    heads: Box<[CachePadded<AtomicU64>]>,
    /// Clients that queued, were served, timed out, or found it full.
    pub queued: AtomicU64,
    pub served: AtomicU64,
    pub timeouts: AtomicU64,
    pub full: AtomicU64,
    /// Time spent queued by clients that were served.
    pub waited: Histogram,
    /// Mean time a connection holds a slot (µs, an EWMA over ~64 closes).
    hold_us: AtomicU64,
}

/// What the waiting room tells operators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    pub len: u64,
    pub queued: u64,
    pub served: u64,
    pub timeouts: u64,
    pub full: u64,
    pub waited_p50: Option<Duration>,
    pub waited_p99: Option<Duration>,
    pub mean_hold: Duration,
    /// What a newcomer can expect to wait now (see [`WaitingRoom::estimated_wait`]).
    pub estimated_wait: Duration,
}

impl WaitingRoom {
    pub fn new(shards: usize) -> WaitingRoom {
        WaitingRoom {
            next_ticket: CachePadded::new(AtomicU64::new(0)),
            len: CachePadded::new(AtomicU64::new(0)),
            heads: (0..shards)
                .map(|_| CachePadded::new(AtomicU64::new(EMPTY)))
                .collect(),
            queued: AtomicU64::new(0),
            served: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            full: AtomicU64::new(0),
            waited: Histogram::default(),
            hold_us: AtomicU64::new(0),
        }
    }

    /// Clients waiting now, over every shard.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A client joins, unless `maxqueue` clients (0: no limit) wait
    /// already: its ticket. The caller publishes it as its shard's head if
    /// it is the shard's oldest, then looks for a free slot (a slot freed
    /// just before, by a shard that saw no waiter, is found then).
    pub fn join(&self, maxqueue: u32) -> Option<u64> {
        self.len
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (maxqueue == 0 || n < u64::from(maxqueue)).then_some(n + 1)
            })
            .ok()?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        Some(self.next_ticket.fetch_add(1, Ordering::Relaxed))
    }

    /// A client leaves (served, timed out, closed).
    pub fn leave(&self) {
        self.len.fetch_sub(1, Ordering::SeqCst);
    }

    /// Shard `shard`'s head: its oldest unclaimed waiter's ticket, or
    /// [`EMPTY`]. Only `shard` calls this, and never over a [`CLAIMED`]
    /// head unless `force` (it is answering the claim).
    pub fn publish_head(&self, shard: usize, head: u64, force: bool) {
        let h = &self.heads[shard];
        if force {
            h.store(head, Ordering::SeqCst);
        } else {
            let _ = h.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                (cur != CLAIMED).then_some(head)
            });
        }
    }

    /// Whether a slot is on its way to some shard's head.
    pub fn any_claimed(&self) -> bool {
        self.heads
            .iter()
            .any(|h| h.load(Ordering::SeqCst) == CLAIMED)
    }

    /// Claims the oldest head over every shard: the shard to hand a slot
    /// to, or `None` when no shard has an unclaimed waiter.
    pub fn claim_oldest(&self) -> Option<usize> {
        loop {
            let (shard, ticket) = self
                .heads
                .iter()
                .enumerate()
                .map(|(i, h)| (i, h.load(Ordering::SeqCst)))
                .filter(|&(_, t)| t < CLAIMED)
                .min_by_key(|&(_, t)| t)?;
            if self.heads[shard]
                .compare_exchange(ticket, CLAIMED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Some(shard);
            }
        }
    }

    /// A connection held a slot for `d`.
    pub fn record_hold(&self, d: Duration) {
        let sample = d.as_micros() as u64;
        let _ = self
            .hold_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                Some(if cur == 0 {
                    sample
                } else {
                    cur - cur / 64 + sample / 64
                })
            });
    }

    pub fn mean_hold(&self) -> Duration {
        Duration::from_micros(self.hold_us.load(Ordering::Relaxed))
    }

    /// How long a newcomer can expect to wait: clients ahead of it times
    /// the mean time a slot is held, shared by `slots` slots.
    pub fn estimated_wait(&self, slots: u64) -> Duration {
        if slots == 0 {
            return Duration::ZERO;
        }
        let ahead = self.len() as u128;
        Duration::from_micros(
            (ahead * self.hold_us.load(Ordering::Relaxed) as u128 / slots as u128) as u64,
        )
    }

    /// The room's figures, with the estimated wait for `slots` slots.
    pub fn stats_with(&self, slots: u64) -> QueueStats {
        QueueStats {
            estimated_wait: self.estimated_wait(slots),
            ..self.stats()
        }
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            len: self.len(),
            queued: self.queued.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            full: self.full.load(Ordering::Relaxed),
            waited_p50: self.waited.quantile(0.5),
            waited_p99: self.waited.quantile(0.99),
            mean_hold: self.mean_hold(),
            estimated_wait: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_head_is_claimed_once() {
        let room = WaitingRoom::new(3);
        assert_eq!(room.claim_oldest(), None);
        let a = room.join(0).unwrap();
        let b = room.join(0).unwrap();
        room.publish_head(2, a, false);
        room.publish_head(0, b, false);
        assert_eq!(room.claim_oldest(), Some(2));
        assert_eq!(room.heads[2].load(Ordering::SeqCst), CLAIMED);
        // A claimed head is not claimed again, nor overwritten but by force.
        room.publish_head(2, 99, false);
        assert_eq!(room.claim_oldest(), Some(0));
        assert_eq!(room.claim_oldest(), None);
        room.publish_head(2, EMPTY, true);
        assert_eq!(room.heads[2].load(Ordering::SeqCst), EMPTY);
        assert_eq!(room.len(), 2);
    }

    /// Two threads run the shards' protocol (queue.rs) against one slot:
    /// join and publish, free the slot and claim the oldest head, serve it
    /// or hand it over, answer every claim by publishing the next head.
    /// Every client is served exactly once, in ticket order per thread,
    /// and nothing is left claimed or counted.
    #[test]
    fn two_threads_serve_every_client_once() {
        use std::collections::VecDeque;
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;

        use crossbeam_queue::ArrayQueue;

        const CLIENTS: u64 = 20_000;
        let room = Arc::new(WaitingRoom::new(2));
        let slot = Arc::new(AtomicBool::new(false)); // true: taken
        let mail: Arc<[ArrayQueue<()>; 2]> = Arc::new([ArrayQueue::new(1), ArrayQueue::new(1)]);
        let served = Arc::new(AtomicU64::new(0));
        let run = |me: usize| {
            let (room, slot, mail, served) =
                (room.clone(), slot.clone(), mail.clone(), served.clone());
            std::thread::spawn(move || {
                let mut fifo: VecDeque<u64> = VecDeque::new();
                let mut joined = 0;
                let mut seen = Vec::new();
                let publish = |fifo: &VecDeque<u64>, force: bool| {
                    room.publish_head(me, fifo.front().copied().unwrap_or(EMPTY), force)
                };
                // Serves this thread's head (its claim is ours to answer).
                let serve = |fifo: &mut VecDeque<u64>, seen: &mut Vec<u64>| -> bool {
                    let took = !slot.swap(true, Ordering::SeqCst);
                    if took {
                        if let Some(t) = fifo.pop_front() {
                            room.leave();
                            seen.push(t);
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        // Done at once: the slot is free again.
                        slot.store(false, Ordering::SeqCst);
                    }
                    publish(fifo, true);
                    took
                };
                while served.load(Ordering::SeqCst) < CLIENTS {
                    if joined < CLIENTS / 2 {
                        let t = room.join(0).unwrap();
                        fifo.push_back(t);
                        joined += 1;
                        if fifo.len() == 1 {
                            publish(&fifo, false);
                        }
                    }
                    if mail[me].pop().is_some() {
                        serve(&mut fifo, &mut seen);
                    }
                    // A slot may be free: give it to the oldest head.
                    std::sync::atomic::fence(Ordering::SeqCst);
                    if !room.is_empty() && !slot.load(Ordering::SeqCst) {
                        match room.claim_oldest() {
                            Some(t) if t == me => {
                                serve(&mut fifo, &mut seen);
                            }
                            Some(t) => assert!(mail[t].push(()).is_ok(), "one claim per head"),
                            None => {}
                        }
                    }
                }
                seen
            })
        };
        let (a, b) = (run(0), run(1));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(a.len() as u64 + b.len() as u64, CLIENTS);
        for seen in [&a, &b] {
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "in ticket order");
        }
        let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len() as u64, CLIENTS, "each exactly once");
        assert_eq!(room.len(), 0);
        assert!(!room.any_claimed());
    }

    #[test]
    fn estimated_wait_is_queue_times_hold_over_slots() {
        let room = WaitingRoom::new(1);
        room.record_hold(Duration::from_millis(80));
        for _ in 0..4 {
            room.join(0).unwrap();
        }
        assert_eq!(room.join(4), None, "maxqueue");
        assert_eq!(room.estimated_wait(16), Duration::from_millis(20));
        assert_eq!(room.estimated_wait(0), Duration::ZERO);
    }
}
