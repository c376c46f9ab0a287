//! Validation: every rule a configuration must satisfy, applied once, here,
//! to the raw schema, whether it was read from a file or built from
//! quick-mode flags. Each failure is recorded against the origin of the
//! value at fault; nothing stops at the first one.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::Report;
use super::raw::{
    Item, Origin, RawAdmin, RawCheck, RawConfig, RawLimit, RawListener, RawLog, RawOutlier,
    RawPool, RawRuntime, RawServer, RawStick, RawTimeouts,
};
use super::values::{online_cpus_ids, parse_duration, parse_size, resolve};
use super::{
    AccessFormat, AccessLogConfig, AccessTarget, AdminConfig, BalanceKind, CheckConfig, CheckKind,
    Config, ControlSocket, Expect, ForwardMode, HashKey, LeastTimeObserve, LimitConfig,
    ListenerConfig, OutlierConfig, PoolConfig, Prefix, RuntimeConfig, SendProxy, ServerConfig,
    StickConfig, Timeouts, DEFAULT_ACCESS_QUEUE, MAX_MAXCONN, MAX_WEIGHT,
};
use crate::limit::{Algorithm, OnStoreError, Rate, StoreConfig};

/// The largest Maglev table (a prime below 2^24).
pub const MAX_TABLE_SIZE: u32 = 16_777_213;

/// The most entries a stick table may hold.
pub const MAX_STICK_SIZE: usize = 16 << 20;

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// Applies every rule to `raw`, recording failures in `report`. The result
/// holds every value that passed; it is the configuration only if `report`
/// stays empty.
pub(crate) fn validate(raw: RawConfig, report: &mut Report) -> Config {
    let mut v = Validator { report };
    let runtime = v.runtime(raw.runtime);
    let timeouts = v.timeouts(raw.timeouts);
    let admin = raw.admin.as_ref().and_then(|a| v.admin(a));
    let access_log = raw.log.as_ref().and_then(|l| v.access_log(l));
    let pools = v.pools(&raw.pools);
    let listeners = v.listeners(&raw.listeners, &raw.pools);
    if raw.listeners.is_empty() {
        v.report
            .at_document(None, "listener", "no listener is defined");
    }
    Config {
        runtime,
        timeouts,
        admin,
        access_log,
        listeners,
        pools,
    }
}

struct Validator<'r> {
    report: &'r mut Report,
}

/// The longest token file read.
const TOKEN_FILE_MAX: u64 = 4096;

/// A small text file, read whole: an error for one larger than
/// [`TOKEN_FILE_MAX`] (or endless, such as a device).
fn read_small(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(TOKEN_FILE_MAX + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > TOKEN_FILE_MAX {
        return Err(std::io::Error::other(format!(
            "longer than {TOKEN_FILE_MAX} bytes"
        )));
    }
    Ok(text)
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
        if let Some(g) = &raw.grace {
            // Zero is allowed: reset everything at once.
            match parse_duration(&g.value) {
                Ok(d) if d <= Duration::from_secs(24 * 3600) => rt.grace = d,
                Ok(_) => self.err(&g.at, "runtime.grace", "must be at most 24h"),
                Err(message) => self.err(&g.at, "runtime.grace", message),
            }
        }
        if let Some(c) = &raw.control_socket {
            rt.control_socket = if c.value.is_empty() {
                ControlSocket::Off
            } else if !c.value.starts_with('/') {
                self.err(
                    &c.at,
                    "runtime.control_socket",
                    format!("`{}` is not an absolute path", c.value),
                );
                ControlSocket::Off
            } else if c.value.len() > 98 {
                // A unix socket path holds 107 bytes, and the socket is
                // first bound at a temporary name 9 bytes longer.
                self.err(
                    &c.at,
                    "runtime.control_socket",
                    "is longer than 98 bytes (a unix socket path holds 107, and ringlb binds at a temporary name beside it first)",
                );
                ControlSocket::Off
            } else {
                ControlSocket::Configured(c.value.clone().into())
            };
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
            queue: self.duration(&raw.queue, "timeouts.queue", d.queue),
            proxy_header: self.duration(&raw.proxy_header, "timeouts.proxy_header", d.proxy_header),
        }
    }

    fn access_log(&mut self, raw: &RawLog) -> Option<AccessLogConfig> {
        let format = match &raw.format {
            None => AccessFormat::Text,
            Some(f) => match f.value.as_str() {
                "text" => AccessFormat::Text,
                "json" => AccessFormat::Json,
                other => {
                    self.err(
                        &f.at,
                        "log.format",
                        format!("unknown format `{other}` (expected text or json)"),
                    );
                    AccessFormat::Text
                }
            },
        };
        let queue = match &raw.queue {
            None => DEFAULT_ACCESS_QUEUE,
            Some(q) => integer_in(q, |n| (16..=1 << 16).contains(n)).unwrap_or_else(|| {
                self.err(&q.at, "log.queue", "must be from 16 to 65536");
                DEFAULT_ACCESS_QUEUE
            }),
        };
        let Some(access) = &raw.access else {
            if let Some(item) = raw
                .format
                .as_ref()
                .map(|f| &f.at)
                .or(raw.queue.as_ref().map(|q| &q.at))
            {
                self.err(
                    item,
                    "log.access",
                    "is not set, so there is no access log for log.format or log.queue to apply to",
                );
            }
            return None;
        };
        let target = match access.value.as_str() {
            "stderr" => AccessTarget::Stderr,
            "" => {
                self.err(
                    &access.at,
                    "log.access",
                    "must be \"stderr\" or a file path",
                );
                return None;
            }
            path => {
                let path = std::path::PathBuf::from(path);
                if path.is_dir() {
                    self.err(
                        &access.at,
                        "log.access",
                        format!("{} is a directory", path.display()),
                    );
                    return None;
                }
                AccessTarget::File(path)
            }
        };
        Some(AccessLogConfig {
            target,
            format,
            queue,
        })
    }

    fn admin(&mut self, raw: &RawAdmin) -> Option<AdminConfig> {
        let Some(bind) = &raw.bind else {
            self.err(
                &raw.at,
                "admin.bind",
                "is required (e.g. \"127.0.0.1:9900\")",
            );
            return None;
        };
        let addr = self.address(bind, "admin.bind");
        let token = match (&raw.token, &raw.token_file) {
            (Some(t), Some(_)) => {
                self.err(
                    &t.at,
                    "admin.token",
                    "set either token or token_file, not both",
                );
                None
            }
            (Some(t), None) => {
                if t.value.trim().is_empty() {
                    self.err(&t.at, "admin.token", "must not be empty");
                }
                Some(t.value.clone())
            }
            (None, Some(f)) => match read_small(&f.value) {
                Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
                Ok(_) => {
                    self.err(&f.at, "admin.token_file", format!("{} is empty", f.value));
                    None
                }
                Err(e) => {
                    self.err(
                        &f.at,
                        "admin.token_file",
                        format!("cannot read {}: {e}", f.value),
                    );
                    None
                }
            },
            (None, None) => None,
        };
        let addr = addr?;
        if token.is_none()
            && raw.token.is_none()
            && raw.token_file.is_none()
            && !addr.ip().is_loopback()
        {
            self.err(
                &bind.at,
                "admin.bind",
                format!("{addr} is not a loopback address: anyone who reaches it could drain servers or reload; set admin.token or admin.token_file"),
            );
            return None;
        }
        Some(AdminConfig { bind: addr, token })
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
                    let known: Vec<&str> = BalanceKind::ALL.iter().map(|k| k.as_str()).collect();
                    self.err(
                        &b.at,
                        &format!("pool[{i}].balance"),
                        format!(
                            "unknown algorithm `{}` (expected one of {})",
                            b.value,
                            known.join(", ")
                        ),
                    );
                    BalanceKind::RoundRobin
                }),
            };
            let retries = p.retries.as_ref().map(|r| {
                integer_in(r, |n| *n <= 100).unwrap_or_else(|| {
                    self.err(
                        &r.at,
                        &format!("pool[{i}].retries"),
                        "must be from 0 to 100",
                    );
                    2
                })
            });
            let servers = self.servers(i, p);
            let mut pool = PoolConfig::new(
                p.name.as_ref().map_or("", |n| n.value.as_str()),
                balance,
                servers,
            );
            pool.policy.retries = retries.unwrap_or(pool.policy.retries);
            self.pool_settings(i, p, &mut pool);
            if p.name.is_some() {
                pools.push(pool);
            }
        }
        pools
    }

    /// A key that only some algorithms read, set on a pool whose algorithm
    /// does not.
    fn only_for(&mut self, at: &Origin, key: &str, name: &str, which: &str) {
        self.err(
            at,
            key,
            format!("`{name}` applies only to balance = {which}"),
        );
    }

    /// Every setting of pool `i` but its name, algorithm and servers.
    fn pool_settings(&mut self, i: usize, p: &RawPool, pool: &mut PoolConfig) {
        let key = |k: &str| format!("pool[{i}].{k}");
        let balance = pool.policy.balance;
        if let Some(t) = &p.table_size {
            if !balance.hashes() {
                self.only_for(&t.at, &key("table_size"), "table_size", "source or hash");
            }
            let servers = pool.servers.len() as u32;
            match integer_in(t, |n: &u32| is_prime(*n) && *n <= MAX_TABLE_SIZE) {
                Some(n) if n > servers => pool.policy.table_size = n,
                Some(n) => self.err(
                    &t.at,
                    &key("table_size"),
                    format!("{n} entries cannot hold {servers} servers; use a prime well above 100 x servers"),
                ),
                None => self.err(
                    &t.at,
                    &key("table_size"),
                    format!("must be a prime up to {MAX_TABLE_SIZE} (e.g. 65537, 655373)"),
                ),
            }
        }
        if let Some(h) = &p.hash_key {
            if balance != BalanceKind::Hash {
                self.only_for(&h.at, &key("hash_key"), "hash_key", "hash");
            }
            match h.value.as_str() {
                "src" => pool.policy.hash_key = HashKey::Src,
                "src_port" => pool.policy.hash_key = HashKey::SrcPort,
                other => self.err(
                    &h.at,
                    &key("hash_key"),
                    format!("unknown key `{other}` (expected src or src_port)"),
                ),
            }
        }
        if let Some(o) = &p.leasttime_observe {
            if balance != BalanceKind::LeastTime {
                self.only_for(
                    &o.at,
                    &key("leasttime_observe"),
                    "leasttime_observe",
                    "leasttime",
                );
            }
            match o.value.as_str() {
                "connect" => pool.policy.leasttime_observe = LeastTimeObserve::Connect,
                "ttfb" => pool.policy.leasttime_observe = LeastTimeObserve::Ttfb,
                other => self.err(
                    &o.at,
                    &key("leasttime_observe"),
                    format!("unknown latency `{other}` (expected connect or ttfb)"),
                ),
            }
        }
        if let Some(w) = &p.ewma_window {
            if balance != BalanceKind::LeastTime {
                self.only_for(&w.at, &key("ewma_window"), "ewma_window", "leasttime");
            }
            pool.policy.ewma_window =
                self.duration(&p.ewma_window, &key("ewma_window"), pool.policy.ewma_window);
        }
        if let Some(a) = &p.allbackups {
            pool.policy.allbackups = a.value;
        }
        if let Some(q) = &p.maxqueue {
            match integer_in(q, |n: &u32| *n <= 10_000_000) {
                Some(n) => pool.policy.maxqueue = n,
                None => self.err(
                    &q.at,
                    &key("maxqueue"),
                    "must be from 0 (no limit) to 10000000",
                ),
            }
        }
        if let Some(o) = &p.outlier {
            pool.policy.outlier = Some(self.outlier(o, &key("outlier")));
        }
        if let Some(c) = &p.check {
            pool.policy.check = Some(self.check(c, &key("check")));
        }
        if let Some(sp) = &p.send_proxy {
            pool.policy.send_proxy = self.send_proxy(sp, &key("send_proxy")).unwrap_or_default();
        }
        if let Some(u) = &p.send_proxy_unique_id {
            pool.policy.send_proxy_unique_id = u.value;
            // Servers may set their own version: some server must speak v2.
            let pool_v2 = pool.policy.send_proxy == SendProxy::V2;
            let any_v2 = pool
                .servers
                .iter()
                .any(|s| s.send_proxy.unwrap_or(pool.policy.send_proxy) == SendProxy::V2)
                || (pool.servers.is_empty() && pool_v2);
            if u.value && !any_v2 {
                self.err(
                    &u.at,
                    &key("send_proxy_unique_id"),
                    "needs send_proxy = \"v2\" (the unique ID is a v2 TLV)",
                );
            }
        }
        if p.slowstart.is_some() {
            pool.policy.slowstart =
                Some(self.duration(&p.slowstart, &key("slowstart"), Duration::ZERO));
        }
        if let Some(st) = &p.stick {
            if balance.hashes() {
                self.err(
                    &st.at,
                    &key("stick"),
                    format!(
                        "balance = {} already keeps a client on its server; `stick` is for the other algorithms",
                        balance.as_str()
                    ),
                );
            }
            pool.policy.stick = Some(self.stick(st, &key("stick")));
        }
        if let (Some(st), Some(cfg)) = (&p.stick, &pool.policy.stick) {
            if cfg.expire > crate::stick::MAX_EXPIRE {
                let at = st.expire.as_ref().map_or(&st.at, |e| &e.at);
                self.err(
                    at,
                    &key("stick.expire"),
                    format!("must be at most {:?}", crate::stick::MAX_EXPIRE),
                );
            }
        }
    }

    fn check(&mut self, c: &RawCheck, key: &str) -> CheckConfig {
        let d = CheckConfig::default();
        let k = |f: &str| format!("{key}.{f}");
        let mut out = CheckConfig {
            interval: self.duration(&c.interval, &k("interval"), d.interval),
            timeout: self.duration(&c.timeout, &k("timeout"), d.timeout),
            ..d
        };
        // An unknown kind is reported once, not again for every HTTP key.
        let mut kind_known = true;
        if let Some(kind) = &c.kind {
            match kind.value.as_str() {
                "tcp" => out.kind = CheckKind::Tcp,
                "http" => out.kind = CheckKind::Http,
                other => {
                    kind_known = false;
                    self.err(
                        &kind.at,
                        &k("kind"),
                        format!("unknown check `{other}` (expected tcp or http)"),
                    );
                }
            }
        }
        let hour = Duration::from_secs(3600);
        for (raw, field, value) in [
            (&c.interval, "interval", &mut out.interval),
            (&c.timeout, "timeout", &mut out.timeout),
        ] {
            if *value > hour {
                if let Some(r) = raw {
                    self.err(&r.at, &k(field), "must be at most 1h");
                }
                *value = hour;
            }
        }
        if out.timeout > out.interval {
            let at = c.timeout.as_ref().map(|t| &t.at).or(c.at.as_ref());
            if let Some(at) = at {
                self.err(
                    at,
                    &k("timeout"),
                    format!(
                        "{:?} is longer than the interval ({:?})",
                        out.timeout, out.interval
                    ),
                );
            }
        }
        for (raw, field, slot) in [
            (&c.rise, "rise", &mut out.rise),
            (&c.fall, "fall", &mut out.fall),
        ] {
            if let Some(r) = raw {
                match integer_in(r, |n| (1..=100).contains(n)) {
                    Some(n) => *slot = n,
                    None => self.err(&r.at, &k(field), "must be from 1 to 100"),
                }
            }
        }
        if let Some(j) = &c.jitter {
            let v = j.value.trim();
            match v
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<u32>().ok())
            {
                Some(p) if p <= 50 => out.jitter_permille = p * 10,
                _ => self.err(
                    &j.at,
                    &k("jitter"),
                    format!("`{v}` is not a share from 0% to 50%"),
                ),
            }
        }
        let http_only = [("path", &c.path), ("host", &c.host), ("expect", &c.expect)];
        for (field, raw) in http_only {
            if let (Some(r), CheckKind::Tcp, true) = (raw, out.kind, kind_known) {
                self.err(
                    &r.at,
                    &k(field),
                    format!("`{field}` applies only to kind = \"http\""),
                );
            }
        }
        if let Some(p) = &c.path {
            if p.value.starts_with('/')
                && !p.value.bytes().any(|b| b.is_ascii_control() || b == b' ')
            {
                out.path = p.value.clone();
            } else {
                self.err(
                    &p.at,
                    &k("path"),
                    format!(
                        "`{}` is not a request path (it starts with /, no spaces)",
                        p.value
                    ),
                );
            }
        }
        if let Some(h) = &c.host {
            if !h.value.is_empty() && !h.value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                out.host = Some(h.value.clone());
            } else {
                self.err(
                    &h.at,
                    &k("host"),
                    format!("`{}` is not a host name", h.value),
                );
            }
        }
        if let Some(e) = &c.expect {
            match Expect::parse(&e.value) {
                Some(x) => out.expect = x,
                None => self.err(
                    &e.at,
                    &k("expect"),
                    format!(
                        "`{}` is not a status list (e.g. \"2xx\", \"200,301\")",
                        e.value
                    ),
                ),
            }
        }
        out
    }

    fn outlier(&mut self, o: &RawOutlier, key: &str) -> OutlierConfig {
        let d = OutlierConfig::default();
        let mut out = OutlierConfig {
            consecutive_failures: d.consecutive_failures,
            ejection: self.duration(&o.ejection, &format!("{key}.ejection"), d.ejection),
            max_ejection: self.duration(
                &o.max_ejection,
                &format!("{key}.max_ejection"),
                d.max_ejection,
            ),
        };
        if let Some(c) = &o.consecutive_failures {
            match integer_in(c, |n| (1..=1000).contains(n)) {
                Some(n) => out.consecutive_failures = n,
                None => self.err(
                    &c.at,
                    &format!("{key}.consecutive_failures"),
                    "must be from 1 to 1000",
                ),
            }
        }
        if out.max_ejection < out.ejection {
            let at = o.max_ejection.as_ref().map_or(&o.at, |m| &m.at);
            self.err(
                at,
                &format!("{key}.max_ejection"),
                format!(
                    "{:?} is shorter than the first ejection ({:?})",
                    out.max_ejection, out.ejection
                ),
            );
        }
        out
    }

    fn stick(&mut self, st: &RawStick, key: &str) -> StickConfig {
        let d = StickConfig::default();
        let mut out = StickConfig {
            expire: self.duration(&st.expire, &format!("{key}.expire"), d.expire),
            size: d.size,
        };
        match &st.on {
            Some(on) if on.value != "src" => self.err(
                &on.at,
                &format!("{key}.on"),
                format!("cannot stick on `{}` (expected src)", on.value),
            ),
            _ => {}
        }
        if let Some(n) = &st.size {
            match integer_in(n, |n| (1..=MAX_STICK_SIZE).contains(n)) {
                Some(n) => out.size = n,
                None => self.err(
                    &n.at,
                    &format!("{key}.size"),
                    format!("must be from 1 to {MAX_STICK_SIZE}"),
                ),
            }
        }
        out
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
                let maxconn = match &s.maxconn {
                    None => 0,
                    Some(m) => integer_in(m, |n: &u32| *n <= 10_000_000).unwrap_or_else(|| {
                        self.err(
                            &m.at,
                            &format!("{key}.maxconn"),
                            "must be from 0 (no limit) to 10000000",
                        );
                        0
                    }),
                };
                let send_proxy = s
                    .send_proxy
                    .as_ref()
                    .and_then(|p| self.send_proxy(p, &format!("{key}.send_proxy")));
                servers.push(ServerConfig {
                    name: name.value.clone(),
                    addr,
                    weight,
                    backup: s.backup.as_ref().is_some_and(|b| b.value),
                    maxconn,
                    check: s.check.as_ref().is_none_or(|c| c.value),
                    send_proxy,
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

    /// The store part of a `limit`; `listener`: the default scope.
    fn limit_store(&mut self, raw: &RawLimit, key: &str, listener: &str) -> Option<StoreConfig> {
        let Some(url) = &raw.store else {
            for (item, name) in [
                (&raw.scope, "scope"),
                (&raw.on_store_error, "on_store_error"),
                (&raw.store_timeout, "store_timeout"),
            ] {
                if let Some(i) = item {
                    self.err(
                        &i.at,
                        &format!("{key}.{name}"),
                        "applies only with store = \"redis://…\"",
                    );
                }
            }
            return None;
        };
        let mut ok = true;
        if !url.value.starts_with("redis://") && !url.value.starts_with("redis+unix://") {
            self.err(
                &url.at,
                &format!("{key}.store"),
                format!(
                    "`{}` is not a Redis URL (expected redis://host:port/db or redis+unix:///path)",
                    crate::limit::store::redact(&url.value)
                ),
            );
            ok = false;
        } else if let Err(e) = redis::Client::open(url.value.as_str()) {
            self.err(
                &url.at,
                &format!("{key}.store"),
                format!("`{}`: {e}", crate::limit::store::redact(&url.value)),
            );
            ok = false;
        }
        let scope = match &raw.scope {
            None => listener.to_string(),
            Some(s) => {
                let good = !s.value.is_empty()
                    && s.value.len() <= 64
                    && s.value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !good {
                    self.err(
                        &s.at,
                        &format!("{key}.scope"),
                        "must be 1 to 64 letters, digits, `-`, `_` or `.`",
                    );
                    ok = false;
                }
                s.value.clone()
            }
        };
        let on_error = match &raw.on_store_error {
            None => OnStoreError::Allow,
            Some(o) => OnStoreError::parse(&o.value).unwrap_or_else(|| {
                self.err(
                    &o.at,
                    &format!("{key}.on_store_error"),
                    format!("unknown `{}` (expected allow or deny)", o.value),
                );
                ok = false;
                OnStoreError::Allow
            }),
        };
        let timeout = self.duration(
            &raw.store_timeout,
            &format!("{key}.store_timeout"),
            Duration::from_millis(50),
        );
        if timeout > Duration::from_secs(5) {
            if let Some(t) = &raw.store_timeout {
                self.err(
                    &t.at,
                    &format!("{key}.store_timeout"),
                    "at most 5s: clients wait this long for an answer",
                );
                ok = false;
            }
        }
        ok.then(|| StoreConfig {
            url: url.value.clone(),
            scope,
            on_error,
            timeout,
        })
    }

    fn limit(&mut self, raw: &RawLimit, key: &str, listener: &str) -> Option<LimitConfig> {
        if let Some(k) = &raw.key {
            if k.value != "src" {
                self.err(
                    &k.at,
                    &format!("{key}.key"),
                    format!(
                        "unknown key `{}` (only \"src\", the client's address, is supported)",
                        k.value
                    ),
                );
            }
        }
        let algorithm = match &raw.algorithm {
            None => {
                self.err(&raw.at, &format!("{key}.algorithm"), "is required: token_bucket, leaky_bucket, fixed_window, sliding_log or sliding_window");
                None
            }
            Some(a) => Algorithm::parse(&a.value).or_else(|| {
                self.err(
                    &a.at,
                    &format!("{key}.algorithm"),
                    format!("unknown algorithm `{}` (expected token_bucket, leaky_bucket, fixed_window, sliding_log or sliding_window)", a.value),
                );
                None
            }),
        };
        let rate = match &raw.rate {
            None => {
                self.err(&raw.at, &format!("{key}.rate"), "is required (e.g. \"100/s\", \"20/m\", \"1000/h\")");
                None
            }
            Some(r) => Rate::parse(&r.value).or_else(|| {
                self.err(
                    &r.at,
                    &format!("{key}.rate"),
                    format!("`{}` is not a rate such as \"100/s\", \"20/m\" or \"1000/h\" (a positive count per s, m or h)", r.value),
                );
                None
            }),
        };
        if rate.is_some_and(|r| r.limit > 10_000_000) {
            self.err(
                &raw.at,
                &format!("{key}.rate"),
                "at most 10000000 per window",
            );
        }
        let burst = match &raw.burst {
            None => None,
            Some(b) => integer_in(b, |n: &u32| (1..=10_000_000).contains(n)).or_else(|| {
                self.err(&b.at, &format!("{key}.burst"), "must be from 1 to 10000000");
                None
            }),
        };
        if let (Some(b), Some(a)) = (&raw.burst, algorithm) {
            if matches!(
                a,
                Algorithm::FixedWindow | Algorithm::SlidingLog | Algorithm::SlidingWindow
            ) {
                self.err(
                    &b.at,
                    &format!("{key}.burst"),
                    format!(
                        "{} does not read burst (its limit is the rate per window)",
                        a.as_str()
                    ),
                );
            }
        }
        let size = match &raw.size {
            None => 100_000,
            Some(s) => integer_in(s, |n: &usize| (1..=16 << 20).contains(n)).unwrap_or_else(|| {
                self.err(&s.at, &format!("{key}.size"), "must be from 1 to 16777216");
                100_000
            }),
        };
        let (algorithm, rate) = (algorithm?, rate?);
        if algorithm == Algorithm::LeakyBucket {
            // The longest a client is held: `burst` departures ahead of it.
            let b = f64::from(burst.unwrap_or(rate.limit));
            let wait_s = b * rate.interval_us() / 1e6;
            if wait_s > 60.0 {
                self.err(
                    &raw.at,
                    &format!("{key}.burst"),
                    format!("a client could be held {wait_s:.0}s (burst × the interval between clients); at most 60s"),
                );
            }
        }
        if algorithm == Algorithm::SlidingLog && size as u64 * u64::from(rate.limit) > 64 << 20 {
            self.err(
                &raw.at,
                &format!("{key}.size"),
                "size × the rate's count is over 67108864 timestamps (512 MB) for sliding_log: lower one of them, or use sliding_window",
            );
        }
        if algorithm == Algorithm::SlidingLog && rate.limit > 100_000 {
            self.err(
                &raw.at,
                &format!("{key}.rate"),
                "sliding_log keeps a timestamp per admitted connection per source: at most 100000 per window",
            );
        }
        let store = self.limit_store(raw, key, listener);
        if raw.store.is_some() && store.is_none() {
            return None;
        }
        Some(LimitConfig {
            algorithm,
            rate,
            burst: burst.unwrap_or(rate.limit),
            size,
            store,
        })
    }

    /// CIDR prefixes, each error reported with its own key.
    fn prefixes(&mut self, list: &[(String, Item<String>)]) -> Vec<Prefix> {
        list.iter()
            .filter_map(|(key, item)| match Prefix::parse(&item.value) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.err(&item.at, key, e.to_string());
                    None
                }
            })
            .collect()
    }

    fn send_proxy(&mut self, item: &Item<String>, key: &str) -> Option<SendProxy> {
        match item.value.as_str() {
            "off" => Some(SendProxy::Off),
            "v1" => Some(SendProxy::V1),
            "v2" => Some(SendProxy::V2),
            other => {
                self.err(
                    &item.at,
                    key,
                    format!("unknown PROXY protocol version `{other}` (expected v1, v2 or off)"),
                );
                None
            }
        }
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
            let allow = self.prefixes(&l.allow);
            let deny = self.prefixes(&l.deny);
            let limit = l.limit.as_ref().and_then(|raw| {
                let name = l.name.as_ref().map_or("", |n| n.value.as_str());
                self.limit(raw, &format!("listener[{i}].limit"), name)
            });
            let maxconn = l.maxconn.as_ref().and_then(|m| {
                integer_in(m, |n: &usize| (1..=10_000_000).contains(n)).or_else(|| {
                    self.err(
                        &m.at,
                        &format!("listener[{i}].maxconn"),
                        "must be from 1 to 10000000",
                    );
                    None
                })
            });
            let conn_per_src = l.conn_per_src.as_ref().and_then(|m| {
                integer_in(m, |n: &u32| (1..=1_000_000).contains(n)).or_else(|| {
                    self.err(
                        &m.at,
                        &format!("listener[{i}].conn_per_src"),
                        "must be from 1 to 1000000",
                    );
                    None
                })
            });
            let accept_proxy = l.accept_proxy.as_ref().is_some_and(|a| a.value);
            let proxy_trusted = match &l.proxy_trusted {
                Some((at, list)) => {
                    if !accept_proxy {
                        self.err(
                            at,
                            &format!("listener[{i}].proxy_trusted"),
                            "applies only with accept_proxy = true",
                        );
                    } else if list.is_empty() {
                        self.err(
                            at,
                            &format!("listener[{i}].proxy_trusted"),
                            "is empty: no peer could send a header (leave it out to trust any peer)",
                        );
                    }
                    self.prefixes(list)
                }
                None => Vec::new(),
            };
            // With the header's address deciding, anyone who may send one
            // chooses its own verdict: the senders must be named.
            let checks = !l.allow.is_empty()
                || !l.deny.is_empty()
                || l.limit.is_some()
                || l.conn_per_src.is_some();
            if accept_proxy && checks && l.proxy_trusted.is_none() {
                if let Some(a) = &l.accept_proxy {
                    self.err(
                        &a.at,
                        &format!("listener[{i}].accept_proxy"),
                        "with allow, deny, limit or conn_per_src, set proxy_trusted too: they apply to the address a PROXY header carries, which any client could otherwise forge",
                    );
                }
            }
            if let (Some(name), Some(bind), Some(pool)) = (name, bind, pool) {
                listeners.push(ListenerConfig {
                    name: name.to_string(),
                    bind,
                    pool,
                    allow,
                    deny,
                    accept_proxy,
                    proxy_trusted,
                    limit,
                    maxconn,
                    conn_per_src,
                });
            }
        }
        listeners
    }
}
