//! How a resolved configuration reads: what `ringlb check` prints.

use std::fmt;

use super::{BalanceKind, CheckKind, Config, HashKey, LeastTimeObserve};

impl fmt::Display for Config {
    /// The resolved configuration, as `ringlb check` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rt = &self.runtime;
        writeln!(
            f,
            "runtime: {} shard(s), cpus {:?}, forward {}, {} buffers of {} bytes, up to {} pipes of {} bytes per shard",
            rt.shards, rt.cpus, rt.forward, rt.buffers, rt.buffer_size, rt.pipes, rt.pipe_size
        )?;
        match rt.maxconn {
            Some(n) => writeln!(f, "maxconn {n}, grace {:?}", rt.grace)?,
            None => writeln!(f, "maxconn auto (from RLIMIT_NOFILE), grace {:?}", rt.grace)?,
        }
        let t = &self.timeouts;
        writeln!(
            f,
            "timeouts: connect {:?}, client_idle {:?}, server_idle {:?}, queue {:?}",
            t.connect, t.client_idle, t.server_idle, t.queue
        )?;
        if let Some(a) = &self.admin {
            writeln!(
                f,
                "admin API on {} ({})",
                a.bind,
                if a.token.is_some() {
                    "bearer token required"
                } else {
                    "no token"
                }
            )?;
        }
        if let Some(a) = &self.access_log {
            writeln!(
                f,
                "access log to {} ({}, {} lines queued per shard at most)",
                match &a.target {
                    super::AccessTarget::Stderr => "stderr".to_string(),
                    super::AccessTarget::File(p) => p.display().to_string(),
                },
                a.format.as_str(),
                a.queue
            )?;
        }
        match rt.control_socket.path() {
            Some(p) => writeln!(f, "control socket (binary upgrade) {}", p.display())?,
            None => writeln!(f, "no control socket (binary upgrade off)")?,
        }
        for l in &self.listeners {
            writeln!(
                f,
                "listener {} on {} -> pool {}",
                l.name, l.bind, self.pools[l.pool].name
            )?;
            if l.accept_proxy {
                writeln!(
                    f,
                    "  accepts PROXY protocol headers (v1, v2) from {}, within {:?}",
                    if l.proxy_trusted.is_empty() {
                        "any peer".to_string()
                    } else {
                        format!("{} trusted prefixes", l.proxy_trusted.len())
                    },
                    self.timeouts.proxy_header
                )?;
            }
            if l.has_acl() {
                writeln!(
                    f,
                    "  access list: {} allowed, {} denied prefixes ({})",
                    l.allow.len(),
                    l.deny.len(),
                    if l.allow.is_empty() {
                        "others allowed"
                    } else {
                        "others denied"
                    }
                )?;
            }
            if let Some(lim) = &l.limit {
                writeln!(
                    f,
                    "  limit: {} at {} per {}s per source, burst {}, {} sources tracked",
                    lim.algorithm.as_str(),
                    lim.rate.limit,
                    lim.rate.window_us / 1_000_000,
                    lim.burst,
                    lim.size
                )?;
                if let Some(store) = &lim.store {
                    writeln!(
                        f,
                        "    shared through {} (scope {}, on_store_error {}, store_timeout {:?})",
                        crate::limit::store::redact(&store.url),
                        store.scope,
                        store.on_error.as_str(),
                        store.timeout
                    )?;
                }
            }
            if let Some(m) = l.maxconn {
                writeln!(f, "  maxconn {m} (accepting pauses at it)")?;
            }
            if let Some(n) = l.conn_per_src {
                writeln!(f, "  at most {n} connections open per source")?;
            }
        }
        for p in &self.pools {
            write!(
                f,
                "pool {}: balance {}, retries {}",
                p.name,
                p.policy.balance.as_str(),
                p.policy.retries
            )?;
            if p.policy.send_proxy != super::SendProxy::Off {
                write!(f, ", send_proxy {}", p.policy.send_proxy.as_str())?;
                if p.policy.send_proxy_unique_id {
                    write!(f, " with unique IDs")?;
                }
            }
            match p.policy.balance {
                BalanceKind::Source => write!(f, ", table_size {}", p.policy.table_size)?,
                BalanceKind::Hash => write!(
                    f,
                    ", table_size {}, hash_key {}",
                    p.policy.table_size,
                    match p.policy.hash_key {
                        HashKey::Src => "src",
                        HashKey::SrcPort => "src_port",
                    }
                )?,
                BalanceKind::LeastTime => write!(
                    f,
                    ", observe {}, ewma_window {:?}",
                    match p.policy.leasttime_observe {
                        LeastTimeObserve::Connect => "connect",
                        LeastTimeObserve::Ttfb => "ttfb",
                    },
                    p.policy.ewma_window
                )?,
                _ => {}
            }
            if p.policy.allbackups {
                write!(f, ", allbackups")?;
            }
            if p.policy.maxqueue > 0 {
                write!(f, ", maxqueue {}", p.policy.maxqueue)?;
            }
            if let Some(o) = &p.policy.outlier {
                write!(
                    f,
                    ", outlier after {} failures for {:?} up to {:?}",
                    o.consecutive_failures, o.ejection, o.max_ejection
                )?;
            }
            if let Some(d) = p.policy.slowstart {
                write!(f, ", slowstart {d:?}")?;
            }
            if let Some(c) = &p.policy.check {
                write!(
                    f,
                    ", check {} every {:?} (timeout {:?}, rise {}, fall {})",
                    match c.kind {
                        CheckKind::Tcp => "tcp".to_string(),
                        CheckKind::Http => format!("http {}", c.path),
                    },
                    c.interval,
                    c.timeout,
                    c.rise,
                    c.fall
                )?;
            }
            if let Some(st) = &p.policy.stick {
                write!(f, ", stick on src for {:?} (size {})", st.expire, st.size)?;
            }
            writeln!(f)?;
            for s in &p.servers {
                write!(f, "  server {} {} weight {}", s.name, s.addr, s.weight)?;
                if s.maxconn > 0 {
                    write!(f, " maxconn {}", s.maxconn)?;
                }
                write!(f, "{}", if s.backup { " backup" } else { "" })?;
                writeln!(f, "{}", if s.check { "" } else { " (not checked)" })?;
            }
        }
        Ok(())
    }
}
