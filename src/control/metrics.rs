//! `/metrics`: [`Stats`] in the Prometheus text exposition format, written
//! by the `prometheus-client` crate's encoder. Everything is read at scrape
//! time from the counters the shards publish; nothing on the data path
//! knows about Prometheus.
//!
//! Names: `ringlb_listener_*{listener}`, `ringlb_server_*{pool,server}`
//! (`state` is one gauge per state, 1 for the current one, as Prometheus
//! expects of an enum), `ringlb_pool_queue_*{pool}`, `ringlb_shard_*{shard}`
//! (one per shard counter), `ringlb_access_log_*` when the access log is
//! on. Counters carry the `_total` suffix.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::stats::{ListenerView, QueueView, ServerStats, Stats};
use crate::shard::COUNTER_NAMES;

/// Shard counters that are levels, not totals.
const SHARD_GAUGES: [&str; 5] = ["active", "waiting", "queue_len", "buffers_in_use", "pipes"];

/// Renders `stats`.
pub fn render(stats: Stats) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(stats)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct Scrape(Stats);

type Labels = Vec<(&'static str, String)>;

/// A counter family: one sample per label set.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
    }
    Ok(())
}

/// A gauge family: one sample per label set.
fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let enc = &mut enc;

        let listeners = |f: fn(&super::stats::ListenerView) -> u64| {
            s.listeners
                .iter()
                .map(move |l| (vec![("listener", l.name.clone())], f(l)))
        };
        counters(
            enc,
            "ringlb_listener_accepted",
            "Client connections accepted.",
            listeners(|l| l.accepted),
        )?;
        gauges(
            enc,
            "ringlb_listener_active",
            "Client connections open now.",
            listeners(|l| l.active).map(|(l, v)| (l, v as f64)),
        )?;
        counters(
            enc,
            "ringlb_listener_rejected",
            "Clients turned away: no server, queue full or timed out.",
            listeners(|l| l.rejected),
        )?;
        counters(
            enc,
            "ringlb_listener_denied",
            "Clients the listener's access list turned away.",
            listeners(|l| l.denied),
        )?;
        counters(
            enc,
            "ringlb_listener_proxy_errors",
            "Clients closed for a malformed, missing or untrusted PROXY header.",
            listeners(|l| l.proxy_errors),
        )?;
        let limited = |f: fn(&ListenerView) -> u64| {
            s.listeners
                .iter()
                .filter_map(move |l| {
                    let algorithm = l.limit?;
                    Some((
                        vec![
                            ("listener", l.name.clone()),
                            ("algorithm", algorithm.to_string()),
                        ],
                        f(l),
                    ))
                })
                .collect::<Vec<_>>()
        };
        counters(
            enc,
            "ringlb_listener_limited",
            "Clients the listener's rate limit refused (reset before any server).",
            limited(|l| l.limited),
        )?;
        counters(
            enc,
            "ringlb_listener_shaped",
            "Clients the listener's leaky bucket delayed to its rate.",
            limited(|l| l.shaped),
        )?;
        let with = |has: fn(&ListenerView) -> bool, f: fn(&ListenerView) -> u64| {
            s.listeners
                .iter()
                .filter(move |l| has(l))
                .map(move |l| (vec![("listener", l.name.clone())], f(l)))
        };
        gauges(
            enc,
            "ringlb_listener_maxconn",
            "The listener's maxconn: connections open at once, over every shard.",
            with(|l| l.maxconn.is_some(), |l| l.maxconn.unwrap_or(0) as u64)
                .map(|(l, v)| (l, v as f64)),
        )?;
        counters(
            enc,
            "ringlb_listener_maxconn_waits",
            "Clients accepted at maxconn and held unread until a place freed.",
            with(|l| l.maxconn.is_some(), |l| l.maxconn_waits),
        )?;
        counters(
            enc,
            "ringlb_listener_conn_per_src_refused",
            "Clients refused for having conn_per_src connections open already.",
            with(|l| l.conn_per_src.is_some(), |l| l.conn_per_src_refused),
        )?;
        counters(
            enc,
            "ringlb_listener_store_fallbacks",
            "Clients on_store_error decided for: the shared limit's store was down, failing or late.",
            with(|l| l.limit_store.is_some(), |l| l.store_fallbacks),
        )?;
        gauges(
            enc,
            "ringlb_listener_limit_sources",
            "Sources the listener's limit tracks now (at most its size).",
            limited(|l| l.limit_sources)
                .into_iter()
                .map(|(labels, v)| (labels, v as f64)),
        )?;

        let servers: Vec<(Labels, &ServerStats)> = s
            .pools
            .iter()
            .flat_map(|p| {
                p.servers.iter().map(move |sv| {
                    (
                        vec![("pool", p.name.clone()), ("server", sv.name.clone())],
                        sv,
                    )
                })
            })
            .collect();
        let each =
            |f: fn(&ServerStats) -> u64| servers.iter().map(move |(l, sv)| (l.clone(), f(sv)));
        let each_f =
            |f: fn(&ServerStats) -> f64| servers.iter().map(move |(l, sv)| (l.clone(), f(sv)));
        let states = servers.iter().flat_map(|(labels, sv)| {
            ["up", "down", "drain", "maint"]
                .into_iter()
                .map(move |state| {
                    let mut l = labels.clone();
                    l.push(("state", state.to_string()));
                    (l, if sv.state == state { 1.0 } else { 0.0 })
                })
        });
        gauges(
            enc,
            "ringlb_server_state",
            "Server state: 1 for the current one of up, down, drain, maint.",
            states,
        )?;
        gauges(
            enc,
            "ringlb_server_weight",
            "Configured weight.",
            each_f(|s| f64::from(s.weight)),
        )?;
        gauges(
            enc,
            "ringlb_server_weight_ramp",
            "Share of its weight a server has now (slow start), 0 to 1.",
            each_f(|s| s.ramp_permille as f64 / 1000.0),
        )?;
        gauges(
            enc,
            "ringlb_server_active",
            "Connections open to the server now.",
            each_f(|s| s.active as f64),
        )?;
        counters(
            enc,
            "ringlb_server_connections",
            "Connections established.",
            each(|s| s.total),
        )?;
        counters(
            enc,
            "ringlb_server_connect_errors",
            "Connects that failed or timed out.",
            each(|s| s.connect_errors),
        )?;
        counters(
            enc,
            "ringlb_server_bytes_in",
            "Bytes sent to the server, by connections that ended.",
            each(|s| s.bytes_in),
        )?;
        counters(
            enc,
            "ringlb_server_bytes_out",
            "Bytes received from the server, by connections that ended.",
            each(|s| s.bytes_out),
        )?;
        gauges(
            enc,
            "ringlb_server_ejected",
            "1 while outlier detection keeps the server out.",
            each_f(|s| if s.ejected { 1.0 } else { 0.0 }),
        )?;
        let mut m = enc.encode_descriptor(
            "ringlb_server_connect_seconds",
            "Time to establish a connection.",
            None,
            MetricType::Histogram,
        )?;
        for (labels, sv) in &servers {
            let h = &sv.connect_hist;
            m.encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }

        let queues: Vec<(Labels, &QueueView)> = s
            .pools
            .iter()
            .filter_map(|p| {
                p.queue
                    .as_ref()
                    .map(|q| (vec![("pool", p.name.clone())], q))
            })
            .collect();
        let q = |f: fn(&QueueView) -> u64| queues.iter().map(move |(l, q)| (l.clone(), f(q)));
        let q_ms = |f: fn(&QueueView) -> Option<f64>| {
            queues
                .iter()
                .filter_map(move |(l, q)| f(q).map(|ms| (l.clone(), ms / 1000.0)))
        };
        gauges(
            enc,
            "ringlb_pool_queue_length",
            "Clients waiting for a server slot now.",
            q(|q| q.len).map(|(l, v)| (l, v as f64)),
        )?;
        counters(
            enc,
            "ringlb_pool_queue_served",
            "Clients served after queueing.",
            q(|q| q.served),
        )?;
        counters(
            enc,
            "ringlb_pool_queue_timeouts",
            "Clients closed after timeouts.queue.",
            q(|q| q.timeouts),
        )?;
        counters(
            enc,
            "ringlb_pool_queue_full",
            "Clients turned away by maxqueue.",
            q(|q| q.full),
        )?;
        gauges(
            enc,
            "ringlb_pool_queue_wait_p50_seconds",
            "Median time queued.",
            q_ms(|q| q.waited_p50_ms),
        )?;
        gauges(
            enc,
            "ringlb_pool_queue_wait_p99_seconds",
            "99th percentile of time queued.",
            q_ms(|q| q.waited_p99_ms),
        )?;

        if let Some(a) = &s.access_log {
            counters(
                enc,
                "ringlb_access_log_written",
                "Access log lines written.",
                [(Vec::new(), a.written)],
            )?;
            counters(
                enc,
                "ringlb_access_log_write_errors",
                "Access log writes that failed (their lines are lost).",
                [(Vec::new(), a.write_errors)],
            )?;
        }
        for (i, (name, help)) in COUNTER_NAMES.iter().enumerate() {
            let metric = format!("ringlb_shard_{name}");
            let samples = s.shards.iter().map(|sh| {
                (
                    vec![("shard", sh.id.to_string())],
                    sh.counters.to_array()[i],
                )
            });
            if SHARD_GAUGES.contains(name) {
                gauges(
                    enc,
                    &metric,
                    help.trim(),
                    samples.map(|(l, v)| (l, v as f64)),
                )?;
            } else {
                counters(enc, &metric, help.trim(), samples)?;
            }
        }
        Ok(())
    }
}
