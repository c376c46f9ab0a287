//! Servers and pools as the data plane sees them: an immutable snapshot
//! (shared by every shard through an `Arc`) plus live state that sits
//! beside it in cache-padded atomics: connection counts and slots, outlier
//! ejection and slow start, latency, the stick table and the waiting room.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use socket2::SockAddr;

use crate::config::{BalanceKind, Config, PoolConfig, PoolPolicy};
use crate::outlier::{ramp_permille, Outlier, Standing};
use crate::peak_ewma::PeakEwma;
use crate::stick::StickTable;
use crate::waiting_room::WaitingRoom;

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
    /// connected), summed over all shards: the slots taken against its
    /// `maxconn`. Each shard adds its own connects and closes, and keeps its
    /// own exact count beside it.
    pub active: CachePadded<AtomicU64>,
    /// Connect attempts and how they ended.
    pub attempts: CachePadded<Attempts>,
    /// Passive ejection and the time it came back (slow start).
    pub outlier: CachePadded<Outlier>,
    /// Connect time or time to first byte (`leasttime`).
    pub latency: CachePadded<PeakEwma>,
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
    /// The most connections at once over every shard (0: no limit).
    pub maxconn: u32,
    /// Active checks apply to it (when its pool has them).
    pub check: bool,
    pub live: Arc<ServerLive>,
}

impl Server {
    pub fn new(name: &str, addr: SocketAddr, weight: u32, backup: bool, maxconn: u32) -> Server {
        Server {
            name: name.to_string(),
            addr,
            sockaddr: SockAddr::from(addr),
            weight,
            backup,
            maxconn,
            check: true,
            live: Arc::new(ServerLive::default()),
        }
    }

    /// Whether a slot is free now (a hint: [`Server::try_reserve`] decides).
    pub fn has_room(&self) -> bool {
        self.maxconn == 0 || self.live.active() < u64::from(self.maxconn)
    }

    /// Takes a slot: counts one more connection, unless that would pass
    /// `maxconn`. One atomic step, so no two shards can both take the last
    /// slot.
    pub fn try_reserve(&self) -> bool {
        if self.maxconn == 0 {
            self.live.active.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        let max = u64::from(self.maxconn);
        self.live
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a slot back.
    pub fn release(&self) {
        self.live.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A pool of servers, its policy, and the state it shares between shards.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub policy: PoolPolicy,
    /// Slow start, in milliseconds (0: none).
    pub slowstart_ms: u64,
    pub servers: Vec<Server>,
    pub stick: Option<StickTable>,
    pub queue: WaitingRoom,
}

impl Pool {
    pub fn from_config(p: &PoolConfig, shards: usize) -> Pool {
        Pool {
            name: p.name.clone(),
            policy: p.policy.clone(),
            slowstart_ms: p.policy.slowstart.map_or(0, crate::clock::ms),
            servers: p
                .servers
                .iter()
                .map(|s| Server {
                    check: s.check,
                    ..Server::new(&s.name, s.addr, s.weight, s.backup, s.maxconn)
                })
                .collect(),
            stick: p.policy.stick.map(|c| StickTable::new(c.size, c.expire)),
            queue: WaitingRoom::new(shards),
        }
    }

    /// A pool with default policies over `servers` (tests, benchmarks).
    pub fn with_servers(balance: BalanceKind, servers: Vec<Server>) -> Pool {
        let mut p = Pool::from_config(&PoolConfig::new("p", balance, Vec::new()), 1);
        p.servers = servers;
        p
    }

    /// Whether picks need the client's address.
    pub fn needs_client_addr(&self) -> bool {
        self.policy.balance.hashes() || self.stick.is_some()
    }

    /// Server `i`'s weight at `now_ms`, in thousandths: its configured
    /// weight, scaled down while it ramps up after coming back (slow start).
    pub fn weight(&self, i: usize, now_ms: u64) -> u64 {
        let w = u64::from(self.servers[i].weight) * 1000;
        if self.slowstart_ms == 0 || w == 0 {
            return w;
        }
        (w * self.ramp(i, now_ms) / 1000).max(1)
    }

    /// The share (thousandths) of its weight server `i` has at `now_ms`.
    pub fn ramp(&self, i: usize, now_ms: u64) -> u64 {
        if self.slowstart_ms == 0 {
            return 1000;
        }
        let back = self.servers[i].live.outlier.returned_ms();
        ramp_permille(back, now_ms, self.slowstart_ms)
    }

    /// Whether server `i` may be picked at all: up, weight above zero, and
    /// not ejected (an ejection that is over counts: its trial is due).
    pub fn usable(&self, i: usize, now_ms: u64) -> bool {
        let s = &self.servers[i];
        s.weight > 0
            && s.live.is_up()
            && (self.policy.outlier.is_none() || s.live.outlier.standing(now_ms) != Standing::Out)
    }

    /// Slots of the servers that are usable now (those with a `maxconn`).
    pub fn slots(&self, now_ms: u64) -> u64 {
        (0..self.servers.len())
            .filter(|&i| self.usable(i, now_ms))
            .map(|i| u64::from(self.servers[i].maxconn))
            .sum()
    }

    /// The waiting room's figures, with the estimated wait for a newcomer.
    pub fn queue_stats(&self, now_ms: u64) -> crate::waiting_room::QueueStats {
        self.queue.stats_with(self.slots(now_ms))
    }

    /// Whether server `i` is up with a weight (whatever its ejection).
    fn up(&self, i: usize) -> bool {
        let s = &self.servers[i];
        s.weight > 0 && s.live.is_up()
    }

    /// Whether any server is up with a weight (whatever its ejection).
    pub fn any_up(&self) -> bool {
        (0..self.servers.len()).any(|i| self.up(i))
    }

    /// Which servers a pick may consider now: the usable ones, or, when
    /// every server that is up is ejected (panic mode), every one up; and
    /// whether it is panic mode.
    pub fn in_service(&self, now_ms: u64) -> (impl Fn(usize) -> bool + '_, bool) {
        let panic = !(0..self.servers.len()).any(|i| self.usable(i, now_ms));
        let ok = move |i: usize| {
            if panic {
                self.up(i)
            } else {
                self.usable(i, now_ms)
            }
        };
        (ok, panic)
    }

    /// Whether `choose` could find a slot now: a server with room among
    /// the primaries in service, or among the backups when no primary is
    /// (backups stand in only for primaries that are gone).
    pub fn has_free_slot(&self, now_ms: u64) -> bool {
        let n = self.servers.len();
        let (ok, _) = self.in_service(now_ms);
        let primaries = (0..n).any(|i| !self.servers[i].backup && ok(i));
        (0..n).any(|i| ok(i) && self.servers[i].backup != primaries && self.servers[i].has_room())
    }

    /// Whether some server other than `except` is usable (never eject the
    /// last one).
    pub fn others_usable(&self, except: usize, now_ms: u64) -> bool {
        (0..self.servers.len()).any(|i| i != except && self.usable(i, now_ms))
    }
}

/// Every pool of a configuration, in configuration order.
#[derive(Debug)]
pub struct Pools {
    pub pools: Vec<Pool>,
}

impl Pools {
    pub fn from_config(config: &Config) -> Arc<Pools> {
        let shards = config.runtime.shards.max(1);
        Arc::new(Pools {
            pools: config
                .pools
                .iter()
                .map(|p| Pool::from_config(p, shards))
                .collect(),
        })
    }
}
