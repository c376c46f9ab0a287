//! Serving a new configuration without a restart: a reload (SIGHUP, `POST
//! /reload`) or a change made through the admin API. The new snapshot of
//! pools carries over the live state of every pool and server that stays
//! (`Pool::carrying_over`); listeners that stay keep their sockets, new
//! ones are bound before anything changes (so a bind error leaves the
//! running configuration untouched), removed ones stop accepting on every
//! shard and their connections finish. Every shard is sent the snapshot
//! (`shard/swap.rs` says what it does with its pairs); health checks start
//! over on the new snapshot, keeping each server's health.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::health::Checker;
use crate::net::{bind_reuseport_group, close_fd};
use crate::pool::{Pools, HEALTH_DOWN};
use crate::runtime::{keep_copies, BoundListener, Runtime};
use crate::shard::{Command, ListenerPolicy, ListenerStats, Swap};

/// Why a configuration could not be applied (the running one stays).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot listen on {addr} (listener `{name}`): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ringlb is stopping")]
    Stopping,
    #[error(transparent)]
    Checker(#[from] crate::health::CheckerError),
}

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ApplyReport {
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    pub pools_added: Vec<String>,
    pub pools_removed: Vec<String>,
    /// `pool/server`.
    pub servers_added: Vec<String>,
    pub servers_removed: Vec<String>,
    /// Settings that only a restart changes, left as they were.
    pub needs_restart: Vec<String>,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            ("listeners added", &self.listeners_added),
            ("listeners removed", &self.listeners_removed),
            ("pools added", &self.pools_added),
            ("pools removed", &self.pools_removed),
            ("servers added", &self.servers_added),
            ("servers removed", &self.servers_removed),
        ];
        let mut any = false;
        for (what, names) in parts {
            if !names.is_empty() {
                if any {
                    f.write_str("; ")?;
                }
                write!(f, "{what}: {}", names.join(", "))?;
                any = true;
            }
        }
        if !any {
            f.write_str("no listener, pool or server added or removed")?;
        }
        Ok(())
    }
}

impl Runtime {
    /// Serves `config` from now on. On error nothing has changed.
    pub fn apply(&mut self, mut config: Config) -> Result<ApplyReport, ApplyError> {
        if self.stopping() {
            return Err(ApplyError::Stopping);
        }
        let mut report = ApplyReport::default();
        // What a running process cannot change.
        let old = &self.config.runtime;
        let new = &config.runtime;
        for (key, same) in [
            ("runtime.shards", old.shards == new.shards),
            ("runtime.cpus", old.cpus == new.cpus),
            ("runtime.forward", old.forward == new.forward),
            ("runtime.buffer_size", old.buffer_size == new.buffer_size),
            ("runtime.buffers", old.buffers == new.buffers),
            ("runtime.pipes", old.pipes == new.pipes),
            ("runtime.pipe_size", old.pipe_size == new.pipe_size),
            ("runtime.maxconn", old.maxconn == new.maxconn),
            (
                "runtime.control_socket",
                old.control_socket == new.control_socket,
            ),
            ("admin", self.config.admin == config.admin),
            ("log", self.config.access_log == config.access_log),
        ] {
            if !same {
                report.needs_restart.push(key.to_string());
            }
        }
        let grace = config.runtime.grace;
        config.runtime = self.config.runtime.clone();
        config.runtime.grace = grace;
        config.admin = self.config.admin.clone();
        config.access_log = self.config.access_log.clone();

        let shards = self.links.len();
        // Bind what is new first: an error here changes nothing.
        let mut listeners = Vec::new();
        let mut new_fds: Vec<Option<Vec<i32>>> = Vec::new();
        for l in &config.listeners {
            let kept = self
                .listeners
                .iter()
                .find(|b| b.name == l.name && b.bind == l.bind);
            match kept {
                Some(b) => {
                    listeners.push(BoundListener {
                        pool: l.pool,
                        policy: ListenerPolicy::of(l),
                        ..b.clone()
                    });
                    new_fds.push(None);
                }
                None => match bind_reuseport_group(l.bind, shards).and_then(|(fds, addr)| {
                    match keep_copies(&fds) {
                        Ok(sockets) => Ok((fds, addr, sockets)),
                        Err(e) => {
                            fds.into_iter().for_each(close_fd);
                            Err(e)
                        }
                    }
                }) {
                    Ok((fds, addr, sockets)) => {
                        listeners.push(BoundListener {
                            id: self.next_listener_id,
                            name: l.name.clone(),
                            bind: l.bind,
                            addr,
                            pool: l.pool,
                            stats: Arc::new(ListenerStats::new(shards)),
                            gate: Arc::default(),
                            sockets,
                            policy: ListenerPolicy::of(l),
                        });
                        self.next_listener_id += 1;
                        new_fds.push(Some(fds));
                        report.listeners_added.push(l.name.clone());
                    }
                    Err(source) => {
                        new_fds.into_iter().flatten().flatten().for_each(close_fd);
                        return Err(ApplyError::Bind {
                            name: l.name.clone(),
                            addr: l.bind,
                            source,
                        });
                    }
                },
            }
        }
        for b in &self.listeners {
            if !listeners.iter().any(|l| l.id == b.id) {
                report.listeners_removed.push(b.name.clone());
            }
        }
        let pools = Pools::carrying_over(&config, Some(&self.pools));
        diff_pools(&self.pools, &pools, &mut report);

        // The checks for the new snapshot start before anything changes;
        // the old ones stop once the shards have it (both running for a
        // moment only write the same verdicts).
        let checker = match Checker::start(pools.clone()) {
            Ok(c) => c,
            Err(e) => {
                new_fds.into_iter().flatten().flatten().for_each(close_fd);
                return Err(e.into());
            }
        };

        self.epoch += 1;
        for (i, link) in self.links.iter().enumerate() {
            let swap = Swap {
                epoch: self.epoch,
                pools: pools.clone(),
                listeners: listeners
                    .iter()
                    .zip(&new_fds)
                    .map(|(l, fds)| l.spec(fds.as_ref().map(|f| f[i])))
                    .collect(),
                timeouts: config.timeouts,
            };
            let mut cmd = Command::Swap(Box::new(swap));
            loop {
                match link.try_send(cmd) {
                    Ok(()) => break,
                    Err(back) if !link.stats.exited() => {
                        cmd = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(back) => {
                        // A shard that stopped on its own: the runtime is
                        // about to stop the process (its failure policy);
                        // its new sockets are closed here, the others go on.
                        if let Command::Swap(s) = back {
                            s.listeners.iter().filter_map(|l| l.fd).for_each(close_fd);
                        }
                        tracing::error!(
                            shard = i,
                            "a stopped shard did not take the new configuration"
                        );
                        break;
                    }
                }
            }
        }
        if let Some(mut old) = std::mem::replace(&mut self.checker, checker) {
            old.stop();
        }
        // A server no check covers any more is not held down by an old
        // verdict.
        for pool in &pools.pools {
            for s in &pool.servers {
                if pool.policy.check.is_none() || !s.check {
                    s.live.set_flag(HEALTH_DOWN, false);
                }
            }
        }
        self.pools = pools;
        self.listeners = listeners;
        self.config = config;
        Ok(report)
    }
}

fn diff_pools(old: &Pools, new: &Pools, report: &mut ApplyReport) {
    for p in &new.pools {
        match old.pool(&p.name) {
            None => report.pools_added.push(p.name.clone()),
            Some(o) => {
                for s in &p.servers {
                    if !o.servers.iter().any(|x| Arc::ptr_eq(&x.live, &s.live)) {
                        report.servers_added.push(format!("{}/{}", p.name, s.name));
                    }
                }
            }
        }
    }
    for o in &old.pools {
        match new.pool(&o.name) {
            None => report.pools_removed.push(o.name.clone()),
            Some(p) => {
                for s in &o.servers {
                    if !p.servers.iter().any(|x| Arc::ptr_eq(&x.live, &s.live)) {
                        report
                            .servers_removed
                            .push(format!("{}/{}", o.name, s.name));
                    }
                }
            }
        }
    }
}
