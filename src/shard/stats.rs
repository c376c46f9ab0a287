//! Counters a shard publishes for the control side (tests, metrics): written
//! only by the shard's own thread, read by anyone.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// A shard's own tallies, kept as plain integers on the hot path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Client connections accepted.
    pub accepted: u64,
    /// Pairs open now (connecting, forwarding or closing).
    pub active: u64,
    /// Pairs closed.
    pub closed: u64,
    /// Server connects that failed or timed out.
    pub connect_failures: u64,
    /// Connects retried on another server after a failure.
    pub redispatches: u64,
    /// Clients closed because no server could be reached.
    pub unserved: u64,
    /// Pairs closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Receives that found the buffer ring empty (ENOBUFS).
    pub buffer_starved: u64,
    /// Bytes forwarded client → server and server → client.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Provided buffers lent out now, and pipes the shard holds.
    pub buffers_in_use: u64,
    pub pipes: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.accepted += o.accepted;
        self.active += o.active;
        self.closed += o.closed;
        self.connect_failures += o.connect_failures;
        self.redispatches += o.redispatches;
        self.unserved += o.unserved;
        self.idle_timeouts += o.idle_timeouts;
        self.buffer_starved += o.buffer_starved;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
        self.buffers_in_use += o.buffers_in_use;
        self.pipes += o.pipes;
    }
}

/// The published copy of a shard's [`Counters`], one cache line to itself.
#[derive(Debug, Default)]
pub struct ShardStats {
    fields: CachePadded<[AtomicU64; 12]>,
}

impl ShardStats {
    /// Publishes `c` (relaxed stores; each field is exact, the set is not a
    /// snapshot).
    pub fn publish(&self, c: &Counters) {
        let values = [
            c.accepted,
            c.active,
            c.closed,
            c.connect_failures,
            c.redispatches,
            c.unserved,
            c.idle_timeouts,
            c.buffer_starved,
            c.bytes_up,
            c.bytes_down,
            c.buffers_in_use,
            c.pipes,
        ];
        for (f, v) in self.fields.iter().zip(values) {
            f.store(v, Ordering::Relaxed);
        }
    }

    pub fn read(&self) -> Counters {
        let v = self.fields.each_ref().map(|f| f.load(Ordering::Relaxed));
        Counters {
            accepted: v[0],
            active: v[1],
            closed: v[2],
            connect_failures: v[3],
            redispatches: v[4],
            unserved: v[5],
            idle_timeouts: v[6],
            buffer_starved: v[7],
            bytes_up: v[8],
            bytes_down: v[9],
            buffers_in_use: v[10],
            pipes: v[11],
        }
    }
}
