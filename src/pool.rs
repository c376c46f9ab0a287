//! Servers and pools as the data plane sees them: an immutable snapshot
//! (shared by every shard through an `Arc`) plus live state that sits
//! beside it in cache-padded atomics: connection counts and slots, outlier
//! ejection and slow start, latency, the stick table and the waiting room.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use socket2::SockAddr;

use crate::config::{BalanceKind, Config, PoolConfig, PoolPolicy, SendProxy};
use crate::outlier::{ramp_permille, Outlier, Standing};
use crate::peak_ewma::PeakEwma;
use crate::stick::StickTable;
use crate::waiting_room::WaitingRoom;

/// Live state of one server, shared by every shard and carried over by a
/// reload when the server stays (same pool, same name). Laid out by who
/// writes what: `state` is read on every pick and written rarely, `active` is written
/// on every connect and close and read by least-connections picks, and the
/// attempt totals are written once per connect; each sits on its own cache
/// line so that writes to one do not slow reads of another.
#[derive(Debug, Default)]
pub struct ServerLive {
    /// Why the server must not be picked, if it must not: a set of
    /// [`HEALTH_DOWN`], [`DRAIN`] and [`MAINT`] (0: in service).
    pub state: CachePadded<AtomicU8>,
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
    /// Health-check results in a row that disagree with the server's
    /// checked state (its rise or fall count so far), kept here so that a
    /// checker started by a reload goes on from it.
    pub check_streak: std::sync::atomic::AtomicU32,
}

/// Active health checks failed `fall` times in a row.
pub const HEALTH_DOWN: u8 = 1;
/// An operator drains the server: no new connections, open ones finish.
pub const DRAIN: u8 = 2;
/// An operator took the server out for maintenance: no new connections,
/// open ones finish, health checks pause.
pub const MAINT: u8 = 4;

/// How a server's connect attempts ended, and what its connections
/// carried, summed over all shards. Connections add their bytes when they
/// end.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Connections established.
    pub connections: AtomicU64,
    /// Connects that failed or timed out.
    pub connect_failures: AtomicU64,
    /// Bytes sent to the server and received from it, by connections that
    /// ended.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// How long connects took (successful ones).
    pub connect_time: crate::histogram::Histogram,
}

/// A server's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Up,
    Down,
    Drain,
    Maint,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Up => "up",
            ServerState::Down => "down",
            ServerState::Drain => "drain",
            ServerState::Maint => "maint",
        }
    }
}

impl ServerLive {
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// In service: checks pass (or are off) and no operator took it out.
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == 0
    }

    /// Sets or clears one of the out-of-service reasons; returns whether
    /// it was set before.
    pub fn set_flag(&self, flag: u8, on: bool) -> bool {
        let before = if on {
            self.state.fetch_or(flag, Ordering::AcqRel)
        } else {
            self.state.fetch_and(!flag, Ordering::AcqRel)
        };
        before & flag != 0
    }

    pub fn has_flag(&self, flag: u8) -> bool {
        self.state.load(Ordering::Acquire) & flag != 0
    }

    /// What operators see: maintenance first, then draining, then health.
    pub fn server_state(&self) -> ServerState {
        let s = self.state.load(Ordering::Acquire);
        if s & MAINT != 0 {
            ServerState::Maint
        } else if s & DRAIN != 0 {
            ServerState::Drain
        } else if s & HEALTH_DOWN != 0 {
            ServerState::Down
        } else {
            ServerState::Up
        }
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
    /// Connections to it start with a PROXY protocol header (its own
    /// `send_proxy`, else its pool's).
    pub send_proxy: SendProxy,
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
            send_proxy: SendProxy::Off,
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
    /// Names the pool across reloads (and in shard-to-shard hand-offs),
    /// where its index may change: kept while a pool of that name stays.
    pub uid: u32,
    pub policy: PoolPolicy,
    /// Slow start, in milliseconds (0: none).
    pub slowstart_ms: u64,
    pub servers: Vec<Server>,
    pub stick: Option<Arc<StickTable>>,
    pub queue: Arc<WaitingRoom>,
}

impl Pool {
    pub fn from_config(p: &PoolConfig, shards: usize) -> Pool {
        Pool::carrying_over(p, shards, None)
    }

    /// The pool `p` describes, keeping from `before` (the pool of the same
    /// name in the running snapshot) its identity, waiting room, stick
    /// table (when its settings are the same) and the live state of every
    /// server that stays (same name and address).
    pub fn carrying_over(p: &PoolConfig, shards: usize, before: Option<&Pool>) -> Pool {
        let servers = p
            .servers
            .iter()
            .map(|s| {
                let live = before
                    .and_then(|b| b.server(&s.name))
                    .filter(|old| old.addr == s.addr)
                    .map(|old| old.live.clone());
                let mut server = Server::new(&s.name, s.addr, s.weight, s.backup, s.maxconn);
                server.check = s.check;
                server.send_proxy = s.send_proxy.unwrap_or(p.policy.send_proxy);
                if let Some(live) = live {
                    server.live = live;
                }
                server
            })
            .collect();
        // Entries name servers by index: the table stays only while the
        // servers are the same, in the same order.
        let same_servers = |b: &Pool| {
            b.servers.len() == p.servers.len()
                && b.servers
                    .iter()
                    .zip(&p.servers)
                    .all(|(o, n)| o.name == n.name && o.addr == n.addr)
        };
        let stick = match before {
            Some(b) if b.policy.stick == p.policy.stick && same_servers(b) => b.stick.clone(),
            _ => p
                .policy
                .stick
                .map(|c| Arc::new(StickTable::new(c.size, c.expire))),
        };
        Pool {
            name: p.name.clone(),
            uid: before.map_or_else(next_uid, |b| b.uid),
            policy: p.policy.clone(),
            slowstart_ms: p.policy.slowstart.map_or(0, crate::clock::ms),
            servers,
            stick,
            queue: before.map_or_else(|| Arc::new(WaitingRoom::new(shards)), |b| b.queue.clone()),
        }
    }

    /// The server named `name`, if the pool has one.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
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
        Pools::carrying_over(config, None)
    }

    /// The snapshot `config` describes, carrying over from `before` what
    /// survives (see [`Pool::carrying_over`]).
    pub fn carrying_over(config: &Config, before: Option<&Pools>) -> Arc<Pools> {
        let shards = config.runtime.shards.max(1);
        Arc::new(Pools {
            pools: config
                .pools
                .iter()
                .map(|p| Pool::carrying_over(p, shards, before.and_then(|b| b.pool(&p.name))))
                .collect(),
        })
    }

    /// The pool named `name`, if any.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The index of the pool whose identity is `uid`, if it is in this
    /// snapshot.
    pub fn index_of_uid(&self, uid: u32) -> Option<usize> {
        self.pools.iter().position(|p| p.uid == uid)
    }
}

/// A new pool identity, never given out before in this process.
fn next_uid() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
