//! The configuration as written, before validation: the schema, and the
//! reader that walks the parser's spanned TOML tree into it.
//!
//! Reading judges only the shape: unknown keys, values of the wrong type and
//! missing required keys are reported here, each against its line and dotted
//! key; what the values mean is judged by `validate`. Every value keeps its
//! [`Origin`], a span of the file or, in quick mode, the flag it came from,
//! so both sources go through the same rules.

use std::ops::Range;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::error::Report;

/// Where a raw value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Byte range of the value (or key, or table header) in the file.
    Span(Range<usize>),
    /// A command-line flag. `part` says which part of the flag's argument
    /// the value is, e.g. "`127.0.0.1:9=999`: weight"; it opens the message.
    Flag {
        flag: &'static str,
        part: Option<String>,
    },
}

impl Origin {
    pub(crate) fn flag(flag: &'static str) -> Self {
        Origin::Flag { flag, part: None }
    }

    pub(crate) fn flag_part(flag: &'static str, part: String) -> Self {
        Origin::Flag {
            flag,
            part: Some(part),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item<T> {
    pub value: T,
    pub at: Origin,
}

impl<T> Item<T> {
    pub(crate) fn new(value: T, at: Origin) -> Self {
        Item { value, at }
    }
}

/// A whole configuration. An absent key is `None`; so is a key whose value
/// had the wrong type (that was reported when it was read).
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub runtime: RawRuntime,
    pub timeouts: RawTimeouts,
    pub admin: Option<RawAdmin>,
    pub log: Option<RawLog>,
    pub listeners: Vec<RawListener>,
    pub pools: Vec<RawPool>,
}

/// `[admin]`: where the admin API listens, and its bearer token.
#[derive(Debug)]
pub(crate) struct RawAdmin {
    /// The `[admin]` table itself (errors about the section as a whole).
    pub at: Origin,
    pub bind: Option<Item<String>>,
    pub token: Option<Item<String>>,
    pub token_file: Option<Item<String>>,
}

/// `[log]`: the access log.
#[derive(Debug)]
pub(crate) struct RawLog {
    pub access: Option<Item<String>>,
    pub format: Option<Item<String>>,
    pub queue: Option<Item<i64>>,
}

#[derive(Debug, Default)]
pub(crate) struct RawRuntime {
    pub shards: Option<Item<i64>>,
    pub cpus: Option<Vec<Item<i64>>>,
    pub forward: Option<Item<String>>,
    /// Sizes are text (`"32k"`); a bare integer is kept as its digits.
    pub buffer_size: Option<Item<String>>,
    pub buffers: Option<Item<i64>>,
    pub pipes: Option<Item<i64>>,
    pub pipe_size: Option<Item<String>>,
    pub maxconn: Option<Item<i64>>,
    /// Text (`"30s"`); a bare integer from `--grace` is seconds.
    pub grace: Option<Item<String>>,
    pub control_socket: Option<Item<String>>,
}

#[derive(Debug, Default)]
pub(crate) struct RawTimeouts {
    pub connect: Option<Item<String>>,
    pub client_idle: Option<Item<String>>,
    pub server_idle: Option<Item<String>>,
    pub queue: Option<Item<String>>,
    pub proxy_header: Option<Item<String>>,
}

/// CIDR prefixes, each with its key (`listener[0].allow[3]`).
pub(crate) type RawPrefixes = Vec<(String, Item<String>)>;

#[derive(Debug)]
pub(crate) struct RawListener {
    pub name: Option<Item<String>>,
    pub bind: Option<Item<String>>,
    pub pool: Option<Item<String>>,
    pub allow: RawPrefixes,
    pub deny: RawPrefixes,
    pub accept_proxy: Option<Item<bool>>,
    /// With where the list itself is.
    pub proxy_trusted: Option<(Origin, RawPrefixes)>,
    pub limit: Option<RawLimit>,
    pub maxconn: Option<Item<i64>>,
    pub conn_per_src: Option<Item<i64>>,
}

/// `limit = { … }` of a listener.
#[derive(Debug)]
pub(crate) struct RawLimit {
    pub at: Origin,
    pub key: Option<Item<String>>,
    pub algorithm: Option<Item<String>>,
    pub rate: Option<Item<String>>,
    pub burst: Option<Item<i64>>,
    pub size: Option<Item<i64>>,
    pub store: Option<Item<String>>,
    pub scope: Option<Item<String>>,
    pub on_store_error: Option<Item<String>>,
    pub store_timeout: Option<Item<String>>,
}

#[derive(Debug)]
pub(crate) struct RawPool {
    /// The `[[pool]]` table.
    pub at: Origin,
    pub name: Option<Item<String>>,
    pub balance: Option<Item<String>>,
    pub retries: Option<Item<i64>>,
    pub table_size: Option<Item<i64>>,
    pub hash_key: Option<Item<String>>,
    pub leasttime_observe: Option<Item<String>>,
    pub ewma_window: Option<Item<String>>,
    pub allbackups: Option<Item<bool>>,
    pub maxqueue: Option<Item<i64>>,
    pub outlier: Option<RawOutlier>,
    pub slowstart: Option<Item<String>>,
    pub stick: Option<RawStick>,
    pub check: Option<RawCheck>,
    pub send_proxy: Option<Item<String>>,
    pub send_proxy_unique_id: Option<Item<bool>>,
    pub servers: Option<Item<Vec<RawServer>>>,
}

/// `check = { ... }` of a pool.
#[derive(Debug, Default)]
pub(crate) struct RawCheck {
    /// The table itself.
    pub at: Option<Origin>,
    pub kind: Option<Item<String>>,
    pub interval: Option<Item<String>>,
    pub timeout: Option<Item<String>>,
    pub rise: Option<Item<i64>>,
    pub fall: Option<Item<i64>>,
    pub jitter: Option<Item<String>>,
    pub path: Option<Item<String>>,
    pub host: Option<Item<String>>,
    pub expect: Option<Item<String>>,
}

/// `outlier = { ... }` of a pool.
#[derive(Debug)]
pub(crate) struct RawOutlier {
    /// The table itself.
    pub at: Origin,
    pub consecutive_failures: Option<Item<i64>>,
    pub ejection: Option<Item<String>>,
    pub max_ejection: Option<Item<String>>,
}

/// `stick = { ... }` of a pool.
#[derive(Debug)]
pub(crate) struct RawStick {
    /// The table itself.
    pub at: Origin,
    pub on: Option<Item<String>>,
    pub expire: Option<Item<String>>,
    pub size: Option<Item<i64>>,
}

#[derive(Debug)]
pub(crate) struct RawServer {
    pub name: Option<Item<String>>,
    pub addr: Option<Item<String>>,
    pub weight: Option<Item<i64>>,
    pub backup: Option<Item<bool>>,
    pub maxconn: Option<Item<i64>>,
    pub check: Option<Item<bool>>,
    pub send_proxy: Option<Item<String>>,
}

impl RawListener {
    pub(crate) fn empty() -> Self {
        RawListener {
            name: None,
            bind: None,
            pool: None,
            allow: Vec::new(),
            deny: Vec::new(),
            accept_proxy: None,
            proxy_trusted: None,
            limit: None,
            maxconn: None,
            conn_per_src: None,
        }
    }
}

impl RawPool {
    pub(crate) fn empty(at: Origin) -> Self {
        RawPool {
            at,
            name: None,
            balance: None,
            retries: None,
            table_size: None,
            hash_key: None,
            leasttime_observe: None,
            ewma_window: None,
            allbackups: None,
            maxqueue: None,
            outlier: None,
            slowstart: None,
            stick: None,
            check: None,
            send_proxy: None,
            send_proxy_unique_id: None,
            servers: None,
        }
    }
}

impl RawServer {
    pub(crate) fn empty() -> Self {
        RawServer {
            name: None,
            addr: None,
            weight: None,
            backup: None,
            maxconn: None,
            check: None,
            send_proxy: None,
        }
    }
}

/// Parses TOML text and reads it into the schema. Syntax errors (as many as
/// the parser recovers from) and shape errors go to `report`; the result
/// holds every value that had the right shape.
pub(crate) fn read(text: &str, report: &mut Report) -> RawConfig {
    let (doc, errors) = DeTable::parse_recoverable(text);
    for e in errors {
        let mut message = e.message().trim().to_string();
        if let Some(key) = e.span().and_then(|s| text.get(s)).filter(|k| !k.is_empty()) {
            if message == "duplicate key" {
                message = format!("duplicate key `{key}`");
            }
        }
        report.syntax(e.span(), message);
    }
    let mut reader = Reader { report };
    reader.document(doc.get_ref())
}

type Value<'i> = Spanned<DeValue<'i>>;

/// The parser stands an empty-spanned placeholder in for a value it could
/// not read; its syntax error is reported already.
fn is_placeholder(v: &Value<'_>) -> bool {
    v.span().is_empty()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn a_type(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

struct Reader<'r> {
    report: &'r mut Report,
}

impl Reader<'_> {
    fn wrong_type(&mut self, path: &str, v: &Value<'_>, expected: &str) {
        self.report.at(
            &Origin::Span(v.span()),
            path,
            format!("expected {expected}, found {}", a_type(v.get_ref())),
        );
    }

    /// The entries of `table` whose keys are in `known`, with their dotted
    /// paths; every other key is reported as unknown.
    fn fields<'a, 'i>(
        &mut self,
        path: &str,
        table: &'a DeTable<'i>,
        known: &[&str],
    ) -> Vec<(&'a str, String, &'a Value<'i>)> {
        let mut out = Vec::new();
        for (k, v) in table.iter() {
            let name: &str = k.get_ref();
            let key = join(path, name);
            if !known.contains(&name) {
                let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                self.report.at(
                    &Origin::Span(k.span()),
                    &key,
                    format!(
                        "unknown field `{name}`, expected one of {}",
                        expected.join(", ")
                    ),
                );
            } else if !is_placeholder(v) {
                out.push((name, key, v));
            }
        }
        out
    }

    /// Reports each of `required` that `table` lacks, against the table.
    fn require(&mut self, path: &str, at: &Origin, table: &DeTable<'_>, required: &[&str]) {
        for name in required {
            if !table.iter().any(|(k, _)| k.get_ref() == name) {
                self.report.at_document(
                    Some(at),
                    &join(path, name),
                    format!("missing field `{name}`"),
                );
            }
        }
    }

    fn table<'a, 'i>(&mut self, path: &str, v: &'a Value<'i>) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(path, v, "a table");
                None
            }
        }
    }

    fn array<'a, 'i>(
        &mut self,
        path: &str,
        v: &'a Value<'i>,
        expected: &str,
    ) -> Option<&'a DeArray<'i>> {
        match v.get_ref() {
            DeValue::Array(a) => Some(a),
            _ => {
                self.wrong_type(path, v, expected);
                None
            }
        }
    }

    fn string(&mut self, path: &str, v: &Value<'_>) -> Option<Item<String>> {
        match v.get_ref() {
            DeValue::String(s) => Some(Item::new(s.to_string(), Origin::Span(v.span()))),
            _ => {
                self.wrong_type(path, v, "a string");
                None
            }
        }
    }

    fn integer(&mut self, path: &str, v: &Value<'_>) -> Option<Item<i64>> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Item::new(n, Origin::Span(v.span()))),
                Err(_) => {
                    self.report.at(
                        &Origin::Span(v.span()),
                        path,
                        format!("`{i}` is out of range"),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(path, v, "an integer");
                None
            }
        }
    }

    /// A size: text such as `"32k"`, or a bare number of bytes.
    fn size(&mut self, path: &str, v: &Value<'_>) -> Option<Item<String>> {
        match v.get_ref() {
            DeValue::String(s) => Some(Item::new(s.to_string(), Origin::Span(v.span()))),
            DeValue::Integer(i) => Some(Item::new(i.to_string(), Origin::Span(v.span()))),
            _ => {
                self.wrong_type(path, v, "a size (e.g. \"32k\")");
                None
            }
        }
    }

    fn boolean(&mut self, path: &str, v: &Value<'_>) -> Option<Item<bool>> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(Item::new(*b, Origin::Span(v.span()))),
            _ => {
                self.wrong_type(path, v, "a boolean (true or false)");
                None
            }
        }
    }

    /// The elements of an array of tables, each with its path and origin;
    /// an element that is not a table is reported and yields `None`, and so
    /// does a value that is not an array at all (so that what it stands for
    /// is not also reported missing).
    fn tables<'a, 'i>(
        &mut self,
        path: &str,
        v: &'a Value<'i>,
        expected: &str,
    ) -> Vec<(String, Origin, Option<&'a DeTable<'i>>)> {
        let Some(array) = self.array(path, v, expected) else {
            return vec![(path.to_string(), Origin::Span(v.span()), None)];
        };
        array
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let key = format!("{path}[{i}]");
                let table = self.table(&key, e);
                (key, Origin::Span(e.span()), table)
            })
            .collect()
    }

    fn document(&mut self, doc: &DeTable<'_>) -> RawConfig {
        let mut raw = RawConfig::default();
        const SECTIONS: &[&str] = &["runtime", "timeouts", "admin", "log", "listener", "pool"];
        for (name, key, v) in self.fields("", doc, SECTIONS) {
            match name {
                "admin" => {
                    if let Some(t) = self.table(&key, v) {
                        raw.admin = Some(self.admin(&key, Origin::Span(v.span()), t));
                    }
                }
                "log" => {
                    if let Some(t) = self.table(&key, v) {
                        raw.log = Some(self.log(&key, t));
                    }
                }
                "runtime" => {
                    if let Some(t) = self.table(&key, v) {
                        raw.runtime = self.runtime(&key, t);
                    }
                }
                "timeouts" => {
                    if let Some(t) = self.table(&key, v) {
                        raw.timeouts = self.timeouts(&key, t);
                    }
                }
                "listener" => {
                    for (key, at, t) in self.tables(&key, v, "an array of tables ([[listener]])") {
                        raw.listeners.push(match t {
                            Some(t) => self.listener(&key, at, t),
                            None => RawListener::empty(),
                        });
                    }
                }
                _ => {
                    for (key, at, t) in self.tables(&key, v, "an array of tables ([[pool]])") {
                        raw.pools.push(match t {
                            Some(t) => self.pool(&key, at, t),
                            None => RawPool::empty(at),
                        });
                    }
                }
            }
        }
        raw
    }

    fn admin(&mut self, path: &str, at: Origin, t: &DeTable<'_>) -> RawAdmin {
        let mut a = RawAdmin {
            at,
            bind: None,
            token: None,
            token_file: None,
        };
        for (name, key, v) in self.fields(path, t, &["bind", "token", "token_file"]) {
            let value = self.string(&key, v);
            match name {
                "bind" => a.bind = value,
                "token" => a.token = value,
                _ => a.token_file = value,
            }
        }
        a
    }

    fn log(&mut self, path: &str, t: &DeTable<'_>) -> RawLog {
        let mut l = RawLog {
            access: None,
            format: None,
            queue: None,
        };
        for (name, key, v) in self.fields(path, t, &["access", "format", "queue"]) {
            match name {
                "access" => l.access = self.string(&key, v),
                "format" => l.format = self.string(&key, v),
                _ => l.queue = self.integer(&key, v),
            }
        }
        l
    }

    fn runtime(&mut self, path: &str, t: &DeTable<'_>) -> RawRuntime {
        const KNOWN: &[&str] = &[
            "shards",
            "cpus",
            "forward",
            "buffer_size",
            "buffers",
            "pipes",
            "pipe_size",
            "maxconn",
            "grace",
            "control_socket",
        ];
        let mut rt = RawRuntime::default();
        for (name, key, v) in self.fields(path, t, KNOWN) {
            match name {
                "shards" => rt.shards = self.integer(&key, v),
                "cpus" => {
                    if let Some(a) = self.array(&key, v, "an array of CPU numbers") {
                        let cpus = a.iter().enumerate();
                        rt.cpus = Some(
                            cpus.filter_map(|(i, c)| self.integer(&format!("{key}[{i}]"), c))
                                .collect(),
                        );
                    }
                }
                "forward" => rt.forward = self.string(&key, v),
                "buffer_size" => rt.buffer_size = self.size(&key, v),
                "buffers" => rt.buffers = self.integer(&key, v),
                "pipes" => rt.pipes = self.integer(&key, v),
                "pipe_size" => rt.pipe_size = self.size(&key, v),
                "maxconn" => rt.maxconn = self.integer(&key, v),
                "grace" => rt.grace = self.string(&key, v),
                _ => rt.control_socket = self.string(&key, v),
            }
        }
        rt
    }

    fn timeouts(&mut self, path: &str, t: &DeTable<'_>) -> RawTimeouts {
        let mut out = RawTimeouts::default();
        const KNOWN: &[&str] = &[
            "connect",
            "client_idle",
            "server_idle",
            "queue",
            "proxy_header",
        ];
        for (name, key, v) in self.fields(path, t, KNOWN) {
            let d = self.string(&key, v);
            match name {
                "connect" => out.connect = d,
                "client_idle" => out.client_idle = d,
                "server_idle" => out.server_idle = d,
                "queue" => out.queue = d,
                _ => out.proxy_header = d,
            }
        }
        out
    }

    fn listener(&mut self, path: &str, at: Origin, t: &DeTable<'_>) -> RawListener {
        self.require(path, &at, t, &["name", "bind", "pool"]);
        const KNOWN: &[&str] = &[
            "name",
            "bind",
            "pool",
            "allow",
            "deny",
            "accept_proxy",
            "proxy_trusted",
            "limit",
            "maxconn",
            "conn_per_src",
        ];
        let mut l = RawListener::empty();
        for (name, key, v) in self.fields(path, t, KNOWN) {
            match name {
                "accept_proxy" => l.accept_proxy = self.boolean(&key, v),
                "maxconn" => l.maxconn = self.integer(&key, v),
                "conn_per_src" => l.conn_per_src = self.integer(&key, v),
                "limit" => {
                    if let Some(t) = self.table(&key, v) {
                        l.limit = Some(self.limit(&key, Origin::Span(v.span()), t));
                    }
                }
                "allow" | "deny" | "proxy_trusted" => {
                    let Some(a) = self.array(&key, v, "an array of CIDR prefixes") else {
                        continue;
                    };
                    let list: Vec<(String, Item<String>)> = a
                        .iter()
                        .enumerate()
                        .filter_map(|(i, p)| {
                            let k = format!("{key}[{i}]");
                            self.string(&k, p).map(|s| (k, s))
                        })
                        .collect();
                    match name {
                        "allow" => l.allow = list,
                        "deny" => l.deny = list,
                        _ => l.proxy_trusted = Some((Origin::Span(v.span()), list)),
                    }
                }
                _ => {
                    let s = self.string(&key, v);
                    match name {
                        "name" => l.name = s,
                        "bind" => l.bind = s,
                        _ => l.pool = s,
                    }
                }
            }
        }
        l
    }

    fn pool(&mut self, path: &str, at: Origin, t: &DeTable<'_>) -> RawPool {
        self.require(path, &at, t, &["name"]);
        const KNOWN: &[&str] = &[
            "name",
            "balance",
            "retries",
            "table_size",
            "hash_key",
            "leasttime_observe",
            "ewma_window",
            "allbackups",
            "maxqueue",
            "outlier",
            "slowstart",
            "stick",
            "check",
            "send_proxy",
            "send_proxy_unique_id",
            "servers",
        ];
        let mut p = RawPool::empty(at);
        for (name, key, v) in self.fields(path, t, KNOWN) {
            match name {
                "name" => p.name = self.string(&key, v),
                "balance" => p.balance = self.string(&key, v),
                "retries" => p.retries = self.integer(&key, v),
                "table_size" => p.table_size = self.integer(&key, v),
                "hash_key" => p.hash_key = self.string(&key, v),
                "leasttime_observe" => p.leasttime_observe = self.string(&key, v),
                "ewma_window" => p.ewma_window = self.string(&key, v),
                "allbackups" => p.allbackups = self.boolean(&key, v),
                "maxqueue" => p.maxqueue = self.integer(&key, v),
                "slowstart" => p.slowstart = self.string(&key, v),
                "send_proxy" => p.send_proxy = self.string(&key, v),
                "send_proxy_unique_id" => p.send_proxy_unique_id = self.boolean(&key, v),
                "outlier" => {
                    if let Some(t) = self.table(&key, v) {
                        p.outlier = Some(self.outlier(&key, Origin::Span(v.span()), t));
                    }
                }
                "stick" => {
                    if let Some(t) = self.table(&key, v) {
                        p.stick = Some(self.stick(&key, Origin::Span(v.span()), t));
                    }
                }
                "check" => {
                    if let Some(t) = self.table(&key, v) {
                        p.check = Some(self.check(&key, Origin::Span(v.span()), t));
                    }
                }
                _ => {
                    let tables = self.tables(&key, v, "an array of server tables");
                    let servers = tables
                        .into_iter()
                        .map(|(key, at, t)| match t {
                            Some(t) => self.server(&key, at, t),
                            None => RawServer::empty(),
                        })
                        .collect();
                    p.servers = Some(Item::new(servers, Origin::Span(v.span())));
                }
            }
        }
        p
    }

    fn server(&mut self, path: &str, at: Origin, t: &DeTable<'_>) -> RawServer {
        self.require(path, &at, t, &["name", "addr"]);
        let mut s = RawServer::empty();
        const KNOWN: &[&str] = &[
            "name",
            "addr",
            "weight",
            "backup",
            "maxconn",
            "check",
            "send_proxy",
        ];
        for (name, key, v) in self.fields(path, t, KNOWN) {
            match name {
                "name" => s.name = self.string(&key, v),
                "addr" => s.addr = self.string(&key, v),
                "weight" => s.weight = self.integer(&key, v),
                "backup" => s.backup = self.boolean(&key, v),
                "maxconn" => s.maxconn = self.integer(&key, v),
                "send_proxy" => s.send_proxy = self.string(&key, v),
                _ => s.check = self.boolean(&key, v),
            }
        }
        s
    }

    fn limit(&mut self, path: &str, at: Origin, t: &DeTable<'_>) -> RawLimit {
        const KNOWN: &[&str] = &[
            "key",
            "algorithm",
            "rate",
            "burst",
            "size",
            "store",
            "scope",
            "on_store_error",
            "store_timeout",
        ];
        let mut l = RawLimit {
            at,
            key: None,
            algorithm: None,
            rate: None,
            burst: None,
            size: None,
            store: None,
            scope: None,
            on_store_error: None,
            store_timeout: None,
        };
        for (name, key, v) in self.fields(path, t, KNOWN) {
            match name {
                "burst" => l.burst = self.integer(&key, v),
                "size" => l.size = self.integer(&key, v),
                _ => {
                    let s = self.string(&key, v);
                    match name {
                        "key" => l.key = s,
                        "algorithm" => l.algorithm = s,
                        "store" => l.store = s,
                        "scope" => l.scope = s,
                        "on_store_error" => l.on_store_error = s,
                        "store_timeout" => l.store_timeout = s,
                        _ => l.rate = s,
                    }
                }
            }
        }
        l
    }

    fn outlier(&mut self, path: &str, at: Origin, t: &DeTable<'_>) -> RawOutlier {
        const KNOWN: &[&str] = &["consecutive_failures", "ejection", "max_ejection"];
        let mut o = RawOutlier {
            at,
            consecutive_failures: None,
            ejection: None,
            max_ejection: None,
        };
        for (name, key, v) in self.fields(path, t, KNOWN) {
            match name {
                "consecutive_failures" => o.consecutive_failures = self.integer(&key, v),
                "ejection" => o.ejection = self.string(&key, v),
                _ => o.max_ejection = self.string(&key, v),
            }
        }
        o
    }

    fn check(&mut self, path: &str, at: Origin, t: &DeTable<'_>) -> RawCheck {
        const KNOWN: &[&str] = &[
            "kind", "interval", "timeout", "rise", "fall", "jitter", "path", "host", "expect",
        ];
        let mut c = RawCheck {
            at: Some(at),
            ..RawCheck::default()
        };
        for (name, key, v) in self.fields(path, t, KNOWN) {
            match name {
                "rise" => c.rise = self.integer(&key, v),
                "fall" => c.fall = self.integer(&key, v),
                _ => {
                    let s = self.string(&key, v);
                    match name {
                        "kind" => c.kind = s,
                        "interval" => c.interval = s,
                        "timeout" => c.timeout = s,
                        "jitter" => c.jitter = s,
                        "path" => c.path = s,
                        "host" => c.host = s,
                        _ => c.expect = s,
                    }
                }
            }
        }
        c
    }

    fn stick(&mut self, path: &str, at: Origin, t: &DeTable<'_>) -> RawStick {
        const KNOWN: &[&str] = &["on", "expire", "size"];
        let mut st = RawStick {
            at,
            on: None,
            expire: None,
            size: None,
        };
        for (name, key, v) in self.fields(path, t, KNOWN) {
            match name {
                "on" => st.on = self.string(&key, v),
                "expire" => st.expire = self.string(&key, v),
                _ => st.size = self.integer(&key, v),
            }
        }
        st
    }
}
