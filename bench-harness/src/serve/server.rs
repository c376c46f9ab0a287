//! One server thread: accepts on the shared listener and serves its
//! connections over its own io_uring ring (`uring_kit::Ring`, with a
//! `uring_kit::Token` in every `user_data`). A connection alternates between
//! receiving and sending (never both), so its buffers are touched by at most
//! one operation at a time; a 50 ms tick checks the stop flag.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use io_uring::opcode;
use io_uring::squeue::Entry;
use io_uring::types::{Fd, TimeoutFlags, Timespec};
use socket2::Socket;
use uring_kit::{Completion, Ring, Token};

use super::http::{self, RequestState};
use super::{Mode, ServeError, ServerShared};
use crate::clock::{now_ns, timespec};

const OP_ACCEPT: u8 = 1;
const OP_RECV: u8 = 2;
const OP_SEND: u8 = 3;
const OP_TIMER: u8 = 4;
const OP_CANCEL: u8 = 5;
const OP_TICK: u8 = 6;
const NO_SLOT: usize = u32::MAX as usize;
const TICK_NS: u64 = 50_000_000;

/// The `user_data` of operation `op` on slot `slot` of generation `gen`.
fn ud(slot: usize, gen: u32, op: u8) -> u64 {
    Token::new(op, slot as u32, gen, 0).encode()
}

struct SConn {
    sock: Socket,
    gen: u32,
    buf: Box<[u8]>,
    filled: usize,
    out: Vec<u8>,
    out_sent: usize,
    /// Close once `out` is sent.
    close_after: bool,
    closing: bool,
    inflight: u32,
    timer: Box<Timespec>,
    timer_pending: bool,
    req: RequestState,
}

struct Server {
    ring: Ring,
    sh: Arc<ServerShared>,
    conns: Vec<Option<Box<SConn>>>,
    free: Vec<usize>,
    gens: Vec<u32>,
    accept_pending: bool,
    tick: Box<Timespec>,
    tick_pending: bool,
    stopping: bool,
}

pub(crate) fn run(sh: Arc<ServerShared>) -> Result<(), ServeError> {
    let (ring, _) = Ring::new(1024)?;
    let mut s = Server {
        ring,
        sh,
        conns: Vec::new(),
        free: Vec::new(),
        gens: Vec::new(),
        accept_pending: false,
        tick: Box::new(Timespec::new()),
        tick_pending: false,
        stopping: false,
    };
    let r = s.drive();
    if r.is_err() && s.conns.iter().flatten().any(|c| c.inflight > 0) {
        // The kernel may still write into these buffers: never free them.
        std::mem::forget(std::mem::take(&mut s.conns));
    }
    Ok(r?)
}

impl Server {
    fn push(&mut self, e: Entry) -> io::Result<()> {
        // SAFETY: entries built here point into a boxed connection (buffer,
        // output vector, timespec) that is only freed once its `inflight`
        // count is zero and never reallocated while an operation is in
        // flight, into `self.tick`, or into the shared source buffer that the
        // `Arc` keeps alive.
        unsafe { self.ring.push(&e) }
    }

    fn drive(&mut self) -> io::Result<()> {
        self.arm_accept()?;
        self.arm_tick()?;
        let mut cqes: Vec<Completion> = Vec::with_capacity(1024);
        loop {
            let busy = self.accept_pending
                || self.tick_pending
                || self.conns.iter().flatten().any(|c| c.inflight > 0);
            if self.stopping && !busy {
                return Ok(());
            }
            self.ring.submit_and_wait(1, None)?;
            self.ring.reap(&mut cqes);
            for c in cqes.drain(..) {
                self.on_cqe(c)?;
            }
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        if self.stopping || self.accept_pending {
            return Ok(());
        }
        self.accept_pending = true;
        let e = opcode::Accept::new(
            Fd(self.sh.listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ud(NO_SLOT, 0, OP_ACCEPT));
        self.push(e)
    }

    fn arm_tick(&mut self) -> io::Result<()> {
        *self.tick = timespec(now_ns() + TICK_NS);
        self.tick_pending = true;
        let e = opcode::Timeout::new(&*self.tick)
            .flags(TimeoutFlags::ABS)
            .build()
            .user_data(ud(NO_SLOT, 0, OP_TICK));
        self.push(e)
    }

    fn on_cqe(&mut self, c: Completion) -> io::Result<()> {
        let t = Token::decode(c.user_data);
        let (slot, op) = (t.slot as usize, t.op);
        match op {
            OP_CANCEL => return Ok(()),
            OP_TICK => {
                self.tick_pending = false;
                if self.sh.stop.load(Ordering::Relaxed) {
                    self.begin_stop()?;
                } else {
                    self.arm_accept()?;
                    self.arm_tick()?;
                }
                return Ok(());
            }
            OP_ACCEPT => {
                self.accept_pending = false;
                return self.on_accept(c.result);
            }
            _ => {}
        }
        let Some(conn) = self.conns.get_mut(slot).and_then(|c| c.as_mut()) else {
            return Ok(());
        };
        if conn.gen != t.generation {
            return Ok(());
        }
        conn.inflight -= 1;
        if conn.closing {
            return self.maybe_free(slot);
        }
        match op {
            OP_RECV => self.on_recv(slot, c.result),
            OP_SEND => self.on_send(slot, c.result),
            OP_TIMER => {
                conn.timer_pending = false;
                self.send_out(slot)
            }
            _ => Ok(()),
        }
    }

    fn begin_stop(&mut self) -> io::Result<()> {
        self.stopping = true;
        if self.accept_pending {
            let e = opcode::AsyncCancel::new(ud(NO_SLOT, 0, OP_ACCEPT))
                .build()
                .user_data(ud(NO_SLOT, 0, OP_CANCEL));
            self.push(e)?;
        }
        for slot in 0..self.conns.len() {
            if self.conns[slot].is_some() {
                self.close(slot)?;
            }
        }
        Ok(())
    }

    fn on_accept(&mut self, res: i32) -> io::Result<()> {
        if res >= 0 {
            // SAFETY: a successful accept returns a new descriptor that
            // nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            if self.stopping {
                return Ok(());
            }
            let sock = Socket::from(fd);
            let _ = sock.set_tcp_nodelay(true);
            let counters = &self.sh.counters;
            counters.connections.fetch_add(1, Ordering::Relaxed);
            let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
            counters.peak.fetch_max(open, Ordering::Relaxed);
            let buf_size = match self.sh.cfg.mode {
                Mode::Sink { chunk } => chunk.max(1),
                Mode::Source { .. } => 1,
                _ => 16 * 1024,
            };
            let slot = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.conns.push(None);
                    self.gens.push(0);
                    self.conns.len() - 1
                }
            };
            self.gens[slot] = uring_kit::token::next_generation(self.gens[slot]);
            self.conns[slot] = Some(Box::new(SConn {
                sock,
                gen: self.gens[slot],
                buf: vec![0u8; buf_size].into_boxed_slice(),
                filled: 0,
                out: Vec::new(),
                out_sent: 0,
                close_after: false,
                closing: false,
                inflight: 0,
                timer: Box::new(Timespec::new()),
                timer_pending: false,
                req: RequestState::default(),
            }));
            if matches!(self.sh.cfg.mode, Mode::Source { .. }) {
                self.push_source(slot)?;
            } else {
                self.push_recv(slot)?;
            }
            self.arm_accept()
        } else if res == -libc::EMFILE || res == -libc::ENFILE || res == -libc::ENOMEM {
            // Out of descriptors: the tick re-arms accepting later.
            Ok(())
        } else {
            self.arm_accept()
        }
    }

    fn conn(&mut self, slot: usize) -> &mut SConn {
        self.conns[slot].as_mut().expect("live slot")
    }

    fn push_recv(&mut self, slot: usize) -> io::Result<()> {
        // A sink has no latency to keep: let each receive fill its buffer,
        // which saves completions and wake-ups.
        let flags = if matches!(self.sh.cfg.mode, Mode::Sink { .. }) {
            libc::MSG_WAITALL
        } else {
            0
        };
        let c = self.conn(slot);
        let room = &mut c.buf[c.filled..];
        let e = opcode::Recv::new(Fd(c.sock.as_raw_fd()), room.as_mut_ptr(), room.len() as u32)
            .flags(flags)
            .build()
            .user_data(ud(slot, c.gen, OP_RECV));
        c.inflight += 1;
        self.push(e)
    }

    fn push_source(&mut self, slot: usize) -> io::Result<()> {
        let (ptr, len) = (self.sh.source.as_ptr(), self.sh.source.len() as u32);
        let c = self.conn(slot);
        let e = opcode::Send::new(Fd(c.sock.as_raw_fd()), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(slot, c.gen, OP_SEND));
        c.inflight += 1;
        self.push(e)
    }

    fn on_recv(&mut self, slot: usize, res: i32) -> io::Result<()> {
        if res <= 0 {
            return self.close(slot);
        }
        let n = res as usize;
        self.sh
            .counters
            .bytes_in
            .fetch_add(n as u64, Ordering::Relaxed);
        match self.sh.cfg.mode {
            Mode::Sink { .. } | Mode::Source { .. } => self.push_recv(slot),
            Mode::Echo => {
                let c = self.conn(slot);
                c.out.clear();
                c.out.extend_from_slice(&c.buf[..n]);
                self.count_request();
                self.respond(slot)
            }
            Mode::Http { .. } => {
                let sh = self.sh.clone();
                let c = self.conn(slot);
                c.filled += n;
                c.out.clear();
                let p = http::process(&c.buf[..c.filled], &mut c.req, &sh.responses, &mut c.out);
                c.buf.copy_within(p.consumed..c.filled, 0);
                c.filled -= p.consumed;
                c.close_after = p.close;
                let full = c.filled == c.buf.len();
                let has_out = !c.out.is_empty();
                for _ in 0..p.requests {
                    self.count_request();
                }
                if has_out {
                    self.respond(slot)
                } else if full {
                    // A request head larger than the buffer.
                    self.close(slot)
                } else {
                    self.push_recv(slot)
                }
            }
        }
    }

    fn count_request(&self) {
        let n = self.sh.counters.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.sh.cfg.stall_once_after == Some(n) {
            let until = now_ns() + self.sh.cfg.stall.as_nanos() as u64;
            self.sh.stall_until.store(until, Ordering::Relaxed);
        }
    }

    /// Sends `out` now, or after the configured delay or the one-time stall.
    fn respond(&mut self, slot: usize) -> io::Result<()> {
        let now = now_ns();
        let at = (now + self.sh.cfg.delay.as_nanos() as u64)
            .max(self.sh.stall_until.load(Ordering::Relaxed));
        if at <= now {
            return self.send_out(slot);
        }
        let c = self.conn(slot);
        *c.timer = timespec(at);
        c.timer_pending = true;
        let e = opcode::Timeout::new(&*c.timer)
            .flags(TimeoutFlags::ABS)
            .build()
            .user_data(ud(slot, c.gen, OP_TIMER));
        c.inflight += 1;
        self.push(e)
    }

    fn send_out(&mut self, slot: usize) -> io::Result<()> {
        let c = self.conn(slot);
        c.out_sent = 0;
        let e = opcode::Send::new(Fd(c.sock.as_raw_fd()), c.out.as_ptr(), c.out.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(slot, c.gen, OP_SEND));
        c.inflight += 1;
        self.push(e)
    }

    fn on_send(&mut self, slot: usize, res: i32) -> io::Result<()> {
        if res < 0 {
            return self.close(slot);
        }
        let n = res as usize;
        self.sh
            .counters
            .bytes_out
            .fetch_add(n as u64, Ordering::Relaxed);
        if matches!(self.sh.cfg.mode, Mode::Source { .. }) {
            return self.push_source(slot);
        }
        let c = self.conn(slot);
        c.out_sent += n;
        if c.out_sent < c.out.len() {
            let rest = &c.out[c.out_sent..];
            let e = opcode::Send::new(Fd(c.sock.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(ud(slot, c.gen, OP_SEND));
            c.inflight += 1;
            return self.push(e);
        }
        if c.close_after {
            return self.close(slot);
        }
        self.push_recv(slot)
    }

    /// Starts closing a connection: interrupts its operations, frees it once
    /// they have completed.
    fn close(&mut self, slot: usize) -> io::Result<()> {
        let counters = &self.sh.counters;
        let c = self.conns[slot].as_deref_mut().expect("a live connection");
        if !c.closing {
            c.closing = true;
            counters.open.fetch_sub(1, Ordering::Relaxed);
            if c.inflight > 0 {
                let _ = c.sock.shutdown(Shutdown::Both);
                if c.timer_pending {
                    let e = opcode::TimeoutRemove::new(ud(slot, c.gen, OP_TIMER))
                        .build()
                        .user_data(ud(slot, c.gen, OP_CANCEL));
                    self.push(e)?;
                }
            }
        }
        self.maybe_free(slot)
    }

    fn maybe_free(&mut self, slot: usize) -> io::Result<()> {
        if self.conn(slot).inflight == 0 {
            self.conns[slot] = None;
            self.free.push(slot);
        }
        Ok(())
    }
}
