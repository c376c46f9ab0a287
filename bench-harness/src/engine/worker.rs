//! One load thread: the life of its share of the connections (connecting,
//! the open-loop schedule, timeouts, draining, the end of the run; see
//! `LIFECYCLE.md`) and their figures (counters, histograms, one-second
//! intervals), over one io_uring ring (`uring_kit::Ring`). What goes over a
//! connection is the workload's [`Protocol`]; nothing here depends on which
//! workload runs. Every operation's `user_data` is a `uring_kit::Token`
//! (operation, slot, generation). A 10 ms tick, the time limit of the ring
//! wait, checks deadlines, the end of the run and the stop flag; schedule
//! timers are absolute nanosecond timeouts.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use io_uring::opcode;
use io_uring::squeue::Entry;
use io_uring::types::{Fd, TimeoutFlags};
use socket2::{SockAddr, Socket, Type};
use uring_kit::token::next_generation;
use uring_kit::{Completion, Ring, RingError, Token};

use super::conn::{Conn, Phase, Req};
use super::protocol::{Protocol, Received, Step};
use crate::clock::{now_ns, timespec};
use crate::schedule::Schedule;
use crate::stats::{new_histogram, ns_to_us, ErrorKind, IntervalSample, Stats};

const OP_CONNECT: u8 = 1;
const OP_SEND: u8 = 2;
const OP_RECV: u8 = 3;
const OP_TIMER: u8 = 4;
const OP_CANCEL: u8 = 5;
const TICK_NS: u64 = 10_000_000;
const SECOND_NS: u64 = 1_000_000_000;
/// Submission slots per connection: a request's send and receive, a
/// continued send or a schedule timer, and a cancel.
const SQES_PER_CONN: u32 = 4;
/// The kernel refuses more than 65536 completion slots (without
/// IORING_SETUP_CLAMP), and the ring asks for four per submission slot.
const MAX_SQ_ENTRIES: u32 = 16384;

/// The `user_data` of operation `op` on slot `slot` of generation `gen`.
#[inline]
fn ud(slot: usize, gen: u32, op: u8) -> u64 {
    Token::new(op, slot as u32, gen, 0).encode()
}

/// Read-only settings shared by all threads of a run.
pub(crate) struct Shared {
    pub addr: SockAddr,
    pub rate: Option<f64>,
    pub connections: usize,
    pub timeout_ns: u64,
    pub start_ns: u64,
    pub measure_start: u64,
    pub end: Option<u64>,
    pub stop: Arc<AtomicBool>,
}

/// This thread's share of the run.
pub(crate) struct WorkerSpec {
    pub index: usize,
    pub first_conn: usize,
    pub conns: usize,
    pub budget: Option<u64>,
}

/// Which way counted bytes went.
#[derive(Clone, Copy)]
enum Way {
    Read,
    Written,
}

pub(crate) struct Worker<P: Protocol> {
    // Declared first so it is dropped first.
    ring: Ring,
    sh: Arc<Shared>,
    proto: Arc<P>,
    conns: Vec<Conn<P::State>>,
    stats: Stats,
    budget: Option<u64>,
    live: usize,
    stopping: bool,
    end: Option<u64>,
    next_tick: u64,
    index: usize,
    tx: Sender<IntervalSample>,
    ival_k: u64,
    ival_end: u64,
    ival_hist: Histogram<u64>,
    ival_completed: u64,
    ival_errors: u64,
    ival_bytes: u64,
    last_done: u64,
}

/// The socket of a slot, or -1 (the operation then fails with EBADF).
fn fd<S>(c: &Conn<S>) -> Fd {
    Fd(c.sock.as_ref().map_or(-1, |s| s.as_raw_fd()))
}

/// A send of `data` on slot `i`.
fn send_entry<S>(c: &Conn<S>, i: usize, data: &[u8]) -> Entry {
    opcode::Send::new(fd(c), data.as_ptr(), data.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(ud(i, c.gen, OP_SEND))
}

/// A receive into the room the protocol gives in slot `i`'s buffer.
fn recv_entry<P: Protocol>(proto: &P, c: &mut Conn<P::State>, i: usize) -> Entry {
    let fd = fd(c);
    let room = proto.room(&c.state, &mut c.buf);
    opcode::Recv::new(fd, room.as_mut_ptr(), room.len() as u32)
        .build()
        .user_data(ud(i, c.gen, OP_RECV))
}

impl<P: Protocol> Worker<P> {
    pub fn new(
        sh: Arc<Shared>,
        proto: Arc<P>,
        spec: WorkerSpec,
        tx: Sender<IntervalSample>,
    ) -> Result<Self, RingError> {
        let entries = u32::try_from(spec.conns)
            .unwrap_or(u32::MAX)
            .saturating_mul(SQES_PER_CONN)
            .saturating_add(64)
            .min(MAX_SQ_ENTRIES);
        let (ring, _) = Ring::new(entries)?;
        let buf_size = proto.recv_buffer_size();
        let conns = (0..spec.conns)
            .map(|k| {
                let g = spec.first_conn + k;
                let sched = sh
                    .rate
                    .map(|r| Schedule::new(sh.start_ns, r, sh.connections, g));
                Conn::new(buf_size, proto.new_state(), sched)
            })
            .collect();
        let ms = sh.measure_start;
        Ok(Worker {
            ring,
            end: sh.end,
            sh,
            proto,
            conns,
            stats: Stats::default(),
            budget: spec.budget,
            live: spec.conns,
            stopping: false,
            next_tick: 0,
            index: spec.index,
            tx,
            ival_k: 0,
            ival_end: ms + SECOND_NS,
            ival_hist: new_histogram(),
            ival_completed: 0,
            ival_errors: 0,
            ival_bytes: 0,
            last_done: ms,
        })
    }

    /// Runs until every connection is done; returns this thread's figures.
    pub fn run(mut self) -> io::Result<Stats> {
        let r = self.drive();
        if r.is_err() && self.conns.iter().any(|c| c.inflight > 0) {
            // The kernel may still read or write what these operations
            // point to (buffers, the address, the bytes sent): never free it.
            std::mem::forget(std::mem::take(&mut self.conns));
            std::mem::forget(self.sh.clone());
            std::mem::forget(self.proto.clone());
        }
        r?;
        let now = now_ns();
        let stop_at = match self.end {
            Some(e) => e.min(now),
            None => self.last_done,
        };
        self.stats.elapsed_ns = stop_at.saturating_sub(self.sh.measure_start);
        self.send_interval(stop_at);
        Ok(self.stats)
    }

    fn drive(&mut self) -> io::Result<()> {
        let now = now_ns();
        if now < self.sh.start_ns {
            std::thread::sleep(Duration::from_nanos(self.sh.start_ns - now));
        }
        let now = now_ns();
        self.next_tick = now + TICK_NS;
        for i in 0..self.conns.len() {
            self.next_request(i, now)?;
        }
        let mut cqes: Vec<Completion> = Vec::with_capacity(1024);
        while self.live > 0 {
            let now = now_ns();
            if now >= self.next_tick {
                self.on_tick(now)?;
                continue;
            }
            let wait = Duration::from_nanos(self.next_tick - now);
            self.ring.submit_and_wait(1, Some(wait))?;
            self.ring.reap(&mut cqes);
            for c in cqes.drain(..) {
                let now = now_ns();
                self.on_cqe(c, now)?;
            }
        }
        Ok(())
    }

    /// Queues an entry built by this module.
    fn push(&mut self, e: Entry) -> io::Result<()> {
        // SAFETY: every entry built here points into a connection slot's boxed
        // buffer or timespec, into `Shared` (the address) or into the
        // protocol (the bytes its steps send, the same for the whole run),
        // which this worker keeps alive. A slot's buffer is only reused once
        // its `inflight` count is zero, and `run` never frees any of these
        // while operations are in flight.
        unsafe { self.ring.push(&e) }
    }

    fn past_end(&self, now: u64) -> bool {
        self.end.is_some_and(|e| now >= e)
    }

    fn on_cqe(&mut self, c: Completion, now: u64) -> io::Result<()> {
        let t = Token::decode(c.user_data);
        let (i, op) = (t.slot as usize, t.op);
        if op == OP_CANCEL || i >= self.conns.len() || self.conns[i].gen != t.generation {
            return Ok(());
        }
        self.conns[i].inflight -= 1;
        if self.conns[i].phase == Phase::Draining {
            return self.drain_step(i, now);
        }
        match op {
            OP_CONNECT => self.on_connect(i, c.result, now),
            OP_SEND => self.on_send(i, c.result, now),
            OP_RECV => self.on_recv(i, c.result, now),
            OP_TIMER => self.on_timer(i, now),
            _ => Ok(()),
        }
    }

    fn on_tick(&mut self, now: u64) -> io::Result<()> {
        if !self.stopping && self.sh.stop.load(Ordering::Relaxed) {
            self.end = Some(self.end.map_or(now, |e| e.min(now)));
        }
        if !self.stopping && self.past_end(now) {
            self.stopping = true;
        }
        self.roll_intervals(now);
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            match c.phase {
                Phase::Busy | Phase::Connecting if self.stopping => self.abandon(i)?,
                Phase::Busy | Phase::Connecting if c.deadline != 0 && now >= c.deadline => {
                    self.fail(i, ErrorKind::Timeout, now)?
                }
                Phase::Waiting if self.stopping => {
                    let gen = c.gen;
                    let e = opcode::TimeoutRemove::new(ud(i, gen, OP_TIMER))
                        .build()
                        .user_data(ud(i, gen, OP_CANCEL));
                    self.push(e)?;
                }
                Phase::Idle if self.stopping => self.finish(i),
                _ => {}
            }
        }
        self.next_tick = self.next_tick.max(now) + TICK_NS;
        Ok(())
    }

    /// The run ended with this connection's operation in flight.
    fn abandon(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        if let Some(r) = c.req.take() {
            if r.recording {
                self.stats.in_flight_at_end += 1;
            }
        }
        self.interrupt(i)
    }

    /// Makes in-flight operations complete soon and the slot drain.
    fn interrupt(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        c.drain_close = true;
        let connecting = c.phase == Phase::Connecting;
        c.phase = Phase::Draining;
        c.deadline = 0;
        if c.inflight > 0 {
            if let Some(s) = &c.sock {
                let _ = s.shutdown(Shutdown::Both);
            }
            if connecting {
                let gen = c.gen;
                let e = opcode::AsyncCancel::new(ud(i, gen, OP_CONNECT))
                    .build()
                    .user_data(ud(i, gen, OP_CANCEL));
                self.push(e)?;
            }
        }
        Ok(())
    }

    /// Counts a failure: against its request, or, between requests (a
    /// stream), at `now`. A request's failure after the end is in flight at
    /// the end.
    fn fail(&mut self, i: usize, kind: ErrorKind, now: u64) -> io::Result<()> {
        let past_end = self.past_end(now);
        let req = self.conns[i].req.take();
        if past_end {
            if req.is_some_and(|r| r.recording) {
                self.stats.in_flight_at_end += 1;
            }
        } else if req.map_or(now >= self.sh.measure_start, |r| r.recording) {
            self.roll_intervals(now);
            self.stats.errors.add(kind);
            self.ival_errors += 1;
        }
        self.interrupt(i)?;
        self.drain_step(i, now)
    }

    fn drain_step(&mut self, i: usize, now: u64) -> io::Result<()> {
        let c = &mut self.conns[i];
        if c.inflight > 0 {
            return Ok(());
        }
        if c.drain_close {
            c.sock = None;
            c.gen = next_generation(c.gen);
            c.drain_close = false;
        }
        c.phase = Phase::Idle;
        self.next_request(i, now)
    }

    fn finish(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(r) = c.req.take() {
            if r.recording {
                self.stats.in_flight_at_end += 1;
            }
        }
        debug_assert_eq!(c.inflight, 0);
        c.sock = None;
        c.phase = Phase::Done;
        self.live -= 1;
    }

    /// The connection is free: its next step, after the schedule, budget and
    /// counting for a request.
    fn next_request(&mut self, i: usize, now: u64) -> io::Result<()> {
        if self.stopping || self.past_end(now) {
            self.finish(i);
            return Ok(());
        }
        if let Step::Request(_) = self.proto.step() {
            let c = &mut self.conns[i];
            let intended = match &mut c.sched {
                Some(s) => s.next_ns(),
                None => now,
            };
            if self.end.is_some_and(|e| intended >= e) {
                self.finish(i);
                return Ok(());
            }
            let recording = intended >= self.sh.measure_start;
            if recording {
                if let Some(b) = &mut self.budget {
                    if *b == 0 {
                        self.finish(i);
                        return Ok(());
                    }
                    *b -= 1;
                }
                self.stats.issued += 1;
            }
            let c = &mut self.conns[i];
            c.req = Some(Req {
                intended,
                sent_at: 0,
                first_byte: 0,
                recording,
            });
            if intended > now {
                *c.timer = timespec(intended);
                let e = opcode::Timeout::new(&*c.timer)
                    .flags(TimeoutFlags::ABS)
                    .build()
                    .user_data(ud(i, c.gen, OP_TIMER));
                c.inflight += 1;
                c.phase = Phase::Waiting;
                return self.push(e);
            }
        }
        self.begin(i, now)
    }

    fn begin(&mut self, i: usize, now: u64) -> io::Result<()> {
        if self.conns[i].sock.is_none() {
            self.connect(i, now)
        } else {
            self.start_step(i, now)
        }
    }

    fn on_timer(&mut self, i: usize, now: u64) -> io::Result<()> {
        if self.stopping || self.past_end(now) {
            self.finish(i);
            return Ok(());
        }
        self.begin(i, now)
    }

    fn connect(&mut self, i: usize, now: u64) -> io::Result<()> {
        let addr = &self.sh.addr;
        let sock = match Socket::new(addr.domain(), Type::STREAM, Some(socket2::Protocol::TCP)) {
            Ok(s) => s,
            Err(_) => {
                self.conns[i].phase = Phase::Connecting;
                return self.fail(i, ErrorKind::Connect, now);
            }
        };
        self.proto.configure(&sock);
        let fd = Fd(sock.as_raw_fd());
        let e =
            opcode::Connect::new(fd, addr.as_ptr() as *const libc::sockaddr, addr.len()).build();
        let timeout = self.sh.timeout_ns;
        let c = &mut self.conns[i];
        c.sock = Some(sock);
        c.connect_start = now;
        c.deadline = now + timeout;
        c.phase = Phase::Connecting;
        c.inflight += 1;
        let e = e.user_data(ud(i, c.gen, OP_CONNECT));
        self.push(e)
    }

    fn on_connect(&mut self, i: usize, res: i32, now: u64) -> io::Result<()> {
        if res < 0 {
            return self.fail(i, ErrorKind::Connect, now);
        }
        let past_end = self.past_end(now);
        let c = &mut self.conns[i];
        let recording = match c.req {
            Some(r) => r.recording,
            None => now >= self.sh.measure_start,
        };
        if recording && !past_end {
            self.stats
                .connect
                .saturating_record(ns_to_us(now - c.connect_start));
        }
        c.deadline = 0;
        self.start_step(i, now)
    }

    /// The connection is open and free: submits its step.
    fn start_step(&mut self, i: usize, now: u64) -> io::Result<()> {
        if self.stopping || self.past_end(now) {
            self.finish(i);
            return Ok(());
        }
        let timeout = self.sh.timeout_ns;
        let proto = &*self.proto;
        let c = &mut self.conns[i];
        c.phase = Phase::Busy;
        let (send, recv) = match proto.step() {
            Step::Request(request) => {
                if let Some(r) = &mut c.req {
                    r.sent_at = now;
                }
                c.sent = 0;
                c.deadline = now + timeout;
                proto.begin(&mut c.state);
                (
                    Some(send_entry(c, i, request)),
                    Some(recv_entry(proto, c, i)),
                )
            }
            Step::Send(data) => (Some(send_entry(c, i, data)), None),
            Step::Receive => (None, Some(recv_entry(proto, c, i))),
        };
        for e in [send, recv].into_iter().flatten() {
            self.conns[i].inflight += 1;
            self.push(e)?;
        }
        Ok(())
    }

    /// Counts bytes moved: a request's if it is recorded, a stream's if
    /// `now` is in the measured window.
    fn count_bytes(&mut self, i: usize, n: usize, way: Way, now: u64) {
        let recording = match &self.conns[i].req {
            Some(r) => r.recording,
            None => now >= self.sh.measure_start,
        };
        if !recording || self.past_end(now) {
            return;
        }
        self.roll_intervals(now);
        match way {
            Way::Read => self.stats.bytes_read += n as u64,
            Way::Written => self.stats.bytes_written += n as u64,
        }
        self.ival_bytes += n as u64;
    }

    fn on_send(&mut self, i: usize, res: i32, now: u64) -> io::Result<()> {
        if res < 0 {
            return self.fail(i, ErrorKind::Write, now);
        }
        let n = res as usize;
        self.count_bytes(i, n, Way::Written, now);
        match self.proto.step() {
            Step::Request(request) => {
                let c = &mut self.conns[i];
                c.sent += n;
                if c.sent < request.len() {
                    c.inflight += 1;
                    let e = send_entry(c, i, &request[c.sent..]);
                    return self.push(e);
                }
                // All sent; the receive is in flight.
                Ok(())
            }
            // Throughput, counted: on with the next step.
            Step::Send(_) | Step::Receive => self.next_request(i, now),
        }
    }

    fn on_recv(&mut self, i: usize, res: i32, now: u64) -> io::Result<()> {
        if res < 0 {
            return self.fail(i, ErrorKind::Read, now);
        }
        let meaning = if res == 0 {
            self.proto.closed(&mut self.conns[i].state)
        } else {
            let n = res as usize;
            if let Some(r) = &mut self.conns[i].req {
                if r.first_byte == 0 {
                    r.first_byte = now;
                }
            }
            self.count_bytes(i, n, Way::Read, now);
            let c = &mut self.conns[i];
            self.proto.received(&mut c.state, &mut c.buf, n)
        };
        match meaning {
            Received::Partial => {
                let c = &mut self.conns[i];
                c.inflight += 1;
                let e = recv_entry(&*self.proto, c, i);
                self.push(e)
            }
            Received::Complete { status, keep_alive } => self.complete(i, now, status, keep_alive),
            Received::Counted => self.next_request(i, now),
            Received::Invalid => self.fail(i, ErrorKind::Protocol, now),
            Received::Truncated => self.fail(i, ErrorKind::Read, now),
        }
    }

    fn complete(&mut self, i: usize, now: u64, status: Option<u16>, keep: bool) -> io::Result<()> {
        let past_end = self.past_end(now);
        let c = &mut self.conns[i];
        let req = c.req.take();
        c.deadline = 0;
        c.drain_close = !keep;
        c.phase = Phase::Draining;
        if let Some(r) = req.filter(|r| r.recording) {
            if past_end {
                self.stats.in_flight_at_end += 1;
            } else {
                self.roll_intervals(now);
                let corrected = now.saturating_sub(r.intended);
                self.stats
                    .record_latency(corrected, now.saturating_sub(r.sent_at));
                self.stats
                    .ttfb
                    .saturating_record(ns_to_us(r.first_byte.saturating_sub(r.sent_at)));
                self.stats.completed += 1;
                if let Some(s) = status {
                    self.stats.record_status(s);
                    if s >= 400 {
                        self.ival_errors += 1;
                    }
                }
                self.ival_hist.saturating_record(ns_to_us(corrected));
                self.ival_completed += 1;
                self.last_done = now;
            }
        }
        self.drain_step(i, now)
    }

    /// Ships every finished one-second interval up to `now`.
    fn roll_intervals(&mut self, now: u64) {
        let limit = self.end.unwrap_or(u64::MAX);
        while now >= self.ival_end && self.ival_end <= limit {
            let end = self.ival_end;
            self.send_interval(end);
            self.ival_k += 1;
            self.ival_end += SECOND_NS;
        }
    }

    /// Ships the current interval, ending at `end`.
    fn send_interval(&mut self, end: u64) {
        let start = self.sh.measure_start + self.ival_k * SECOND_NS;
        if end <= start {
            return;
        }
        let sample = IntervalSample {
            thread: self.index,
            index: self.ival_k,
            start_ns: start - self.sh.measure_start,
            len_ns: end - start,
            latency: std::mem::replace(&mut self.ival_hist, new_histogram()),
            completed: std::mem::take(&mut self.ival_completed),
            errors: std::mem::take(&mut self.ival_errors),
            bytes: std::mem::take(&mut self.ival_bytes),
        };
        // The receiver only goes away if the run is being torn down.
        let _ = self.tx.send(sample);
    }
}
