//! A shard: one pinned thread that owns one io_uring, its own listening
//! socket per listener (SO_REUSEPORT), its own pair table, buffer ring, pipe
//! pool and timer wheel. Nothing here is shared with other shards but the
//! pools' live state, the process's connection budget, the hand-off queues
//! between shards, and a command queue from the control side.
//!
//! - `driver.rs`: the loop, dispatching completions, stopping, failing.
//! - `accept.rs`: listeners, the budget, clients waiting for it.
//! - `concurrency.rs`: places under a listener's `maxconn`, clients held
//!   for one.
//! - `shared_limit.rs`: clients waiting for a shared limit's store.
//! - `timers.rs`: everything the shard schedules, on one wheel.
//! - `pair.rs` / `direction.rs`: a pair's state and each direction's
//!   state machine; `connect.rs`, `forward.rs`, `close.rs` drive them.
//! - `buffers.rs`, `pipes.rs`, `slab.rs`: the resources a shard owns.
//! - `queue.rs` / `handoff.rs`: clients waiting for a server slot, and
//!   slots handed between shards.
//! - `log_limit.rs`: data-path logging that cannot flood.
//! - `stats.rs`: counters published to the control side.
//! - `swap.rs`: taking a new snapshot of pools and listeners (a reload).

mod accept;
mod buffers;
mod close;
mod concurrency;
mod connect;
mod direction;
mod driver;
mod forward;
mod handoff;
mod log_limit;
mod pair;
mod pipes;
mod proxy_header;
mod queue;
mod shared_limit;
mod slab;
mod stats;
mod swap;
mod timers;
mod token;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use io_uring::squeue;
use io_uring::types::Timespec;
use uring_kit::{Completion, Ring, RingError, RingFlags};

use crate::access_log::AccessQueue;
use crate::balance::{self, Balancer};
use crate::budget::ConnBudget;
use crate::config::{ForwardMode, Timeouts};
use crate::limit::shared::LeaseQueues;
use crate::net::close_fd;
use crate::pool::Pools;
use crate::timer_wheel::{TimerKey, TimerWheel};
use accept::Listener;
use buffers::BufferRing;
pub use driver::ShardError;
pub use handoff::Mesh;
use log_limit::LogLimiter;
use pipes::PipePool;
use slab::Slab;
pub use stats::{Counters, ListenerCounts, ListenerStats, ShardStats, COUNTER_NAMES};
pub use swap::{ListenerPolicy, ListenerSpec, Swap};
use timers::Timer;

/// Submission queue entries per ring; the completion queue is four times larger.
pub const SQ_ENTRIES: u32 = 4096;

/// The resolution of a shard's timers.
pub const TIMER_TICK: Duration = Duration::from_millis(1);

/// What the control side can ask of a shard.
#[derive(Debug)]
pub enum Command {
    /// Stop accepting, let open pairs finish for up to `grace`, abort the
    /// rest, and end the thread.
    Stop { grace: Duration },
    /// Serve a new snapshot of pools and listeners (`swap.rs`).
    Swap(Box<Swap>),
}

/// The control side's end of a shard: its command queue, the eventfd that
/// wakes it, and its published counters and exit report.
pub struct ShardLink {
    pub commands: Arc<ArrayQueue<Command>>,
    pub wake: RawFd,
    pub stats: Arc<ShardStats>,
}

impl ShardLink {
    /// Queues `cmd` and wakes the shard. Returns false when the queue is full.
    pub fn send(&self, cmd: Command) -> bool {
        self.try_send(cmd).is_ok()
    }

    /// Queues `cmd` and wakes the shard; gives it back when the queue is
    /// full.
    pub fn try_send(&self, cmd: Command) -> Result<(), Command> {
        self.commands.push(cmd)?;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        unsafe { libc::write(self.wake, (&one as *const u64).cast(), 8) };
        Ok(())
    }
}

/// Everything a shard thread is started with.
pub struct ShardSpec {
    pub id: usize,
    /// Every listener, with this shard's listening fd and the pool it
    /// feeds.
    pub listeners: Vec<ListenerSpec>,
    pub pools: Arc<Pools>,
    pub budget: Arc<ConnBudget>,
    pub timeouts: Timeouts,
    pub forward: ForwardMode,
    pub buffer_size: usize,
    pub buffers: usize,
    pub pipes: usize,
    pub pipe_size: usize,
    /// The kernel ends a multishot receive at a byte limit.
    pub recv_limit: bool,
    pub commands: Arc<ArrayQueue<Command>>,
    pub wake: RawFd,
    pub stats: Arc<ShardStats>,
    /// The hand-off queues between shards.
    pub mesh: Arc<Mesh>,
    /// Where to put access log records, when the log is on.
    pub access_log: Option<AccessQueue>,
    /// Its queues to the shared limits' store client, and that client's
    /// thread (to unpark).
    pub lease_queues: Arc<LeaseQueues>,
    pub store_waker: Option<std::thread::Thread>,
}

/// Why a shard could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShardInitError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("cannot register the provided-buffer ring: {0}")]
    Buffers(std::io::Error),
}

pub struct Shard {
    // Declared first so it is dropped first: the kernel must be done with
    // the buffer ring, the eventfd buffer and the timespec before they go.
    ring: Ring,
    /// `None` only after a failed stop left it to the kernel (leaked).
    buffers: Option<BufferRing>,
    pipes: PipePool,
    pairs: Slab,
    free: Vec<u32>,
    /// The snapshot new picks use, and its number: a pair's `pool` and
    /// `server_index` refer to the snapshot its `epoch` names.
    pools: Arc<Pools>,
    epoch: u32,
    balancers: Vec<Box<dyn Balancer>>,
    /// This shard's exact count of its own pairs per pool and server; the
    /// servers' live atomics hold the sum over shards. Checked against them
    /// when the shard ends, and what is left is taken back from them.
    local_active: Vec<Vec<u32>>,
    /// Earlier snapshots that pairs of this shard still use (`swap.rs`).
    retired: Vec<swap::Retired>,
    /// In the order they came; a removed listener stays, closed, so that
    /// its index in pairs keeps meaning it.
    listeners: Vec<Listener>,
    /// A listener's counts changed since they were last published.
    listener_counts_changed: bool,
    /// Pairs waiting for the budget or an fd, oldest first: (slot, generation).
    waiting: VecDeque<(u32, u32)>,
    lease_queues: Arc<LeaseQueues>,
    store_waker: Option<std::thread::Thread>,
    /// Per listener and source, the clients waiting for a shared limit's
    /// store to answer, oldest first: (slot, generation).
    lease_waiters: shared_limit::LeaseWaiters,
    /// Per pool, clients waiting for a server slot, oldest first:
    /// (slot, generation); entries of clients that left are dropped lazily.
    queues: Vec<VecDeque<(u32, u32)>>,
    /// Per pool, a slot may be free for a waiter: the loop dispatches.
    queue_dirty: Vec<bool>,
    /// Some entry of `queue_dirty` is set (checked after every handler).
    queue_any_dirty: bool,
    queue_poll: Option<TimerKey>,
    mesh: Arc<Mesh>,
    budget: Arc<ConnBudget>,
    /// Set when a server socket could not be had for lack of fds: waiting
    /// clients are not served before then (or before a pair closes).
    fds_short_until: Option<Instant>,
    /// One fd held in reserve for a server socket when the process runs
    /// out (see `accept.rs`); -1 while given up.
    spare_fd: RawFd,
    timeouts: Timeouts,
    forward: ForwardMode,
    recv_limit: bool,
    connect_timeout: Box<Timespec>,
    timers: TimerWheel<Timer>,
    expired: Vec<Timer>,
    /// The one retry timer for waiting clients and paused listeners.
    retry_timer: Option<TimerKey>,
    /// The ring timeout that wakes the loop for the wheel: its duration,
    /// the instant it was armed for, and its arming's sequence number.
    wake_ts: Box<Timespec>,
    wake_armed: Option<Instant>,
    wake_seq: u32,
    /// A timer was armed since the wake-up timeout was last looked at.
    timers_changed: bool,
    log: LogLimiter,
    log_timer: Option<TimerKey>,
    commands: Arc<ArrayQueue<Command>>,
    wake: RawFd,
    wake_buf: Box<u64>,
    /// Directions waiting for a provided buffer: (slot, generation, dir).
    /// Woken by the loop once a handler has returned, never from inside
    /// the give-back that freed the buffer.
    buffer_waiters: VecDeque<(u32, u32, usize)>,
    completions: Vec<Completion>,
    now: Instant,
    /// Set by `Command::Stop`: when open pairs are aborted.
    stop_deadline: Option<Instant>,
    /// The first submission error: the ring cannot go on.
    fatal: Option<std::io::Error>,
    /// A pair was freed by the handler that just ran: the loop then serves
    /// waiting clients and resumes listeners.
    pair_freed: bool,
    counters: Counters,
    stats: Arc<ShardStats>,
    /// The access log's queue for this shard (`access_log/`), when on.
    access_log: Option<AccessQueue>,
    /// `send_proxy`: the header being written (kept to reuse its
    /// allocation), and what unique IDs are made of.
    proxy_out: Vec<u8>,
    proxy_boot: u64,
    proxy_seq: u64,
    id: usize,
}

fn timespec(d: Duration) -> Box<Timespec> {
    Box::new(Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos()))
}

impl Shard {
    /// Builds the shard's ring and buffers; call on the shard's own thread
    /// (the ring is single-issuer). On error, the listening fds are closed.
    pub fn new(spec: ShardSpec) -> Result<(Shard, RingFlags), ShardInitError> {
        let close_listeners = || {
            spec.listeners
                .iter()
                .filter_map(|l| l.fd)
                .for_each(close_fd)
        };
        let (ring, flags) = Ring::new(SQ_ENTRIES).inspect_err(|_| close_listeners())?;
        let buffers = BufferRing::register(ring.io_uring(), spec.buffers, spec.buffer_size)
            .map_err(ShardInitError::Buffers)
            .inspect_err(|_| close_listeners())?;
        let balancers = spec.pools.pools.iter().map(balance::for_pool).collect();
        let local_active = spec
            .pools
            .pools
            .iter()
            .map(|p| vec![0; p.servers.len()])
            .collect();
        let now = Instant::now();
        let pools = spec.pools.pools.len();
        let shards = spec.mesh.shards();
        spec.mesh.set_ring_fd(spec.id, ring.io_uring().as_raw_fd());
        Ok((
            Shard {
                ring,
                buffers: Some(buffers),
                pipes: PipePool::new(spec.pipes, spec.pipe_size),
                pairs: Slab::default(),
                free: Vec::new(),
                pools: spec.pools,
                epoch: 0,
                balancers,
                local_active,
                retired: Vec::new(),
                listeners: spec
                    .listeners
                    .into_iter()
                    .map(|l| Listener::new(l, shards))
                    .collect(),
                listener_counts_changed: false,
                waiting: VecDeque::new(),
                lease_queues: spec.lease_queues,
                store_waker: spec.store_waker,
                lease_waiters: HashMap::new(),
                queues: vec![VecDeque::new(); pools],
                queue_dirty: vec![false; pools],
                queue_any_dirty: false,
                queue_poll: None,
                mesh: spec.mesh,
                budget: spec.budget,
                fds_short_until: None,
                spare_fd: accept::open_spare_fd(),
                timeouts: spec.timeouts,
                forward: spec.forward,
                recv_limit: spec.recv_limit,
                connect_timeout: timespec(spec.timeouts.connect),
                timers: TimerWheel::new(TIMER_TICK, now),
                expired: Vec::new(),
                retry_timer: None,
                wake_ts: timespec(Duration::ZERO),
                wake_armed: None,
                wake_seq: 0,
                timers_changed: false,
                log: LogLimiter::default(),
                log_timer: None,
                commands: spec.commands,
                wake: spec.wake,
                wake_buf: Box::new(0),
                buffer_waiters: VecDeque::new(),
                completions: Vec::with_capacity(1024),
                now,
                stop_deadline: None,
                fatal: None,
                pair_freed: false,
                counters: Counters::default(),
                stats: spec.stats,
                access_log: spec.access_log,
                proxy_out: Vec::with_capacity(256),
                proxy_boot: rand::random(),
                proxy_seq: 0,
                id: spec.id,
            },
            flags,
        ))
    }

    /// The buffer ring (present for the shard's whole working life).
    fn buffers(&mut self) -> &mut BufferRing {
        self.buffers
            .as_mut()
            .expect("the buffer ring lives as long as the loop")
    }

    /// Queues submissions together (a linked chain is never split). A
    /// failure means the ring cannot go on: it is recorded for the loop,
    /// which ends the shard.
    ///
    /// # Safety
    /// Every pointer in the entries must stay valid until its completion.
    unsafe fn push(&mut self, entries: &[squeue::Entry]) {
        if self.fatal.is_some() {
            return;
        }
        // SAFETY: forwarded from the caller's contract.
        if let Err(e) = unsafe { self.ring.push_all(entries) } {
            self.fatal = Some(e);
        }
    }

    fn publish(&mut self) {
        if let Some(b) = &self.buffers {
            self.counters.buffers_in_use = b.in_use() as u64;
        }
        self.counters.pipes = self.pipes.created() as u64;
        self.stats.publish(&self.counters);
        if std::mem::take(&mut self.listener_counts_changed) {
            // A removed listener's figures are no longer shown anywhere.
            for l in self.listeners.iter().filter(|l| !l.removed) {
                l.publish(self.id);
            }
        }
    }
}
