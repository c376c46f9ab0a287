//! A limit shared by every ringlb instance that names the same store and
//! scope (`limit.store`, `limit.scope`): its configuration, and the
//! messages between the shards and the store client (`store.rs`).
//!
//! A shard never waits for the store. It decides from allowances leased
//! in batches (`lease.rs`); when a source has none, the shard asks the
//! store client through its own lock-free queue and holds that client
//! (not the shard) until the answer comes back through the shard's reply
//! queue, with the shard's eventfd rung.

use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use super::algorithm::{Algorithm, Rate};
use super::table::Key;

/// Requests and replies each shard's queues hold.
pub const QUEUE: usize = 8192;

/// `limit.on_store_error`: what a shard does while the store cannot
/// answer (unreachable, failing, or slower than `store_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    #[default]
    Allow,
    Deny,
}

impl OnStoreError {
    pub fn parse(s: &str) -> Option<OnStoreError> {
        match s {
            "allow" => Some(OnStoreError::Allow),
            "deny" => Some(OnStoreError::Deny),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
        }
    }
}

/// The store part of a listener's `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `redis://host:port/db` (with `user:password@` if needed).
    pub url: String,
    /// Names the limit in the store: instances with the same store and
    /// scope share it (default: the listener's name).
    pub scope: String,
    pub on_error: OnStoreError,
    /// How long a client may wait for an answer before `on_error` decides
    /// for it; also the store client's I/O timeout.
    pub timeout: Duration,
}

/// What the store client needs to run a shared limit, shared by the
/// listener's shards.
#[derive(Debug, PartialEq, Eq)]
pub struct SharedLimit {
    pub url: String,
    /// `ringlb:{scope}:{algorithm}:`: the source's address follows.
    pub prefix: String,
    pub algorithm: Algorithm,
    pub rate: Rate,
    pub burst: u32,
    pub on_error: OnStoreError,
    pub timeout: Duration,
    /// How long leased units may be used: a tenth of the window, 10 ms to
    /// 1 s (the scripts may shorten it, to a window's end).
    pub lease_us: u64,
}

impl SharedLimit {
    pub fn new(store: &StoreConfig, algorithm: Algorithm, rate: Rate, burst: u32) -> SharedLimit {
        SharedLimit {
            url: store.url.clone(),
            prefix: format!("ringlb:{}:{}:", store.scope, algorithm.as_str()),
            algorithm,
            rate,
            burst,
            on_error: store.on_error,
            timeout: store.timeout,
            lease_us: (rate.window_us / 10).clamp(10_000, 1_000_000),
        }
    }

    /// The store's key for a source; the address is a hash tag, so that
    /// the keys a script derives from it (`:seq`, a window's number) stay
    /// in the same slot of a cluster.
    pub fn key(&self, key: Key) -> String {
        let v6 = Ipv6Addr::from(key);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        format!("{}{{{ip}}}", self.prefix)
    }
}

/// What the store granted a shard for a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grant {
    /// Arrivals admitted (leaky bucket: departures scheduled).
    pub granted: u32,
    /// With fewer granted than asked: when to ask again.
    pub retry_us: u64,
    /// How long the granted units may be used (a fixed window's units end
    /// with it).
    pub valid_us: u64,
    /// Leaky bucket: the first departure's delay (then one per interval).
    pub first_delay_us: u64,
}

/// A shard asks for `want` units of `key` under `limit`.
#[derive(Debug)]
pub struct LeaseRequest {
    /// The listener's id (`ListenerSpec::id`).
    pub listener: u64,
    pub key: Key,
    pub want: u32,
    pub limit: Arc<SharedLimit>,
}

/// The answer: `None` when the store could not give one.
#[derive(Debug)]
pub struct LeaseReply {
    pub listener: u64,
    pub key: Key,
    pub grant: Option<Grant>,
}

/// One shard's two queues to the store client.
#[derive(Debug)]
pub struct LeaseQueues {
    pub requests: ArrayQueue<LeaseRequest>,
    pub replies: ArrayQueue<LeaseReply>,
    /// The shard's eventfd, rung after replies are queued.
    pub wake: RawFd,
}

impl LeaseQueues {
    pub fn new(wake: RawFd) -> LeaseQueues {
        LeaseQueues {
            requests: ArrayQueue::new(QUEUE),
            replies: ArrayQueue::new(QUEUE),
            wake,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::key_of;

    #[test]
    fn keys_name_the_scope_the_algorithm_and_the_source() {
        let store = StoreConfig {
            url: "redis://127.0.0.1/0".into(),
            scope: "edge".into(),
            on_error: OnStoreError::Allow,
            timeout: Duration::from_millis(50),
        };
        let rate = Rate::parse("10/s").unwrap();
        let l = SharedLimit::new(&store, Algorithm::TokenBucket, rate, 10);
        assert_eq!(
            l.key(key_of("192.0.2.7".parse().unwrap())),
            "ringlb:edge:token_bucket:{192.0.2.7}"
        );
        assert_eq!(
            l.key(key_of("2001:db8::1".parse().unwrap())),
            "ringlb:edge:token_bucket:{2001:db8::1}"
        );
    }
}
