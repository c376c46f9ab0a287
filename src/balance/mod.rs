//! Server selection: one file per algorithm behind the [`Balancer`] trait,
//! and [`choose`], which applies what every algorithm shares: tiers
//! (primaries, then backups), redispatch, `maxconn` slots, outlier
//! ejection and its trial connection, and stickiness.
//!
//! A balancer lives in one shard and is called only from that shard's
//! thread, so it keeps its own state without locks. What it may read across
//! shards is the servers' live state ([`crate::pool::ServerLive`]).

pub mod key;
mod leastconn;
mod roundrobin;

pub use key::client_key;
pub use leastconn::LeastConn;
pub use roundrobin::SmoothWeighted;

use crate::config::BalanceKind;
use crate::pool::Pool;

/// What a pick may look at besides the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickCtx {
    /// `crate::clock` milliseconds (slow start, ejections, latency decay).
    pub now_ms: u64,
    /// The client's key (`balance::client_key`), for `source` and `hash`;
    /// 0 when the pool does not need it.
    pub key: u64,
    /// The tier being picked from: backups (true) or primaries.
    pub backup: bool,
}

/// Picks a server for a new connection.
pub trait Balancer: Send {
    /// Returns the index of the chosen server among `pool.servers`,
    /// considering only those for which `eligible` answers true (it checks
    /// the tier, that the server is usable and has a free slot); `None`
    /// when there is none. Weights are read through [`Pool::weight`], which
    /// applies slow start.
    fn pick(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<usize>;
}

/// Builds the balancer a pool asks for.
pub fn for_pool(pool: &Pool) -> Box<dyn Balancer> {
    match pool.balance {
        BalanceKind::LeastConn => Box::new(LeastConn::new()),
        _ => Box::new(SmoothWeighted::new(pool.servers.len())),
    }
}

/// What [`choose`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// This server, with a slot reserved for the connection (and its trial
    /// claimed, when it was due one).
    Server(usize),
    /// Every server that could take the client is at its `maxconn`: the
    /// client may wait in the pool's queue.
    Full,
    /// No server is usable at all.
    Nothing,
}

/// Whether server `i` is marked in `tried` (bit `i % 64`: in pools of more
/// than 64 servers, servers 64 apart share a bit, which can make a
/// redispatch skip a server it could have tried, never repeat one).
fn untried(tried: u64, i: usize) -> bool {
    tried & (1 << (i % 64)) == 0
}

/// Chooses a server of `pool` for a connection that has already tried the
/// servers marked in `tried`, and reserves its slot.
///
/// - A sticky client (the pool has `stick`) keeps its server while that
///   server is usable and has a slot; otherwise it is balanced as usual and
///   the entry points to the new server.
/// - Primaries come first; backups only when no usable primary remains
///   untried (the first usable backup, or all of them with `allbackups`).
///   When every server was tried, any usable server may be picked again.
/// - An ejected server is skipped; one whose ejection is over is picked
///   only by the pick that claims its trial connection. When every server
///   that is up is ejected, ejection is ignored (never leave a pool empty).
/// - A server at its `maxconn` is skipped; when that leaves no server but
///   some usable one is only full, the answer is [`Choice::Full`].
pub fn choose(
    balancer: &mut dyn Balancer,
    pool: &Pool,
    tried: u64,
    now_ms: u64,
    key: u64,
) -> Choice {
    if let Some(si) = sticky(pool, tried, now_ms, key) {
        return Choice::Server(si);
    }
    let n = pool.servers.len();
    let serving = |i: usize| pool.usable(i, now_ms);
    let panic = !(0..n).any(serving);
    let usable = |i: usize| {
        if panic {
            let s = &pool.servers[i];
            s.weight > 0 && s.live.is_up()
        } else {
            serving(i)
        }
    };
    for (backup, fresh) in [(false, true), (true, true), (false, false), (true, false)] {
        let candidate = |i: usize| {
            let s = &pool.servers[i];
            s.backup == backup && usable(i) && (!fresh || untried(tried, i)) && s.has_room()
        };
        // Without `allbackups`, only the first backup that can take it.
        let only = (backup && !pool.allbackups).then(|| (0..n).find(|&i| candidate(i)));
        let eligible = |i: usize| match only {
            Some(first) => first == Some(i) && candidate(i),
            None => candidate(i),
        };
        let ctx = PickCtx {
            now_ms,
            key,
            backup,
        };
        // Each failed step (a trial or the last slot taken by another
        // shard) makes the server ineligible, so this ends.
        while let Some(i) = balancer.pick(pool, &eligible, &ctx) {
            if take(pool, i, now_ms, panic) {
                stick(pool, key, i, now_ms);
                return Choice::Server(i);
            }
        }
    }
    let full = (0..n).any(|i| usable(i) && !pool.servers[i].has_room());
    if full {
        Choice::Full
    } else {
        Choice::Nothing
    }
}

/// Claims server `i`'s trial connection if it is due one, and reserves a
/// slot.
fn take(pool: &Pool, i: usize, now_ms: u64, panic: bool) -> bool {
    let s = &pool.servers[i];
    let trial = pool.outlier.is_some()
        && !panic
        && s.live.outlier.standing(now_ms) == crate::outlier::Standing::TrialDue;
    if trial && !s.live.outlier.claim_trial(now_ms) {
        return false;
    }
    if s.try_reserve() {
        return true;
    }
    if trial {
        // Full: the trial is due again for the next pick.
        s.live.outlier.unclaim_trial();
    }
    false
}

/// The client's sticky server, with a slot reserved, if it has one that is
/// usable, untried and not full.
fn sticky(pool: &Pool, tried: u64, now_ms: u64, key: u64) -> Option<usize> {
    let table = pool.stick.as_ref()?;
    let si = table.get(key, now_ms)? as usize;
    let s = pool.servers.get(si)?;
    let ok = pool.usable(si, now_ms)
        && (pool.outlier.is_none() || s.live.outlier.serving())
        && untried(tried, si)
        && s.try_reserve();
    ok.then(|| {
        table.put(key, si as u32, now_ms);
        si
    })
}

fn stick(pool: &Pool, key: u64, si: usize, now_ms: u64) {
    if let Some(table) = &pool.stick {
        table.put(key, si as u32, now_ms);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::config::BalanceKind;
    use crate::pool::{Pool, Server};

    pub fn servers(weights: &[u32]) -> Vec<Server> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16));
                Server::new(&format!("s{i}"), addr, w, false, 0)
            })
            .collect()
    }

    pub fn pool(balance: BalanceKind, weights: &[u32]) -> Pool {
        Pool::with_servers(balance, servers(weights))
    }
}
