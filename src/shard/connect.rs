//! Connecting a pair to a server: pick one (or queue for one, `queue.rs`),
//! connect through the ring bounded by the connect timeout (a linked
//! timeout), and on failure redispatch to another server up to the pool's
//! `retries`, then reset the client. Each result feeds the server's outlier
//! state (ejection, trial, return) and, for `leasttime`, its latency.
//!
//! A server is blamed only for what it did: a failed or timed-out connect.
//! A server socket that cannot be created for lack of fds or memory is the
//! process's shortage: the client waits for an fd (`accept.rs`) and no
//! server is marked tried. Redispatch is a loop, not a recursion.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use io_uring::opcode;
use io_uring::squeue::Flags;
use io_uring::types::Fd;

use super::direction::Event;
use super::log_limit::LogKind;
use super::pair::{PairState, Ttfb, DOWN, UP};
use super::swap::{snapshot, NO_POOL};
use super::token::{Op, Tag};
use super::Shard;
use crate::access_log::Cause;
use crate::balance::{self, Choice, Pick};
use crate::config::{BalanceKind, ForwardMode, LeastTimeObserve, SendProxy};
use crate::net::{close_fd, server_socket};
use crate::outlier::Change;

/// Why a connect failed, shown without allocating.
struct ConnectError(i32);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == -libc::ECANCELED {
            f.write_str("connect timeout")
        } else {
            write!(f, "{}", std::io::Error::from_raw_os_error(-self.0))
        }
    }
}

fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Shard {
    /// Picks a server for `slot` and submits the connect; on a server
    /// socket that cannot be made, tries the next server. When every
    /// usable server is full, or other clients already wait for one, the
    /// client joins the pool's queue (`queue.rs`).
    pub(super) fn connect(&mut self, slot: usize) {
        self.connect_with(slot, true);
    }

    /// [`Shard::connect`]; `behind_waiters`: a newcomer queues behind the
    /// clients already waiting (false for a waiter being served).
    pub(super) fn connect_with(&mut self, slot: usize, behind_waiters: bool) {
        loop {
            let p = &self.pairs[slot];
            debug_assert_eq!(p.epoch, self.epoch, "picks use the current snapshot");
            if p.pool == NO_POOL {
                self.give_up(slot);
                return;
            }
            let pool_i = p.pool as usize;
            let pool = &self.pools.pools[pool_i];
            let now_ms = crate::clock::millis(self.now);
            // Newcomers wait behind the clients already waiting (unless no
            // server is up at all: then no wait can help).
            if behind_waiters && p.attempts == 0 && !pool.queue.is_empty() && pool.any_up() {
                self.enqueue(slot);
                return;
            }
            match balance::choose(
                self.balancers[pool_i].as_mut(),
                pool,
                p.tried,
                now_ms,
                p.key,
            ) {
                Choice::Server(pick) => {
                    if self.start_connect(slot, pick) {
                        return;
                    }
                }
                Choice::Full => {
                    self.enqueue(slot);
                    return;
                }
                Choice::Nothing => {
                    self.give_up(slot);
                    return;
                }
            }
        }
    }

    /// Connects `slot` to the server picked, whose slot it holds. Returns
    /// false when the server socket could not be made and another server
    /// should be picked (the slot, and a trial it claimed, are given back).
    pub(super) fn start_connect(&mut self, slot: usize, pick: Pick) -> bool {
        let si = pick.server;
        let pool_i = self.pairs[slot].pool as usize;
        let server = &self.pools.pools[pool_i].servers[si];
        let fd = match server_socket(&server.addr) {
            Ok(fd) => fd,
            Err(e) if is_resource_error(&e) => {
                self.give_back_pick(self.epoch, pool_i, pick);
                // The spare fd makes room for this one socket; without
                // it, the client waits for an fd.
                if self.release_spare_fd() {
                    return false;
                }
                self.wait_for_fds(slot, &e);
                return true;
            }
            Err(e) => {
                self.give_back_pick(self.epoch, pool_i, pick);
                if self.log.admit(LogKind::SocketError, self.now) {
                    let server = &self.pools.pools[pool_i].servers[si];
                    tracing::warn!(shard = self.id, server = %server.name, "cannot create a socket: {e}");
                }
                self.arm_log_summary();
                let p = &mut self.pairs[slot];
                p.mark_tried(si);
                p.attempts += 1;
                if !self.may_retry(slot) {
                    self.give_up(slot);
                    return true;
                }
                self.counters.redispatches += 1;
                return false;
            }
        };
        if self.forward == ForwardMode::SpliceRing {
            // IORING_OP_SPLICE on a non-blocking socket would spin in io-wq.
            // SAFETY: fcntl on an fd we just created.
            unsafe {
                let fl = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
        let server = &self.pools.pools[pool_i].servers[si];
        let (addr, addr_len) = (server.sockaddr.as_ptr(), server.sockaddr.len());
        self.local_active[pool_i][si] += 1;
        let p = &mut self.pairs[slot];
        p.server = fd;
        p.server_index = Some(si as u32);
        p.trial = pick.trial;
        p.attempts += 1;
        p.state = PairState::Connecting;
        p.connect_started = self.now;
        p.dispatched.get_or_insert(self.now);
        p.connect_error = 0;
        p.last_server = Some((self.epoch, pool_i as u32, si as u32));
        p.inflight += 2;
        let generation = p.generation;
        let connect = opcode::Connect::new(Fd(fd), addr.cast(), addr_len)
            .build()
            .flags(Flags::IO_LINK)
            .user_data(Tag::new(Op::Connect, slot as u32, generation, 0).encode());
        let timeout = opcode::LinkTimeout::new(&*self.connect_timeout)
            .build()
            .user_data(Tag::new(Op::ConnectTimeout, slot as u32, generation, 0).encode());
        // SAFETY: the sockaddr lives in the pools snapshot, which the
        // shard holds (Arc) for its whole life; the timespec is boxed in
        // the shard.
        unsafe { self.push(&[connect, timeout]) };
        true
    }

    pub(super) fn on_connect(&mut self, slot: usize, result: i32) {
        let p = &mut self.pairs[slot];
        debug_assert_eq!(p.state, PairState::Connecting);
        let si = p.server_index.expect("connecting without a server") as usize;
        let pool_i = p.pool as usize;
        let pool = &snapshot(&self.pools, self.epoch, &self.retired, p.epoch).pools[pool_i];
        let server = &pool.servers[si];
        let now_ms = crate::clock::millis(self.now);
        // This result decides the server's trial if the pick claimed it.
        let trial = std::mem::take(&mut p.trial);
        if result == 0 {
            let attempts = &server.live.attempts;
            attempts.connections.fetch_add(1, Ordering::Relaxed);
            attempts.connect_time.record(self.now - p.connect_started);
            if pool.policy.balance == BalanceKind::LeastTime {
                match pool.policy.leasttime_observe {
                    LeastTimeObserve::Connect => server.live.latency.observe(
                        self.now - p.connect_started,
                        now_ms,
                        pool.policy.ewma_window,
                    ),
                    LeastTimeObserve::Ttfb => p.ttfb = Ttfb::Armed,
                }
            }
            if pool.policy.outlier.is_some()
                && server.live.outlier.on_success(now_ms, trial) == Change::Returned
            {
                tracing::warn!(
                    shard = self.id,
                    pool = %pool.name,
                    server = %server.name,
                    "server back in service: its trial connection succeeded"
                );
            }
            p.state = PairState::Forwarding;
            p.connected_in = Some(self.now - p.connect_started);
            p.server_seen = self.now;
            p.client_seen = self.now;
            let send_proxy = server.send_proxy;
            if send_proxy != SendProxy::Off {
                let unique = pool.policy.send_proxy_unique_id;
                if !self.send_proxy_header(slot, send_proxy, unique) {
                    self.abort(slot, Cause::Server);
                    return;
                }
            }
            self.step(slot, UP, Event::Start);
            self.step(slot, DOWN, Event::Start);
            return;
        }
        server
            .live
            .attempts
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        self.counters.connect_failures += 1;
        if self.log.admit(LogKind::ConnectFailed, self.now) {
            tracing::warn!(
                shard = self.id,
                server = %server.name,
                addr = %server.addr,
                "connect failed: {}",
                ConnectError(result)
            );
        }
        if let Some(cfg) = &pool.policy.outlier {
            let others = pool.others_usable(si, now_ms);
            match server.live.outlier.on_failure(now_ms, cfg, others, trial) {
                Change::Ejected { for_ms, nth } => {
                    self.counters.ejections += 1;
                    tracing::warn!(
                        shard = self.id,
                        pool = %pool.name,
                        server = %server.name,
                        "server ejected for {:?} (ejection {nth} in a row): {}",
                        Duration::from_millis(for_ms),
                        ConnectError(result)
                    );
                }
                Change::Kept => {
                    if self.log.admit(LogKind::LastServerKept, self.now) {
                        tracing::warn!(
                            shard = self.id,
                            pool = %pool.name,
                            server = %server.name,
                            "server keeps failing but is the last usable one of its pool: not ejected"
                        );
                    }
                }
                Change::None | Change::Returned => {}
            }
        }
        let p = &mut self.pairs[slot];
        p.connect_error = result;
        close_fd(p.server);
        p.server = -1;
        p.mark_tried(si);
        self.arm_log_summary();
        self.release_server(slot);
        if self.may_retry(slot) {
            self.counters.redispatches += 1;
            self.connect(slot);
        } else {
            self.give_up(slot);
        }
    }

    /// Whether the pair may try another server.
    fn may_retry(&self, slot: usize) -> bool {
        let p = &self.pairs[slot];
        p.pool != NO_POOL && p.attempts <= self.pools.pools[p.pool as usize].policy.retries
    }

    /// No server could take the client: it is reset, never left connected
    /// to nothing.
    pub(super) fn give_up(&mut self, slot: usize) {
        self.counters.unserved += 1;
        if self.log.admit(LogKind::NoServer, self.now) {
            let p = &self.pairs[slot];
            let pool = snapshot(&self.pools, self.epoch, &self.retired, p.epoch)
                .pools
                .get(p.pool as usize)
                .map_or("(removed by a reload)", |p| p.name.as_str());
            tracing::warn!(
                shard = self.id,
                pool,
                attempts = p.attempts,
                "no server could take a client; closing it with a reset"
            );
        }
        self.arm_log_summary();
        self.reject(slot);
        let p = &self.pairs[slot];
        let cause = if p.pool == NO_POOL {
            Cause::Proxy
        } else if p.connect_error == -libc::ECANCELED {
            Cause::ServerTimeout
        } else {
            Cause::Server
        };
        self.abort(slot, cause);
    }

    /// Takes the pair off its server's counts and gives its slot back (and
    /// its trial, if the connect never gave a result: closed while
    /// connecting).
    pub(super) fn release_server(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        if let Some(si) = p.server_index.take() {
            let (epoch, pool_i, si) = (p.epoch, p.pool as usize, si as usize);
            let held = self.now.saturating_duration_since(p.connect_started);
            let trial = std::mem::take(&mut p.trial);
            let bytes = p.bytes;
            if epoch == self.epoch {
                self.local_active[pool_i][si] -= 1;
            } else if let Some(r) = self.retired.iter_mut().find(|r| r.epoch == epoch) {
                r.local_active[pool_i][si] -= 1;
            }
            let pool = &snapshot(&self.pools, self.epoch, &self.retired, epoch).pools[pool_i];
            let server = &pool.servers[si];
            server
                .live
                .attempts
                .bytes_in
                .fetch_add(bytes[UP], Ordering::Relaxed);
            server
                .live
                .attempts
                .bytes_out
                .fetch_add(bytes[DOWN], Ordering::Relaxed);
            if server.maxconn > 0 {
                pool.queue.record_hold(held);
            }
            self.give_back_pick(epoch, pool_i, Pick { server: si, trial });
            self.leave_snapshot(slot, epoch);
        }
    }

    /// Gives back what `choose` took for a pick in the snapshot of `epoch`
    /// (its slot, and its trial if the connect gave no result), and lets a
    /// waiter have the slot.
    fn give_back_pick(&mut self, epoch: u32, pool_i: usize, pick: Pick) {
        let pool = &snapshot(&self.pools, self.epoch, &self.retired, epoch).pools[pool_i];
        let server = &pool.servers[pick.server];
        if pick.trial {
            server.live.outlier.unclaim_trial();
        }
        server.release();
        let current = if epoch == self.epoch {
            Some(pool_i)
        } else {
            self.pools.index_of_uid(pool.uid)
        };
        if let Some(i) = current {
            self.slot_freed(i);
        }
    }
}
