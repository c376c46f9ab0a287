//! Taking a new snapshot of pools and listeners (a reload, or a change made
//! through the admin API), without dropping a connection.
//!
//! A pair's `pool` and `server_index` are indexes into the snapshot its
//! `epoch` names. When a new snapshot arrives:
//! - pairs counted against a server (connecting, forwarding, closing) keep
//!   the snapshot they were picked in: it stays alive on this shard, with
//!   its own per-server counts, until the last of them gives its server
//!   back ([`Retired`]). Servers that stay share their live state (counts,
//!   health, ejection) with the new snapshot, so every shard's picks see
//!   these connections; servers that go keep theirs until they close;
//! - pairs not counted against a server (waiting for the budget, queued)
//!   move to the pool of the same identity in the new snapshot; when their
//!   pool is gone, they are reset;
//! - a pair that gives back a server from an earlier snapshot and goes on
//!   (a redispatch after a failed connect) moves then;
//! - listeners are matched by identity: those that stay keep their socket
//!   (and their accept in flight), new ones start accepting, removed ones
//!   stop (their fd closes once their accept is cancelled) while their
//!   connections finish.
//!
//! The waiting room and stick table of a pool that stays are shared by both
//! snapshots (`Pool::carrying_over`), so tickets and heads stay valid, and
//! hand-offs between shards name a pool by its identity, which does not
//! depend on which snapshot either shard is on.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::accept::{Listener, Pause};
use super::pair::PairState;
use super::stats::ListenerStats;
use super::Shard;
use crate::access_log::Cause;
use crate::acl::Acl;
use crate::balance;
use crate::config::{ListenerConfig, Timeouts};
use crate::limit::{ConnGate, LimitConfig};
use crate::net::close_fd;
use crate::pool::Pools;

/// `Pair::pool` of a pair whose pool a reload removed.
pub const NO_POOL: u32 = u32::MAX;

/// `Listener::pool` of a removed listener whose pool went too.
pub const NO_LISTENER_POOL: usize = usize::MAX;

/// A new snapshot for a shard.
#[derive(Debug)]
pub struct Swap {
    /// Numbers the snapshot (each swap a new one).
    pub epoch: u32,
    pub pools: Arc<Pools>,
    /// Every listener of the new configuration.
    pub listeners: Vec<ListenerSpec>,
    /// Apply to what starts from now on (a timer already armed keeps its
    /// deadline).
    pub timeouts: Timeouts,
}

/// A listener as a shard is told of it.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Names this bound socket group across reloads (a listener whose
    /// address changes is a new one).
    pub id: u64,
    pub name: String,
    /// Index into the snapshot's pools.
    pub pool: usize,
    /// This shard's listening socket: for a listener the shard does not
    /// have yet.
    pub fd: Option<RawFd>,
    pub stats: Arc<ListenerStats>,
    /// Its connections open, counted over every shard.
    pub gate: Arc<ConnGate>,
    /// What it checks of its clients.
    pub policy: ListenerPolicy,
}

/// What a listener checks of its clients, built from its configuration:
/// its access list, whether clients send a PROXY header (and who may),
/// and its rate limit.
#[derive(Debug, Clone, Default)]
pub struct ListenerPolicy {
    /// Who may connect; `None`: everyone.
    pub acl: Option<Arc<Acl>>,
    pub accept_proxy: bool,
    /// Who may send a PROXY header; `None`: any peer.
    pub proxy_trusted: Option<Arc<Acl>>,
    /// New connections per source, limited.
    pub limit: Option<LimitConfig>,
    /// Connections open at once through it, and per source.
    pub maxconn: Option<usize>,
    pub conn_per_src: Option<u32>,
}

impl ListenerPolicy {
    pub fn of(l: &ListenerConfig) -> ListenerPolicy {
        ListenerPolicy {
            acl: l.has_acl().then(|| Arc::new(Acl::new(&l.allow, &l.deny))),
            accept_proxy: l.accept_proxy,
            proxy_trusted: (!l.proxy_trusted.is_empty())
                .then(|| Arc::new(Acl::new(&l.proxy_trusted, &[]))),
            limit: l.limit.clone(),
            maxconn: l.maxconn,
            conn_per_src: l.conn_per_src,
        }
    }
}

/// An earlier snapshot that pairs of this shard still use.
pub(super) struct Retired {
    pub epoch: u32,
    pub pools: Arc<Pools>,
    /// This shard's pairs per pool and server in it.
    pub local_active: Vec<Vec<u32>>,
    /// Their sum: the snapshot goes when it reaches 0.
    pub pairs: u32,
}

/// The snapshot of `epoch`, if this shard still has it.
pub(super) fn find_snapshot<'a>(
    current: &'a Arc<Pools>,
    current_epoch: u32,
    retired: &'a [Retired],
    epoch: u32,
) -> Option<&'a Pools> {
    if epoch == current_epoch {
        return Some(current);
    }
    retired.iter().find(|r| r.epoch == epoch).map(|r| &*r.pools)
}

/// The snapshot of `epoch`: the current one, or one retired.
pub(super) fn snapshot<'a>(
    current: &'a Arc<Pools>,
    current_epoch: u32,
    retired: &'a [Retired],
    epoch: u32,
) -> &'a Pools {
    if epoch == current_epoch {
        return current;
    }
    &retired
        .iter()
        .find(|r| r.epoch == epoch)
        .expect("a pair's snapshot lives while it holds a server")
        .pools
}

impl Shard {
    /// Serves `swap` from now on (see the module doc).
    pub(super) fn swap(&mut self, swap: Swap) {
        let Swap {
            epoch,
            pools,
            listeners,
            timeouts,
        } = swap;
        self.timeouts = timeouts;
        // In place: a linked timeout in flight read its copy at submission.
        *self.connect_timeout = *super::timespec(timeouts.connect);
        let map: Vec<Option<usize>> = self
            .pools
            .pools
            .iter()
            .map(|p| pools.index_of_uid(p.uid))
            .collect();
        // Waiters of a pool that goes have nowhere to go.
        for (old, new) in map.iter().enumerate() {
            if new.is_none() {
                self.give_up_queued(old, Cause::Proxy);
            }
        }
        let mut queues = vec![VecDeque::new(); pools.pools.len()];
        for (old, q) in std::mem::take(&mut self.queues).into_iter().enumerate() {
            if let Some(new) = map[old] {
                queues[new] = q;
            }
        }
        self.queues = queues;
        self.queue_dirty = vec![true; pools.pools.len()];
        self.queue_any_dirty = true;

        let mut orphans = Vec::new();
        for slot in 0..self.pairs.len() {
            let p = &mut self.pairs[slot];
            if p.state == PairState::Free || p.epoch != self.epoch || p.server_index.is_some() {
                continue;
            }
            p.epoch = epoch;
            p.tried = 0;
            match map.get(p.pool as usize).copied().flatten() {
                Some(new) => p.pool = new as u32,
                None => {
                    p.pool = NO_POOL;
                    if matches!(p.state, PairState::Waiting | PairState::Connecting) {
                        orphans.push(slot);
                    }
                }
            }
        }

        let old_pools = std::mem::replace(&mut self.pools, pools);
        let old_active = std::mem::replace(
            &mut self.local_active,
            self.pools
                .pools
                .iter()
                .map(|p| vec![0; p.servers.len()])
                .collect(),
        );
        let held: u32 = old_active.iter().flatten().sum();
        if held > 0 {
            self.retired.push(Retired {
                epoch: self.epoch,
                pools: old_pools,
                local_active: old_active,
                pairs: held,
            });
        }
        self.epoch = epoch;
        self.balancers = self.pools.pools.iter().map(balance::for_pool).collect();

        self.swap_listeners(listeners, &map);
        for slot in orphans {
            self.give_up(slot);
        }
        tracing::debug!(
            shard = self.id,
            epoch,
            retired = self.retired.len(),
            "new snapshot"
        );
    }

    /// `map`: each old pool's index in the new snapshot.
    fn swap_listeners(&mut self, specs: Vec<ListenerSpec>, map: &[Option<usize>]) {
        let mut kept = vec![false; self.listeners.len()];
        for spec in specs {
            match self
                .listeners
                .iter()
                .position(|l| l.id == spec.id && !l.removed)
            {
                Some(l) => {
                    kept[l] = true;
                    self.listeners[l].pool = spec.pool;
                    self.listeners[l].name = spec.name;
                    let shards = self.mesh.shards();
                    let had_maxconn = self.listeners[l].maxconn.is_some();
                    self.listeners[l].take_policy(spec.policy, shards);
                    if self.listeners[l].maxconn.is_some() != had_maxconn {
                        // Its accept is re-armed as the other kind (single
                        // or multishot) once this one is cancelled.
                        self.pause_accept(l, Pause::Budget);
                    }
                }
                None => {
                    if spec.fd.is_none() {
                        tracing::error!(shard = self.id, listener = %spec.name, "a new listener without a socket");
                        continue;
                    }
                    self.listeners.push(Listener::new(spec, self.mesh.shards()));
                    kept.push(true);
                    let l = self.listeners.len() - 1;
                    self.arm_accept(l);
                }
            }
        }
        for (l, kept) in kept.into_iter().enumerate() {
            if kept || self.listeners[l].removed {
                continue;
            }
            self.listeners[l].removed = true;
            // Its accept may still bring clients until the cancel lands:
            // they go to its pool's successor, or are reset.
            let pool = self.listeners[l].pool;
            self.listeners[l].pool = map.get(pool).copied().flatten().unwrap_or(NO_LISTENER_POOL);
            self.pause_accept(l, Pause::Stopped);
            let listener = &mut self.listeners[l];
            if let super::accept::AcceptState::Paused(_) = listener.state {
                // No accept in flight: close now.
                close_fd(listener.fd);
                listener.fd = -1;
            }
        }
    }

    /// After a pair gave its server back: if it was picked in an earlier
    /// snapshot, that snapshot loses a pair (and goes with the last), and
    /// the pair moves to the current one, to its pool's successor (or to
    /// [`NO_POOL`]).
    pub(super) fn leave_snapshot(&mut self, slot: usize, epoch: u32) {
        if epoch == self.epoch {
            return;
        }
        let Some(r) = self.retired.iter().position(|r| r.epoch == epoch) else {
            return;
        };
        let uid = self.retired[r]
            .pools
            .pools
            .get(self.pairs[slot].pool as usize)
            .map(|p| p.uid);
        self.retired[r].pairs -= 1;
        if self.retired[r].pairs == 0 {
            self.retired.swap_remove(r);
        }
        let next = uid.and_then(|uid| self.pools.index_of_uid(uid));
        let p = &mut self.pairs[slot];
        p.epoch = self.epoch;
        p.tried = 0;
        p.pool = next.map_or(NO_POOL, |i| i as u32);
    }
}
