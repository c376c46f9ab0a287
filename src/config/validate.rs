//! Validation: every rule a configuration must satisfy, applied once, here,
//! to the raw schema, whether it was read from a file or built from
//! quick-mode flags. Each failure is recorded against the origin of the
//! value at fault; nothing stops at the first one.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::Report;
use super::raw::{
    Item, Origin, RawConfig, RawListener, RawPool, RawRuntime, RawServer, RawTimeouts,
};
use super::values::{online_cpus_ids, parse_duration, parse_size, resolve};
use super::{
    BalanceKind, Config, ForwardMode, ListenerConfig, PoolConfig, RuntimeConfig, ServerConfig,
    Timeouts, MAX_MAXCONN, MAX_WEIGHT,
};

/// Applies every rule to `raw`, recording failures in `report`. The result
/// holds every value that passed; it is the configuration only if `report`
/// stays empty.
pub(crate) fn validate(raw: RawConfig, report: &mut Report) -> Config {
    let mut v = Validator { report };
    let runtime = v.runtime(raw.runtime);
    let timeouts = v.timeouts(raw.timeouts);
    let pools = v.pools(&raw.pools);
    let listeners = v.listeners(&raw.listeners, &raw.pools);
    if raw.listeners.is_empty() {
        v.report
            .at_document(None, "listener", "no listener is defined");
    }
    Config {
        runtime,
        timeouts,
        listeners,
        pools,
    }
}

struct Validator<'r> {
    report: &'r mut Report,
}

/// `Some(value)` from an item whose value passes `ok`.
fn integer_in<T: TryFrom<i64>>(item: &Item<i64>, ok: impl Fn(&T) -> bool) -> Option<T> {
    T::try_from(item.value).ok().filter(ok)
}

impl Validator<'_> {
    fn err(&mut self, at: &Origin, key: &str, message: impl Into<String>) {
        self.report.at(at, key, message);
    }

    fn runtime(&mut self, raw: RawRuntime) -> RuntimeConfig {
        let mut rt = RuntimeConfig::default();
        if let Some(s) = &raw.shards {
            match integer_in(s, |n| (1..=1024).contains(n)) {
                Some(n) => rt.shards = n,
                None => self.err(&s.at, "runtime.shards", "must be between 1 and 1024"),
            }
        }
        if let Some(cpus) = &raw.cpus {
            let online = online_cpus_ids();
            for (i, c) in cpus.iter().enumerate() {
                match integer_in(c, |c| online.is_empty() || online.contains(c)) {
                    Some(c) => rt.cpus.push(c),
                    None => self.err(
                        &c.at,
                        &format!("runtime.cpus[{i}]"),
                        format!(
                            "CPU {} is not one this process may run on ({online:?})",
                            c.value
                        ),
                    ),
                }
            }
        }
        if let Some(f) = &raw.forward {
            match ForwardMode::parse(&f.value) {
                Some(m) => rt.forward = m,
                None => self.err(
                    &f.at,
                    "runtime.forward",
                    format!(
                        "unknown mode `{}` (expected copy, splice, splice-ring or auto)",
                        f.value
                    ),
                ),
            }
        }
        if let Some(b) = &raw.buffer_size {
            match parse_size(&b.value) {
                Some(n) if (4096..=1 << 20).contains(&n) => rt.buffer_size = n,
                _ => self.err(
                    &b.at,
                    "runtime.buffer_size",
                    format!("`{}` is not a size from 4k to 1m", b.value),
                ),
            }
        }
        if let Some(b) = &raw.buffers {
            match integer_in(b, |n: &usize| {
                n.is_power_of_two() && (16..=32768).contains(n)
            }) {
                Some(n) => rt.buffers = n,
                None => self.err(
                    &b.at,
                    "runtime.buffers",
                    "must be a power of two from 16 to 32768",
                ),
            }
        }
        if let Some(p) = &raw.pipe_size {
            match parse_size(&p.value) {
                Some(n) if n.is_power_of_two() && (4096..=1 << 20).contains(&n) => rt.pipe_size = n,
                _ => self.err(
                    &p.at,
                    "runtime.pipe_size",
                    format!("`{}` is not a power-of-two size from 4k to 1m", p.value),
                ),
            }
        }
        if let Some(p) = &raw.pipes {
            match integer_in(p, |n| *n <= 65536) {
                Some(n) => rt.pipes = n,
                None => self.err(&p.at, "runtime.pipes", "must be from 0 to 65536"),
            }
        }
        if let Some(m) = &raw.maxconn {
            match integer_in(m, |n| (1..=MAX_MAXCONN).contains(n)) {
                Some(n) => rt.maxconn = Some(n),
                None => self.err(
                    &m.at,
                    "runtime.maxconn",
                    format!("must be from 1 to {MAX_MAXCONN}"),
                ),
            }
        }
        rt
    }

    fn duration(&mut self, raw: &Option<Item<String>>, key: &str, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match parse_duration(&raw.value) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.err(&raw.at, key, "must be longer than zero");
                default
            }
            Err(message) => {
                self.err(&raw.at, key, message);
                default
            }
        }
    }

    fn timeouts(&mut self, raw: RawTimeouts) -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            connect: self.duration(&raw.connect, "timeouts.connect", d.connect),
            client_idle: self.duration(&raw.client_idle, "timeouts.client_idle", d.client_idle),
            server_idle: self.duration(&raw.server_idle, "timeouts.server_idle", d.server_idle),
        }
    }

    fn address(&mut self, raw: &Item<String>, key: &str) -> Option<SocketAddr> {
        match resolve(&raw.value) {
            Ok(addr) => Some(addr),
            Err(msg) => {
                self.err(&raw.at, key, msg);
                None
            }
        }
    }

    fn pools(&mut self, raw: &[RawPool]) -> Vec<PoolConfig> {
        let mut pools = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            if let Some(name) = &p.name {
                let first = raw[..i]
                    .iter()
                    .filter_map(|q| q.name.as_ref())
                    .find(|q| q.value == name.value);
                if let Some(first) = first {
                    let message = match self.report.line_of(&first.at) {
                        Some(line) => format!(
                            "duplicate pool name `{}` (first defined on line {line})",
                            name.value
                        ),
                        None => format!("duplicate pool name `{}`", name.value),
                    };
                    self.err(&name.at, &format!("pool[{i}].name"), message);
                }
            }
            let balance = match &p.balance {
                None => BalanceKind::RoundRobin,
                Some(b) => BalanceKind::parse(&b.value).unwrap_or_else(|| {
                    self.err(
                        &b.at,
                        &format!("pool[{i}].balance"),
                        format!(
                            "unknown algorithm `{}` (expected roundrobin or leastconn)",
                            b.value
                        ),
                    );
                    BalanceKind::RoundRobin
                }),
            };
            let retries = match &p.retries {
                None => 2,
                Some(r) => integer_in(r, |n| *n <= 100).unwrap_or_else(|| {
                    self.err(
                        &r.at,
                        &format!("pool[{i}].retries"),
                        "must be from 0 to 100",
                    );
                    2
                }),
            };
            let servers = self.servers(i, p);
            if let Some(name) = &p.name {
                pools.push(PoolConfig {
                    name: name.value.clone(),
                    balance,
                    retries,
                    servers,
                });
            }
        }
        pools
    }

    fn servers(&mut self, pool_index: usize, p: &RawPool) -> Vec<ServerConfig> {
        let pool_key = format!("pool[{pool_index}]");
        let pool_name = p.name.as_ref().map_or("", |n| n.value.as_str());
        let Some(list) = p.servers.as_ref().filter(|s| !s.value.is_empty()) else {
            let message = format!("pool `{pool_name}` has no servers");
            let key = format!("{pool_key}.servers");
            match &p.servers {
                Some(empty) => self.err(&empty.at, &key, message),
                // The key may come later in the table: it takes the whole file.
                None => {
                    let at = p.name.as_ref().map_or(&p.at, |n| &n.at);
                    self.report.at_document(Some(at), &key, message);
                }
            }
            return Vec::new();
        };
        let mut servers = Vec::new();
        for (j, s) in list.value.iter().enumerate() {
            let key = format!("{pool_key}.servers[{j}]");
            if let Some(name) = &s.name {
                let seen = list.value[..j]
                    .iter()
                    .any(|t| t.name.as_ref().is_some_and(|t| t.value == name.value));
                if seen {
                    self.err(
                        &name.at,
                        &format!("{key}.name"),
                        format!(
                            "duplicate server name `{}` in pool `{pool_name}`",
                            name.value
                        ),
                    );
                }
            }
            let weight = self.weight(s, &key);
            let addr = s
                .addr
                .as_ref()
                .and_then(|a| self.address(a, &format!("{key}.addr")));
            if let (Some(name), Some(addr)) = (&s.name, addr) {
                servers.push(ServerConfig {
                    name: name.value.clone(),
                    addr,
                    weight,
                    backup: s.backup.as_ref().is_some_and(|b| b.value),
                });
            }
        }
        if servers.len() == list.value.len() && servers.iter().all(|s| s.weight == 0) {
            self.err(
                &list.at,
                &format!("{pool_key}.servers"),
                format!("every server of pool `{pool_name}` has weight 0, so none can be picked"),
            );
        }
        servers
    }

    fn weight(&mut self, s: &RawServer, key: &str) -> u32 {
        let Some(w) = &s.weight else { return 1 };
        integer_in(w, |w| *w <= MAX_WEIGHT).unwrap_or_else(|| {
            self.err(
                &w.at,
                &format!("{key}.weight"),
                format!("must be from 0 to {MAX_WEIGHT}"),
            );
            1
        })
    }

    fn listeners(&mut self, raw: &[RawListener], pools: &[RawPool]) -> Vec<ListenerConfig> {
        let mut listeners = Vec::new();
        // Every bind address that resolved, with its listener's name.
        let mut bound: Vec<(SocketAddr, &str)> = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            if let Some(name) = &l.name {
                let seen = raw[..i]
                    .iter()
                    .any(|m| m.name.as_ref().is_some_and(|m| m.value == name.value));
                if seen {
                    self.err(
                        &name.at,
                        &format!("listener[{i}].name"),
                        format!("duplicate listener name `{}`", name.value),
                    );
                }
            }
            let pool = l.pool.as_ref().and_then(|p| {
                let found = pools
                    .iter()
                    .position(|q| q.name.as_ref().is_some_and(|n| n.value == p.value));
                if found.is_none() {
                    self.report.at_document(
                        Some(&p.at),
                        &format!("listener[{i}].pool"),
                        format!("no pool named `{}`", p.value),
                    );
                }
                found
            });
            let bind = l.bind.as_ref().and_then(|b| {
                let key = format!("listener[{i}].bind");
                let addr = self.address(b, &key)?;
                if let Some((_, other)) = bound.iter().find(|(a, _)| *a == addr && addr.port() != 0)
                {
                    self.err(
                        &b.at,
                        &key,
                        format!("address {addr} is already bound by listener `{other}`"),
                    );
                }
                Some(addr)
            });
            let name = l.name.as_ref().map(|n| n.value.as_str());
            if let Some(bind) = bind {
                bound.push((bind, name.unwrap_or("")));
            }
            if let (Some(name), Some(bind), Some(pool)) = (name, bind, pool) {
                listeners.push(ListenerConfig {
                    name: name.to_string(),
                    bind,
                    pool,
                });
            }
        }
        listeners
    }
}
