//! `/metrics`: [`Stats`] in the Prometheus text exposition format, written
//! by the `prometheus-client` crate's encoder. Everything is read at scrape
//! time from the counters the shards publish; nothing on the data path
//! knows about Prometheus.
//!
//! Names: `ringlb_listener_*{listener}`, `ringlb_server_*{pool,server}`
//! (`state` is one gauge per state, 1 for the current one, as Prometheus
//! expects of an enum), `ringlb_pool_queue_*{pool}`, `ringlb_shard_*{shard}`
//! (one per shard counter). Counters carry the `_total` suffix.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::stats::Stats;
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

/// One metric family: its samples, each a label set and a value.
fn family<V: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
    write: impl Fn(&mut prometheus_client::encoding::MetricEncoder, V) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        let e = m.encode_family(&labels)?;
        let mut e = e;
        write(&mut e, v)?;
    }
    Ok(())
}

fn counter(e: &mut prometheus_client::encoding::MetricEncoder, v: u64) -> std::fmt::Result {
    e.encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn gauge(e: &mut prometheus_client::encoding::MetricEncoder, v: f64) -> std::fmt::Result {
    e.encode_gauge(&v)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let listeners = |f: fn(&super::stats::ListenerView) -> u64| {
            s.listeners
                .iter()
                .map(move |l| (vec![("listener", l.name.clone())], f(l)))
        };
        use MetricType::{Counter, Gauge};
        family(
            &mut enc,
            "ringlb_listener_accepted",
            "Client connections accepted.",
            Counter,
            listeners(|l| l.accepted),
            counter,
        )?;
        family(
            &mut enc,
            "ringlb_listener_active",
            "Client connections open now.",
            Gauge,
            listeners(|l| l.active).map(|(l, v)| (l, v as f64)),
            gauge,
        )?;
        family(
            &mut enc,
            "ringlb_listener_rejected",
            "Clients turned away: no server, queue full or timed out.",
            Counter,
            listeners(|l| l.rejected),
            counter,
        )?;

        let servers: Vec<(Labels, &super::stats::ServerStats)> = s
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
        let each = |f: fn(&super::stats::ServerStats) -> u64| {
            servers.iter().map(move |(l, sv)| (l.clone(), f(sv)))
        };
        {
            let mut m = enc.encode_descriptor(
                "ringlb_server_state",
                "Server state: 1 for the current one of up, down, drain, maint.",
                None,
                Gauge,
            )?;
            for (labels, sv) in &servers {
                for state in ["up", "down", "drain", "maint"] {
                    let mut l = labels.clone();
                    l.push(("state", state.to_string()));
                    let v: i64 = (sv.state == state).into();
                    m.encode_family(&l)?.encode_gauge(&v)?;
                }
            }
        }
        family(
            &mut enc,
            "ringlb_server_weight",
            "Configured weight.",
            Gauge,
            each(|s| u64::from(s.weight)).map(|(l, v)| (l, v as f64)),
            gauge,
        )?;
        family(
            &mut enc,
            "ringlb_server_weight_ramp",
            "Share of its weight a server has now (slow start), 0 to 1.",
            Gauge,
            servers
                .iter()
                .map(|(l, s)| (l.clone(), s.ramp_permille as f64 / 1000.0)),
            gauge,
        )?;
        family(
            &mut enc,
            "ringlb_server_active",
            "Connections open to the server now.",
            Gauge,
            each(|s| s.active).map(|(l, v)| (l, v as f64)),
            gauge,
        )?;
        family(
            &mut enc,
            "ringlb_server_connections",
            "Connections established.",
            Counter,
            each(|s| s.total),
            counter,
        )?;
        family(
            &mut enc,
            "ringlb_server_connect_errors",
            "Connects that failed or timed out.",
            Counter,
            each(|s| s.connect_errors),
            counter,
        )?;
        family(
            &mut enc,
            "ringlb_server_bytes_in",
            "Bytes sent to the server, by connections that ended.",
            Counter,
            each(|s| s.bytes_in),
            counter,
        )?;
        family(
            &mut enc,
            "ringlb_server_bytes_out",
            "Bytes received from the server, by connections that ended.",
            Counter,
            each(|s| s.bytes_out),
            counter,
        )?;
        family(
            &mut enc,
            "ringlb_server_ejected",
            "1 while outlier detection keeps the server out.",
            Gauge,
            each(|s| u64::from(s.ejected)).map(|(l, v)| (l, v as f64)),
            gauge,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "ringlb_server_connect_seconds",
                "Time to establish a connection.",
                None,
                MetricType::Histogram,
            )?;
            for (labels, sv) in &servers {
                if let Some(h) = &sv.connect_hist {
                    m.encode_family(labels)?
                        .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
                }
            }
        }

        let queues: Vec<(Labels, &super::stats::QueueView)> = s
            .pools
            .iter()
            .filter_map(|p| {
                p.queue
                    .as_ref()
                    .map(|q| (vec![("pool", p.name.clone())], q))
            })
            .collect();
        let q = |f: fn(&super::stats::QueueView) -> f64| {
            queues.iter().map(move |(l, q)| (l.clone(), f(q)))
        };
        family(
            &mut enc,
            "ringlb_pool_queue_length",
            "Clients waiting for a server slot now.",
            Gauge,
            q(|q| q.len as f64),
            gauge,
        )?;
        family(
            &mut enc,
            "ringlb_pool_queue_served",
            "Clients served after queueing.",
            Counter,
            q(|q| q.served as f64).map(|(l, v)| (l, v as u64)),
            counter,
        )?;
        family(
            &mut enc,
            "ringlb_pool_queue_timeouts",
            "Clients closed after timeouts.queue.",
            Counter,
            q(|q| q.timeouts as f64).map(|(l, v)| (l, v as u64)),
            counter,
        )?;
        family(
            &mut enc,
            "ringlb_pool_queue_full",
            "Clients turned away by maxqueue.",
            Counter,
            q(|q| q.full as f64).map(|(l, v)| (l, v as u64)),
            counter,
        )?;
        family(
            &mut enc,
            "ringlb_pool_queue_wait_p50_seconds",
            "Median time queued.",
            Gauge,
            queues
                .iter()
                .filter_map(|(l, q)| q.waited_p50_ms.map(|v| (l.clone(), v / 1000.0))),
            gauge,
        )?;
        family(
            &mut enc,
            "ringlb_pool_queue_wait_p99_seconds",
            "99th percentile of time queued.",
            Gauge,
            queues
                .iter()
                .filter_map(|(l, q)| q.waited_p99_ms.map(|v| (l.clone(), v / 1000.0))),
            gauge,
        )?;

        for (i, (name, help)) in COUNTER_NAMES.iter().enumerate() {
            let metric = format!("ringlb_shard_{name}");
            let samples = s.shards.iter().map(|sh| {
                (
                    vec![("shard", sh.id.to_string())],
                    sh.counters.to_array()[i],
                )
            });
            if SHARD_GAUGES.contains(name) {
                family(
                    &mut enc,
                    &metric,
                    help.trim(),
                    Gauge,
                    samples.map(|(l, v)| (l, v as f64)),
                    gauge,
                )?;
            } else {
                family(&mut enc, &metric, help.trim(), Counter, samples, counter)?;
            }
        }
        Ok(())
    }
}

// The trait is used through `encode_family`'s result.
#[allow(unused_imports)]
use EncodeMetric as _;
