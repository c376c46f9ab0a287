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
pub(crate) mod values;

use std::fmt;

pub use crate::acl::Prefix;
pub use crate::limit::LimitConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// The balancing algorithm of a pool (`balance = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceKind {
    /// Smooth weighted round robin (nginx style).
    RoundRobin,
    /// Weighted least connections across all shards.
    LeastConn,
    /// A server drawn at random, in proportion to its weight.
    Random,
    /// Power of two choices: two servers drawn by weight, the less loaded wins.
    P2c,
    /// Client-address affinity through a Maglev lookup table.
    Source,
    /// Like `Source`, keyed by `hash_key`.
    Hash,
    /// Servers in declared order, each filled up to its `maxconn`.
    First,
    /// Least (active + 1) x peak-EWMA latency per weight.
    LeastTime,
}

impl BalanceKind {
    pub const ALL: [BalanceKind; 8] = [
        BalanceKind::RoundRobin,
        BalanceKind::LeastConn,
        BalanceKind::Random,
        BalanceKind::P2c,
        BalanceKind::Source,
        BalanceKind::Hash,
        BalanceKind::First,
        BalanceKind::LeastTime,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BalanceKind::RoundRobin => "roundrobin",
            BalanceKind::LeastConn => "leastconn",
            BalanceKind::Random => "random",
            BalanceKind::P2c => "p2c",
            BalanceKind::Source => "source",
            BalanceKind::Hash => "hash",
            BalanceKind::First => "first",
            BalanceKind::LeastTime => "leasttime",
        }
    }

    /// Whether the pick hashes the client's address (a Maglev table).
    pub fn hashes(self) -> bool {
        matches!(self, BalanceKind::Source | BalanceKind::Hash)
    }
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    Src,
    /// The client's IP address and port.
    SrcPort,
}

/// The latency `balance = "leasttime"` observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeastTimeObserve {
    /// Time to establish the server connection.
    Connect,
    /// Time from the first byte sent to the server to its first byte back.
    Ttfb,
}

/// Passive outlier ejection (`outlier = { ... }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Connect failures in a row that eject a server.
    pub consecutive_failures: u32,
    /// The first ejection; each repeat doubles it.
    pub ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 3,
            ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
        }
    }
}

/// What an active health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 `GET path`, judged by its status.
    Http,
}

/// The statuses an HTTP check accepts: classes (`2xx`) and codes (`204`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect(pub Vec<(u16, u16)>);

impl Expect {
    /// Parses `2xx`, `200`, or a comma-separated list of them.
    pub fn parse(s: &str) -> Option<Expect> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            let b = part.as_bytes();
            if b.len() != 3 || !(b'1'..=b'5').contains(&b[0]) {
                return None;
            }
            if &part[1..] == "xx" {
                let c = u16::from(b[0] - b'0') * 100;
                ranges.push((c, c + 99));
            } else {
                let code: u16 = part.parse().ok()?;
                ranges.push((code, code));
            }
        }
        (!ranges.is_empty()).then_some(Expect(ranges))
    }

    pub fn accepts(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// Active health checks of a pool's servers (`check = { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    /// Time between two checks of one server.
    pub interval: Duration,
    /// Bound on one check, connect to verdict.
    pub timeout: Duration,
    /// Successes in a row that bring a down server up.
    pub rise: u32,
    /// Failures in a row that take an up server down.
    pub fall: u32,
    /// Each interval is varied at random by up to this share (thousandths).
    pub jitter_permille: u32,
    pub path: String,
    /// The `Host` header (default: the server's address).
    pub host: Option<String>,
    pub expect: Expect,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            jitter_permille: 100,
            path: "/".into(),
            host: None,
            expect: Expect(vec![(200, 399)]),
        }
    }
}

/// Source-address stickiness (`stick = { on = "src", ... }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StickConfig {
    /// An entry not used for this long is forgotten.
    pub expire: Duration,
    /// The most entries the table holds.
    pub size: usize,
}

impl Default for StickConfig {
    fn default() -> Self {
        StickConfig {
            expire: Duration::from_secs(30 * 60),
            size: 100_000,
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
    /// The most connections open to this server at once, over every shard
    /// (0: no limit). Clients beyond it wait in the pool's queue.
    pub maxconn: u32,
    /// Active checks apply to this server (`check = false` opts out).
    pub check: bool,
    /// Overrides the pool's `send_proxy`.
    pub send_proxy: Option<SendProxy>,
}

impl ServerConfig {
    /// A server with weight 1 and every other setting at its default.
    pub fn new(name: &str, addr: SocketAddr) -> ServerConfig {
        ServerConfig {
            name: name.to_string(),
            addr,
            weight: 1,
            backup: false,
            maxconn: 0,
            check: true,
            send_proxy: None,
        }
    }
}

/// Whether a connection to a server starts with a PROXY protocol header
/// (`send_proxy`), and which version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendProxy {
    #[default]
    Off,
    V1,
    V2,
}

impl SendProxy {
    pub fn as_str(self) -> &'static str {
        match self {
            SendProxy::Off => "off",
            SendProxy::V1 => "v1",
            SendProxy::V2 => "v2",
        }
    }
}

/// The default Maglev table size (a prime).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// How a pool picks and protects its servers: every setting of a pool but
/// its name and servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPolicy {
    pub balance: BalanceKind,
    /// How many other servers to try after a failed connect.
    pub retries: u32,
    /// Entries of the Maglev table (`source` and `hash`; a prime).
    pub table_size: u32,
    pub hash_key: HashKey,
    pub leasttime_observe: LeastTimeObserve,
    /// How fast `leasttime`'s latency average forgets.
    pub ewma_window: Duration,
    /// Spread over every backup, not only the first one usable.
    pub allbackups: bool,
    /// The most clients the pool's queue holds (0: no limit).
    pub maxqueue: u32,
    pub outlier: Option<OutlierConfig>,
    /// A server returning to service ramps its weight over this long.
    pub slowstart: Option<Duration>,
    pub stick: Option<StickConfig>,
    pub check: Option<CheckConfig>,
    /// A PROXY protocol header first on every server connection.
    pub send_proxy: SendProxy,
    /// With `send_proxy = "v2"`: a `PP2_TYPE_UNIQUE_ID` TLV per connection.
    pub send_proxy_unique_id: bool,
}

impl PoolPolicy {
    /// `balance` with every other setting at its default.
    pub fn new(balance: BalanceKind) -> PoolPolicy {
        PoolPolicy {
            balance,
            retries: 2,
            table_size: DEFAULT_TABLE_SIZE,
            hash_key: HashKey::Src,
            leasttime_observe: LeastTimeObserve::Connect,
            ewma_window: Duration::from_secs(10),
            allbackups: false,
            maxqueue: 0,
            outlier: None,
            slowstart: None,
            stick: None,
            check: None,
            send_proxy: SendProxy::Off,
            send_proxy_unique_id: false,
        }
    }
}

/// A named group of servers and the policy that picks among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    pub policy: PoolPolicy,
    pub servers: Vec<ServerConfig>,
}

impl PoolConfig {
    /// A pool with every setting but its algorithm at its default.
    pub fn new(name: &str, balance: BalanceKind, servers: Vec<ServerConfig>) -> PoolConfig {
        PoolConfig {
            name: name.to_string(),
            policy: PoolPolicy::new(balance),
            servers,
        }
    }
}

/// A listening address and the pool it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    /// Index into [`Config::pools`].
    pub pool: usize,
    /// Who may connect (`crate::acl`): empty lists let everyone in.
    pub allow: Vec<Prefix>,
    pub deny: Vec<Prefix>,
    /// Clients first send a PROXY protocol header (v1 or v2), whose
    /// address is then the client's.
    pub accept_proxy: bool,
    /// Peers allowed to send that header; empty: any.
    pub proxy_trusted: Vec<Prefix>,
    /// New connections per source, limited (`crate::limit`).
    pub limit: Option<LimitConfig>,
    /// Most connections open at once through this listener, over every
    /// shard: at it, accepting pauses (`crate::limit::concurrency`).
    pub maxconn: Option<usize>,
    /// Most connections open at once per client address.
    pub conn_per_src: Option<u32>,
}

impl ListenerConfig {
    /// A listener open to every client.
    pub fn new(name: &str, bind: SocketAddr, pool: usize) -> ListenerConfig {
        ListenerConfig {
            name: name.to_string(),
            bind,
            pool,
            allow: Vec::new(),
            deny: Vec::new(),
            accept_proxy: false,
            proxy_trusted: Vec::new(),
            limit: None,
            maxconn: None,
            conn_per_src: None,
        }
    }

    /// Whether it checks clients against an access list.
    pub fn has_acl(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }
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
    /// The longest a client waits in a pool's queue for a server slot.
    pub queue: Duration,
    /// The longest a client of an `accept_proxy` listener takes to send
    /// its PROXY protocol header.
    pub proxy_header: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client_idle: Duration::from_secs(60),
            server_idle: Duration::from_secs(60),
            queue: Duration::from_secs(5),
            proxy_header: Duration::from_secs(3),
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
    /// On SIGTERM/SIGINT, how long open connections get to finish before
    /// the rest are reset.
    pub grace: Duration,
    /// Where a new binary asks for the listening sockets (`--upgrade`).
    pub control_socket: ControlSocket,
}

/// The unix socket of the binary upgrade (`[runtime] control_socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlSocket {
    /// Not set: [`DEFAULT_CONTROL_SOCKET`], given up with a warning when it
    /// cannot be had (another ringlb holds it, `/run` is not writable).
    Default(PathBuf),
    /// Set: an error when it cannot be had.
    Configured(PathBuf),
    /// `control_socket = ""`: no binary upgrade.
    Off,
}

impl ControlSocket {
    pub fn path(&self) -> Option<&Path> {
        match self {
            ControlSocket::Default(p) | ControlSocket::Configured(p) => Some(p),
            ControlSocket::Off => None,
        }
    }
}

/// Where the control socket is when the configuration does not say.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ringlb/ringlb.sock";

/// The access log (`[log]`): off unless `access` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub target: AccessTarget,
    pub format: AccessFormat,
    /// Records each shard may hold for the writer before it drops lines.
    pub queue: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    Text,
    Json,
}

impl AccessFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessFormat::Text => "text",
            AccessFormat::Json => "json",
        }
    }
}

/// Records per shard the access log queue holds by default.
pub const DEFAULT_ACCESS_QUEUE: usize = 16384;

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
            grace: Duration::from_secs(30),
            control_socket: ControlSocket::Default(PathBuf::from(DEFAULT_CONTROL_SOCKET)),
        }
    }
}

/// The admin API (`[admin]`): off unless configured.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// When set, every request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub timeouts: Timeouts,
    pub admin: Option<AdminConfig>,
    pub access_log: Option<AccessLogConfig>,
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
