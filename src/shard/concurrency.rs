//! A listener's concurrency limits on the data path: a place under its
//! `maxconn` taken for each client before it is served (or the client held,
//! unread, until one frees), and what a pair holds of `maxconn` and
//! `conn_per_src` given back when it ends. The counts themselves are
//! `crate::limit::concurrency`; `conn_per_src` is checked in `admission`
//! (`accept.rs`).

use std::os::fd::RawFd;

use super::accept::Pause;
use super::log_limit::LogKind;
use super::swap::NO_LISTENER_POOL;
use super::timers::BUDGET_RETRY;
use super::Shard;
use crate::net::{close_fd, set_reset_on_close};

impl Shard {
    /// Serves a client just accepted on listener `l` (or held at its
    /// `maxconn`) if it can have a place under that limit; false leaves
    /// `fd` untouched.
    pub(super) fn take_place(&mut self, l: usize, fd: RawFd) -> bool {
        let past_grace = self.stop_deadline.is_some_and(|d| self.now >= d);
        let listener = &self.listeners[l];
        if past_grace || listener.pool == NO_LISTENER_POOL {
            // Accepted after the stop deadline (completions already on
            // their way when the accept was cancelled), or on a listener a
            // reload removed with its pool. One accepted during the grace
            // period is served like any other: after a binary upgrade the
            // new process would have served it.
            set_reset_on_close(fd);
            close_fd(fd);
            return true;
        }
        if listener
            .maxconn
            .is_some_and(|max| !listener.gate.try_enter(max))
        {
            return false;
        }
        // From here until a pair holds it (`new_pair`) or the client is
        // refused (`refuse_fresh`), the client holds a place exactly when
        // its listener has a maxconn.
        if listener.accept_proxy {
            self.await_proxy_header(l, fd);
        } else if listener.checks_clients() {
            self.admit_checked(l, fd);
        } else {
            self.take_client(l, fd, None, None);
        }
        true
    }

    /// A client accepted past listener `l`'s `maxconn`: it waits unread
    /// for a place, and the listener stops accepting meanwhile.
    pub(super) fn hold_at_maxconn(&mut self, l: usize, fd: RawFd) {
        let listener = &mut self.listeners[l];
        listener.held.push_back(fd);
        listener.counts.maxconn_waits += 1;
        self.listener_counts_changed = true;
        if self.log.admit(LogKind::AcceptMaxconn, self.now) {
            tracing::info!(
                shard = self.id,
                listener = %self.listeners[l].name,
                maxconn = self.listeners[l].maxconn,
                "listener at its maxconn: accepting paused, new clients wait in the backlog"
            );
        }
        self.arm_log_summary();
        self.pause_accept(l, Pause::Maxconn);
        self.arm_retry(BUDGET_RETRY);
    }

    /// Serves the clients held at listener `l`'s `maxconn` while places
    /// are free.
    pub(super) fn serve_held(&mut self, l: usize) {
        while let Some(fd) = self.listeners[l].held.pop_front() {
            if !self.take_place(l, fd) {
                self.listeners[l].held.push_front(fd);
                self.arm_retry(BUDGET_RETRY);
                return;
            }
        }
    }

    /// Resets a client of listener `l` that was never given a pair (denied,
    /// refused, or gone), giving back its place under `maxconn`.
    pub(super) fn refuse_fresh(&mut self, l: usize, fd: RawFd) {
        set_reset_on_close(fd);
        close_fd(fd);
        if self.listeners[l].maxconn.is_some() {
            self.listeners[l].gate.leave();
            // A place freed: clients held for one are looked at (by the
            // loop, after this handler).
            self.pair_freed = true;
        }
    }

    /// Gives back what a pair holds of its listener's concurrency limits.
    pub(super) fn leave_listener(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        let gate = &self.listeners[p.listener as usize].gate;
        if std::mem::take(&mut p.listener_place) {
            gate.leave();
        }
        if let Some(slots) = p.src_slots.take() {
            gate.leave_src(slots);
        }
    }

    /// Resets the clients held at `maxconn` (the shard is stopping).
    pub(super) fn drop_held(&mut self) {
        for l in &mut self.listeners {
            for fd in l.held.drain(..) {
                set_reset_on_close(fd);
                close_fd(fd);
            }
        }
    }
}
