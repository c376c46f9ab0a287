//! Servers and pools as the data plane sees them: an immutable snapshot
//! (shared by every shard through an `Arc`) plus live counters that sit
//! beside it in cache-padded atomics, so that a future reload can swap the
//! snapshot without resetting them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use socket2::SockAddr;

use crate::config::{BalanceKind, Config, PoolConfig};

/// Counters of one server, shared by every shard.
#[derive(Debug, Default)]
pub struct ServerLive {
    /// Connections open to this server right now, summed over all shards.
    /// Each shard adds its own connects and closes; least-connections reads it.
    pub active: CachePadded<AtomicU64>,
    /// Connections ever established.
    pub connections: AtomicU64,
    /// Connect attempts that failed or timed out.
    pub connect_failures: AtomicU64,
    /// False while the server must not be picked (health checks, draining).
    pub down: AtomicBool,
}

impl ServerLive {
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }
}

/// A backend server.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    /// `addr` in the form handed to the kernel; lives as long as the snapshot,
    /// which outlives every connect that points at it.
    pub sockaddr: SockAddr,
    pub weight: u32,
    pub backup: bool,
    pub live: Arc<ServerLive>,
}

/// A pool of servers and its algorithm.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub balance: BalanceKind,
    pub retries: u32,
    pub servers: Vec<Server>,
}

impl Pool {
    fn from_config(p: &PoolConfig) -> Pool {
        Pool {
            name: p.name.clone(),
            balance: p.balance,
            retries: p.retries,
            servers: p
                .servers
                .iter()
                .map(|s| Server {
                    name: s.name.clone(),
                    addr: s.addr,
                    sockaddr: SockAddr::from(s.addr),
                    weight: s.weight,
                    backup: s.backup,
                    live: Arc::new(ServerLive::default()),
                })
                .collect(),
        }
    }
}

/// Every pool of a configuration, in configuration order.
#[derive(Debug)]
pub struct Pools {
    pub pools: Vec<Pool>,
}

impl Pools {
    pub fn from_config(config: &Config) -> Arc<Pools> {
        Arc::new(Pools {
            pools: config.pools.iter().map(Pool::from_config).collect(),
        })
    }
}
