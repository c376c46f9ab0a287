//! Configuration: the resolved model the data plane runs from, and the entry
//! points that produce it from a TOML file.
//!
//! Loading never stops at the first problem: it gathers every error it can
//! find, each naming the file, line and key, so an operator fixes a file in
//! one pass. The pieces live beside this file: the schema as written
//! (`raw`), the rules (`validate`), value parsing (`values`), errors
//! (`error`) and what `ringlb check` prints (`display`).

mod display;
mod error;
mod raw;
mod validate;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub(crate) use error::Report;
pub use error::{ConfigError, ConfigErrors};
pub(crate) use raw::{Item, Origin, RawConfig, RawListener, RawPool, RawServer};
pub use values::{online_cpus, parse_size, resolve};

/// The largest weight a server may carry (as in HAProxy).
pub const MAX_WEIGHT: u32 = 256;

/// The largest `runtime.maxconn` accepted.
pub const MAX_MAXCONN: usize = 10_000_000;

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
    /// The most connection pairs (client and server socket) the whole
    /// process holds at once, from 1 to [`MAX_MAXCONN`]. `None`: derived at
    /// start from `RLIMIT_NOFILE`.
    pub maxconn: Option<usize>,
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
            maxconn: None,
        }
    }
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
        let (raw, report) = read_file(path);
        build(raw, report)
    }

    /// Validates TOML text; `file` only names the source in errors. Every
    /// error is reported, in source order.
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
        let mut report = Report::new(file, text);
        let raw = raw::read(text, &mut report);
        build(raw, report)
    }
}

/// Reads a file into its raw form, with every syntax and shape error found
/// so far; an unreadable file is one error and an empty configuration.
pub(crate) fn read_file(path: &Path) -> (RawConfig, Report) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut report = Report::new(path, &text);
            let raw = raw::read(&text, &mut report);
            (raw, report)
        }
        Err(e) => {
            let mut report = Report::new(path, "");
            report.unreadable(format!("cannot read the file: {e}"));
            (RawConfig::default(), report)
        }
    }
}

/// Validates `raw`; the configuration, or every error in `report` and every
/// one validation adds.
pub(crate) fn build(raw: RawConfig, mut report: Report) -> Result<Config, ConfigErrors> {
    let config = validate::validate(raw, &mut report);
    report.finish(config)
}
