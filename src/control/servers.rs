//! What operators do to servers at run time: drain one (no new
//! connections, open ones finish), put it in maintenance (the same, and its
//! health checks pause), make it ready again (with slow start when its pool
//! has one), change its weight, add a server to a pool, and remove one that
//! is drained. States are live flags every shard reads at its next pick;
//! weights and membership make a new snapshot (`reload.rs`). Changes made
//! here last until the next reload from the configuration file.

use std::net::SocketAddr;
use std::time::Instant;

use crate::config::{ServerConfig, MAX_WEIGHT};
use crate::pool::{ServerState, DRAIN, MAINT};
use crate::runtime::Runtime;

use super::stats::ServerStats;

/// Why an admin request failed; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound(_) => 404,
            ApiError::BadRequest(_) => 400,
            ApiError::Conflict(_) => 409,
            ApiError::Failed(_) => 500,
        }
    }
}

/// An operator's change of a server's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    Drain,
    Maint,
    Ready,
}

impl StateChange {
    pub fn parse(verb: &str) -> Option<StateChange> {
        match verb {
            "drain" => Some(StateChange::Drain),
            "maint" => Some(StateChange::Maint),
            "ready" => Some(StateChange::Ready),
            _ => None,
        }
    }
}

impl Runtime {
    /// Indexes of `pool` and its `server`, or 404.
    fn find(&self, pool: &str, server: &str) -> Result<(usize, usize), ApiError> {
        let p = self
            .pools
            .pools
            .iter()
            .position(|p| p.name == pool)
            .ok_or_else(|| ApiError::NotFound(format!("no pool named `{pool}`")))?;
        let s = self.pools.pools[p]
            .servers
            .iter()
            .position(|s| s.name == server)
            .ok_or_else(|| {
                ApiError::NotFound(format!("pool `{pool}` has no server named `{server}`"))
            })?;
        Ok((p, s))
    }

    /// One server's figures, as `/stats` shows them.
    pub fn server_stats(&self, pool: &str, server: &str) -> Result<ServerStats, ApiError> {
        let (p, s) = self.find(pool, server)?;
        let pool = &self.pools.pools[p];
        let now_ms = crate::clock::millis(Instant::now());
        Ok(super::stats::server_stats(
            pool,
            s,
            &pool.servers[s],
            now_ms,
        ))
    }

    /// Drains, puts in maintenance, or makes ready a server.
    pub fn change_state(
        &mut self,
        pool: &str,
        server: &str,
        change: StateChange,
    ) -> Result<ServerStats, ApiError> {
        let (p, s) = self.find(pool, server)?;
        let srv = &self.pools.pools[p].servers[s];
        let before = srv.live.server_state();
        match change {
            StateChange::Drain => {
                srv.live.set_flag(DRAIN, true);
                srv.live.set_flag(MAINT, false);
            }
            StateChange::Maint => {
                srv.live.set_flag(MAINT, true);
                srv.live.set_flag(DRAIN, false);
            }
            StateChange::Ready => {
                let was_out = srv.live.set_flag(DRAIN, false) | srv.live.set_flag(MAINT, false);
                if was_out && srv.live.is_up() {
                    // Back in service: slow start begins now.
                    srv.live
                        .outlier
                        .mark_returned(crate::clock::millis(Instant::now()));
                }
            }
        }
        let after = srv.live.server_state();
        if before != after {
            tracing::warn!(
                pool,
                server,
                "server {} -> {} (admin API)",
                before.as_str(),
                after.as_str()
            );
        }
        self.server_stats(pool, server)
    }

    /// Sets a server's weight (a new snapshot).
    pub fn set_weight(
        &mut self,
        pool: &str,
        server: &str,
        weight: u32,
    ) -> Result<ServerStats, ApiError> {
        self.find(pool, server)?;
        if weight > MAX_WEIGHT {
            return Err(ApiError::BadRequest(format!(
                "weight must be from 0 to {MAX_WEIGHT}"
            )));
        }
        let mut config = self.config.clone();
        let pc = config
            .pools
            .iter_mut()
            .find(|p| p.name == pool)
            .expect("found above");
        let sc = pc
            .servers
            .iter_mut()
            .find(|s| s.name == server)
            .expect("found above");
        sc.weight = weight;
        if pc.servers.iter().all(|s| s.weight == 0) {
            return Err(ApiError::Conflict(format!(
                "every server of pool `{pool}` would have weight 0, so none could be picked"
            )));
        }
        self.apply(config)
            .map_err(|e| ApiError::Failed(e.to_string()))?;
        tracing::warn!(pool, server, weight, "weight changed (admin API)");
        self.server_stats(pool, server)
    }

    /// Adds a server to a pool (a new snapshot); it takes traffic at once
    /// (health checks, if the pool has them, judge it from its first).
    pub fn add_server(
        &mut self,
        pool: &str,
        name: &str,
        addr: SocketAddr,
        weight: u32,
    ) -> Result<ServerStats, ApiError> {
        let mut config = self.config.clone();
        let pc = config
            .pools
            .iter_mut()
            .find(|p| p.name == pool)
            .ok_or_else(|| ApiError::NotFound(format!("no pool named `{pool}`")))?;
        if name.is_empty() || name.contains('/') {
            return Err(ApiError::BadRequest(
                "name must be non-empty and without `/`".into(),
            ));
        }
        if weight > MAX_WEIGHT {
            return Err(ApiError::BadRequest(format!(
                "weight must be from 0 to {MAX_WEIGHT}"
            )));
        }
        if pc.servers.iter().any(|s| s.name == name) {
            return Err(ApiError::Conflict(format!(
                "pool `{pool}` already has a server named `{name}`"
            )));
        }
        pc.servers.push(ServerConfig {
            weight,
            ..ServerConfig::new(name, addr)
        });
        if let Some(size) = pc.policy.balance.hashes().then_some(pc.policy.table_size) {
            if pc.servers.len() as u64 >= u64::from(size) {
                return Err(ApiError::Conflict(format!(
                    "pool `{pool}`'s table_size ({size}) must stay larger than its number of servers"
                )));
            }
        }
        self.apply(config)
            .map_err(|e| ApiError::Failed(e.to_string()))?;
        tracing::warn!(pool, server = name, %addr, weight, "server added (admin API)");
        self.server_stats(pool, name)
    }

    /// Removes a server that is drained (or in maintenance) and has no
    /// connection left; 409 otherwise.
    pub fn remove_server(&mut self, pool: &str, server: &str) -> Result<(), ApiError> {
        let (p, s) = self.find(pool, server)?;
        let srv = &self.pools.pools[p].servers[s];
        let state = srv.live.server_state();
        if !matches!(state, ServerState::Drain | ServerState::Maint) {
            return Err(ApiError::Conflict(format!(
                "server `{server}` is {}: drain it first",
                state.as_str()
            )));
        }
        let active = srv.live.active();
        if active > 0 {
            return Err(ApiError::Conflict(format!(
                "server `{server}` still has {active} connection(s): wait until it has none"
            )));
        }
        let mut config = self.config.clone();
        let pc = config
            .pools
            .iter_mut()
            .find(|x| x.name == pool)
            .expect("found above");
        if pc.servers.len() == 1 {
            return Err(ApiError::Conflict(format!(
                "`{server}` is the last server of pool `{pool}`"
            )));
        }
        pc.servers.retain(|x| x.name != server);
        self.apply(config)
            .map_err(|e| ApiError::Failed(e.to_string()))?;
        tracing::warn!(pool, server, "server removed (admin API)");
        Ok(())
    }
}
