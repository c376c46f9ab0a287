//! Counters a shard publishes for the control side (tests, metrics): written
//! only by the shard's own thread, read by anyone. Also the shard's exit
//! report: why it stopped, when it could not go on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

/// Declares [`Counters`] and the fixed order in which [`ShardStats`]
/// publishes them, from one list.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// A shard's own tallies, kept as plain integers on the hot path.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        const FIELDS: usize = [$(stringify!($name)),*].len();

        /// Every counter's name and its doc comment, in publishing order.
        pub const COUNTER_NAMES: [(&str, &str); FIELDS] = [$((stringify!($name), concat!($($doc,)*))),*];

        impl Counters {
            pub fn add(&mut self, o: &Counters) {
                $(self.$name += o.$name;)*
            }

            pub fn to_array(self) -> [u64; FIELDS] {
                [$(self.$name),*]
            }

            fn from_array(v: [u64; FIELDS]) -> Counters {
                let mut v = v.into_iter();
                Counters {
                    $($name: v.next().unwrap_or(0),)*
                }
            }
        }
    };
}

counters! {
    /// Client connections accepted.
    accepted,
    /// Pairs open now (waiting, connecting, forwarding or closing).
    active,
    /// Pairs waiting now for the connection budget or an fd.
    waiting,
    /// Pairs closed.
    closed,
    /// Clients that had to wait for the connection budget or an fd.
    waited,
    /// Times accepting paused: budget used up, or out of fds or memory.
    accept_pauses,
    /// Accept errors other than running out of fds or memory.
    accept_errors,
    /// Server connects that failed or timed out.
    connect_failures,
    /// Connects retried on another server after a failure.
    redispatches,
    /// Clients closed because no server could be reached.
    unserved,
    /// Pairs closed by the idle timeout.
    idle_timeouts,
    /// Pairs closed with a reset (an error, a reset, undelivered bytes).
    resets,
    /// Receives that found the buffer ring empty (ENOBUFS).
    buffer_starved,
    /// Access log lines dropped because the writer fell behind (the
    /// shard's queue was full).
    access_log_dropped,
    /// Bytes forwarded client → server and server → client.
    bytes_up,
    bytes_down,
    /// Clients that had to queue for a server slot, waiting now, closed
    /// after `timeouts.queue`, and turned away by `maxqueue`.
    queued,
    queue_len,
    queue_timeouts,
    queue_full,
    /// Queue slots handed to and from other shards.
    handoffs_sent,
    handoffs_received,
    /// Free server slots the queue poll found while clients waited and no
    /// slot was on its way to them (capacity that came without a close, or
    /// a missed wake-up).
    queue_poll_finds,
    /// Servers this shard ejected (outlier detection).
    ejections,
    /// Provided buffers lent out now, and pipes the shard holds.
    buffers_in_use,
    pipes,
    /// Loop iterations and completions handled (completions per wake =
    /// completions / wakes).
    wakes,
    completions,
    /// Allowances asked of a shared limit's store, requests dropped for a
    /// full queue, and answers that were failures.
    lease_requests,
    lease_requests_dropped,
    lease_failures,
    /// Closing pairs whose cancels missed an operation: cancelled by fd
    /// after a second (should stay 0).
    cancel_fallbacks,
}

/// A listener's counters, one cache line per shard (each shard writes only
/// its own): clients accepted, open now, and turned away (no server, queue
/// full or timed out).
#[derive(Debug)]
pub struct ListenerStats {
    shards: Box<[CachePadded<[AtomicU64; 11]>]>,
}

/// A listener's counters summed over the shards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListenerCounts {
    pub accepted: u64,
    pub active: u64,
    pub rejected: u64,
    /// Clients its access list turned away (closed at once, never counted
    /// as accepted).
    pub denied: u64,
    /// Clients closed for their PROXY protocol header: malformed, missing
    /// (timed out), or sent by a peer not in `proxy_trusted`.
    pub proxy_errors: u64,
    /// Clients refused by the listener's `limit`, and clients it delayed
    /// (leaky bucket).
    pub limited: u64,
    pub shaped: u64,
    /// Sources the limit's tables hold now (at most its `size`).
    pub limit_sources: u64,
    /// Clients refused for having `conn_per_src` connections open already.
    pub over_src: u64,
    /// Clients accepted while the listener was at its `maxconn`, held
    /// unread until a place freed (accepting paused meanwhile).
    pub maxconn_waits: u64,
    /// Clients `on_store_error` decided for (a shared limit's store down,
    /// failing or late).
    pub store_fallbacks: u64,
}

impl ListenerStats {
    pub fn new(shards: usize) -> ListenerStats {
        ListenerStats {
            shards: (0..shards).map(|_| CachePadded::default()).collect(),
        }
    }

    pub fn publish(&self, shard: usize, c: ListenerCounts) {
        let f = &self.shards[shard];
        f[0].store(c.accepted, Ordering::Relaxed);
        f[1].store(c.active, Ordering::Relaxed);
        f[2].store(c.rejected, Ordering::Relaxed);
        f[3].store(c.denied, Ordering::Relaxed);
        f[4].store(c.proxy_errors, Ordering::Relaxed);
        f[5].store(c.limited, Ordering::Relaxed);
        f[6].store(c.shaped, Ordering::Relaxed);
        f[7].store(c.limit_sources, Ordering::Relaxed);
        f[8].store(c.over_src, Ordering::Relaxed);
        f[9].store(c.maxconn_waits, Ordering::Relaxed);
        f[10].store(c.store_fallbacks, Ordering::Relaxed);
    }

    pub fn read(&self) -> ListenerCounts {
        let mut c = ListenerCounts::default();
        for f in self.shards.iter() {
            c.accepted += f[0].load(Ordering::Relaxed);
            c.active += f[1].load(Ordering::Relaxed);
            c.rejected += f[2].load(Ordering::Relaxed);
            c.denied += f[3].load(Ordering::Relaxed);
            c.proxy_errors += f[4].load(Ordering::Relaxed);
            c.limited += f[5].load(Ordering::Relaxed);
            c.shaped += f[6].load(Ordering::Relaxed);
            c.limit_sources += f[7].load(Ordering::Relaxed);
            c.over_src += f[8].load(Ordering::Relaxed);
            c.maxconn_waits += f[9].load(Ordering::Relaxed);
            c.store_fallbacks += f[10].load(Ordering::Relaxed);
        }
        c
    }
}

/// The published copy of a shard's [`Counters`], one cache line to itself,
/// and its exit report.
#[derive(Debug, Default)]
pub struct ShardStats {
    fields: CachePadded<[AtomicU64; FIELDS]>,
    failure: OnceLock<String>,
    exited: AtomicBool,
}

impl ShardStats {
    /// Publishes `c` (relaxed stores; each field is exact, the set is not a
    /// snapshot).
    pub fn publish(&self, c: &Counters) {
        for (f, v) in self.fields.iter().zip(c.to_array()) {
            f.store(v, Ordering::Relaxed);
        }
    }

    pub fn read(&self) -> Counters {
        Counters::from_array(self.fields.each_ref().map(|f| f.load(Ordering::Relaxed)))
    }

    /// Records why the shard could not go on (the first reason wins).
    pub fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
    }

    /// Why the shard stopped on its own, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Marks the shard's thread as ended (a failure, a stop, or a panic
    /// caught by the runtime).
    pub fn mark_exited(&self) {
        self.exited.store(true, Ordering::Release);
    }

    pub fn exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_read_agree_on_every_field() {
        let mut c = Counters::default();
        for (i, v) in c.to_array().iter().enumerate() {
            assert_eq!(*v, 0, "field {i}");
        }
        let values: [u64; FIELDS] = std::array::from_fn(|i| i as u64 * 7 + 1);
        c = Counters::from_array(values);
        let s = ShardStats::default();
        s.publish(&c);
        assert_eq!(s.read(), c);
        assert_eq!(s.read().to_array(), values);
    }
}
