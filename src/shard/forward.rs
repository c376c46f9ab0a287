//! Performing what a direction's state machine (`direction.rs`) asks:
//! submissions to the ring, `splice(2)` calls made on the spot, buffers and
//! pipes given back, FIN passed on. Completions come back here as events.
//!
//! Giving a buffer back never wakes another direction from inside the
//! give-back: directions waiting for a buffer are woken by the loop once
//! the current handler has returned (`driver.rs`), so no state machine runs
//! while another one is half-way through a transition.

use io_uring::cqueue;
use io_uring::opcode;
use io_uring::types::Fd;

use super::buffers::GROUP;
use super::direction::{Action, Ctx, Event, Fault, Spliced};
use super::pair::{PairState, Ttfb, UP};
use super::swap::snapshot;
use super::token::{Op, Tag};
use super::Shard;
use crate::access_log::Cause;

/// A non-blocking `splice(2)` between two fds of this shard.
fn splice(from: i32, to: i32, len: usize) -> Spliced {
    // SAFETY: splice(2) with null offsets on fds of this pair and its pipe;
    // no user memory is involved.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    match n {
        n if n > 0 => Spliced::Moved(n as usize),
        0 => Spliced::Eof,
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Spliced::WouldBlock,
            e => Spliced::Failed(e.unwrap_or(libc::EIO)),
        },
    }
}

/// Whom an abort of direction `d` blames: its source is the client going
/// up and the server coming down.
fn blame(fault: Fault, d: usize) -> Cause {
    match (fault, d == UP) {
        (Fault::Source, true) | (Fault::Sink, false) => Cause::Client,
        (Fault::Source, false) | (Fault::Sink, true) => Cause::Server,
        (Fault::Internal, _) => Cause::Proxy,
    }
}

impl Shard {
    fn tag(&self, op: Op, slot: usize, dir: usize) -> u64 {
        Tag::new(op, slot as u32, self.pairs[slot].generation, dir).encode()
    }

    fn dir_ctx(&self) -> Ctx {
        let b = self.buffers.as_ref().expect("buffers live with the loop");
        Ctx {
            mode: self.forward,
            buffer_size: b.buffer_size() as u32,
            buffers_free: b.free(),
            pipe_size: self.pipes.pipe_size(),
        }
    }

    fn count_bytes(&mut self, slot: usize, d: usize, n: usize) {
        self.pairs[slot].bytes[d] += n as u64;
        if d == UP {
            self.counters.bytes_up += n as u64;
        } else {
            self.counters.bytes_down += n as u64;
        }
    }

    /// Feeds `event` to direction `d` of the pair in `slot` and performs
    /// the actions it returns, feeding back the answers of those performed
    /// on the spot (a pipe lent, a splice made).
    pub(super) fn step(&mut self, slot: usize, d: usize, event: Event) {
        let mut next = Some(event);
        while let Some(event) = next.take() {
            if self.pairs[slot].state != PairState::Forwarding {
                self.drop_event(slot, event);
                return;
            }
            let ctx = self.dir_ctx();
            let actions = self.pairs[slot].dirs[d].on(event, &ctx);
            for action in actions {
                if let Some(answer) = self.perform(slot, d, action) {
                    debug_assert!(next.is_none(), "two answers from one step");
                    next = Some(answer);
                }
            }
        }
    }

    /// An event for a pair that stopped forwarding while it was being
    /// handled: give back what it carries.
    fn drop_event(&mut self, slot: usize, event: Event) {
        match event {
            Event::Received { buf, .. } => {
                self.pairs[slot].reset = true;
                self.buffers().give_back(buf);
            }
            Event::PipeLent(Some(pipe)) => self.pipes.release(pipe, true),
            _ => {}
        }
    }

    /// Performs one action; returns the answer of an action done on the spot.
    fn perform(&mut self, slot: usize, d: usize, action: Action) -> Option<Event> {
        let forwarding = self.pairs[slot].state == PairState::Forwarding;
        match action {
            Action::GiveBack(buf) => self.buffers().give_back(buf),
            Action::ReturnPipe { pipe, bytes } => self.pipes.release(pipe, bytes == 0),
            Action::LendPipe => return Some(Event::PipeLent(self.pipes.acquire())),
            Action::AwaitBuffer => {
                let generation = self.pairs[slot].generation;
                self.buffer_waiters.push_back((slot as u32, generation, d));
            }
            Action::Abort(fault) => self.abort(slot, blame(fault, d)),
            Action::ForwardFin => self.forward_fin(slot, d),
            // Nothing more is started on a pair that is closing.
            _ if !forwarding => {}
            Action::ArmRecv { limit } => {
                let limit = if self.recv_limit { limit } else { 0 };
                let entry =
                    uring_kit::ops::recv_multi_limited(self.pairs[slot].source(d), GROUP, limit)
                        .user_data(self.tag(Op::Recv, slot, d));
                self.pairs[slot].inflight += 1;
                // SAFETY: no user pointer: the kernel picks buffers from the
                // shard's registered ring, which outlives the ring's
                // operations.
                unsafe { self.push(&[entry]) };
            }
            Action::CancelRecv => {
                let target = self.tag(Op::Recv, slot, d);
                let entry = opcode::AsyncCancel::new(target).build().user_data(self.tag(
                    Op::Cancel,
                    slot,
                    d,
                ));
                self.pairs[slot].inflight += 1;
                // SAFETY: no pointers.
                unsafe { self.push(&[entry]) };
            }
            Action::Send { buf, from, len } => {
                let b = self.buffers.as_ref().expect("buffers live with the loop");
                // SAFETY: `from < len <= buffer_size`, so the pointer stays
                // inside buffer `buf`.
                let ptr = unsafe { b.ptr_at(buf).add(from as usize) };
                let entry = opcode::Send::new(Fd(self.pairs[slot].sink(d)), ptr, len - from)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(self.tag(Op::Send, slot, d));
                self.pairs[slot].inflight += 1;
                // SAFETY: the buffer stays in the direction's outbox (lent to
                // it) until this send completes, and the ring's memory
                // outlives the io_uring.
                unsafe { self.push(&[entry]) };
            }
            Action::PollIn | Action::PollOut => {
                let p = &self.pairs[slot];
                let (fd, events, op) = if action == Action::PollIn {
                    (p.source(d), libc::POLLIN | libc::POLLRDHUP, Op::PollIn)
                } else {
                    (p.sink(d), libc::POLLOUT, Op::PollOut)
                };
                let entry = opcode::PollAdd::new(Fd(fd), events as u32)
                    .build()
                    .user_data(self.tag(op, slot, d));
                self.pairs[slot].inflight += 1;
                // SAFETY: no pointers.
                unsafe { self.push(&[entry]) };
            }
            Action::SpliceIn { pipe_write, len } => {
                let r = splice(self.pairs[slot].source(d), pipe_write, len);
                if let Spliced::Moved(n) = r {
                    self.count_bytes(slot, d, n);
                    self.progress(slot, d, true);
                }
                return Some(Event::SplicedIn(r));
            }
            Action::SpliceOut { pipe_read, len } => {
                let r = splice(pipe_read, self.pairs[slot].sink(d), len);
                if let Spliced::Moved(_) = r {
                    self.progress(slot, d, false);
                }
                return Some(Event::SplicedOut(r));
            }
            Action::RingSpliceIn { pipe_write, len } => {
                let entry = opcode::Splice::new(
                    Fd(self.pairs[slot].source(d)),
                    -1,
                    Fd(pipe_write),
                    -1,
                    len as u32,
                )
                .flags(libc::SPLICE_F_MOVE)
                .build()
                .user_data(self.tag(Op::SpliceIn, slot, d));
                self.pairs[slot].inflight += 1;
                // SAFETY: no user memory; the pipe stays with this direction
                // until the pair is finished, after its last completion.
                unsafe { self.push(&[entry]) };
            }
            Action::RingSpliceOut { pipe_read, len } => {
                let entry = opcode::Splice::new(
                    Fd(pipe_read),
                    -1,
                    Fd(self.pairs[slot].sink(d)),
                    -1,
                    len as u32,
                )
                .flags(libc::SPLICE_F_MOVE)
                .build()
                .user_data(self.tag(Op::SpliceOut, slot, d));
                self.pairs[slot].inflight += 1;
                // SAFETY: as for `RingSpliceIn`.
                unsafe { self.push(&[entry]) };
            }
        }
        None
    }

    /// Passes on a FIN read from the source of direction `d`. When the
    /// other direction is done too, closing the pair sends it; otherwise
    /// `shutdown(SHUT_WR)` does, called from the shard thread: the ring's
    /// SHUTDOWN always runs on an io-wq worker, which measured far costlier
    /// per connection.
    fn forward_fin(&mut self, slot: usize, d: usize) {
        let p = &self.pairs[slot];
        if p.state != PairState::Forwarding {
            return;
        }
        if matches!(p.dirs[1 - d], super::direction::Dir::Done) {
            self.close(slot);
            return;
        }
        // SAFETY: plain shutdown(2) on an fd of this pair; an error (the
        // peer is already gone) changes nothing we rely on.
        unsafe { libc::shutdown(p.sink(d), libc::SHUT_WR) };
    }

    /// Routes a completion for a forwarding pair to its direction.
    pub(super) fn on_forward_completion(
        &mut self,
        slot: usize,
        op: Op,
        d: usize,
        result: i32,
        flags: u32,
    ) {
        let event = match op {
            Op::Recv if result > 0 => {
                let bid = cqueue::buffer_select(flags).expect("a receive without a buffer");
                let buf = self.buffers().take(bid);
                self.count_bytes(slot, d, result as usize);
                self.progress(slot, d, true);
                Event::Received {
                    buf,
                    len: result as u32,
                    more: cqueue::more(flags),
                }
            }
            Op::Recv => {
                if result == -libc::ENOBUFS {
                    self.counters.buffer_starved += 1;
                }
                Event::RecvEnded(result)
            }
            Op::Send => {
                if result > 0 {
                    self.progress(slot, d, false);
                }
                Event::Sent(result)
            }
            Op::PollIn => Event::Readable(result),
            Op::PollOut => Event::Writable(result),
            Op::SpliceIn => {
                if result > 0 {
                    self.count_bytes(slot, d, result as usize);
                    self.progress(slot, d, true);
                }
                Event::RingIn(result)
            }
            Op::SpliceOut => {
                if result > 0 {
                    self.progress(slot, d, false);
                }
                Event::RingOut(result)
            }
            _ => return,
        };
        self.step(slot, d, event);
    }

    /// Wakes directions that wait for a buffer, as many as there are free
    /// buffers; called by the loop between handlers.
    /// Records progress on a side of the pair, and the server's time to
    /// first byte when that completes it (`leasttime_observe = "ttfb"`).
    #[inline]
    fn progress(&mut self, slot: usize, d: usize, read: bool) {
        let p = &mut self.pairs[slot];
        if p.ttfb == Ttfb::Off {
            p.touch(d, read, self.now);
        } else {
            self.progress_timed(slot, d, read);
        }
    }

    #[cold]
    fn progress_timed(&mut self, slot: usize, d: usize, read: bool) {
        let p = &mut self.pairs[slot];
        if let Some(ttfb) = p.progress(d, read, self.now) {
            if let Some(si) = p.server_index {
                let pool = &snapshot(&self.pools, self.epoch, &self.retired, p.epoch).pools
                    [p.pool as usize];
                let now_ms = crate::clock::millis(self.now);
                pool.servers[si as usize].live.latency.observe(
                    ttfb,
                    now_ms,
                    pool.policy.ewma_window,
                );
            }
        }
    }

    pub(super) fn wake_buffer_waiters(&mut self) {
        if self.buffer_waiters.is_empty() {
            return;
        }
        // Buffers only leave the ring when the kernel fills them, so wake
        // no more directions than there are buffers to fill.
        let mut free = self.buffers.as_ref().map_or(0, |b| b.free());
        while free > 0 {
            let Some((slot, generation, d)) = self.buffer_waiters.pop_front() else {
                return;
            };
            let slot = slot as usize;
            let p = &mut self.pairs[slot];
            if p.generation == generation && p.state == PairState::Forwarding && p.dirs[d].starved()
            {
                // The wait was the shard's, not the source's: it does not
                // count as idleness.
                p.touch(d, true, self.now);
                self.step(slot, d, Event::BufferFree);
                free -= 1;
            }
        }
    }
}
