//! The shard's loop: one `io_uring_enter` submits what is queued and waits
//! for a completion (the timer wheel's next wake-up is a ring timeout, see
//! `timers.rs`); then every completion is handled, the due timers fire, and
//! the counters are published.
//!
//! Between two handlers the loop runs what a handler may only ask for:
//! waking directions that wait for a buffer, and serving clients that wait
//! for the budget once a pair has been freed. No handler ever runs another
//! pair's state machine from inside its own.
//!
//! Failure policy: a shard whose ring fails (`io_uring_enter` or a submit
//! returns an error other than an interruption or a full completion queue)
//! cannot go on. It logs the reason, resets and closes its connections,
//! closes its listening sockets, records the reason in its published stats
//! and ends its thread; the runtime notices within a second, stops the other
//! shards, and the process exits non-zero so that its supervisor restarts it.
//! A process that limps on with fewer shards, or with connections nobody
//! drives, is worse than a restart.

use std::time::{Duration, Instant};

use io_uring::cqueue;
use io_uring::opcode;
use io_uring::types::{CancelBuilder, Fd};
use uring_kit::Completion;

use super::pair::PairState;
use super::timers::Timer;
use super::token::{Op, Tag};
use super::{Command, Shard};
use crate::access_log::Cause;
use crate::net::{close_fd, set_reset_on_close};
use crate::pool::Pools;

/// How long past the stop deadline a shard waits for aborted pairs'
/// completions before it exits anyway.
pub(super) const STOP_ESCAPE: Duration = Duration::from_secs(2);

/// Why a shard stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("io_uring_enter failed: {0}")]
    Enter(std::io::Error),
    #[error("submitting to the ring failed: {0}")]
    Submit(std::io::Error),
}

impl Shard {
    /// Runs the shard until it is told to stop (`Ok`), or until its ring
    /// fails (`Err`, after closing what it holds; see the module doc).
    pub fn run(mut self) -> Result<(), ShardError> {
        let result = self.run_loop();
        // No more hand-offs to this ring: its fd closes with the shard.
        self.mesh.set_ring_fd(self.id, -1);
        match result {
            Ok(()) => {
                self.stop_cleanly();
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    shard = self.id,
                    "shard cannot go on: {e}; resetting its {} connection(s) and closing its listeners",
                    self.counters.active
                );
                self.stop_failed();
                Err(e)
            }
        }
    }

    fn run_loop(&mut self) -> Result<(), ShardError> {
        for l in 0..self.listeners.len() {
            self.arm_accept(l);
        }
        self.arm_commands();
        let mut batch = Vec::with_capacity(1024);
        loop {
            if let Some(e) = self.fatal.take() {
                return Err(ShardError::Submit(e));
            }
            self.arm_wake();
            self.ring
                .submit_and_wait(1, None)
                .map_err(ShardError::Enter)?;
            self.now = Instant::now();
            std::mem::swap(&mut batch, &mut self.completions);
            batch.clear();
            self.ring.reap(&mut batch);
            self.counters.wakes += 1;
            self.counters.completions += batch.len() as u64;
            for &c in &batch {
                self.dispatch(c);
                self.run_deferred();
            }
            std::mem::swap(&mut batch, &mut self.completions);
            self.run_timers();
            self.run_deferred();
            self.publish();
            if let Some(deadline) = self.stop_deadline {
                // Clients whose accept completed before the cancel took
                // effect arrive up to the accept's last completion: wait
                // for it, and serve them.
                if self.counters.active == 0 && self.accepts_settled() {
                    return Ok(());
                }
                if self.now >= deadline + STOP_ESCAPE {
                    tracing::warn!(
                        shard = self.id,
                        pairs = self.counters.active,
                        "pairs still closing after the stop deadline; leaving them to the final cancel"
                    );
                    return Ok(());
                }
            }
        }
    }

    /// What handlers leave to the loop (see the module doc).
    fn run_deferred(&mut self) {
        self.wake_buffer_waiters();
        if std::mem::take(&mut self.pair_freed) {
            self.after_pair_freed();
        }
        self.run_queue_dispatch();
    }

    fn arm_commands(&mut self) {
        let entry = opcode::Read::new(Fd(self.wake), (&mut *self.wake_buf as *mut u64).cast(), 8)
            .build()
            .user_data(Tag::new(Op::Command, 0, 0, 0).encode());
        // SAFETY: the 8-byte buffer is boxed in the shard, dropped after the ring.
        unsafe { self.push(&[entry]) };
    }

    fn dispatch(&mut self, c: Completion) {
        let Some(tag) = Tag::decode(c.user_data) else {
            tracing::error!(
                shard = self.id,
                user_data = c.user_data,
                "completion with an unknown token"
            );
            return;
        };
        match tag.op {
            Op::Accept => self.on_accept(tag.slot as usize, c.result, c.flags),
            Op::Command => self.on_command(),
            Op::Wake => self.on_wake(tag.slot),
            Op::Handoff => self.on_handoff(),
            Op::Ignore => {}
            _ => self.on_pair_completion(tag, c.result, c.flags),
        }
    }

    fn on_pair_completion(&mut self, tag: Tag, result: i32, flags: u32) {
        let slot = tag.slot as usize;
        let p = &mut self.pairs[slot];
        if p.generation != tag.generation || p.state == PairState::Free {
            // Cannot happen while every submission is counted in
            // `inflight`; still, never leak a buffer.
            debug_assert!(false, "a completion for a freed pair: {tag:?}");
            if let Some(bid) = cqueue::buffer_select(flags) {
                let buf = self.buffers().take(bid);
                self.buffers().give_back(buf);
            }
            return;
        }
        // A multishot operation stays in flight until a completion without F_MORE.
        if !cqueue::more(flags) {
            p.inflight -= 1;
        }
        if p.state == PairState::Closing {
            self.on_closing_completion(slot, tag.op, tag.dir, result, flags);
            return;
        }
        match tag.op {
            Op::Connect => self.on_connect(slot, result),
            Op::ProxyPoll => self.on_proxy_readable(slot, result),
            Op::ConnectTimeout | Op::Cancel => {}
            op => self.on_forward_completion(slot, op, tag.dir, result, flags),
        }
    }

    #[cold]
    fn on_command(&mut self) {
        self.arm_commands();
        self.on_lease_replies();
        while let Some(cmd) = self.commands.pop() {
            match cmd {
                Command::Swap(swap) => self.swap(*swap),
                Command::Stop { grace } => {
                    // A second stop only ever shortens the first one's grace.
                    let deadline = self.now + grace;
                    if self.stop_deadline.is_some_and(|d| d <= deadline) {
                        continue;
                    }
                    tracing::debug!(shard = self.id, ?grace, "stopping");
                    if self.stop_deadline.is_none() {
                        self.stop_accepting();
                    }
                    self.stop_deadline = Some(deadline);
                    if grace.is_zero() {
                        self.abort_all();
                        self.arm_timer(deadline + STOP_ESCAPE, Timer::StopEscape);
                    } else {
                        self.arm_timer(deadline, Timer::StopDeadline);
                    }
                }
            }
        }
    }

    /// Resets every pair that is still open (the stop deadline passed).
    pub(super) fn abort_all(&mut self) {
        self.abort_queued();
        for slot in 0..self.pairs.len() {
            if matches!(
                self.pairs[slot].state,
                PairState::ProxyHeader
                    | PairState::Shaped
                    | PairState::Waiting
                    | PairState::Connecting
                    | PairState::Forwarding
            ) {
                self.abort(slot, Cause::Killed);
            }
        }
    }

    /// After a stop: hand the last closes to the kernel, cancel what is
    /// left (the eventfd read, accepts, the wake timeout) synchronously so
    /// nothing in the kernel still points at this shard's memory, and close
    /// what is still open (pairs left after the escape, the listeners).
    fn stop_cleanly(&mut self) {
        self.publish();
        if let Err(e) = self.ring.submit() {
            tracing::warn!(shard = self.id, "final submit failed: {e}");
        }
        let cancelled = self.cancel_everything();
        self.close_what_is_left(cancelled);
        tracing::debug!(shard = self.id, "shard stopped");
    }

    /// After a failure: the same, with every fd closed directly (the ring
    /// may be unusable).
    fn stop_failed(&mut self) {
        self.fatal
            .get_or_insert_with(|| std::io::Error::other("shard failed"));
        let cancelled = self.cancel_everything();
        self.close_what_is_left(cancelled);
    }

    /// Resets and closes every pair still open, gives back what they
    /// counted, closes the listeners and the spare fd. When the kernel did
    /// not confirm that nothing is in flight (`cancelled` false), the
    /// memory it could still use is left to it.
    fn close_what_is_left(&mut self, cancelled: bool) {
        for slot in 0..self.pairs.len() {
            let p = &mut self.pairs[slot];
            match p.state {
                PairState::Free => continue,
                PairState::Waiting => self.counters.waiting -= 1,
                PairState::Queued => {
                    self.pools.pools[p.pool as usize].queue.leave();
                    self.counters.queue_len -= 1;
                }
                _ => {}
            }
            for fd in [p.client, p.server] {
                if fd >= 0 {
                    set_reset_on_close(fd);
                    close_fd(fd);
                }
            }
            p.client = -1;
            p.server = -1;
            if p.budgeted {
                p.budgeted = false;
                self.budget.release();
            }
            if cancelled {
                for d in 0..2 {
                    let (bufs, pipe) = self.pairs[slot].dirs[d].release();
                    for b in bufs {
                        self.buffers().give_back(b);
                    }
                    if let Some((pipe, _)) = pipe {
                        self.pipes.release(pipe, false);
                    }
                }
            }
            self.release_server(slot);
            self.leave_listener(slot);
            let l = self.pairs[slot].listener as usize;
            self.listeners[l].counts.active -= 1;
            self.listener_counts_changed = true;
            self.pairs[slot].state = PairState::Free;
            self.counters.active -= 1;
        }
        if !cancelled {
            // The kernel may still hold operations that point at the buffer
            // ring, the eventfd buffer or a timespec: leave that memory to
            // it for the rest of the process's (short) life.
            if let Some(b) = self.buffers.take() {
                b.leak();
            }
            Box::leak(std::mem::take(&mut self.wake_buf));
            Box::leak(std::mem::take(&mut self.connect_timeout));
            Box::leak(std::mem::take(&mut self.wake_ts));
        }
        // No other shard may hand this one a slot any more.
        for pool in &self.pools.pools {
            pool.queue
                .publish_head(self.id, crate::waiting_room::EMPTY, true);
        }
        self.close_listeners();
        close_fd(self.spare_fd);
        self.spare_fd = -1;
        self.reconcile_server_counts();
        self.publish();
    }

    /// Cancels every operation still in flight, synchronously. Returns
    /// whether the kernel confirmed it.
    fn cancel_everything(&mut self) -> bool {
        match self
            .ring
            .io_uring()
            .submitter()
            .register_sync_cancel(None, CancelBuilder::any())
        {
            Ok(()) => true,
            // Nothing was in flight.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => {
                tracing::debug!(shard = self.id, "final cancel: {e}");
                false
            }
        }
    }

    fn close_listeners(&mut self) {
        self.drop_held();
        for l in &mut self.listeners {
            close_fd(l.fd);
            l.fd = -1;
        }
    }

    /// Every pair of this shard is gone, so its own count of pairs per
    /// server must be zero; if a bug left some, take them back from the
    /// servers' shared totals so least-connections does not see phantoms.
    fn reconcile_server_counts(&mut self) {
        let current = (&self.pools, &mut self.local_active);
        let retired = self
            .retired
            .iter_mut()
            .map(|r| (&r.pools, &mut r.local_active));
        for (pools, local_active) in std::iter::once(current).chain(retired) {
            Self::take_back(self.id, pools, local_active);
        }
    }

    fn take_back(id: usize, pools: &Pools, local_active: &mut [Vec<u32>]) {
        for (p, counts) in local_active.iter_mut().enumerate() {
            for (s, n) in counts.iter_mut().enumerate() {
                if *n > 0 {
                    let server = &pools.pools[p].servers[s];
                    tracing::error!(
                        shard = id,
                        server = %server.name,
                        "{n} connection(s) still counted after the shard stopped; taking them back"
                    );
                    server
                        .live
                        .active
                        .fetch_sub(u64::from(*n), std::sync::atomic::Ordering::Relaxed);
                    *n = 0;
                }
            }
        }
    }
}
