//! ringlb: a thread-per-core io_uring TCP (L4) load balancer.
//!
//! - [`config`]: the TOML schema, validation and the resolved model.
//! - [`pool`]: servers and pools with their live counters.
//! - [`balance`]: one file per balancing algorithm behind one trait.
//! - [`shard`]: the per-core loop: ring, connections, forwarding.
//! - [`runtime`]: starting and stopping the shards.
//! - [`net`]: socket set-up outside the ring.
//! - [`budget`]: the connection budget derived from the open-file limit.
//! - [`access_log`]: one line per connection, written off the data path.
//! - [`timer_wheel`]: the hierarchical timer wheel every shard schedules on.

pub mod access_log;
pub mod acl;
pub mod balance;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod histogram;
pub mod limit;
pub mod net;
pub mod outlier;
pub mod peak_ewma;
pub mod pool;
pub mod proxy_protocol;
pub mod runtime;
pub mod shard;
pub mod stick;
pub mod timer_wheel;
pub mod waiting_room;

pub use config::Config;
pub use runtime::Runtime;
