//! What the running process looks like, as one serialisable value: every
//! pool and server (state, weight, counts, bytes, connect times, the
//! waiting room), every listener, every shard's counters. `/stats` sends it
//! as JSON, `/metrics` renders it for Prometheus, the stats page draws it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use crate::pool::{Pool, Server};
use crate::runtime::Runtime;
use crate::shard::Counters;

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub pools: Vec<PoolStats>,
    pub listeners: Vec<ListenerView>,
    pub shards: Vec<ShardView>,
    /// The access log's writer, when `[log] access` is set.
    pub access_log: Option<AccessLogView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccessLogView {
    /// Lines written.
    pub written: u64,
    /// Lines the shards dropped because the writer was behind.
    pub dropped: u64,
    /// Writes that failed (their lines are lost).
    pub write_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStats {
    pub name: String,
    pub balance: &'static str,
    pub servers: Vec<ServerStats>,
    /// The waiting room, when a server of the pool has a `maxconn`.
    pub queue: Option<QueueView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    pub name: String,
    pub addr: String,
    /// `up`, `down`, `drain` or `maint`.
    pub state: &'static str,
    /// Configured weight.
    pub weight: u32,
    /// Weight now, in thousandths of `weight` (below 1000 during slow start).
    pub ramp_permille: u64,
    pub backup: bool,
    pub maxconn: u32,
    /// Connections open now (connecting or connected).
    pub active: u64,
    /// Connections established, ever.
    pub total: u64,
    pub connect_errors: u64,
    /// Bytes to the server and from it, by connections that ended.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connect time quantiles, in milliseconds.
    pub connect_p50_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    /// Ejected by outlier detection right now.
    pub ejected: bool,
    pub checked: bool,
    #[serde(skip)]
    pub connect_hist: HistogramView,
}

/// A connect-time histogram in Prometheus's shape.
#[derive(Debug, Clone)]
pub struct HistogramView {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub len: u64,
    pub queued: u64,
    pub served: u64,
    pub timeouts: u64,
    pub full: u64,
    pub waited_p50_ms: Option<f64>,
    pub waited_p99_ms: Option<f64>,
    pub estimated_wait_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerView {
    pub name: String,
    pub addr: String,
    pub pool: String,
    pub accepted: u64,
    pub active: u64,
    pub rejected: u64,
    /// Turned away by the access list.
    pub denied: u64,
    /// Closed for a bad, missing or untrusted PROXY header.
    pub proxy_errors: u64,
    /// The listener's `limit` algorithm, and the clients it refused and
    /// delayed.
    pub limit: Option<&'static str>,
    pub limited: u64,
    pub shaped: u64,
    /// Sources the limit tracks now.
    pub limit_sources: u64,
    /// `maxconn`, and the clients held at it.
    pub maxconn: Option<usize>,
    pub maxconn_waits: u64,
    /// `conn_per_src`, and the clients it refused.
    pub conn_per_src: Option<u32>,
    pub conn_per_src_refused: u64,
    /// The store a shared limit uses (its password left out), and the
    /// clients `on_store_error` decided for.
    pub limit_store: Option<String>,
    pub store_fallbacks: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardView {
    pub id: usize,
    #[serde(flatten)]
    pub counters: Counters,
}

/// The bounds of the connect-time histogram, in seconds.
pub const CONNECT_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Server `i` of `pool`'s figures at `now_ms`.
pub(crate) fn server_stats(pool: &Pool, i: usize, s: &Server, now_ms: u64) -> ServerStats {
    let a = &s.live.attempts;
    let (buckets, count, sum) = a.connect_time.by_bounds(&CONNECT_BOUNDS);
    ServerStats {
        name: s.name.clone(),
        addr: s.addr.to_string(),
        state: s.live.server_state().as_str(),
        weight: s.weight,
        ramp_permille: pool.ramp(i, now_ms),
        backup: s.backup,
        maxconn: s.maxconn,
        active: s.live.active(),
        total: a.connections.load(Ordering::Relaxed),
        connect_errors: a.connect_failures.load(Ordering::Relaxed),
        bytes_in: a.bytes_in.load(Ordering::Relaxed),
        bytes_out: a.bytes_out.load(Ordering::Relaxed),
        connect_p50_ms: a.connect_time.quantile(0.5).map(ms),
        connect_p99_ms: a.connect_time.quantile(0.99).map(ms),
        ejected: pool.policy.outlier.is_some()
            && s.live.outlier.standing(now_ms) == crate::outlier::Standing::Out,
        checked: pool.policy.check.is_some() && s.check,
        connect_hist: HistogramView {
            buckets,
            count,
            sum,
        },
    }
}

impl Runtime {
    /// Everything `/stats` and `/metrics` show.
    pub fn stats(&self) -> Stats {
        let now_ms = crate::clock::millis(Instant::now());
        let pools = self
            .pools
            .pools
            .iter()
            .map(|p| PoolStats {
                name: p.name.clone(),
                balance: p.policy.balance.as_str(),
                servers: p
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| server_stats(p, i, s, now_ms))
                    .collect(),
                queue: p.servers.iter().any(|s| s.maxconn > 0).then(|| {
                    let q = p.queue_stats(now_ms);
                    QueueView {
                        len: q.len,
                        queued: q.queued,
                        served: q.served,
                        timeouts: q.timeouts,
                        full: q.full,
                        waited_p50_ms: q.waited_p50.map(ms),
                        waited_p99_ms: q.waited_p99.map(ms),
                        estimated_wait_ms: ms(q.estimated_wait),
                    }
                }),
            })
            .collect();
        let listeners = self
            .listeners
            .iter()
            .map(|l| {
                let c = l.stats.read();
                ListenerView {
                    name: l.name.clone(),
                    addr: l.addr.to_string(),
                    pool: self
                        .pools
                        .pools
                        .get(l.pool)
                        .map_or_else(String::new, |p| p.name.clone()),
                    accepted: c.accepted,
                    active: c.active,
                    rejected: c.rejected,
                    denied: c.denied,
                    proxy_errors: c.proxy_errors,
                    limit: l.policy.limit.as_ref().map(|c| c.algorithm.as_str()),
                    limited: c.limited,
                    shaped: c.shaped,
                    limit_sources: c.limit_sources,
                    maxconn: l.policy.maxconn,
                    maxconn_waits: c.maxconn_waits,
                    conn_per_src: l.policy.conn_per_src,
                    conn_per_src_refused: c.over_src,
                    limit_store: l
                        .policy
                        .limit
                        .as_ref()
                        .and_then(|c| c.store.as_ref())
                        .map(|s| crate::limit::store::redact(&s.url)),
                    store_fallbacks: c.store_fallbacks,
                }
            })
            .collect();
        let shards: Vec<ShardView> = self
            .shard_counters()
            .into_iter()
            .enumerate()
            .map(|(id, counters)| ShardView { id, counters })
            .collect();
        let access_log = self.access_log().map(|w| AccessLogView {
            written: w.written,
            dropped: shards.iter().map(|s| s.counters.access_log_dropped).sum(),
            write_errors: w.write_errors,
        });
        Stats {
            pools,
            listeners,
            shards,
            access_log,
        }
    }
}
