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

/// Live state of one server, shared by every shard. Laid out by who writes
/// what: `down` is read on every pick and written rarely, `active` is written
/// on every connect and close and read by least-connections picks, and the
/// attempt totals are written once per connect; each sits on its own cache
/// line so that writes to one do not slow reads of another.
#[derive(Debug, Default)]
pub struct ServerLive {
    /// True while the server must not be picked (health checks, draining).
    pub down: CachePadded<AtomicBool>,
    /// Connections open to this server right now (connecting or
    /// connected), summed over all shards. Each shard adds its own connects
    /// and closes, and keeps its own exact count beside it.
    pub active: CachePadded<AtomicU64>,
    /// Connect attempts and how they ended.
    pub attempts: CachePadded<Attempts>,
}

/// How a server's connect attempts ended, summed over all shards.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Connections established.
    pub connections: AtomicU64,
    /// Connects that failed or timed out.
    pub connect_failures: AtomicU64,
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
