//! Per-listener connection limits: the rate limit (`limit = { … }`, the
//! five algorithms of `algorithm.rs` over the bounded per-source table of
//! `table.rs`) and the concurrency limits (`maxconn`, `conn_per_src`:
//! `concurrency.rs`).
//!
//! With `store` set the limit is shared with other instances through Redis
//! (`shared.rs`, `lease.rs`, `store.rs`) and not split. Otherwise each
//! shard keeps its own table and enforces its share of the limit:
//! `rate` and `burst` divided by the number of shards (at least 1 each).
//! The kernel spreads a source's connections over the shards by their
//! 4-tuple hash (SO_REUSEPORT), so a source opening many connections gets
//! close to the whole rate; one whose connections happen to land on fewer
//! shards gets less, never more. `size` is split the same way.

pub mod algorithm;
pub mod concurrency;
pub mod lease;
pub mod shared;
pub mod store;
pub mod table;

use std::sync::Arc;

pub use algorithm::{Algorithm, Decision, Params, Rate};
pub use concurrency::{ConnGate, SrcSlots};
pub use lease::{Leases, Verdict};
pub use shared::{OnStoreError, SharedLimit, StoreConfig};
pub use table::{key_of, Table};

/// A listener's `limit`, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitConfig {
    pub algorithm: Algorithm,
    pub rate: Rate,
    /// Token bucket: its capacity (default: one window's worth). Leaky
    /// bucket: the most clients waiting (default: the same).
    pub burst: u32,
    /// Most sources tracked, over every shard.
    pub size: usize,
    /// Shared with other instances through this store (`shared.rs`).
    pub store: Option<StoreConfig>,
}

/// A shard's state for a listener's limit.
pub enum Limiter {
    /// Its share of the limit, decided alone.
    Local(Table),
    /// Allowances leased from the shared store.
    Shared(Leases),
}

impl Limiter {
    /// Shard's state for `config`, one of `shards`.
    pub fn for_shard(config: &LimitConfig, shards: usize) -> Limiter {
        let (params, size) = config.per_shard(shards);
        match &config.store {
            None => Limiter::Local(Table::new(params, size)),
            Some(store) => {
                let shared = SharedLimit::new(store, config.algorithm, config.rate, config.burst);
                Limiter::Shared(Leases::new(Arc::new(shared), size))
            }
        }
    }

    /// Sources held now.
    pub fn len(&self) -> usize {
        match self {
            Limiter::Local(t) => t.len(),
            Limiter::Shared(l) => l.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Eq for LimitConfig {}

impl LimitConfig {
    /// What one of `shards` shards enforces.
    pub fn per_shard(&self, shards: usize) -> (Params, usize) {
        let n = shards.max(1) as u32;
        let params = Params {
            algorithm: self.algorithm,
            rate: Rate {
                limit: (self.rate.limit / n).max(1),
                window_us: self.rate.window_us,
            },
            burst: (self.burst / n).max(1),
        };
        (params, (self.size / shards.max(1)).max(1))
    }
}
