//! The control plane: everything that runs beside the shards, off the data
//! path, and changes or reports what they do. The running [`Runtime`] sits
//! behind one lock shared by the signal loop (SIGHUP reloads) and the admin
//! API's thread; the shards never take it.
//!
//! - `reload.rs`: serving a new configuration (snapshot swap).
//! - `servers.rs`: drain, maintenance, weights, adding and removing servers.
//! - `stats.rs`: the figures `/stats`, `/metrics` and the page show.
//! - `metrics.rs`: the Prometheus rendering.
//! - `admin.rs`: the HTTP API; `page.html`: the live stats page.
//! - `ctl.rs`: `ringlb ctl`, the API for shell users.
//! - `notify.rs`: systemd readiness notifications.
//! - `upgrade.rs`: the control socket and the binary upgrade.

pub mod admin;
pub mod ctl;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod servers;
pub mod stats;
pub mod upgrade;

use std::sync::{Mutex, MutexGuard};

use crate::config::{Config, ConfigErrors};
use crate::runtime::Runtime;
pub use reload::{ApplyError, ApplyReport};

/// Why a reload did not happen (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new configuration has {} error(s):\n{}", .0.0.len(), .0.0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Config(ConfigErrors),
    #[error("{0}")]
    Apply(#[from] ApplyError),
}

/// Re-reads the configuration from where it came from (file and flags).
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigErrors> + Send + Sync>;

/// The running process as the control plane sees it.
pub struct Control {
    runtime: Mutex<Runtime>,
    load: Loader,
}

impl Control {
    pub fn new(runtime: Runtime, load: Loader) -> Control {
        Control {
            runtime: Mutex::new(runtime),
            load,
        }
    }

    /// The runtime, for as long as the guard lives (never held across a
    /// wait).
    pub fn lock(&self) -> MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the configuration and serves it; on any error the running
    /// one stays, and every error is logged.
    pub fn reload(&self) -> Result<ApplyReport, ReloadError> {
        notify::reloading();
        // A reload is also how a rotated access log is reopened.
        self.lock().reopen_access_log();
        let result = match (self.load)() {
            Ok(config) => self.lock().apply(config).map_err(ReloadError::from),
            Err(errors) => Err(ReloadError::Config(errors)),
        };
        match &result {
            Ok(report) => {
                tracing::info!("configuration reloaded: {report}");
                if !report.needs_restart.is_empty() {
                    tracing::warn!(
                        "reload: {} changed but only take effect at a restart; the running values stay",
                        report.needs_restart.join(", ")
                    );
                }
            }
            Err(e) => tracing::error!("reload rejected, the running configuration stays: {e}"),
        }
        notify::ready("serving");
        result
    }
}
