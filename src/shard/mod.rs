//! A shard: one pinned thread that owns one io_uring, its own listening
//! socket per listener (SO_REUSEPORT), its own connection table, buffer ring
//! and pipe pool. Nothing here is shared with other shards but the pools'
//! live counters and a command queue from the control side.
//!
//! The loop is: submit what is queued and wait for at least one completion
//! (one `io_uring_enter`), handle every completion, publish counters.

mod buffers;
mod close;
mod conn;
mod connect;
mod forward;
mod pipes;
pub mod ring;
mod slab;
mod stats;
mod token;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use io_uring::types::{CancelBuilder, Fd, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use crate::balance::{self, Balancer};
use crate::config::{ForwardMode, Timeouts};
use crate::net::close_fd;
use crate::pool::Pools;
use buffers::BufferRing;
use conn::{Conn, ConnState};
use pipes::PipePool;
pub use ring::{RingError, RingFlags};
use slab::Slab;
pub use stats::{Counters, ShardStats};
use token::{Op, Token};

/// What the control side can ask of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop accepting, let open pairs finish for up to `grace`, abort the
    /// rest, and end the thread.
    Stop { grace: Duration },
}

/// The control side's end of a shard: its command queue, the eventfd that
/// wakes it, and its published counters.
pub struct ShardLink {
    pub commands: Arc<ArrayQueue<Command>>,
    pub wake: RawFd,
    pub stats: Arc<ShardStats>,
}

impl ShardLink {
    /// Queues `cmd` and wakes the shard. Returns false when the queue is full.
    pub fn send(&self, cmd: Command) -> bool {
        if self.commands.push(cmd).is_err() {
            return false;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        unsafe { libc::write(self.wake, (&one as *const u64).cast(), 8) };
        true
    }
}

/// Everything a shard thread is started with.
pub struct ShardSpec {
    pub id: usize,
    /// This shard's listening fd for each listener, and the pool it feeds.
    pub listeners: Vec<(RawFd, usize)>,
    pub pools: Arc<Pools>,
    pub timeouts: Timeouts,
    pub forward: ForwardMode,
    pub buffer_size: usize,
    pub buffers: usize,
    pub pipes: usize,
    pub pipe_size: usize,
    pub commands: Arc<ArrayQueue<Command>>,
    pub wake: RawFd,
    pub stats: Arc<ShardStats>,
}

struct Listener {
    fd: RawFd,
    pool: usize,
    /// A multishot accept is in flight.
    armed: bool,
    /// Accepting paused (fd or memory exhaustion) until then.
    paused_until: Option<Instant>,
}

pub struct Shard {
    // Declared first so it is dropped first: the kernel must be done with the
    // buffer ring, the eventfd buffer and the timespecs before they go.
    ring: IoUring,
    buffers: BufferRing,
    pipes: PipePool,
    conns: Slab,
    free: Vec<u32>,
    pools: Arc<Pools>,
    balancers: Vec<Box<dyn Balancer>>,
    /// This shard's exact count of its own pairs per pool and server; the
    /// servers' live atomics hold the sum over shards.
    local_active: Vec<Vec<u32>>,
    listeners: Vec<Listener>,
    timeouts: Timeouts,
    forward: ForwardMode,
    connect_timeout: Box<Timespec>,
    tick: Box<Timespec>,
    commands: Arc<ArrayQueue<Command>>,
    wake: RawFd,
    wake_buf: Box<u64>,
    /// Directions waiting for a provided buffer: (slot, generation, dir).
    waiting_buffer: VecDeque<(u32, u32, usize)>,
    completions: Vec<(u64, i32, u32)>,
    /// Completions reaped while submitting (completion queue full), handled
    /// after the batch in progress.
    deferred: VecDeque<(u64, i32, u32)>,
    now: Instant,
    /// Set by `Command::Stop`: when open pairs are aborted.
    stop_deadline: Option<Instant>,
    counters: Counters,
    stats: Arc<ShardStats>,
    id: usize,
}

/// How long past the stop deadline a shard waits for aborted pairs'
/// completions before it exits anyway.
const STOP_ESCAPE: Duration = Duration::from_secs(2);

fn timespec(d: Duration) -> Box<Timespec> {
    Box::new(Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos()))
}

impl Shard {
    /// Builds the shard's ring and buffers; call on the shard's own thread
    /// (the ring is single-issuer).
    pub fn new(spec: ShardSpec) -> Result<(Shard, RingFlags), crate::runtime::StartError> {
        let close_listeners = || spec.listeners.iter().for_each(|&(fd, _)| close_fd(fd));
        let (ring, flags) = ring::build().inspect_err(|_| close_listeners())?;
        let buffers = BufferRing::register(&ring, spec.buffers, spec.buffer_size)
            .map_err(crate::runtime::StartError::Buffers)
            .inspect_err(|_| close_listeners())?;
        let min_idle = spec.timeouts.client_idle.min(spec.timeouts.server_idle);
        let tick_every =
            (min_idle / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let balancers = spec.pools.pools.iter().map(balance::for_pool).collect();
        let local_active = spec
            .pools
            .pools
            .iter()
            .map(|p| vec![0; p.servers.len()])
            .collect();
        Ok((
            Shard {
                ring,
                buffers,
                pipes: PipePool::new(spec.pipes, spec.pipe_size),
                conns: Slab::default(),
                free: Vec::new(),
                pools: spec.pools,
                balancers,
                local_active,
                listeners: spec
                    .listeners
                    .into_iter()
                    .map(|(fd, pool)| Listener {
                        fd,
                        pool,
                        armed: false,
                        paused_until: None,
                    })
                    .collect(),
                timeouts: spec.timeouts,
                forward: spec.forward,
                connect_timeout: timespec(spec.timeouts.connect),
                tick: timespec(tick_every),
                commands: spec.commands,
                wake: spec.wake,
                wake_buf: Box::new(0),
                waiting_buffer: VecDeque::new(),
                completions: Vec::with_capacity(1024),
                deferred: VecDeque::new(),
                now: Instant::now(),
                stop_deadline: None,
                counters: Counters::default(),
                stats: spec.stats,
                id: spec.id,
            },
            flags,
        ))
    }

    /// Queues one submission, flushing the queue to the kernel when full.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until its completion.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        self.push_all(&[entry]);
    }

    /// Queues submissions together (a linked chain is never split).
    ///
    /// # Safety
    /// As [`Shard::push`].
    unsafe fn push_all(&mut self, entries: &[squeue::Entry]) {
        loop {
            // SAFETY: forwarded from the caller's contract.
            if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EINTR) {
                    panic!("io_uring submit failed: {e}");
                }
                // The completion queue is full: move completions aside to
                // make room. They are handled after the current batch, in
                // order, never in the middle of the handler that is running.
                for cqe in self.ring.completion() {
                    self.deferred
                        .push_back((cqe.user_data(), cqe.result(), cqe.flags()));
                }
            }
        }
    }

    fn arm_accept(&mut self, l: usize) {
        let listener = &mut self.listeners[l];
        if listener.fd < 0 || listener.armed {
            return;
        }
        listener.armed = true;
        let flags = if self.forward == ForwardMode::SpliceRing {
            libc::SOCK_CLOEXEC
        } else {
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK
        };
        let entry = opcode::AcceptMulti::new(Fd(listener.fd))
            .flags(flags)
            .build()
            .user_data(Token::new(Op::Accept, l as u32, 0, 0).encode());
        // SAFETY: no pointers; the listening fd stays open until this
        // request has completed without F_MORE.
        unsafe { self.push(entry) };
    }

    fn arm_tick(&mut self) {
        let entry = opcode::Timeout::new(&*self.tick)
            .build()
            .user_data(Token::new(Op::Tick, 0, 0, 0).encode());
        // SAFETY: the timespec is boxed in the shard, which outlives the ring.
        unsafe { self.push(entry) };
    }

    fn arm_commands(&mut self) {
        let entry = opcode::Read::new(Fd(self.wake), (&mut *self.wake_buf as *mut u64).cast(), 8)
            .build()
            .user_data(Token::new(Op::Command, 0, 0, 0).encode());
        // SAFETY: the 8-byte buffer is boxed in the shard, dropped after the ring.
        unsafe { self.push(entry) };
    }

    /// Runs the shard until it is told to stop.
    pub fn run(mut self) {
        for l in 0..self.listeners.len() {
            self.arm_accept(l);
        }
        self.arm_tick();
        self.arm_commands();
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
                Err(e) => {
                    tracing::error!(
                        shard = self.id,
                        "io_uring_enter failed: {e}; stopping shard"
                    );
                    break;
                }
            }
            self.now = Instant::now();
            self.reap();
            let batch = std::mem::take(&mut self.completions);
            for &(user_data, result, flags) in &batch {
                self.dispatch(user_data, result, flags);
            }
            self.completions = batch;
            while let Some((user_data, result, flags)) = self.deferred.pop_front() {
                self.dispatch(user_data, result, flags);
            }
            self.publish();
            if let Some(deadline) = self.stop_deadline {
                if self.counters.active == 0 {
                    break;
                }
                if self.now > deadline + STOP_ESCAPE {
                    tracing::warn!(
                        shard = self.id,
                        pairs = self.counters.active,
                        "pairs still closing after the stop deadline; leaving them to the final cancel"
                    );
                    break;
                }
            }
        }
        self.publish();
        // Hand the last closes to the kernel, then cancel what is left (the
        // tick, the eventfd read, accepts) synchronously, so nothing in the
        // kernel still points at this shard's memory when it is dropped.
        if let Err(e) = self.ring.submit() {
            tracing::warn!(shard = self.id, "final submit failed: {e}");
        }
        if let Err(e) = self
            .ring
            .submitter()
            .register_sync_cancel(None, CancelBuilder::any())
        {
            tracing::debug!(shard = self.id, "final cancel: {e}");
        }
        for l in &mut self.listeners {
            close_fd(l.fd);
            l.fd = -1;
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    fn reap(&mut self) {
        self.completions.clear();
        for cqe in self.ring.completion() {
            self.completions
                .push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
    }

    fn publish(&mut self) {
        self.counters.buffers_in_use = self.buffers.in_use() as u64;
        self.counters.pipes = self.pipes.created() as u64;
        self.stats.publish(&self.counters);
    }

    fn dispatch(&mut self, user_data: u64, result: i32, flags: u32) {
        let Some(token) = Token::decode(user_data) else {
            tracing::error!(
                shard = self.id,
                user_data,
                "completion with an unknown token"
            );
            return;
        };
        match token.op {
            Op::Accept => self.on_accept(token.slot as usize, result, flags),
            Op::Tick => self.on_tick(),
            Op::Command => self.on_command(),
            Op::Ignore => {}
            _ => self.on_conn_completion(token, result, flags),
        }
    }

    fn on_conn_completion(&mut self, token: Token, result: i32, flags: u32) {
        let slot = token.slot as usize;
        let conn = &mut self.conns[slot];
        debug_assert!(conn.generation == token.generation && conn.state != ConnState::Free);
        if conn.generation != token.generation || conn.state == ConnState::Free {
            // Cannot happen while every submission is counted in `inflight`;
            // still, never leak a buffer.
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.buffers.taken();
                self.give_back_buffer(bid);
            }
            return;
        }
        // A multishot operation stays in flight until a completion without F_MORE.
        if !cqueue::more(flags) {
            conn.inflight -= 1;
        }
        if conn.state == ConnState::Closing {
            self.drop_completion(slot, token, result, flags);
            self.maybe_finish(slot);
            return;
        }
        match token.op {
            Op::Connect => self.on_connect(slot, result),
            Op::ConnectTimeout | Op::Cancel => {}
            Op::Recv => self.on_recv(slot, token.dir, result, flags),
            Op::Send => self.on_send(slot, token.dir, result),
            Op::PollIn | Op::PollOut => self.on_poll(slot, token.dir, result),
            Op::SpliceIn => self.on_ring_splice_in(slot, token.dir, result),
            Op::SpliceOut => self.on_ring_splice_out(slot, token.dir, result),
            Op::Accept | Op::Tick | Op::Command | Op::Ignore => unreachable!(),
        }
    }

    fn on_accept(&mut self, l: usize, result: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more {
            self.listeners[l].armed = false;
        }
        if result >= 0 {
            if self.stop_deadline.is_some() {
                close_fd(result);
            } else {
                self.open(l, result);
            }
        } else {
            let err = -result;
            match err {
                libc::ECANCELED if self.stop_deadline.is_some() => {}
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    tracing::warn!(
                        shard = self.id,
                        "accept: {}; pausing accepts for 100ms",
                        std::io::Error::from_raw_os_error(err)
                    );
                    self.listeners[l].paused_until = Some(self.now + Duration::from_millis(100));
                    if more {
                        self.cancel_accept(l);
                    }
                    return;
                }
                _ => tracing::debug!(
                    shard = self.id,
                    "accept: {}",
                    std::io::Error::from_raw_os_error(err)
                ),
            }
        }
        if !more && self.stop_deadline.is_none() && self.listeners[l].paused_until.is_none() {
            self.arm_accept(l);
        }
    }

    fn cancel_accept(&mut self, l: usize) {
        let target = Token::new(Op::Accept, l as u32, 0, 0).encode();
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(Token::new(Op::Ignore, 0, 0, 0).encode());
        // SAFETY: no pointers.
        unsafe { self.push(entry) };
    }

    fn on_tick(&mut self) {
        self.arm_tick();
        let now = self.now;
        for l in 0..self.listeners.len() {
            if self.listeners[l].paused_until.is_some_and(|t| t <= now) && !self.listeners[l].armed
            {
                self.listeners[l].paused_until = None;
                if self.stop_deadline.is_none() {
                    self.arm_accept(l);
                }
            }
        }
        // Backstop: buffers free while directions wait for one (a woken
        // waiter may have closed without taking its buffer).
        let free = self.buffers.count() - self.buffers.in_use();
        if free > 0 && !self.waiting_buffer.is_empty() {
            self.wake_buffer_waiters(free);
        }
        let force = self.stop_deadline.is_some_and(|t| t <= now);
        let (client_idle, server_idle) = (self.timeouts.client_idle, self.timeouts.server_idle);
        for slot in 0..self.conns.len() {
            let c = &self.conns[slot];
            if force && matches!(c.state, ConnState::Connecting | ConnState::Forwarding) {
                self.abort(slot);
            } else if c.state == ConnState::Forwarding
                && (now.duration_since(c.client_seen) >= client_idle
                    || now.duration_since(c.server_seen) >= server_idle)
            {
                self.counters.idle_timeouts += 1;
                self.close(slot);
            }
        }
    }

    fn on_command(&mut self) {
        self.arm_commands();
        while let Some(cmd) = self.commands.pop() {
            match cmd {
                Command::Stop { grace } => {
                    if self.stop_deadline.is_none() {
                        tracing::debug!(shard = self.id, ?grace, "stopping");
                        self.stop_deadline = Some(self.now + grace);
                        for l in 0..self.listeners.len() {
                            if self.listeners[l].armed {
                                self.cancel_accept(l);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Takes a new client connection into a free slot and starts its connect.
    fn open(&mut self, l: usize, client: RawFd) {
        let slot = match self.free.pop() {
            Some(s) => s as usize,
            None => self.conns.push(Conn::free(0, self.now)),
        };
        let mode = match self.forward {
            ForwardMode::Copy | ForwardMode::Auto => conn::DirMode::Copy,
            ForwardMode::Splice => conn::DirMode::Splice,
            ForwardMode::SpliceRing => conn::DirMode::SpliceRing,
        };
        let generation = self.conns[slot].generation;
        let mut c = Conn::free(generation, self.now);
        c.state = ConnState::Connecting;
        c.client = client;
        c.pool = self.listeners[l].pool;
        c.dirs[0].mode = mode;
        c.dirs[1].mode = mode;
        self.conns[slot] = c;
        self.counters.accepted += 1;
        self.counters.active += 1;
        self.connect(slot);
    }
}
