//! Ending a pair: stop what is in flight (cancel by fd), wait for every
//! outstanding completion, then close both fds through the ring and free the
//! slot under a new generation.

use io_uring::opcode;
use io_uring::types::{CancelBuilder, Fd};

use super::conn::{ConnState, DirMode, DirState};
use super::token::{Op, Token, GEN_MASK};
use super::Shard;
use crate::net::set_reset_on_close;

impl Shard {
    /// Ends the pair with RST on both sides (an error or reset on one side).
    pub(super) fn abort(&mut self, slot: usize) {
        self.conns[slot].reset = true;
        self.close(slot);
    }

    /// Ends the pair: cancels its operations in flight; the fds close once
    /// the last completion is in.
    pub(super) fn close(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.state == ConnState::Closing || c.state == ConnState::Free {
            return;
        }
        c.state = ConnState::Closing;
        // Bytes accepted from one side and not yet delivered to the other
        // are lost: the peer must see a reset, never a clean end.
        if c.dirs
            .iter()
            .any(|d| d.sending || !d.queue.is_empty() || d.pipe_bytes > 0)
        {
            c.reset = true;
        }
        if c.inflight > 0 {
            let ring_splice = c.dirs.iter().any(|d| d.mode == DirMode::SpliceRing);
            let generation = c.generation;
            for fd in [c.client, c.server] {
                if fd < 0 {
                    continue;
                }
                if ring_splice {
                    // A splice blocked in an io-wq worker wakes on shutdown.
                    // SAFETY: plain shutdown(2) on an fd of this pair.
                    unsafe { libc::shutdown(fd, libc::SHUT_RD) };
                }
                self.conns[slot].inflight += 1;
                let entry = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
                    .build()
                    .user_data(Token::new(Op::Cancel, slot as u32, generation, 0).encode());
                // SAFETY: no pointers.
                unsafe { self.push(entry) };
            }
        }
        self.maybe_finish(slot);
    }

    /// Settles what a completion that arrives while closing still holds.
    pub(super) fn drop_completion(&mut self, slot: usize, token: Token, result: i32, flags: u32) {
        match token.op {
            Op::Recv if result > 0 => {
                if let Some(bid) = io_uring::cqueue::buffer_select(flags) {
                    self.buffers.taken();
                    self.give_back_buffer(bid);
                }
            }
            Op::Send => {
                let dir = &mut self.conns[slot].dirs[token.dir];
                dir.sending = false;
                let bid = dir.buf;
                self.give_back_buffer(bid);
            }
            Op::SpliceIn if result > 0 => {
                self.conns[slot].dirs[token.dir].pipe_bytes += result as usize
            }
            Op::SpliceOut if result > 0 => {
                self.conns[slot].dirs[token.dir].pipe_bytes -= result as usize
            }
            _ => {}
        }
    }

    pub(super) fn maybe_finish(&mut self, slot: usize) {
        let c = &self.conns[slot];
        if c.state == ConnState::Closing && c.inflight == 0 {
            self.finish(slot);
        }
    }

    fn finish(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        let (client, server, reset) = (c.client, c.server, c.reset);
        for d in 0..2 {
            let dir = &mut self.conns[slot].dirs[d];
            dir.state = DirState::Done;
            let queued = std::mem::take(&mut dir.queue);
            if let Some(p) = dir.pipe.take() {
                let empty = dir.pipe_bytes == 0;
                self.pipes.release(p, empty);
            }
            for (bid, _) in queued {
                self.give_back_buffer(bid);
            }
        }
        for fd in [client, server] {
            if fd < 0 {
                continue;
            }
            if reset {
                set_reset_on_close(fd);
            }
            let entry = opcode::Close::new(Fd(fd))
                .build()
                .user_data(Token::new(Op::Ignore, 0, 0, 0).encode());
            // SAFETY: no pointers; nothing is in flight on this fd any more.
            unsafe { self.push(entry) };
        }
        self.release_server(slot);
        let c = &mut self.conns[slot];
        c.client = -1;
        c.server = -1;
        c.state = ConnState::Free;
        c.generation = (c.generation + 1) & GEN_MASK;
        self.free.push(slot as u32);
        self.counters.active -= 1;
        self.counters.closed += 1;
    }
}
