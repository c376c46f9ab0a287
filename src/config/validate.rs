//! Validation: every rule a configuration must satisfy, applied to the raw
//! schema, with each failure recorded against its line and key.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::error::LineIndex;
use super::raw::{self, RawConfig};
use super::values::{online_cpus_ids, parse_size, resolve};
use super::{
    BalanceKind, Config, ConfigError, ForwardMode, ListenerConfig, PoolConfig, RuntimeConfig,
    ServerConfig, Timeouts, MAX_WEIGHT,
};

/// Pulls the key out of serde's "unknown field `x`" / "missing field `x`".
pub(super) fn key_from_message(msg: &str) -> String {
    msg.split('`').nth(1).unwrap_or("").to_string()
}

pub(super) struct Validator {
    pub(super) file: PathBuf,
    pub(super) lines: LineIndex,
    pub(super) errors: Vec<ConfigError>,
}

impl Validator {
    fn err(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: Some(self.lines.line_of(span.start)),
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn config(&mut self, raw: RawConfig) -> Config {
        let runtime = self.runtime(raw.runtime);
        let timeouts = self.timeouts(raw.timeouts);
        let pools = self.pools(&raw.pool);
        let listeners = self.listeners(&raw.listener, &raw.pool);
        if raw.listener.is_empty() {
            self.errors.push(ConfigError {
                file: self.file.clone(),
                line: None,
                key: "listener".into(),
                message: "no listener is defined".into(),
            });
        }
        Config {
            runtime,
            timeouts,
            listeners,
            pools,
        }
    }

    fn runtime(&mut self, raw: Option<Spanned<raw::RawRuntime>>) -> RuntimeConfig {
        let mut rt = RuntimeConfig::default();
        let Some(raw) = raw else { return rt };
        let raw = raw.into_inner();
        if let Some(s) = raw.shards {
            match usize::try_from(*s.get_ref()) {
                Ok(n) if (1..=1024).contains(&n) => rt.shards = n,
                _ => self.err(s.span(), "runtime.shards", "must be between 1 and 1024"),
            }
        }
        if let Some(cpus) = raw.cpus {
            let online = online_cpus_ids();
            for &c in cpus.get_ref() {
                match usize::try_from(c) {
                    Ok(c) if online.is_empty() || online.contains(&c) => rt.cpus.push(c),
                    _ => self.err(
                        cpus.span(),
                        "runtime.cpus",
                        format!("CPU {c} is not one this process may run on ({online:?})"),
                    ),
                }
            }
        }
        if let Some(f) = raw.forward {
            match ForwardMode::parse(f.get_ref()) {
                Some(m) => rt.forward = m,
                None => self.err(
                    f.span(),
                    "runtime.forward",
                    format!(
                        "unknown mode `{}` (expected copy, splice, splice-ring or auto)",
                        f.get_ref()
                    ),
                ),
            }
        }
        if let Some(b) = raw.buffer_size {
            match parse_size(b.get_ref()) {
                Some(n) if (4096..=1 << 20).contains(&n) => rt.buffer_size = n,
                _ => self.err(
                    b.span(),
                    "runtime.buffer_size",
                    format!("`{}` is not a size from 4k to 1m", b.get_ref()),
                ),
            }
        }
        if let Some(b) = raw.buffers {
            match usize::try_from(*b.get_ref()) {
                Ok(n) if n.is_power_of_two() && (16..=32768).contains(&n) => rt.buffers = n,
                _ => self.err(
                    b.span(),
                    "runtime.buffers",
                    "must be a power of two from 16 to 32768",
                ),
            }
        }
        if let Some(p) = raw.pipe_size {
            match parse_size(p.get_ref()) {
                Some(n) if n.is_power_of_two() && (4096..=1 << 20).contains(&n) => rt.pipe_size = n,
                _ => self.err(
                    p.span(),
                    "runtime.pipe_size",
                    format!("`{}` is not a power-of-two size from 4k to 1m", p.get_ref()),
                ),
            }
        }
        if let Some(p) = raw.pipes {
            match usize::try_from(*p.get_ref()) {
                Ok(n) if n <= 65536 => rt.pipes = n,
                _ => self.err(p.span(), "runtime.pipes", "must be from 0 to 65536"),
            }
        }
        rt
    }

    fn duration(&mut self, raw: Option<Spanned<String>>, key: &str, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.err(raw.span(), key, "must be longer than zero");
                default
            }
            Err(e) => {
                self.err(
                    raw.span(),
                    key,
                    format!(
                        "`{}` is not a duration ({e}); write e.g. 5s or 250ms",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn timeouts(&mut self, raw: Option<raw::RawTimeouts>) -> Timeouts {
        let d = Timeouts::default();
        let Some(raw) = raw else { return d };
        Timeouts {
            connect: self.duration(raw.connect, "timeouts.connect", d.connect),
            client_idle: self.duration(raw.client_idle, "timeouts.client_idle", d.client_idle),
            server_idle: self.duration(raw.server_idle, "timeouts.server_idle", d.server_idle),
        }
    }

    fn address(&mut self, raw: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match resolve(raw.get_ref()) {
            Ok(addr) => Some(addr),
            Err(msg) => {
                self.err(raw.span(), key, msg);
                None
            }
        }
    }

    fn pools(&mut self, raw: &[Spanned<raw::RawPool>]) -> Vec<PoolConfig> {
        let mut pools = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            let p = p.get_ref();
            let name = p.name.get_ref().clone();
            if let Some(first) = raw[..i]
                .iter()
                .position(|q| q.get_ref().name.get_ref() == &name)
            {
                let line = self.lines.line_of(raw[first].get_ref().name.span().start);
                self.err(
                    p.name.span(),
                    format!("pool[{i}].name"),
                    format!("duplicate pool name `{name}` (first defined on line {line})"),
                );
            }
            let balance = match &p.balance {
                None => BalanceKind::RoundRobin,
                Some(b) => BalanceKind::parse(b.get_ref()).unwrap_or_else(|| {
                    self.err(
                        b.span(),
                        format!("pool[{i}].balance"),
                        format!(
                            "unknown algorithm `{}` (expected roundrobin or leastconn)",
                            b.get_ref()
                        ),
                    );
                    BalanceKind::RoundRobin
                }),
            };
            let retries = match &p.retries {
                None => 2,
                Some(r) => match u32::try_from(*r.get_ref()) {
                    Ok(n) if n <= 100 => n,
                    _ => {
                        self.err(
                            r.span(),
                            format!("pool[{i}].retries"),
                            "must be from 0 to 100",
                        );
                        2
                    }
                },
            };
            let servers = self.servers(i, p);
            pools.push(PoolConfig {
                name,
                balance,
                retries,
                servers,
            });
        }
        pools
    }

    fn servers(&mut self, pool_index: usize, p: &raw::RawPool) -> Vec<ServerConfig> {
        let pool_key = format!("pool[{pool_index}]");
        let Some(raw_servers) = p.servers.as_ref().filter(|s| !s.get_ref().is_empty()) else {
            let span = p
                .servers
                .as_ref()
                .map(|s| s.span())
                .unwrap_or_else(|| p.name.span());
            self.err(
                span,
                format!("{pool_key}.servers"),
                format!("pool `{}` has no servers", p.name.get_ref()),
            );
            return Vec::new();
        };
        let mut servers = Vec::new();
        let list = raw_servers.get_ref();
        for (j, s) in list.iter().enumerate() {
            let s = s.get_ref();
            let key = format!("{pool_key}.servers[{j}]");
            if list[..j]
                .iter()
                .any(|t| t.get_ref().name.get_ref() == s.name.get_ref())
            {
                self.err(
                    s.name.span(),
                    format!("{key}.name"),
                    format!(
                        "duplicate server name `{}` in pool `{}`",
                        s.name.get_ref(),
                        p.name.get_ref()
                    ),
                );
            }
            let weight = match &s.weight {
                None => 1,
                Some(w) => match u32::try_from(*w.get_ref()) {
                    Ok(w) if w <= MAX_WEIGHT => w,
                    _ => {
                        self.err(
                            w.span(),
                            format!("{key}.weight"),
                            format!("must be from 0 to {MAX_WEIGHT}"),
                        );
                        1
                    }
                },
            };
            if let Some(addr) = self.address(&s.addr, &format!("{key}.addr")) {
                servers.push(ServerConfig {
                    name: s.name.get_ref().clone(),
                    addr,
                    weight,
                    backup: s.backup,
                });
            }
        }
        if servers.len() == list.len() && servers.iter().all(|s| s.weight == 0) {
            self.err(
                raw_servers.span(),
                format!("{pool_key}.servers"),
                format!(
                    "every server of pool `{}` has weight 0, so none can be picked",
                    p.name.get_ref()
                ),
            );
        }
        servers
    }

    fn listeners(
        &mut self,
        raw: &[Spanned<raw::RawListener>],
        pools: &[Spanned<raw::RawPool>],
    ) -> Vec<ListenerConfig> {
        let mut listeners = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let l = l.get_ref();
            if raw[..i]
                .iter()
                .any(|m| m.get_ref().name.get_ref() == l.name.get_ref())
            {
                self.err(
                    l.name.span(),
                    format!("listener[{i}].name"),
                    format!("duplicate listener name `{}`", l.name.get_ref()),
                );
            }
            let pool = pools
                .iter()
                .position(|p| p.get_ref().name.get_ref() == l.pool.get_ref());
            if pool.is_none() {
                self.err(
                    l.pool.span(),
                    format!("listener[{i}].pool"),
                    format!("no pool named `{}`", l.pool.get_ref()),
                );
            }
            let bind = self.address(&l.bind, &format!("listener[{i}].bind"));
            if let Some(bind) = bind {
                if let Some(j) = listeners
                    .iter()
                    .position(|m: &ListenerConfig| m.bind == bind && bind.port() != 0)
                {
                    self.err(
                        l.bind.span(),
                        format!("listener[{i}].bind"),
                        format!(
                            "address {bind} is already bound by listener `{}`",
                            listeners[j].name
                        ),
                    );
                }
            }
            if let (Some(bind), Some(pool)) = (bind, pool) {
                listeners.push(ListenerConfig {
                    name: l.name.get_ref().clone(),
                    bind,
                    pool,
                });
            }
        }
        listeners
    }
}
