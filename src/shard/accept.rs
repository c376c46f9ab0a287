//! Taking clients in: each listener's multishot accept, pausing it, and the
//! clients that wait for the process's connection budget.
//!
//! A new client gets a pair slot at once. It goes on to a server only with
//! a unit of the budget (`crate::budget`); without one it waits, oldest
//! first, without being read, and every listener of the shard stops
//! accepting (the multishot accept is cancelled), so the rest wait in the
//! kernel's backlog, as HAProxy does at `maxconn`. Budget that a pair of
//! this shard gives back is used at once; budget freed on other shards is
//! found by a retry every [`BUDGET_RETRY`](super::timers::BUDGET_RETRY).
//!
//! Accept errors:
//! - `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`: the process is short of fds or
//!   memory; accepting pauses for [`RESOURCE_PAUSE`] or until a pair of this
//!   shard closes.
//! - `ECONNABORTED`, `EPROTO`, `EPERM`, `EINTR`, `EAGAIN`: about one client
//!   (gone before it was accepted, refused by a firewall rule); accepting
//!   goes on.
//! - Anything else backs off, from [`BACKOFF_MIN`] doubling to
//!   [`BACKOFF_MAX`], so a broken listener cannot spin the shard.
//!
//! Every pause is logged through the shard's rate limiter.
//!
//! A multishot accept takes every connection in the backlog at once, as long
//! as fds last: a burst can leave no fd for the server sockets of the
//! clients it brought in, with no pair open whose close would free one. So
//! each shard keeps one spare fd (a `/dev/null` it holds from the start): a
//! server socket that fails for lack of fds gets the spare's place, and the
//! spare is taken again once a pair closes. While clients wait, pairs close
//! their fds at once (not through the ring), so the next waiting client can
//! use them in the same turn of the loop.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::cqueue;
use io_uring::opcode;
use io_uring::types::Fd;

use super::log_limit::LogKind;
use super::pair::{Pair, PairState};
use super::stats::{ListenerCounts, ListenerStats};
use super::swap::{ListenerPolicy, ListenerSpec};
use super::timers::{Timer, BUDGET_RETRY, RESOURCE_PAUSE};
use super::token::{Op, Tag};
use super::Shard;
use crate::acl::Acl;
use crate::balance;
use crate::config::{ForwardMode, HashKey};
use crate::limit::table::Key;
use crate::limit::{key_of, ConnGate, Decision, LimitConfig, Limiter, SrcSlots, Verdict};
use crate::net::{close_fd, peer_addr};

/// The first back-off after an unexpected accept error.
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why a listener is not accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pause {
    /// The connection budget is used up.
    Budget,
    /// The listener is at its `maxconn`.
    Maxconn,
    /// Out of fds or memory.
    Resources,
    /// Backing off after an accept error.
    Backoff,
    /// The shard is stopping.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptState {
    /// A multishot accept is in flight.
    Armed,
    /// Its cancel is in flight; then paused for this reason.
    Cancelling(Pause),
    Paused(Pause),
}

pub struct Listener {
    /// See [`ListenerSpec::id`].
    pub id: u64,
    pub name: String,
    /// -1 once closed (removed by a reload, or the shard stopped).
    pub fd: RawFd,
    pub pool: usize,
    pub state: AcceptState,
    /// A reload removed it: its fd closes once its accept is cancelled.
    pub removed: bool,
    /// The next back-off; reset by a successful accept.
    backoff: Duration,
    /// This shard's counts, published to `stats`.
    pub counts: ListenerCounts,
    stats: Arc<ListenerStats>,
    /// Who may connect; `None`: everyone.
    pub acl: Option<Arc<Acl>>,
    /// Clients send a PROXY protocol header first (`proxy_header.rs`).
    pub accept_proxy: bool,
    /// Who may send one; `None`: any peer.
    pub proxy_trusted: Option<Arc<Acl>>,
    /// Its `limit`, and this shard's state for it.
    pub limit: Option<(LimitConfig, Limiter)>,
    /// Connections open through it and per source, over every shard.
    pub gate: Arc<ConnGate>,
    pub maxconn: Option<usize>,
    pub conn_per_src: Option<u32>,
    /// Clients accepted while it was at `maxconn` (accepts already on
    /// their way when it got there), unread until a place frees, oldest
    /// first.
    pub held: VecDeque<RawFd>,
}

/// What becomes of a new client, from its address. An admitted or delayed
/// one carries where `conn_per_src` counted it, for its pair to give back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    Admit(Option<SrcSlots>),
    /// Denied by the access list.
    Denied,
    /// Refused by the limit.
    Limited,
    /// Refused by `conn_per_src`.
    TooMany,
    /// Let through after this many microseconds (leaky bucket).
    Delay(u64, Option<SrcSlots>),
    /// Held until a shared limit's store answers for its source.
    Wait(Key, Option<SrcSlots>),
}

impl Listener {
    /// This shard's state for `config`, one of `shards`.
    pub fn limit_table(config: LimitConfig, shards: usize) -> (LimitConfig, Limiter) {
        let limiter = Limiter::for_shard(&config, shards);
        (config, limiter)
    }

    pub fn new(spec: ListenerSpec, shards: usize) -> Listener {
        Listener {
            id: spec.id,
            name: spec.name,
            fd: spec.fd.unwrap_or(-1),
            pool: spec.pool,
            state: AcceptState::Paused(Pause::Budget),
            removed: false,
            backoff: BACKOFF_MIN,
            counts: ListenerCounts::default(),
            stats: spec.stats,
            acl: spec.policy.acl,
            accept_proxy: spec.policy.accept_proxy,
            proxy_trusted: spec.policy.proxy_trusted,
            limit: spec.policy.limit.map(|c| Listener::limit_table(c, shards)),
            gate: spec.gate,
            maxconn: spec.policy.maxconn,
            conn_per_src: spec.policy.conn_per_src,
            held: VecDeque::new(),
        }
    }

    /// Whether a new client's address must be checked before it is served.
    pub(super) fn checks_clients(&self) -> bool {
        self.acl.is_some() || self.limit.is_some() || self.conn_per_src.is_some()
    }

    /// Serves `policy` from now on (a reload); a limit that stays keeps
    /// its table (its sources' state).
    pub fn take_policy(&mut self, policy: ListenerPolicy, shards: usize) {
        self.acl = policy.acl;
        self.accept_proxy = policy.accept_proxy;
        self.proxy_trusted = policy.proxy_trusted;
        self.maxconn = policy.maxconn;
        self.conn_per_src = policy.conn_per_src;
        if self.limit.as_ref().map(|(c, _)| c) != policy.limit.as_ref() {
            self.limit = policy.limit.map(|c| Listener::limit_table(c, shards));
        }
    }

    pub fn publish(&self, shard: usize) {
        let mut counts = self.counts;
        counts.limit_sources = self.limit.as_ref().map_or(0, |(_, t)| t.len() as u64);
        self.stats.publish(shard, counts);
    }
}

/// An fd held in reserve (see the module doc); -1 if none could be opened.
pub fn open_spare_fd() -> RawFd {
    // SAFETY: open(2) of a constant, NUL-terminated path; the result is
    // checked by its users (negative: no spare).
    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
}

fn is_resource_error(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

fn is_client_error(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR | libc::EAGAIN
    )
}

impl Shard {
    /// Starts listener `l`'s multishot accept, unless it is armed already,
    /// closed, or the shard is stopping.
    pub(super) fn arm_accept(&mut self, l: usize) {
        let listener = &mut self.listeners[l];
        if listener.fd < 0
            || self.stop_deadline.is_some()
            || !matches!(listener.state, AcceptState::Paused(_))
        {
            return;
        }
        let flags = if self.forward == ForwardMode::SpliceRing {
            libc::SOCK_CLOEXEC
        } else {
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK
        };
        let tag = Tag::new(Op::Accept, l as u32, 0, 0).encode();
        let entry = match listener.maxconn {
            // At its maxconn: the kernel's backlog holds the next clients
            // until a place frees (here, or on another shard: the retry).
            Some(max) if !listener.gate.has_room(max) => {
                listener.state = AcceptState::Paused(Pause::Maxconn);
                self.arm_retry(BUDGET_RETRY);
                return;
            }
            // One client per accept, so that no more than one per shard is
            // accepted past the limit (and held: `hold_at_maxconn`). A
            // multishot accept would take the whole backlog at once.
            Some(_) => {
                opcode::Accept::new(Fd(listener.fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(flags)
                    .build()
                    .user_data(tag)
            }
            None => opcode::AcceptMulti::new(Fd(listener.fd))
                .flags(flags)
                .build()
                .user_data(tag),
        };
        listener.state = AcceptState::Armed;
        // SAFETY: no pointers (the single-shot accept asks for no address);
        // the listening fd stays open until the shard ends, after its last
        // completion.
        unsafe { self.push(&[entry]) };
    }

    /// Stops listener `l` from accepting, for `why`.
    pub(super) fn pause_accept(&mut self, l: usize, why: Pause) {
        let state = match self.listeners[l].state {
            AcceptState::Armed => {
                let target = Tag::new(Op::Accept, l as u32, 0, 0).encode();
                let entry = opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(Tag::new(Op::Ignore, 0, 0, 0).encode());
                // SAFETY: no pointers.
                unsafe { self.push(&[entry]) };
                self.counters.accept_pauses += 1;
                AcceptState::Cancelling(why)
            }
            AcceptState::Cancelling(p) => AcceptState::Cancelling(p.max(why)),
            AcceptState::Paused(p) => AcceptState::Paused(p.max(why)),
        };
        self.listeners[l].state = state;
    }

    fn pause_all(&mut self, why: Pause) {
        for l in 0..self.listeners.len() {
            self.pause_accept(l, why);
        }
    }

    pub(super) fn on_accept(&mut self, l: usize, result: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more {
            let listener = &mut self.listeners[l];
            listener.state = match listener.state {
                AcceptState::Cancelling(p) => AcceptState::Paused(p),
                // Ended on its own (or on the error below): re-armed below.
                _ => AcceptState::Paused(Pause::Budget),
            };
            if listener.removed {
                // Nothing is in flight on it any more.
                listener.state = AcceptState::Paused(Pause::Stopped);
                close_fd(listener.fd);
                listener.fd = -1;
            }
        }
        if result >= 0 {
            self.listeners[l].backoff = BACKOFF_MIN;
            if !self.listeners[l].held.is_empty() || !self.take_place(l, result) {
                self.hold_at_maxconn(l, result);
            }
        } else {
            let errno = -result;
            if errno == libc::ECANCELED {
                // Our own cancel.
            } else if is_resource_error(errno) {
                self.counters.accept_errors += 1;
                if self.log.admit(LogKind::AcceptResources, self.now) {
                    tracing::warn!(
                        shard = self.id,
                        "accept: {}; pausing accepts for {RESOURCE_PAUSE:?} or until a connection closes",
                        std::io::Error::from_raw_os_error(errno)
                    );
                }
                self.arm_log_summary();
                self.pause_for(l, Pause::Resources, RESOURCE_PAUSE);
            } else if is_client_error(errno) {
                tracing::trace!(
                    shard = self.id,
                    "accept: {}",
                    std::io::Error::from_raw_os_error(errno)
                );
            } else {
                self.counters.accept_errors += 1;
                let wait = self.listeners[l].backoff;
                self.listeners[l].backoff = (wait * 2).min(BACKOFF_MAX);
                if self.log.admit(LogKind::AcceptError, self.now) {
                    tracing::warn!(
                        shard = self.id,
                        "accept: {}; retrying in {wait:?}",
                        std::io::Error::from_raw_os_error(errno)
                    );
                }
                self.arm_log_summary();
                self.pause_for(l, Pause::Backoff, wait);
            }
        }
        // A multishot that ended on its own, or on an error about one
        // client, goes on as soon as the budget allows (or a retry looks
        // again): no listener is left paused with nothing to wake it.
        self.resume_paused_at_budget();
    }

    /// Pauses listener `l` for `why` and resumes it after `after`.
    fn pause_for(&mut self, l: usize, why: Pause, after: Duration) {
        self.pause_accept(l, why);
        self.arm_timer(self.now + after, Timer::AcceptResume { listener: l as u32 });
    }

    /// A pause for fds, memory or a back-off is over.
    pub(super) fn resume_accept(&mut self, l: usize) {
        let listener = &mut self.listeners[l];
        if let AcceptState::Paused(Pause::Resources | Pause::Backoff) = listener.state {
            listener.state = AcceptState::Paused(Pause::Budget);
        }
        self.resume_paused_at_budget();
    }

    /// Clients held at a listener's `maxconn` are served while places are
    /// free; then listeners paused at the budget (or at their `maxconn`)
    /// accept again once it has room and no client of this shard waits for
    /// it.
    pub(super) fn resume_paused_at_budget(&mut self) {
        for l in 0..self.listeners.len() {
            if !self.listeners[l].held.is_empty() {
                self.serve_held(l);
            }
        }
        self.prune_waiting();
        if !self.waiting.is_empty() {
            return;
        }
        for l in 0..self.listeners.len() {
            let listener = &mut self.listeners[l];
            if listener.state == AcceptState::Paused(Pause::Maxconn) && listener.held.is_empty() {
                // `arm_accept` looks at its maxconn again.
                listener.state = AcceptState::Paused(Pause::Budget);
            }
            if self.listeners[l].state == AcceptState::Paused(Pause::Budget) {
                if self.budget_has_room() {
                    self.arm_accept(l);
                } else {
                    self.arm_retry(BUDGET_RETRY);
                }
            }
        }
    }

    /// After a pair of this shard has closed: fds and budget are free.
    pub(super) fn after_pair_freed(&mut self) {
        for l in &mut self.listeners {
            if l.state == AcceptState::Paused(Pause::Resources) {
                l.state = AcceptState::Paused(Pause::Budget);
            }
        }
        self.fds_short_until = None;
        self.restore_spare_fd();
        self.admit_waiting();
        self.resume_paused_at_budget();
    }

    fn budget_has_room(&self) -> bool {
        self.budget.used() < self.budget.limit()
    }

    /// Whether the shard recently found no fd for a server socket.
    pub(super) fn fds_short(&self) -> bool {
        self.fds_short_until.is_some_and(|t| t > self.now)
    }

    /// Drops waiting entries of pairs that closed while they waited.
    fn prune_waiting(&mut self) {
        while let Some(&(slot, generation)) = self.waiting.front() {
            let p = &self.pairs[slot as usize];
            if p.generation == generation && p.state == PairState::Waiting {
                return;
            }
            self.waiting.pop_front();
        }
    }

    /// Sends a client with a unit of the budget on to a server.
    fn start_connecting(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        p.budgeted = true;
        // Not `Waiting` any more, even if no server socket comes of it.
        p.state = PairState::Connecting;
        self.connect(slot);
    }

    /// Checks a new client of listener `l` against its access list and
    /// its limit: a denied or limited one is reset at once, before any
    /// server is chosen, and counted; a delayed one waits in a pair.
    #[inline(never)]
    pub(super) fn admit_checked(&mut self, l: usize, fd: RawFd) {
        let Some(addr) = peer_addr(fd) else {
            // Gone already (its address cannot be read): nothing to serve.
            self.refuse_fresh(l, fd);
            return;
        };
        match self.admission(l, addr.ip()) {
            Admission::Admit(src) => self.take_client(l, fd, Some(addr), src),
            Admission::Delay(us, src) => {
                let slot = self.new_pair(l, fd);
                self.pairs[slot].client_addr = Some(addr);
                self.pairs[slot].src_slots = src;
                self.shape(slot, us);
            }
            Admission::Wait(key, src) => {
                let slot = self.new_pair(l, fd);
                self.pairs[slot].client_addr = Some(addr);
                self.pairs[slot].src_slots = src;
                self.await_lease(slot, key);
            }
            Admission::Denied | Admission::Limited | Admission::TooMany => {
                self.refuse_fresh(l, fd);
            }
        }
    }

    /// The access list's and the limit's verdict on a client at `ip` of
    /// listener `l` (counted when it is not an admission).
    pub(super) fn admission(&mut self, l: usize, ip: IpAddr) -> Admission {
        let now_us = crate::clock::micros(self.now);
        let listener = &mut self.listeners[l];
        if listener.limit.is_some() {
            // Its table may have grown (`limit_sources`).
            self.listener_counts_changed = true;
        }
        let key = key_of(ip);
        if listener.acl.as_ref().is_some_and(|acl| !acl.allows(ip)) {
            listener.counts.denied += 1;
            self.listener_counts_changed = true;
            return Admission::Denied;
        }
        let mut ask = None;
        let verdict = match listener.limit.as_mut().map(|(_, lim)| lim) {
            None => Verdict::Admit,
            Some(Limiter::Local(t)) => match t.arrive(key, now_us) {
                Decision::Admit => Verdict::Admit,
                Decision::Delay(us) => Verdict::Delay(us),
                Decision::Refuse => Verdict::Refuse,
            },
            Some(Limiter::Shared(leases)) => {
                let (verdict, want) = leases.arrive(key, now_us);
                ask = want;
                verdict
            }
        };
        if let Some(want) = ask {
            self.ask_lease(l, key, want);
        }
        let listener = &mut self.listeners[l];
        match verdict {
            Verdict::Refuse => {
                listener.counts.limited += 1;
                self.listener_counts_changed = true;
                return Admission::Limited;
            }
            Verdict::Fallback(admit) => {
                listener.counts.store_fallbacks += 1;
                self.listener_counts_changed = true;
                if !admit {
                    return Admission::Limited;
                }
            }
            Verdict::Admit | Verdict::Delay(_) | Verdict::Wait => {}
        }
        // Counted once the rate allows it (a refusal here has still used
        // its arrival: it was an attempt).
        let src = match listener.conn_per_src {
            None => None,
            Some(max) => match listener.gate.try_enter_src(key, max) {
                Some(slots) => Some(slots),
                None => {
                    listener.counts.over_src += 1;
                    self.listener_counts_changed = true;
                    return Admission::TooMany;
                }
            },
        };
        match verdict {
            Verdict::Delay(us) => {
                listener.counts.shaped += 1;
                self.listener_counts_changed = true;
                Admission::Delay(us, src)
            }
            Verdict::Wait => Admission::Wait(key, src),
            _ => Admission::Admit(src),
        }
    }

    /// Holds the client of `slot` for `us` microseconds (leaky bucket):
    /// its timer releases it (`timers.rs`).
    pub(super) fn shape(&mut self, slot: usize, us: u64) {
        if !self.pairs[slot].budgeted {
            self.hold_budget(slot);
        }
        let p = &mut self.pairs[slot];
        p.state = PairState::Shaped;
        p.queued_at = self.now + Duration::from_micros(us);
        let at = p.queued_at;
        if let Some(key) = p.timer.take() {
            self.timers.cancel(key);
        }
        self.arm_idle(slot, at);
    }

    /// Gives a pair that waits before its turn (its PROXY header, its
    /// leaky bucket) a unit of the connection budget, so that such pairs
    /// count against it like any other; with none left, accepting pauses,
    /// as for a client that waits for the budget.
    pub(super) fn hold_budget(&mut self, slot: usize) {
        if self.budget.try_acquire() {
            self.pairs[slot].budgeted = true;
        } else {
            self.pause_all(Pause::Budget);
            self.arm_retry(BUDGET_RETRY);
        }
    }

    /// A delayed client's turn came: it goes on as a new client.
    pub(super) fn release_shaped(&mut self, slot: usize) {
        // Released before its own timer (a lease answered): that timer goes.
        if let Some(key) = self.pairs[slot].timer.take() {
            self.timers.cancel(key);
        }
        // The shard held the client: it was not idle meanwhile.
        self.pairs[slot].client_seen = self.now;
        self.arm_idle(slot, self.now + self.timeouts.client_idle);
        self.start_pair(slot);
    }

    /// Gives a new client a slot, and a server if the budget allows.
    /// `addr`: its address, when already read.
    /// `src`: where `conn_per_src` counted it.
    pub(super) fn take_client(
        &mut self,
        l: usize,
        fd: RawFd,
        addr: Option<SocketAddr>,
        src: Option<SrcSlots>,
    ) {
        let slot = self.new_pair(l, fd);
        self.pairs[slot].client_addr = addr;
        self.pairs[slot].src_slots = src;
        self.arm_idle(slot, self.now + self.timeouts.client_idle);
        self.start_pair(slot);
    }

    /// A slot for a client just accepted on listener `l`, counted, in
    /// `Waiting` (no timer armed yet).
    pub(super) fn new_pair(&mut self, l: usize, fd: RawFd) -> usize {
        let slot = match self.free.pop() {
            Some(s) => s as usize,
            None => self.pairs.push(Pair::free(0, self.now)),
        };
        let generation = self.pairs[slot].generation;
        let mut p = Pair::free(generation, self.now);
        p.state = PairState::Waiting;
        p.client = fd;
        p.listener = l as u32;
        p.listener_place = self.listeners[l].maxconn.is_some();
        p.epoch = self.epoch;
        p.pool = self.listeners[l].pool as u32;
        self.listeners[l].counts.accepted += 1;
        self.listeners[l].counts.active += 1;
        self.listener_counts_changed = true;
        self.pairs[slot] = p;
        self.counters.accepted += 1;
        self.counters.active += 1;
        slot
    }

    /// Sends a new pair on: its client's key when its pool hashes or
    /// sticks, then a server if the budget allows, else the wait.
    pub(super) fn start_pair(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        p.state = PairState::Waiting;
        if let Some(pool) = self.pools.pools.get(p.pool as usize) {
            let hashes = pool.needs_client_addr();
            if hashes || self.access_log.is_some() {
                // Multishot accept does not give the peer's address: asked
                // only when the pool hashes or sticks on it, or for the log.
                if p.client_addr.is_none() {
                    p.client_addr = peer_addr(p.client);
                }
                if let (true, Some(addr)) = (hashes, p.client_addr) {
                    let with_port = pool.policy.hash_key == HashKey::SrcPort;
                    p.key = balance::client_key(&addr, with_port);
                }
            }
        }
        self.prune_waiting();
        // A pair that waited for its header or its turn may hold its unit.
        let held = self.pairs[slot].budgeted;
        if self.waiting.is_empty() && !self.fds_short() && (held || self.budget.try_acquire()) {
            self.start_connecting(slot);
        } else {
            self.wait(slot, false);
            if self.log.admit(LogKind::AcceptBudget, self.now) {
                tracing::info!(
                    shard = self.id,
                    maxconn = self.budget.limit(),
                    "connection budget reached: accepting paused, new clients wait in the backlog"
                );
            }
            self.arm_log_summary();
            self.pause_all(Pause::Budget);
            self.arm_retry(BUDGET_RETRY);
        }
    }

    /// Puts a pair among the clients waiting for the budget (or for an fd:
    /// `front`, it keeps its turn).
    pub(super) fn wait(&mut self, slot: usize, front: bool) {
        let p = &mut self.pairs[slot];
        p.state = PairState::Waiting;
        if p.budgeted {
            p.budgeted = false;
            self.budget.release();
        }
        let entry = (slot as u32, p.generation);
        if front {
            self.waiting.push_front(entry);
        } else {
            self.waiting.push_back(entry);
            self.counters.waited += 1;
        }
        self.counters.waiting += 1;
    }

    /// Serves waiting clients, oldest first, while the budget has room.
    pub(super) fn admit_waiting(&mut self) {
        while let Some(&(slot, generation)) = self.waiting.front() {
            let slot = slot as usize;
            let p = &self.pairs[slot];
            if p.generation != generation || p.state != PairState::Waiting {
                self.waiting.pop_front();
                continue;
            }
            if self.fds_short() || !self.budget.try_acquire() {
                self.arm_retry(BUDGET_RETRY);
                return;
            }
            self.waiting.pop_front();
            self.counters.waiting -= 1;
            self.start_connecting(slot);
        }
    }

    /// The client of `slot` waits (at the front) because no fd was left for
    /// its server socket: a local shortage, not the server's fault.
    pub(super) fn wait_for_fds(&mut self, slot: usize, err: &std::io::Error) {
        if self.log.admit(LogKind::SocketResources, self.now) {
            tracing::warn!(
                shard = self.id,
                "cannot create a server socket: {err}; the client waits and accepting pauses"
            );
        }
        self.arm_log_summary();
        self.fds_short_until = Some(self.now + RESOURCE_PAUSE);
        self.wait(slot, true);
        for l in 0..self.listeners.len() {
            self.pause_for(l, Pause::Resources, RESOURCE_PAUSE);
        }
        self.arm_retry(RESOURCE_PAUSE);
    }

    /// Gives up the spare fd so that a server socket can have its place.
    /// Returns false when it is already given up.
    pub(super) fn release_spare_fd(&mut self) -> bool {
        if self.spare_fd < 0 {
            return false;
        }
        close_fd(self.spare_fd);
        self.spare_fd = -1;
        true
    }

    /// Takes the spare fd again, if it was given up and an fd is free.
    fn restore_spare_fd(&mut self) {
        if self.spare_fd < 0 {
            self.spare_fd = open_spare_fd();
        }
    }

    /// Stops every listener for good (the shard is stopping).
    pub(super) fn stop_accepting(&mut self) {
        self.pause_all(Pause::Stopped);
    }

    /// No accept is in flight any more (each one's last completion is in).
    pub(super) fn accepts_settled(&self) -> bool {
        self.listeners
            .iter()
            .all(|l| matches!(l.state, AcceptState::Paused(_)))
    }
}
