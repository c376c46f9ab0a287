//! Server selection: one file per algorithm behind the [`Balancer`] trait.
//!
//! A balancer lives in one shard and is called only from that shard's thread,
//! so it keeps its own state without locks. What it may read across shards is
//! the servers' live counters ([`crate::pool::ServerLive`]).

mod leastconn;
mod roundrobin;

pub use leastconn::LeastConn;
pub use roundrobin::SmoothWeighted;

use crate::config::BalanceKind;
use crate::pool::{Pool, Server};

/// Picks a server for a new connection.
pub trait Balancer: Send {
    /// Returns the index of the chosen server among `servers`, considering
    /// only those for which `eligible` answers true and whose weight is not
    /// zero; `None` when there is none.
    fn pick(&mut self, servers: &[Server], eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// Builds the balancer a pool asks for.
pub fn for_pool(pool: &Pool) -> Box<dyn Balancer> {
    match pool.balance {
        BalanceKind::RoundRobin => Box::new(SmoothWeighted::new(pool.servers.len())),
        BalanceKind::LeastConn => Box::new(LeastConn::new()),
    }
}

/// Chooses a server of `pool` for a connection that has already tried the
/// servers marked in `tried` (bit `i % 64` for server `i`: in pools of more
/// than 64 servers, servers 64 apart share a bit, which can make a
/// redispatch skip a server it could have tried, never repeat one).
///
/// Primaries come first; backups only when no primary that is up remains
/// untried. When every server was tried, any server that is up may be picked
/// again.
pub fn choose(balancer: &mut dyn Balancer, pool: &Pool, tried: u64) -> Option<usize> {
    let servers = &pool.servers;
    let untried = |i: usize| tried & (1 << (i % 64)) == 0;
    let tier = |backup: bool, fresh: bool| {
        move |i: usize| {
            let s = &servers[i];
            s.backup == backup && s.live.is_up() && (!fresh || untried(i))
        }
    };
    balancer
        .pick(servers, &tier(false, true))
        .or_else(|| balancer.pick(servers, &tier(true, true)))
        .or_else(|| balancer.pick(servers, &tier(false, false)))
        .or_else(|| balancer.pick(servers, &tier(true, false)))
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use crate::pool::{Server, ServerLive};

    pub fn servers(weights: &[u32]) -> Vec<Server> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16));
                Server {
                    name: format!("s{i}"),
                    addr,
                    sockaddr: addr.into(),
                    weight: w,
                    backup: false,
                    live: Arc::new(ServerLive::default()),
                }
            })
            .collect()
    }
}
