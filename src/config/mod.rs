//! Configuration: the TOML schema, its validation, and the resolved model the
//! data plane runs from.
//!
//! Loading never stops at the first problem: it gathers every error it can
//! find, each naming the file, line and key, so an operator fixes a file in
//! one pass.

mod error;
mod raw;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use error::LineIndex;
pub use error::{ConfigError, ConfigErrors};
use raw::RawConfig;
use toml::Spanned;

/// The largest weight a server may carry (as in HAProxy).
pub const MAX_WEIGHT: u32 = 256;

/// How bytes are moved between the two sockets of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// recv/send through buffers picked from a provided-buffer ring.
    Copy,
    /// socket → pipe → socket with non-blocking splice(2), readiness polled
    /// through the ring.
    Splice,
    /// socket → pipe → socket with `IORING_OP_SPLICE` (runs on io-wq workers).
    SpliceRing,
    /// Start each direction in copy mode and move it to splice once it
    /// carries bulk data.
    Auto,
}

impl ForwardMode {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "copy" => ForwardMode::Copy,
            "splice" => ForwardMode::Splice,
            "splice-ring" => ForwardMode::SpliceRing,
            "auto" => ForwardMode::Auto,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Copy => "copy",
            ForwardMode::Splice => "splice",
            ForwardMode::SpliceRing => "splice-ring",
            ForwardMode::Auto => "auto",
        }
    }
}

impl fmt::Display for ForwardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The balancing algorithm of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceKind {
    /// Smooth weighted round robin (nginx style).
    RoundRobin,
    /// Weighted least connections across all shards.
    LeastConn,
}

impl BalanceKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "roundrobin" => BalanceKind::RoundRobin,
            "leastconn" => BalanceKind::LeastConn,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BalanceKind::RoundRobin => "roundrobin",
            BalanceKind::LeastConn => "leastconn",
        }
    }
}

/// A backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Used only when no primary server of the pool can take the connection.
    pub backup: bool,
}

/// A named group of servers and the algorithm that picks among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    pub balance: BalanceKind,
    /// How many other servers to try after a failed connect.
    pub retries: u32,
    pub servers: Vec<ServerConfig>,
}

/// A listening address and the pool it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    /// Index into [`Config::pools`].
    pub pool: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Bound on establishing a connection to one server.
    pub connect: Duration,
    /// A connection is closed when nothing was read from or written to the
    /// client for this long.
    pub client_idle: Duration,
    /// Likewise for the server side.
    pub server_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client_idle: Duration::from_secs(60),
            server_idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Number of shard threads.
    pub shards: usize,
    /// CPUs to pin shard `i` to (`cpus[i % len]`); empty pins shard `i` to
    /// the i-th online CPU.
    pub cpus: Vec<usize>,
    pub forward: ForwardMode,
    /// Size of one provided buffer (copy mode).
    pub buffer_size: usize,
    /// Provided buffers per shard (a power of two).
    pub buffers: usize,
    /// Most pipes one shard keeps for splicing.
    pub pipes: usize,
    /// Capacity of each pipe (`F_SETPIPE_SZ`).
    pub pipe_size: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shards: online_cpus(),
            cpus: Vec::new(),
            forward: ForwardMode::Auto,
            buffer_size: 32 * 1024,
            buffers: 1024,
            pipes: 256,
            pipe_size: 256 * 1024,
        }
    }
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub timeouts: Timeouts,
    pub listeners: Vec<ListenerConfig>,
    pub pools: Vec<PoolConfig>,
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        Config::parse(&text, path)
    }

    /// Validates TOML text; `file` only names the source in errors.
    ///
    /// ```
    /// use std::path::Path;
    /// use ringlb::Config;
    /// let text = r#"
    /// [[listener]]
    /// name = "web"
    /// bind = "127.0.0.1:8080"
    /// pool = "app"
    ///
    /// [[pool]]
    /// name = "app"
    /// servers = [{ name = "a", addr = "127.0.0.1:9001" }]
    /// "#;
    /// let config = Config::parse(text, Path::new("lb.toml")).unwrap();
    /// assert_eq!(config.pools[0].servers[0].weight, 1);
    ///
    /// let errors = Config::parse(&text.replace("\"app\"\n\n", "\"nope\"\n\n"), Path::new("lb.toml"))
    ///     .unwrap_err();
    /// assert_eq!(errors.to_string(), "lb.toml:5: key `listener[0].pool`: no pool named `nope`");
    /// ```
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            file: file.to_path_buf(),
            lines: LineIndex::new(text),
            errors: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let line = e.span().map(|s| v.lines.line_of(s.start));
                return Err(ConfigErrors(vec![ConfigError {
                    file: v.file,
                    line,
                    key: key_from_message(e.message()),
                    message: e.message().trim().to_string(),
                }]));
            }
        };
        let config = v.config(raw);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(v.errors))
        }
    }
}

/// Pulls the key out of serde's "unknown field `x`" / "missing field `x`".
fn key_from_message(msg: &str) -> String {
    msg.split('`').nth(1).unwrap_or("").to_string()
}

struct Validator {
    file: PathBuf,
    lines: LineIndex,
    errors: Vec<ConfigError>,
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

    fn config(&mut self, raw: RawConfig) -> Config {
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

fn online_cpus_ids() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

/// Parses `4096`, `16k`, `64KiB`, `1m` into bytes.
///
/// ```
/// use ringlb::config::parse_size;
/// assert_eq!(parse_size("64KiB"), Some(65536));
/// assert_eq!(parse_size("1m"), Some(1 << 20));
/// assert_eq!(parse_size("lots"), None);
/// ```
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Resolves `ip:port`, `[v6]:port` or `host:port` (names are looked up once,
/// at load).
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "`{s}` is not an address: write host:port, e.g. 127.0.0.1:8080"
        ));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!("`{s}`: `{port}` is not a port number"));
    };
    if host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    match (host.trim_matches(|c| c == '[' || c == ']'), port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("`{host}` resolves to no address")),
        Err(e) => Err(format!("cannot resolve `{host}`: {e}")),
    }
}

impl fmt::Display for Config {
    /// The resolved configuration, as `ringlb check` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rt = &self.runtime;
        writeln!(
            f,
            "runtime: {} shard(s), cpus {:?}, forward {}, {} buffers of {} bytes, up to {} pipes of {} bytes per shard",
            rt.shards, rt.cpus, rt.forward, rt.buffers, rt.buffer_size, rt.pipes, rt.pipe_size
        )?;
        let t = &self.timeouts;
        writeln!(
            f,
            "timeouts: connect {:?}, client_idle {:?}, server_idle {:?}",
            t.connect, t.client_idle, t.server_idle
        )?;
        for l in &self.listeners {
            writeln!(
                f,
                "listener {} on {} -> pool {}",
                l.name, l.bind, self.pools[l.pool].name
            )?;
        }
        for p in &self.pools {
            writeln!(
                f,
                "pool {}: balance {}, retries {}",
                p.name,
                p.balance.as_str(),
                p.retries
            )?;
            for s in &p.servers {
                writeln!(
                    f,
                    "  server {} {} weight {}{}",
                    s.name,
                    s.addr,
                    s.weight,
                    if s.backup { " backup" } else { "" }
                )?;
            }
        }
        Ok(())
    }
}
