//! Moving bytes one direction of a pair, in one of three ways:
//!
//! - **copy**: a multishot receive that lets the kernel pick a provided
//!   buffer for each chunk, and one send at a time of exactly those bytes,
//!   in order; a buffer returns to the ring once sent. When
//!   [`PAUSE_AFTER_QUEUED`] chunks wait behind a slow sink, the receive is
//!   cancelled and re-armed once the queue has drained, so a slow reader
//!   pushes back on its writer. An idle direction holds no buffer.
//! - **splice** (polled): a readiness poll through the ring, then
//!   non-blocking `splice(2)` socket → pipe → socket from the shard thread,
//!   as HAProxy does with epoll. The pipe is lent only while bytes sit in it.
//! - **splice-ring**: `IORING_OP_SPLICE` both ways (the kernel runs these on
//!   io-wq workers); the pipe is held for the direction's whole life.
//!
//! In `auto`, a direction starts with copy and moves to polled splice after
//! [`AUTO_SPLICE_AFTER`] receives in a row fill a whole buffer.
//!
//! A FIN read from the source becomes `shutdown(SHUT_WR)` on the sink once
//! every byte before it has been written (or the pair's close, when the
//! other direction is done already).

use io_uring::types::Fd;
use io_uring::{cqueue, opcode};

use super::buffers::GROUP;
use super::conn::{ConnState, DirMode, DirState, UP};
use super::token::{Op, Token};
use super::Shard;
use crate::config::ForwardMode;

/// Full-buffer receives in a row after which `auto` moves a direction to
/// splice.
pub const AUTO_SPLICE_AFTER: u8 = 4;

/// Received buffers queued behind a send after which the receive is paused.
pub const PAUSE_AFTER_QUEUED: usize = 2;

enum Splice {
    Moved(usize),
    Eof,
    WouldBlock,
    Failed,
}

fn splice(from: i32, to: i32, len: usize) -> Splice {
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
        n if n > 0 => Splice::Moved(n as usize),
        0 => Splice::Eof,
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Splice::WouldBlock,
            Some(libc::EINTR) => Splice::WouldBlock,
            _ => Splice::Failed,
        },
    }
}

impl Shard {
    fn token(&self, op: Op, slot: usize, dir: usize) -> u64 {
        Token::new(op, slot as u32, self.conns[slot].generation, dir).encode()
    }

    /// Whether the pair may still start operations (not closing or freed).
    fn forwarding(&self, slot: usize) -> bool {
        self.conns[slot].state == ConnState::Forwarding
    }

    pub(super) fn start_dir(&mut self, slot: usize, d: usize) {
        if !self.forwarding(slot) {
            return;
        }
        match self.conns[slot].dirs[d].mode {
            DirMode::Copy => self.arm_recv(slot, d),
            DirMode::Splice => self.pump(slot, d),
            DirMode::SpliceRing => self.ring_splice_in(slot, d),
        }
    }

    fn count_bytes(&mut self, d: usize, n: usize) {
        if d == UP {
            self.counters.bytes_up += n as u64;
        } else {
            self.counters.bytes_down += n as u64;
        }
    }

    // ---- copy ----

    fn arm_recv(&mut self, slot: usize, d: usize) {
        if !self.forwarding(slot) {
            return;
        }
        let c = &mut self.conns[slot];
        let dir = &mut c.dirs[d];
        if dir.recv_armed {
            return;
        }
        dir.state = DirState::Reading;
        dir.recv_armed = true;
        dir.recv_paused = false;
        c.inflight += 1;
        let entry = opcode::RecvMulti::new(Fd(c.source(d)), GROUP)
            .build()
            .user_data(self.token(Op::Recv, slot, d));
        // SAFETY: no user pointer: the kernel picks buffers from the shard's
        // registered ring, which outlives the ring's operations.
        unsafe { self.push(entry) };
    }

    /// Cancels the direction's multishot receive (backpressure, or a move
    /// to splice); its last completion arrives with -ECANCELED.
    fn pause_recv(&mut self, slot: usize, d: usize) {
        let c = &mut self.conns[slot];
        if !c.dirs[d].recv_armed || c.dirs[d].recv_paused {
            return;
        }
        c.dirs[d].recv_paused = true;
        c.inflight += 1;
        let target = self.token(Op::Recv, slot, d);
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(self.token(Op::Cancel, slot, d));
        // SAFETY: no pointers.
        unsafe { self.push(entry) };
    }

    pub(super) fn on_recv(&mut self, slot: usize, d: usize, result: i32, flags: u32) {
        let more = cqueue::more(flags);
        if result > 0 {
            let bid = cqueue::buffer_select(flags).expect("receive without a buffer");
            self.buffers.taken();
            self.count_bytes(d, result as usize);
            let full = result as usize == self.buffers.buffer_size();
            let now = self.now;
            let c = &mut self.conns[slot];
            let src = c.source(d);
            c.seen(src, now);
            let dir = &mut c.dirs[d];
            dir.full_reads = if full {
                dir.full_reads.saturating_add(1)
            } else {
                0
            };
            if self.forward == ForwardMode::Auto && dir.full_reads >= AUTO_SPLICE_AFTER {
                dir.to_splice = true;
            }
            if dir.sending {
                dir.queue.push_back((bid, result as u32));
            } else {
                dir.sending = true;
                dir.buf = bid;
                dir.sent = 0;
                dir.len = result as u32;
                self.submit_send(slot, d);
            }
            let dir = &self.conns[slot].dirs[d];
            if more && (dir.queue.len() >= PAUSE_AFTER_QUEUED || dir.to_splice) {
                self.pause_recv(slot, d);
            }
        }
        if more {
            return;
        }
        let dir = &mut self.conns[slot].dirs[d];
        dir.recv_armed = false;
        match result {
            0 => dir.fin = true,
            r if r > 0 || r == -libc::ECANCELED => {}
            r if r == -libc::ENOBUFS => {
                self.counters.buffer_starved += 1;
                // Buffers may have come back in this same batch; wait only
                // when the ring is really empty.
                if self.buffers.in_use() == self.buffers.count() {
                    dir.state = DirState::WaitBuffer;
                    let generation = self.conns[slot].generation;
                    self.waiting_buffer.push_back((slot as u32, generation, d));
                }
            }
            _ => {
                self.abort(slot);
                return;
            }
        }
        self.copy_settle(slot, d);
    }

    fn submit_send(&mut self, slot: usize, d: usize) {
        let c = &mut self.conns[slot];
        let dir = &c.dirs[d];
        // SAFETY: `sent < len <= buffer_size`, so the pointer stays in the buffer.
        let ptr = unsafe { self.buffers.ptr(dir.buf).add(dir.sent as usize) };
        let len = dir.len - dir.sent;
        c.inflight += 1;
        let entry = opcode::Send::new(Fd(c.sink(d)), ptr, len)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
            .user_data(self.token(Op::Send, slot, d));
        // SAFETY: the buffer is lent to this direction until this send
        // completes (it goes back to the ring only after), and the ring's
        // memory outlives the io_uring.
        unsafe { self.push(entry) };
    }

    pub(super) fn on_send(&mut self, slot: usize, d: usize, result: i32) {
        let now = self.now;
        let c = &mut self.conns[slot];
        let bid = c.dirs[d].buf;
        if result <= 0 {
            c.dirs[d].sending = false;
            self.give_back_buffer(bid);
            self.abort(slot);
            return;
        }
        let sink = c.sink(d);
        c.seen(sink, now);
        let dir = &mut c.dirs[d];
        dir.sent += result as u32;
        if dir.sent < dir.len {
            self.submit_send(slot, d);
            return;
        }
        dir.sending = false;
        let next = dir.queue.pop_front();
        self.give_back_buffer(bid);
        if let Some((bid, len)) = next {
            let dir = &mut self.conns[slot].dirs[d];
            dir.sending = true;
            dir.buf = bid;
            dir.sent = 0;
            dir.len = len;
            self.submit_send(slot, d);
        } else {
            self.copy_settle(slot, d);
        }
    }

    /// Decides what a copy direction does once nothing is left to send:
    /// forward a FIN, keep (or start) receiving, or move to splice.
    fn copy_settle(&mut self, slot: usize, d: usize) {
        if !self.forwarding(slot) {
            return;
        }
        let dir = &mut self.conns[slot].dirs[d];
        if dir.sending || !dir.queue.is_empty() || dir.recv_armed {
            return;
        }
        if dir.fin {
            self.forward_fin(slot, d);
        } else if dir.state == DirState::WaitBuffer {
            // `give_back_buffer` re-arms it.
        } else if dir.to_splice {
            dir.to_splice = false;
            dir.full_reads = 0;
            // With no pipe to be had, `pump` falls back to copying.
            dir.mode = DirMode::Splice;
            self.pump(slot, d);
        } else {
            self.arm_recv(slot, d);
        }
    }

    /// Returns a buffer to the ring and hands the turn to a direction that
    /// was waiting for one.
    pub(super) fn give_back_buffer(&mut self, bid: u16) {
        self.buffers.give_back(bid);
        self.wake_buffer_waiters(1);
    }

    /// Re-arms up to `n` directions that were waiting for a buffer.
    pub(super) fn wake_buffer_waiters(&mut self, mut n: usize) {
        while n > 0 {
            let Some((slot, generation, d)) = self.waiting_buffer.pop_front() else {
                return;
            };
            let c = &mut self.conns[slot as usize];
            if c.generation == generation
                && c.state == ConnState::Forwarding
                && c.dirs[d].state == DirState::WaitBuffer
            {
                c.dirs[d].state = DirState::Reading;
                self.copy_settle(slot as usize, d);
                n -= 1;
            }
        }
    }

    // ---- FIN ----

    /// Forwards a FIN read from the source of direction `d` to its sink.
    /// When the other direction is done too, closing the pair sends it;
    /// otherwise `shutdown(SHUT_WR)` does, called from the shard thread: the
    /// ring's SHUTDOWN always runs on an io-wq worker, which measured far
    /// costlier per connection.
    fn forward_fin(&mut self, slot: usize, d: usize) {
        if !self.forwarding(slot) {
            return;
        }
        let c = &mut self.conns[slot];
        c.dirs[d].state = DirState::Done;
        if c.dirs[1 - d].state == DirState::Done {
            self.close(slot);
            return;
        }
        // SAFETY: plain shutdown(2) on an fd of this pair; an error (the
        // peer is already gone) changes nothing we rely on.
        unsafe { libc::shutdown(c.sink(d), libc::SHUT_WR) };
    }

    // ---- polled splice ----

    fn arm_poll(&mut self, slot: usize, d: usize, op: Op) {
        let c = &mut self.conns[slot];
        let (fd, events, state) = if op == Op::PollIn {
            (
                c.source(d),
                libc::POLLIN | libc::POLLRDHUP,
                DirState::Reading,
            )
        } else {
            (c.sink(d), libc::POLLOUT, DirState::Writing)
        };
        c.dirs[d].state = state;
        c.inflight += 1;
        let entry = opcode::PollAdd::new(Fd(fd), events as u32)
            .build()
            .user_data(self.token(op, slot, d));
        // SAFETY: no pointers.
        unsafe { self.push(entry) };
    }

    pub(super) fn on_poll(&mut self, slot: usize, d: usize, result: i32) {
        if result < 0 {
            self.abort(slot);
        } else {
            self.pump(slot, d);
        }
    }

    /// Moves what can be moved now through the direction's pipe, then waits
    /// for readability (pipe empty) or writability (pipe holds bytes).
    fn pump(&mut self, slot: usize, d: usize) {
        if !self.forwarding(slot) {
            return;
        }
        for _ in 0..8 {
            if !self.lend_pipe(slot, d) {
                return;
            }
            let c = &mut self.conns[slot];
            let (src, dst) = (c.source(d), c.sink(d));
            let dir = &mut c.dirs[d];
            let (pipe_read, pipe_write) = dir.pipe.as_ref().map(|p| (p.read, p.write)).unwrap();
            let mut drained = false;
            if dir.pipe_bytes == 0 {
                let want = self.pipes.pipe_size();
                match splice(src, pipe_write, want) {
                    Splice::Moved(n) => {
                        dir.pipe_bytes = n;
                        drained = n < want;
                        c.seen(src, self.now);
                        self.count_bytes(d, n);
                    }
                    Splice::Eof => {
                        self.return_pipe(slot, d);
                        self.forward_fin(slot, d);
                        return;
                    }
                    Splice::WouldBlock => {
                        self.return_pipe(slot, d);
                        self.arm_poll(slot, d, Op::PollIn);
                        return;
                    }
                    Splice::Failed => {
                        self.abort(slot);
                        return;
                    }
                }
            }
            let c = &mut self.conns[slot];
            let dir = &mut c.dirs[d];
            match splice(pipe_read, dst, dir.pipe_bytes) {
                Splice::Moved(n) => {
                    dir.pipe_bytes -= n;
                    c.seen(dst, self.now);
                }
                Splice::WouldBlock | Splice::Eof => {}
                Splice::Failed => {
                    self.abort(slot);
                    return;
                }
            }
            if self.conns[slot].dirs[d].pipe_bytes > 0 {
                self.arm_poll(slot, d, Op::PollOut);
                return;
            }
            if drained {
                break;
            }
        }
        self.return_pipe(slot, d);
        self.arm_poll(slot, d, Op::PollIn);
    }

    /// Makes sure direction `d` has a pipe. With none to be had (pool at its
    /// limit, or the kernel only gives shrunken pipes) the direction falls
    /// back to copying, and this returns false.
    fn lend_pipe(&mut self, slot: usize, d: usize) -> bool {
        if self.conns[slot].dirs[d].pipe.is_some() {
            return true;
        }
        match self.pipes.acquire() {
            Some(p) => {
                self.conns[slot].dirs[d].pipe = Some(p);
                true
            }
            None => {
                self.conns[slot].dirs[d].mode = DirMode::Copy;
                self.arm_recv(slot, d);
                false
            }
        }
    }

    /// Gives the direction's (empty) pipe back to the pool.
    fn return_pipe(&mut self, slot: usize, d: usize) {
        let dir = &mut self.conns[slot].dirs[d];
        if let Some(p) = dir.pipe.take() {
            self.pipes.release(p, dir.pipe_bytes == 0);
        }
    }

    // ---- ring splice ----

    fn ring_splice_in(&mut self, slot: usize, d: usize) {
        if !self.forwarding(slot) {
            return;
        }
        if !self.lend_pipe(slot, d) {
            return;
        }
        let c = &mut self.conns[slot];
        let pipe_write = c.dirs[d].pipe.as_ref().map(|p| p.write).unwrap();
        c.dirs[d].state = DirState::Reading;
        c.inflight += 1;
        let want = self.pipes.pipe_size() as u32;
        let entry = opcode::Splice::new(Fd(c.source(d)), -1, Fd(pipe_write), -1, want)
            .flags(libc::SPLICE_F_MOVE)
            .build()
            .user_data(self.token(Op::SpliceIn, slot, d));
        // SAFETY: no user memory; the pipe stays with this direction until
        // the pair is finished, after its last completion.
        unsafe { self.push(entry) };
    }

    fn ring_splice_out(&mut self, slot: usize, d: usize) {
        let c = &mut self.conns[slot];
        let pipe_read = c.dirs[d].pipe.as_ref().map(|p| p.read).unwrap();
        c.dirs[d].state = DirState::Writing;
        c.inflight += 1;
        let entry = opcode::Splice::new(
            Fd(pipe_read),
            -1,
            Fd(c.sink(d)),
            -1,
            c.dirs[d].pipe_bytes as u32,
        )
        .flags(libc::SPLICE_F_MOVE)
        .build()
        .user_data(self.token(Op::SpliceOut, slot, d));
        // SAFETY: as in `ring_splice_in`.
        unsafe { self.push(entry) };
    }

    pub(super) fn on_ring_splice_in(&mut self, slot: usize, d: usize, result: i32) {
        if result > 0 {
            let now = self.now;
            let c = &mut self.conns[slot];
            let src = c.source(d);
            c.seen(src, now);
            c.dirs[d].pipe_bytes = result as usize;
            self.count_bytes(d, result as usize);
            self.ring_splice_out(slot, d);
        } else if result == 0 {
            self.return_pipe(slot, d);
            self.forward_fin(slot, d);
        } else {
            self.abort(slot);
        }
    }

    pub(super) fn on_ring_splice_out(&mut self, slot: usize, d: usize, result: i32) {
        if result <= 0 {
            self.abort(slot);
            return;
        }
        let now = self.now;
        let c = &mut self.conns[slot];
        let sink = c.sink(d);
        c.seen(sink, now);
        c.dirs[d].pipe_bytes -= result as usize;
        if c.dirs[d].pipe_bytes > 0 {
            self.ring_splice_out(slot, d);
        } else {
            self.ring_splice_in(slot, d);
        }
    }
}
