//! The checker's loop: one io_uring drives every server's checks. A check
//! is a non-blocking socket, a connect with a linked timeout and, for
//! `http`, a send and reads (each with a linked timeout for what is left of
//! the check's time) until the status line is in. States and transitions
//! are drawn in `LIFECYCLE.md` beside this file.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::opcode;
use io_uring::squeue::{Entry, Flags};
use io_uring::types::{CancelBuilder, Fd, Timespec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use socket2::{Domain, Socket, Type};
use uring_kit::{Completion, Ring, Token};

use super::probe::{self, Status};
use super::rise_fall::{RiseFall, Transition};
use crate::config::{CheckConfig, CheckKind};
use crate::net::close_fd;
use crate::pool::Pools;

/// The longest the loop sleeps, so that a stop is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Bytes an HTTP check reads for its status line.
const READ_BUF: usize = 1024;

const OP_CONNECT: u8 = 1;
const OP_SEND: u8 = 2;
const OP_RECV: u8 = 3;
const OP_TIMEOUT: u8 = 4;

/// Where one server's check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for its next check.
    Idle,
    Connecting,
    /// `sent` bytes of the request are out.
    Sending {
        sent: usize,
    },
    /// `read` bytes of the answer are in.
    Receiving {
        read: usize,
    },
}

/// One server under check.
struct Target {
    pool: usize,
    server: usize,
    cfg: CheckConfig,
    health: RiseFall,
    phase: Phase,
    fd: RawFd,
    /// When the current (or last) check started, and its deadline.
    started: Instant,
    deadline: Instant,
    /// Bumped for every check, so a late completion of an earlier one is
    /// recognised.
    generation: u32,
    request: Vec<u8>,
    buf: Box<[u8; READ_BUF]>,
    /// The linked timeout's duration (the kernel copies it when the
    /// submission is read; boxed so its address is stable until then).
    timeout: Box<Timespec>,
}

pub struct Loop {
    ring: Ring,
    pools: Arc<Pools>,
    targets: Vec<Target>,
    /// (when, target): the next check of each idle target.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    rng: SmallRng,
    stop: Arc<AtomicBool>,
    last_socket_warning: Option<Instant>,
}

/// Why a check failed, as the log says it.
fn reason(errno: i32) -> String {
    match errno {
        libc::ECANCELED | libc::ETIME => "timeout".into(),
        libc::ECONNREFUSED => "connection refused".into(),
        e => std::io::Error::from_raw_os_error(e).to_string(),
    }
}

impl Loop {
    /// The targets of every pool with checks (servers with `check = false`
    /// left out), their first checks spread over one interval.
    pub fn new(ring: Ring, pools: Arc<Pools>, stop: Arc<AtomicBool>) -> Loop {
        let mut rng = SmallRng::from_os_rng();
        let mut targets = Vec::new();
        let mut due = BinaryHeap::new();
        let now = Instant::now();
        for (pi, pool) in pools.pools.iter().enumerate() {
            let Some(cfg) = &pool.policy.check else {
                continue;
            };
            for (si, server) in pool.servers.iter().enumerate() {
                if !server.check {
                    continue;
                }
                let first = cfg.interval.mul_f64(rng.random::<f64>());
                due.push(Reverse((now + first, targets.len())));
                targets.push(Target {
                    pool: pi,
                    server: si,
                    cfg: cfg.clone(),
                    health: RiseFall::resume(
                        !server.live.has_flag(crate::pool::HEALTH_DOWN),
                        server.live.check_streak.load(Ordering::Relaxed),
                    ),
                    phase: Phase::Idle,
                    fd: -1,
                    started: now,
                    deadline: now,
                    generation: 0,
                    request: probe::request_to(cfg, server),
                    buf: Box::new([0; READ_BUF]),
                    timeout: Box::new(Timespec::new()),
                });
            }
        }
        Loop {
            ring,
            pools,
            targets,
            due,
            rng,
            stop,
            last_socket_warning: None,
        }
    }

    pub fn targets(&self) -> usize {
        self.targets.len()
    }

    /// Runs until the stop flag is set, or the ring fails: then every
    /// server the checks marked down is put back in service (a checker that
    /// cannot run must not keep servers out), and the error is returned.
    pub fn run(mut self) -> std::io::Result<()> {
        let result = self.run_loop();
        if result.is_err() {
            self.fail_open();
        }
        // Nothing in the kernel may still point at a target's buffers when
        // they go: cancel what is in flight; if that is not confirmed, the
        // targets are leaked rather than freed.
        let cancelled = self
            .ring
            .io_uring()
            .submitter()
            .register_sync_cancel(None, CancelBuilder::any());
        for t in &self.targets {
            if t.fd >= 0 {
                close_fd(t.fd);
            }
        }
        match cancelled {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(_) => std::mem::forget(std::mem::take(&mut self.targets)),
        }
        result
    }

    /// Puts back in service every server the checks marked down.
    fn fail_open(&mut self) {
        for t in &self.targets {
            if !t.health.is_up() {
                let server = &self.pools.pools[t.pool].servers[t.server];
                server.live.set_flag(crate::pool::HEALTH_DOWN, false);
            }
        }
    }

    fn run_loop(&mut self) -> std::io::Result<()> {
        let mut batch: Vec<Completion> = Vec::with_capacity(256);
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            while let Some(&Reverse((at, t))) = self.due.peek() {
                if at > now {
                    break;
                }
                self.due.pop();
                self.start(t, now)?;
            }
            let sleep = self
                .due
                .peek()
                .map_or(MAX_SLEEP, |Reverse((at, _))| {
                    at.saturating_duration_since(now)
                })
                .min(MAX_SLEEP);
            self.ring.submit_and_wait(1, Some(sleep))?;
            batch.clear();
            self.ring.reap(&mut batch);
            for c in &batch {
                self.complete(*c)?;
            }
        }
        Ok(())
    }

    fn push(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        // SAFETY: every pointer in `entries` points into a boxed buffer of
        // a target that lives as long as the loop, and a target is not
        // reused before its operation has completed (see `complete`).
        unsafe { self.ring.push_all(entries) }
    }

    fn tag(t: usize, generation: u32, op: u8) -> u64 {
        Token::new(op, t as u32, generation, 0).encode()
    }

    /// Submits `op` for target `t`, linked to a timeout for what is left of
    /// its check's time.
    fn with_timeout(&mut self, t: usize, op: Entry, code: u8) -> std::io::Result<()> {
        let target = &mut self.targets[t];
        let left = target.deadline.saturating_duration_since(Instant::now());
        *target.timeout = Timespec::new()
            .sec(left.as_secs())
            .nsec(left.subsec_nanos());
        let generation = target.generation;
        let op = op
            .flags(Flags::IO_LINK)
            .user_data(Self::tag(t, generation, code));
        let timeout = opcode::LinkTimeout::new(&*target.timeout)
            .build()
            .user_data(Self::tag(t, generation, OP_TIMEOUT));
        self.push(&[op, timeout])
    }

    fn start(&mut self, t: usize, now: Instant) -> std::io::Result<()> {
        let (pi, si) = (self.targets[t].pool, self.targets[t].server);
        let addr = self.pools.pools[pi].servers[si].addr;
        if self.pools.pools[pi].servers[si]
            .live
            .has_flag(crate::pool::MAINT)
        {
            // Checks pause during maintenance; the last verdict stands.
            self.schedule(t, now);
            return Ok(());
        }
        let target = &mut self.targets[t];
        target.generation = uring_kit::token::next_generation(target.generation);
        target.started = now;
        target.deadline = now + target.cfg.timeout;
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            None,
        );
        let fd = match socket {
            Ok(s) => s.into_raw_fd(),
            Err(e) => {
                // Out of fds is ringlb's problem, not the server's: try
                // later (logged at most once a minute).
                let quiet = Duration::from_secs(60);
                if self.last_socket_warning.is_none_or(|at| now - at >= quiet) {
                    self.last_socket_warning = Some(now);
                    tracing::warn!(
                        pool = %self.pools.pools[pi].name,
                        server = %self.pools.pools[pi].servers[si].name,
                        "cannot create a check socket: {e}; checks wait"
                    );
                }
                self.schedule(t, now);
                return Ok(());
            }
        };
        target.fd = fd;
        target.phase = Phase::Connecting;
        let server = &self.pools.pools[pi].servers[si];
        let connect = opcode::Connect::new(
            Fd(fd),
            server.sockaddr.as_ptr().cast(),
            server.sockaddr.len(),
        )
        .build();
        self.with_timeout(t, connect, OP_CONNECT)
    }

    fn complete(&mut self, c: Completion) -> std::io::Result<()> {
        let token = Token::decode(c.user_data);
        let t = token.slot as usize;
        if token.op == OP_TIMEOUT || t >= self.targets.len() {
            return Ok(());
        }
        if token.generation != self.targets[t].generation || self.targets[t].phase == Phase::Idle {
            return Ok(());
        }
        let fd = self.targets[t].fd;
        match (token.op, self.targets[t].phase) {
            (OP_CONNECT, Phase::Connecting) => {
                if c.result < 0 {
                    return self.verdict(t, Err(reason(-c.result)));
                }
                match self.targets[t].cfg.kind {
                    CheckKind::Tcp => self.verdict(t, Ok(())),
                    CheckKind::Http => self.send(t, fd, 0),
                }
            }
            (OP_SEND, Phase::Sending { sent }) => {
                if c.result < 0 {
                    return self.verdict(t, Err(reason(-c.result)));
                }
                let sent = sent + c.result as usize;
                if sent < self.targets[t].request.len() {
                    self.send(t, fd, sent)
                } else {
                    self.recv(t, fd, 0)
                }
            }
            (OP_RECV, Phase::Receiving { read }) => {
                if c.result < 0 {
                    return self.verdict(t, Err(reason(-c.result)));
                }
                let read = read + c.result as usize;
                let target = &self.targets[t];
                match probe::status(&target.buf[..read]) {
                    Status::Code(code) if target.cfg.expect.accepts(code) => {
                        self.verdict(t, Ok(()))
                    }
                    Status::Code(code) => self.verdict(t, Err(format!("status {code}"))),
                    Status::Malformed => self.verdict(t, Err("not an HTTP response".into())),
                    Status::Partial if c.result == 0 => {
                        self.verdict(t, Err("closed before a status line".into()))
                    }
                    Status::Partial if read == READ_BUF => {
                        self.verdict(t, Err("no status line".into()))
                    }
                    Status::Partial => self.recv(t, fd, read),
                }
            }
            _ => Ok(()),
        }
    }

    fn send(&mut self, t: usize, fd: RawFd, sent: usize) -> std::io::Result<()> {
        let target = &mut self.targets[t];
        target.phase = Phase::Sending { sent };
        let rest = &target.request[sent..];
        let op = opcode::Send::new(Fd(fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.with_timeout(t, op, OP_SEND)
    }

    fn recv(&mut self, t: usize, fd: RawFd, read: usize) -> std::io::Result<()> {
        let target = &mut self.targets[t];
        target.phase = Phase::Receiving { read };
        let rest = &mut target.buf[read..];
        let op = opcode::Recv::new(Fd(fd), rest.as_mut_ptr(), rest.len() as u32).build();
        self.with_timeout(t, op, OP_RECV)
    }

    /// The check of target `t` is over: close its socket, record the
    /// result, apply a change of state, schedule the next check.
    fn verdict(&mut self, t: usize, result: Result<(), String>) -> std::io::Result<()> {
        let target = &mut self.targets[t];
        close_fd(target.fd);
        target.fd = -1;
        target.phase = Phase::Idle;
        let (rise, fall) = (target.cfg.rise, target.cfg.fall);
        let change = target.health.record(result.is_ok(), rise, fall);
        let pool = &self.pools.pools[target.pool];
        let server = &pool.servers[target.server];
        server
            .live
            .check_streak
            .store(target.health.streak(), Ordering::Relaxed);
        match change {
            Some(Transition::Down) => {
                server.live.set_flag(crate::pool::HEALTH_DOWN, true);
                tracing::warn!(
                    pool = %pool.name,
                    server = %server.name,
                    addr = %server.addr,
                    "server DOWN: {} ({fall} failed check(s) in a row)",
                    result.as_ref().err().map_or("", String::as_str)
                );
            }
            Some(Transition::Up) => {
                // Back in service: slow start begins now.
                server
                    .live
                    .outlier
                    .mark_returned(crate::clock::millis(Instant::now()));
                server.live.set_flag(crate::pool::HEALTH_DOWN, false);
                tracing::warn!(
                    pool = %pool.name,
                    server = %server.name,
                    addr = %server.addr,
                    "server UP ({rise} successful check(s) in a row)"
                );
            }
            None => {}
        }
        // From the check's start: a check's own length does not stretch the
        // period.
        let started = self.targets[t].started;
        self.schedule(t, started);
        Ok(())
    }

    /// Schedules target `t`'s next check one interval (± jitter) after
    /// `from`.
    fn schedule(&mut self, t: usize, from: Instant) {
        let cfg = &self.targets[t].cfg;
        let jitter = f64::from(cfg.jitter_permille) / 1000.0;
        let factor = 1.0 + jitter * (2.0 * self.rng.random::<f64>() - 1.0);
        self.due
            .push(Reverse((from + cfg.interval.mul_f64(factor), t)));
    }
}
