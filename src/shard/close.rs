//! Ending a pair: stop what is in flight, wait for every outstanding
//! completion, then close both fds and free the slot under a new
//! generation.
//!
//! What is in flight is cancelled by each operation's `user_data`, which
//! the kernel finds in its hash of armed requests at once; a cancel by fd
//! would walk every request armed on the ring, for every close (measured:
//! 5,000 slow clients closing at their timeout kept one shard inside
//! `io_uring_enter` for seconds). The pair's state says which operations
//! can be in flight; should one be missed, a cancel by fd follows after
//! [`CANCEL_ESCAPE`] (counted in `cancel_fallbacks`).
//!
//! A pair ends with a clean FIN only if every byte it took from one side
//! reached the other. Bytes still in a direction's outbox or pipe when the
//! pair finishes, and data that completions bring in after the close was
//! decided (a multishot receive, a ring splice), are lost: the close then
//! becomes a reset (SO_LINGER 0) on both sides, so no peer mistakes a cut
//! stream for a complete one.

use std::time::Duration;

use io_uring::opcode;
use io_uring::types::{CancelBuilder, Fd};
use smallvec::SmallVec;

use super::pair::{PairState, DOWN, UP};
use super::swap::find_snapshot;
use super::token::{Op, Tag};
use super::Shard;
use crate::access_log::{Cause, Name, Phase, Record};
use crate::config::ForwardMode;
use crate::net::{close_fd, set_reset_on_close};

/// How long a closing pair waits for its cancelled operations before the
/// fallback cancel by fd.
pub const CANCEL_ESCAPE: Duration = Duration::from_secs(1);

impl Shard {
    /// Ends the pair with RST on both sides, for `cause` (unless one was
    /// recorded already).
    pub(super) fn abort(&mut self, slot: usize, cause: Cause) {
        self.pairs[slot].end_by(cause);
        self.pairs[slot].reset = true;
        self.close(slot);
    }

    /// Counts the client of `slot` as turned away by its listener (no
    /// server, queue full or timed out).
    pub(super) fn reject(&mut self, slot: usize) {
        let l = self.pairs[slot].listener as usize;
        self.listeners[l].counts.rejected += 1;
        self.listener_counts_changed = true;
    }

    /// Ends the pair: cancels its operations in flight; the fds close once
    /// the last completion is in.
    pub(super) fn close(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        match p.state {
            PairState::Closing | PairState::Free => return,
            PairState::Waiting => self.counters.waiting -= 1,
            PairState::ProxyHeader | PairState::Shaped => {}
            // Its queue entry was taken out by whoever closes it.
            PairState::Queued | PairState::Connecting | PairState::Forwarding => {}
        }
        if p.phase.is_none() {
            p.phase = Some(p.phase_now());
        }
        let was = p.state;
        p.state = PairState::Closing;
        if p.dirs.iter().any(|d| d.undelivered() > 0) {
            p.reset = true;
        }
        if p.inflight > 0 {
            if self.forward == ForwardMode::SpliceRing {
                for fd in [p.client, p.server] {
                    if fd >= 0 {
                        // A splice blocked in an io-wq worker wakes on
                        // shutdown.
                        // SAFETY: plain shutdown(2) on an fd of this pair.
                        unsafe { libc::shutdown(fd, libc::SHUT_RD) };
                    }
                }
            }
            let generation = p.generation;
            let mut targets: SmallVec<[u64; 6]> = SmallVec::new();
            match was {
                PairState::Connecting => {
                    // Its linked timeout goes with it.
                    targets.push(Tag::new(Op::Connect, slot as u32, generation, 0).encode());
                }
                PairState::ProxyHeader => {
                    targets.push(Tag::new(Op::ProxyPoll, slot as u32, generation, 0).encode());
                }
                _ => {}
            }
            for (d, dir) in p.dirs.iter().enumerate() {
                for op in dir.in_flight() {
                    targets.push(Tag::new(op, slot as u32, generation, d).encode());
                }
            }
            for target in targets {
                self.cancel_for(slot, CancelBuilder::user_data(target));
            }
            // Should the state have missed one, the fallback cancels by fd.
            if let Some(key) = self.pairs[slot].timer.take() {
                self.timers.cancel(key);
            }
            self.arm_idle(slot, self.now + CANCEL_ESCAPE);
        }
        self.maybe_finish(slot);
    }

    /// Submits a cancel for the pair of `slot`, counted in its in-flight
    /// operations (its completion is a `Cancel`).
    fn cancel_for(&mut self, slot: usize, what: CancelBuilder) {
        let p = &mut self.pairs[slot];
        p.inflight += 1;
        let entry = opcode::AsyncCancel2::new(what)
            .build()
            .user_data(Tag::new(Op::Cancel, slot as u32, p.generation, 0).encode());
        // SAFETY: no pointers.
        unsafe { self.push(&[entry]) };
    }

    /// A closing pair still waits for completions [`CANCEL_ESCAPE`] after
    /// its cancels: cancel whatever is left on its fds (the slow path the
    /// targeted cancels avoid), and look again as long as it waits.
    pub(super) fn closing_stuck(&mut self, slot: usize) {
        let p = &self.pairs[slot];
        if p.inflight == 0 {
            return;
        }
        self.counters.cancel_fallbacks += 1;
        for fd in [p.client, p.server] {
            if fd >= 0 {
                self.cancel_for(slot, CancelBuilder::fd(Fd(fd)).all());
            }
        }
        self.arm_idle(slot, self.now + CANCEL_ESCAPE);
    }

    /// A completion for a pair that is closing: settle what it carries.
    pub(super) fn on_closing_completion(
        &mut self,
        slot: usize,
        op: Op,
        d: usize,
        result: i32,
        flags: u32,
    ) {
        match op {
            Op::Recv if result > 0 => {
                if let Some(bid) = io_uring::cqueue::buffer_select(flags) {
                    let buf = self.buffers().take(bid);
                    self.buffers().give_back(buf);
                }
                // Bytes read from one side that will never reach the other.
                self.pairs[slot].reset = true;
            }
            Op::Send => self.pairs[slot].dirs[d].sent_while_closing(result),
            Op::SpliceIn => self.pairs[slot].dirs[d].ring_spliced_while_closing(true, result),
            Op::SpliceOut => self.pairs[slot].dirs[d].ring_spliced_while_closing(false, result),
            _ => {}
        }
        self.maybe_finish(slot);
    }

    pub(super) fn maybe_finish(&mut self, slot: usize) {
        let p = &self.pairs[slot];
        if p.state == PairState::Closing && p.inflight == 0 {
            self.finish(slot);
        }
    }

    /// Frees everything the pair holds; nothing is in flight for it.
    fn finish(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        if p.dirs.iter().any(|d| d.undelivered() > 0) {
            p.reset = true;
        }
        let (client, server, reset) = (p.client, p.server, p.reset);
        if self.access_log.is_some() {
            self.log_access(slot);
        }
        for d in 0..2 {
            let (bufs, pipe) = self.pairs[slot].dirs[d].release();
            for b in bufs {
                self.buffers().give_back(b);
            }
            if let Some((pipe, bytes)) = pipe {
                self.pipes.release(pipe, bytes == 0);
            }
        }
        // While clients wait for fds, close at once so the next one can use
        // them in this turn of the loop; otherwise through the ring.
        let now = self.fatal.is_some() || !self.waiting.is_empty() || self.fds_short();
        for fd in [client, server] {
            if fd < 0 {
                continue;
            }
            if reset {
                set_reset_on_close(fd);
            }
            if now {
                close_fd(fd);
                continue;
            }
            let entry = opcode::Close::new(Fd(fd))
                .build()
                .user_data(Tag::new(Op::Ignore, 0, 0, 0).encode());
            // SAFETY: no pointers; nothing is in flight on this fd any more.
            unsafe { self.push(&[entry]) };
        }
        self.release_server(slot);
        self.leave_listener(slot);
        self.forget_lease_wait(slot);
        let p = &mut self.pairs[slot];
        if p.budgeted {
            p.budgeted = false;
            self.budget.release();
        }
        if let Some(key) = p.timer.take() {
            self.timers.cancel(key);
        }
        p.client = -1;
        p.server = -1;
        p.state = PairState::Free;
        p.generation = uring_kit::token::next_generation(p.generation);
        self.free.push(slot as u32);
        let l = p.listener as usize;
        self.listeners[l].counts.active -= 1;
        self.listener_counts_changed = true;
        self.counters.active -= 1;
        self.counters.closed += 1;
        if reset {
            self.counters.resets += 1;
        }
        self.pair_freed = true;
    }

    /// Hands the access log writer a record of the pair (dropped and
    /// counted when the writer is behind). Called as the pair finishes,
    /// while the snapshot of the server it holds is still there.
    #[inline(never)]
    fn log_access(&mut self, slot: usize) {
        let p = &self.pairs[slot];
        let (pool, server) = match p.last_server {
            Some((epoch, pool, si)) => (Some((epoch, pool)), Some(si)),
            None => (Some((p.epoch, p.pool)), None),
        };
        let pool = pool.and_then(|(epoch, pool)| {
            find_snapshot(&self.pools, self.epoch, &self.retired, epoch)?
                .pools
                .get(pool as usize)
        });
        let server = server.and_then(|si| pool?.servers.get(si as usize));
        let record = Record {
            shard: self.id as u16,
            accepted: p.accepted,
            client: p.client_addr,
            listener: Name::new(&self.listeners[p.listener as usize].name),
            pool: pool.map_or(Name::EMPTY, |pl| Name::new(&pl.name)),
            server: server.map_or(Name::EMPTY, |s| Name::new(&s.name)),
            server_addr: server.map(|s| s.addr),
            queued: p
                .dispatched
                .map(|t| t.saturating_duration_since(p.accepted)),
            connect: p.connected_in,
            total: self.now.saturating_duration_since(p.accepted),
            bytes_in: p.bytes[UP],
            bytes_out: p.bytes[DOWN],
            cause: p.cause,
            phase: p.phase.unwrap_or(Phase::Waiting),
            attempts: p.attempts,
            reset: p.reset,
        };
        let queue = self.access_log.as_ref().expect("called with the log on");
        if queue.push(record).is_err() {
            self.counters.access_log_dropped += 1;
        }
    }
}
