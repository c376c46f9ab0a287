//! Everything a shard schedules, on one timer wheel (`crate::timer_wheel`):
//! O(1) to arm and to cancel, and a tick whose cost does not grow with the
//! number of idle pairs. One ring timeout wakes the loop for the wheel's
//! next wake-up; it is re-armed only when that moves earlier, so waiting in
//! `io_uring_enter` sets up no timer of its own.
//!
//! - Idle: one timer per pair, armed at accept. Activity only records a
//!   time (no timer work per byte); when the timer fires, the pair's real
//!   deadline is worked out (`Pair::idle_deadline`) and the timer re-armed
//!   for it, or the pair is closed.
//! - A listener's accept resumes after a pause for fds or memory, or after
//!   a back-off.
//! - Retry: clients waiting for the connection budget, and listeners paused
//!   at it, look again (a pair closing on another shard frees budget too).
//! - Queue poll: a shard with queued clients looks for free server slots.
//! - The stop deadline, and the summaries of rate-limited log lines.

use std::time::{Duration, Instant};

use io_uring::opcode;

use super::log_limit::Summary;
use super::pair::{PairState, Side};
use super::token::{Op, Tag};
use super::Shard;
use crate::access_log::Cause;

/// How often clients waiting for the budget (and listeners paused at it)
/// look again, for budget freed by other shards. Budget freed on this shard
/// is used at once.
pub const BUDGET_RETRY: Duration = Duration::from_millis(20);

/// How long accepting pauses when the process is out of fds or memory
/// (sooner if a pair of this shard closes).
pub const RESOURCE_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Idle {
        slot: u32,
        generation: u32,
    },
    AcceptResume {
        listener: u32,
    },
    Retry,
    /// Open pairs are aborted.
    StopDeadline,
    /// Wakes the loop to give up on pairs still closing.
    StopEscape,
    LogSummary,
    /// A shard with queued clients looks for free slots.
    QueuePoll,
}

impl Shard {
    /// Arms `timer` for `at`.
    pub(super) fn arm_timer(&mut self, at: Instant, timer: Timer) -> crate::timer_wheel::TimerKey {
        self.timers_changed = true;
        self.timers.arm(at, timer)
    }

    /// Arms the pair's idle timer for its current deadline.
    pub(super) fn arm_idle(&mut self, slot: usize, at: Instant) {
        let generation = self.pairs[slot].generation;
        let key = self.arm_timer(
            at,
            Timer::Idle {
                slot: slot as u32,
                generation,
            },
        );
        self.pairs[slot].timer = Some(key);
    }

    /// Arms the retry timer unless it is armed already.
    pub(super) fn arm_retry(&mut self, after: Duration) {
        if self.retry_timer.is_none() {
            self.retry_timer = Some(self.arm_timer(self.now + after, Timer::Retry));
        }
    }

    /// Makes sure a ring timeout wakes the loop by the wheel's next
    /// wake-up.
    pub(super) fn arm_wake(&mut self) {
        // Only an armed timer can move the next wake-up earlier (a cancel
        // moves it later, and the armed timeout then just fires early).
        if self.wake_armed.is_some() && !std::mem::take(&mut self.timers_changed) {
            return;
        }
        let Some(at) = self.timers.next_wake() else {
            return;
        };
        if self.wake_armed.is_some_and(|armed| armed <= at) {
            return;
        }
        let after = at.saturating_duration_since(Instant::now());
        *self.wake_ts = io_uring::types::Timespec::new()
            .sec(after.as_secs())
            .nsec(after.subsec_nanos());
        self.wake_seq = self.wake_seq.wrapping_add(1);
        self.wake_armed = Some(at);
        let entry = opcode::Timeout::new(&*self.wake_ts)
            .build()
            .user_data(Tag::new(Op::Wake, self.wake_seq, 0, 0).encode());
        // SAFETY: the timespec is boxed in the shard, which outlives the
        // ring (the kernel also copies it when the timeout is submitted).
        unsafe { self.push(&[entry]) };
    }

    /// The wake-up timeout armed as `seq` fired (or was cancelled).
    pub(super) fn on_wake(&mut self, seq: u32) {
        if seq == self.wake_seq {
            self.wake_armed = None;
        }
    }

    /// Fires every timer that is due.
    pub(super) fn run_timers(&mut self) {
        // Nothing is due before the armed wake-up: timers armed since were
        // armed for later than now.
        if self.wake_armed.is_some_and(|at| self.now < at) {
            return;
        }
        let mut expired = std::mem::take(&mut self.expired);
        self.timers.advance(self.now, &mut expired);
        for t in expired.drain(..) {
            self.on_timer(t);
        }
        self.expired = expired;
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Idle { slot, generation } => self.on_idle_timer(slot as usize, generation),
            Timer::AcceptResume { listener } => self.resume_accept(listener as usize),
            Timer::Retry => {
                self.retry_timer = None;
                self.admit_waiting();
                self.resume_paused_at_budget();
            }
            Timer::StopDeadline => {
                self.abort_all();
                self.arm_timer(self.now + super::driver::STOP_ESCAPE, Timer::StopEscape);
            }
            // The loop itself checks the escape.
            Timer::StopEscape => {}
            Timer::QueuePoll => self.on_queue_poll(),
            Timer::LogSummary => {
                self.log_timer = None;
                let id = self.id;
                self.log.due(self.now, |s: Summary| {
                    tracing::warn!(
                        shard = id,
                        "{} more {} in the last {:.1}s",
                        s.count,
                        s.kind.describe(),
                        s.over.as_secs_f64()
                    );
                });
                self.arm_log_summary();
            }
        }
    }

    fn on_idle_timer(&mut self, slot: usize, generation: u32) {
        if slot >= self.pairs.len() {
            return;
        }
        let p = &mut self.pairs[slot];
        if p.generation != generation || p.state == PairState::Free {
            return;
        }
        p.timer = None;
        if p.state == PairState::Closing {
            self.closing_stuck(slot);
            return;
        }
        let queued = p.state == PairState::Queued;
        let header = p.state == PairState::ProxyHeader;
        let shaped = p.state == PairState::Shaped;
        match p.idle_deadline(self.now, &self.timeouts) {
            Ok(at) => self.arm_idle(slot, at),
            Err(_) if queued => self.queue_timeout(slot),
            Err(_) if header => self.proxy_header_timeout(slot),
            Err(_) if shaped && self.pairs[slot].awaiting_lease => self.lease_timeout(slot),
            Err(_) if shaped => self.release_shaped(slot),
            Err(side) => {
                self.counters.idle_timeouts += 1;
                tracing::debug!(
                    shard = self.id,
                    slot,
                    "idle timeout on the {} side",
                    match side {
                        Side::Client => "client",
                        Side::Server => "server",
                    }
                );
                self.pairs[slot].end_by(match side {
                    Side::Client => Cause::ClientTimeout,
                    Side::Server => Cause::ServerTimeout,
                });
                self.close(slot);
            }
        }
    }

    /// Arms the timer for the next due log summary, if one is pending.
    pub(super) fn arm_log_summary(&mut self) {
        if self.log_timer.is_none() {
            if let Some(at) = self.log.next_due() {
                self.log_timer = Some(self.arm_timer(at, Timer::LogSummary));
            }
        }
    }
}
