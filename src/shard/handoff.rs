//! Shard-to-shard hand-offs: a lock-free single-producer single-consumer
//! queue for every ordered pair of shards, and a wake-up of the target's
//! ring with `IORING_OP_MSG_RING` (a completion posted straight into the
//! target's completion queue, submitted with the sender's other work: no
//! syscall of its own, no eventfd).
//!
//! What travels is a pool's identity (`Pool::uid`, the same in every
//! snapshot, so sender and target need not be on the same one): "a slot of
//! this pool is free and your oldest waiter in it has been promised it"
//! (see `crate::waiting_room`). A target has at most one claim in flight
//! per pool (its head stays claimed until it answers), so a queue holds at
//! most one message per pool; its capacity leaves room for pools that
//! reloads add. Should it still fill, the sender clears the target's head
//! and the target publishes it again at its next queue poll.

use std::sync::atomic::{AtomicI32, Ordering};

use crossbeam_queue::ArrayQueue;

/// The queues and ring fds every shard shares.
pub struct Mesh {
    shards: usize,
    /// `queues[from * shards + to]`.
    queues: Vec<ArrayQueue<u32>>,
    /// Each shard's ring fd, once its ring exists (-1 before, and after it
    /// stopped).
    ring_fds: Vec<AtomicI32>,
}

impl Mesh {
    pub fn new(shards: usize, pools: usize) -> Mesh {
        Mesh {
            shards,
            queues: (0..shards * shards)
                .map(|_| ArrayQueue::new((pools * 2).max(64)))
                .collect(),
            ring_fds: (0..shards).map(|_| AtomicI32::new(-1)).collect(),
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Shard `shard`'s ring fd (or -1 when it has none).
    pub fn set_ring_fd(&self, shard: usize, fd: i32) {
        self.ring_fds[shard].store(fd, Ordering::Release);
    }

    pub fn ring_fd(&self, shard: usize) -> i32 {
        self.ring_fds[shard].load(Ordering::Acquire)
    }

    /// Queues `pool` for shard `to`; false if the queue is full.
    pub fn send(&self, from: usize, to: usize, pool: u32) -> bool {
        self.queues[from * self.shards + to].push(pool).is_ok()
    }

    /// The next message from shard `from` to shard `to`.
    pub fn receive(&self, from: usize, to: usize) -> Option<u32> {
        self.queues[from * self.shards + to].pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ordered_pair_has_its_own_queue() {
        let m = Mesh::new(3, 2);
        assert!(m.send(0, 1, 7));
        assert!(m.send(2, 1, 8));
        assert!(m.send(0, 1, 9));
        assert_eq!(m.receive(2, 1), Some(8));
        assert_eq!(m.receive(0, 1), Some(7));
        assert_eq!(m.receive(0, 1), Some(9));
        assert_eq!(m.receive(1, 0), None);
        assert_eq!(m.ring_fd(2), -1);
    }
}
