//! Starting, watching and stopping the data plane: derives the connection
//! budget from the open-file limit, binds every listener once per shard,
//! starts one pinned thread per shard, keeps the control side's links to
//! them (command queues, counters), and notices a shard that stopped on its
//! own (see the failure policy in `shard/driver.rs`).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use uring_kit::{RingError, RingFlags};

use crate::access_log::{AccessLog, AccessLogError, WriterStats};
use crate::budget::{self, BudgetError, ConnBudget, FdPlan};
use crate::config::{Config, ListenerConfig};
use crate::health::{Checker, CheckerError};
use crate::limit::shared::LeaseQueues;
use crate::limit::store::LimitStore;
use crate::limit::ConnGate;
use crate::net::{bind_reuseport_group, close_fd, dup_fd, listening_tcp_addr};
use crate::pool::Pools;
use crate::shard::{
    Command, Counters, ListenerPolicy, ListenerSpec, ListenerStats, Mesh, Shard, ShardInitError,
    ShardLink, ShardSpec, ShardStats,
};

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("cannot read the open-file limit: {0}")]
    Rlimit(std::io::Error),
    #[error("cannot listen on {addr} (listener `{name}`): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("shard {0}: {1}")]
    Shard(usize, ShardInitError),
    #[error("cannot create the shard's eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("cannot start a shard thread: {0}")]
    Thread(std::io::Error),
    #[error("shard {0} stopped during start-up")]
    ShardDied(usize),
    #[error(transparent)]
    Checker(#[from] CheckerError),
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    #[error("listener `{name}` on {addr}: the running ringlb has {have} listening sockets for it (one per shard) and this one runs {shards} shards; a socket cannot be dropped without resetting the connections queued on it, so set runtime.shards to at least {have}")]
    TooFewShards {
        name: String,
        addr: SocketAddr,
        have: usize,
        shards: usize,
    },
    #[error("listener `{name}`: a socket handed over for {addr} is unusable: {source}")]
    Inherited {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot keep a copy of a listening socket: {0}")]
    Dup(std::io::Error),
}

/// A listener's sockets taken over from a running ringlb (binary upgrade):
/// one per shard of that process, all in one SO_REUSEPORT group.
#[derive(Debug)]
pub struct InheritedListener {
    pub name: String,
    /// As that process's configuration has it (port 0 possible).
    pub bind: SocketAddr,
    /// As bound.
    pub addr: SocketAddr,
    pub fds: Vec<OwnedFd>,
}

impl InheritedListener {
    /// Whether a listener configured with `bind` is this one: the same
    /// configured address, or the address this one is actually bound to.
    fn serves(&self, bind: SocketAddr) -> bool {
        bind == self.bind || bind == self.addr
    }
}

/// A bound listener: one listening socket per shard (SO_REUSEPORT).
#[derive(Debug, Clone)]
pub struct BoundListener {
    /// Names this socket group across reloads.
    pub id: u64,
    pub name: String,
    /// As configured (port 0 asks the kernel for one).
    pub bind: SocketAddr,
    /// As bound.
    pub addr: SocketAddr,
    /// Index into the running configuration's pools.
    pub pool: usize,
    pub stats: Arc<ListenerStats>,
    /// Its connections open over every shard (`maxconn`, `conn_per_src`).
    pub gate: Arc<ConnGate>,
    /// The runtime's own copies of the group's sockets (the shards own and
    /// close theirs): what a binary upgrade hands over.
    pub sockets: Arc<Vec<OwnedFd>>,
    /// What it checks of its clients.
    pub policy: ListenerPolicy,
}

/// Close-on-exec copies of `fds`, kept by the runtime.
pub(crate) fn keep_copies(fds: &[RawFd]) -> std::io::Result<Arc<Vec<OwnedFd>>> {
    fds.iter()
        .map(|&fd| dup_fd(fd))
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::new)
}

/// The listening sockets of `l`, one per shard: those of `inherited` that
/// serve it (and more bound into their group if this process runs more
/// shards), else a new group. Returns the fds and the address bound.
fn listener_group(
    l: &ListenerConfig,
    shards: usize,
    inherited: &mut Vec<InheritedListener>,
) -> Result<(Vec<RawFd>, SocketAddr), StartError> {
    let found = inherited
        .iter()
        .position(|h| h.name == l.name && h.serves(l.bind))
        .or_else(|| inherited.iter().position(|h| h.serves(l.bind)));
    let Some(i) = found else {
        return bind_reuseport_group(l.bind, shards).map_err(|source| StartError::Bind {
            name: l.name.clone(),
            addr: l.bind,
            source,
        });
    };
    let h = inherited.remove(i);
    if h.fds.len() > shards {
        return Err(StartError::TooFewShards {
            name: l.name.clone(),
            addr: h.addr,
            have: h.fds.len(),
            shards,
        });
    }
    for fd in &h.fds {
        match listening_tcp_addr(fd.as_raw_fd()) {
            Ok(a) if a == h.addr => {}
            Ok(a) => {
                return Err(StartError::Inherited {
                    name: l.name.clone(),
                    addr: h.addr,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("it is bound to {a}"),
                    ),
                })
            }
            Err(source) => {
                return Err(StartError::Inherited {
                    name: l.name.clone(),
                    addr: h.addr,
                    source,
                })
            }
        }
    }
    let more = shards - h.fds.len();
    let mut fds: Vec<RawFd> = h.fds.into_iter().map(IntoRawFd::into_raw_fd).collect();
    if more > 0 {
        match bind_reuseport_group(h.addr, more) {
            Ok((extra, _)) => fds.extend(extra),
            Err(source) => {
                fds.into_iter().for_each(close_fd);
                return Err(StartError::Bind {
                    name: l.name.clone(),
                    addr: h.addr,
                    source,
                });
            }
        }
    }
    Ok((fds, h.addr))
}

impl BoundListener {
    /// How a shard is told of it (`fd`: that shard's socket, when new).
    pub fn spec(&self, fd: Option<RawFd>) -> ListenerSpec {
        ListenerSpec {
            id: self.id,
            name: self.name.clone(),
            pool: self.pool,
            fd,
            stats: self.stats.clone(),
            gate: self.gate.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// A shard that stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFailure {
    pub shard: usize,
    pub reason: String,
}

/// The running data plane.
pub struct Runtime {
    pub(crate) links: Vec<ShardLink>,
    threads: Vec<JoinHandle<()>>,
    pub(crate) listeners: Vec<BoundListener>,
    pub(crate) pools: Arc<Pools>,
    /// The configuration being served (with changes made through the
    /// admin API).
    pub(crate) config: Config,
    /// The snapshot the shards were last sent.
    pub(crate) epoch: u32,
    pub(crate) next_listener_id: u64,
    budget: Arc<ConnBudget>,
    fd_plan: FdPlan,
    ring_flags: RingFlags,
    recv_limit: bool,
    stopping: bool,
    /// Active health checks, when a pool has them.
    pub(crate) checker: Option<Checker>,
    /// The access log's writer, when `[log] access` is set.
    access_log: Option<AccessLog>,
    /// The store client of shared limits (idle without one).
    limit_store: LimitStore,
}

impl Runtime {
    /// Binds the listeners and starts the shards. Returns once every shard
    /// has its ring and is accepting.
    pub fn start(config: &Config) -> Result<Runtime, StartError> {
        Self::start_with(config, Vec::new())
    }

    /// [`Runtime::start`], serving on sockets taken over from a running
    /// ringlb where a listener's address matches one of `inherited`
    /// (binary upgrade); the others are bound anew. Inherited sockets no
    /// listener uses are closed (their first owner still has them).
    pub fn start_with(
        config: &Config,
        mut inherited: Vec<InheritedListener>,
    ) -> Result<Runtime, StartError> {
        uring_kit::probe()?;
        // SAFETY: ignoring SIGPIPE process-wide: a write to a closed peer
        // (splice(2) has no MSG_NOSIGNAL) must be an EPIPE, not a kill.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let shards = config.runtime.shards.max(1);
        let nofile = budget::raise_nofile().map_err(StartError::Rlimit)?;
        let fd_plan = budget::plan(
            nofile,
            shards,
            config.listeners.len(),
            config.runtime.pipes,
            config.runtime.maxconn,
            crate::health::fds_needed(config),
        )?;
        let budget = Arc::new(ConnBudget::new(fd_plan.maxconn));
        let recv_limit = uring_kit::ops::recv_multishot_limit_supported();
        if !recv_limit {
            tracing::info!(
                "this kernel cannot end a multishot receive at a byte limit (6.15+): \
                 a direction's buffers are capped by cancelling its receive instead"
            );
        }
        let pools = Pools::from_config(config);
        let mesh = Arc::new(Mesh::new(shards, config.pools.len()));
        // per_shard[i]: every listener, with shard i's listening fd.
        let mut per_shard: Vec<Vec<ListenerSpec>> = vec![Vec::new(); shards];
        let mut listeners = Vec::new();
        let close_all = |per_shard: &[Vec<ListenerSpec>]| {
            per_shard
                .iter()
                .flatten()
                .filter_map(|l| l.fd)
                .for_each(close_fd);
        };
        for (id, l) in config.listeners.iter().enumerate() {
            let (fds, addr) =
                listener_group(l, shards, &mut inherited).inspect_err(|_| close_all(&per_shard))?;
            let sockets = keep_copies(&fds).map_err(|e| {
                close_all(&per_shard);
                fds.iter().copied().for_each(close_fd);
                StartError::Dup(e)
            })?;
            let bound = BoundListener {
                id: id as u64,
                name: l.name.clone(),
                bind: l.bind,
                addr,
                pool: l.pool,
                stats: Arc::new(ListenerStats::new(shards)),
                gate: Arc::default(),
                sockets,
                policy: ListenerPolicy::of(l),
            };
            for (shard, fd) in per_shard.iter_mut().zip(fds) {
                shard.push(bound.spec(Some(fd)));
            }
            listeners.push(bound);
        }
        let access_log = match &config.access_log {
            Some(a) => Some(AccessLog::start(a, shards).inspect_err(|_| close_all(&per_shard))?),
            None => None,
        };
        let cpus = pick_cpus(&config.runtime.cpus, shards);
        let limit_store = LimitStore::start().map_err(|e| {
            close_all(&per_shard);
            StartError::Thread(e)
        })?;
        let store_waker = limit_store.waker();
        let mut lease_queues = Vec::with_capacity(shards);
        let (ready_tx, ready_rx) = mpsc::channel();
        // Built up as shards start, so that an error stops those already
        // running (Drop) and closes the listening fds not yet handed over.
        let mut runtime = Runtime {
            links: Vec::new(),
            threads: Vec::new(),
            next_listener_id: listeners.len() as u64,
            listeners,
            pools: pools.clone(),
            config: config.clone(),
            epoch: 0,
            budget: budget.clone(),
            fd_plan,
            ring_flags: RingFlags::Plain,
            recv_limit,
            stopping: false,
            checker: None,
            access_log,
            limit_store,
        };
        let mut per_shard = per_shard.into_iter();
        for (id, cpu) in cpus.into_iter().enumerate() {
            let shard_listeners = per_shard.next().unwrap_or_default();
            // SAFETY: eventfd(2) with valid flags; the result is checked.
            let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if wake < 0 {
                let err = std::io::Error::last_os_error();
                close_all(&[shard_listeners]);
                close_all(&per_shard.collect::<Vec<_>>());
                return Err(StartError::EventFd(err));
            }
            let commands = Arc::new(ArrayQueue::new(64));
            let queues = Arc::new(LeaseQueues::new(wake));
            lease_queues.push(queues.clone());
            let stats = Arc::new(ShardStats::default());
            let spec = ShardSpec {
                id,
                listeners: shard_listeners,
                pools: pools.clone(),
                budget: budget.clone(),
                timeouts: config.timeouts,
                forward: config.runtime.forward,
                buffer_size: config.runtime.buffer_size,
                buffers: config.runtime.buffers,
                pipes: fd_plan.pipes_per_shard,
                pipe_size: config.runtime.pipe_size,
                recv_limit,
                commands: commands.clone(),
                wake,
                stats: stats.clone(),
                mesh: mesh.clone(),
                access_log: runtime.access_log.as_ref().map(|a| a.queue(id)),
                lease_queues: queues.clone(),
                store_waker: store_waker.clone(),
            };
            runtime.links.push(ShardLink {
                commands,
                wake,
                stats: stats.clone(),
            });
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringlb-shard-{id}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if !core_affinity::set_for_current(cpu) {
                            tracing::warn!(shard = id, cpu = cpu.id, "cannot pin shard to its CPU");
                        }
                    }
                    match Shard::new(spec) {
                        Ok((shard, flags)) => {
                            let _ = ready.send(Ok(flags));
                            if let Err(e) = shard.run() {
                                stats.fail(e.to_string());
                            }
                        }
                        Err(e) => {
                            let _ = ready.send(Err(StartError::Shard(id, e)));
                        }
                    }
                    stats.mark_exited();
                })
                .map_err(|e| {
                    close_all(&per_shard.clone().collect::<Vec<_>>());
                    StartError::Thread(e)
                })?;
            runtime.threads.push(thread);
        }
        drop(ready_tx);
        runtime.limit_store.serve(lease_queues);
        let mut ring_flags = RingFlags::Plain;
        for id in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(flags)) => ring_flags = flags,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(StartError::ShardDied(id)),
            }
        }
        runtime.ring_flags = ring_flags;
        runtime.checker = Checker::start(pools)?;
        Ok(runtime)
    }

    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The address listener `name` is bound to (its real port when the
    /// configuration asked for port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.addr)
    }

    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// The configuration being served.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn shards(&self) -> usize {
        self.links.len()
    }

    pub fn ring_flags(&self) -> RingFlags {
        self.ring_flags
    }

    /// How the open-file limit is spent (the connection budget, pipes).
    pub fn fd_plan(&self) -> FdPlan {
        self.fd_plan
    }

    /// Pairs open now against `maxconn`, over all shards.
    pub fn budget(&self) -> &ConnBudget {
        &self.budget
    }

    /// Whether the kernel ends multishot receives at a byte limit.
    pub fn recv_limit(&self) -> bool {
        self.recv_limit
    }

    /// What the access log's writer has done, when there is one.
    pub fn access_log(&self) -> Option<WriterStats> {
        self.access_log.as_ref().map(|a| a.stats())
    }

    /// Reopens the access log file (log rotation); part of every reload.
    pub fn reopen_access_log(&self) {
        if let Some(a) = &self.access_log {
            a.reopen();
        }
    }

    /// Counters of each shard.
    pub fn shard_counters(&self) -> Vec<Counters> {
        self.links.iter().map(|l| l.stats.read()).collect()
    }

    /// Counters summed over the shards.
    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for l in &self.links {
            total.add(&l.stats.read());
        }
        total
    }

    /// A shard that stopped without being asked to (its ring failed, or
    /// its thread panicked), if any.
    pub fn failure(&self) -> Option<ShardFailure> {
        if self.stopping {
            return None;
        }
        self.links
            .iter()
            .zip(&self.threads)
            .enumerate()
            .find(|(_, (link, thread))| link.stats.exited() || thread.is_finished())
            .map(|(shard, (link, _))| ShardFailure {
                shard,
                reason: link
                    .stats
                    .failure()
                    .unwrap_or("its thread ended unexpectedly (a panic)")
                    .to_string(),
            })
    }

    /// Asks every shard to stop accepting and let open pairs finish for up
    /// to `grace` before resetting the rest; returns at once. Asking again
    /// with a shorter grace shortens it (`Duration::ZERO`: reset now).
    pub fn request_stop(&mut self, grace: Duration) {
        self.stopping = true;
        if let Some(mut c) = self.checker.take() {
            c.stop();
        }
        for (link, thread) in self.links.iter().zip(&self.threads) {
            if link.wake < 0 {
                continue;
            }
            while !thread.is_finished() && !link.send(Command::Stop { grace }) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Whether a stop was asked for.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Whether every shard thread has ended.
    pub fn stopped(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops accepting, lets open pairs finish for up to `grace`, and waits
    /// for every shard thread to end. Counters stay readable.
    pub fn stop(&mut self, grace: Duration) {
        self.request_stop(grace);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The shards are gone: what they logged is all queued.
        if let Some(a) = self.access_log.as_mut() {
            a.stop();
        }
        // Before the eventfds it rings close.
        self.limit_store.stop();
        for link in &mut self.links {
            if link.wake >= 0 {
                close_fd(link.wake);
                link.wake = -1;
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// The CPU each shard is pinned to: `cpus[i % len]` when given, else the
/// i-th CPU this process may run on.
fn pick_cpus(cpus: &[usize], shards: usize) -> Vec<Option<core_affinity::CoreId>> {
    let available = core_affinity::get_core_ids().unwrap_or_default();
    (0..shards)
        .map(|i| {
            if cpus.is_empty() {
                if available.is_empty() {
                    None
                } else {
                    Some(available[i % available.len()])
                }
            } else {
                Some(core_affinity::CoreId {
                    id: cpus[i % cpus.len()],
                })
            }
        })
        .collect()
}
