//! Active health checks: one control thread with its own io_uring checks
//! every server of the pools that have `check` (servers with `check =
//! false` are left alone), `tcp` (a connect) or `http` (a `GET` judged by
//! its status), each within its `timeout`, every `interval` ± `jitter`.
//! `fall` failures in a row mark a server down, `rise` successes bring it
//! back, with slow start when the pool has `slowstart`. The shards see a
//! change at their next pick (the server's `down` flag). Every change is
//! logged once with its reason. Checks and outlier ejection are
//! independent: either takes a server out.
//!
//! - `rise_fall.rs`: a server's up/down state from its results.
//! - `probe.rs`: the HTTP request and the status line.
//! - `checker.rs`: the ring loop (`LIFECYCLE.md` draws a check).

mod checker;
mod probe;
mod rise_fall;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use uring_kit::{Ring, RingError};

use crate::pool::Pools;

/// Submission queue entries of the checker's ring (a check uses at most
/// two at a time).
const SQ_ENTRIES: u32 = 1024;

/// The fds health checks may hold at once: one socket per checked server
/// (a check in progress), and the checker's ring.
pub fn fds_needed(config: &crate::config::Config) -> u64 {
    let checked: usize = config
        .pools
        .iter()
        .filter(|p| p.policy.check.is_some())
        .map(|p| p.servers.iter().filter(|s| s.check).count())
        .sum();
    if checked == 0 {
        0
    } else {
        checked as u64 + 1
    }
}

/// Why the checker could not start.
#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    #[error("health checks: {0}")]
    Ring(#[from] RingError),
    #[error("cannot start the health-check thread: {0}")]
    Thread(std::io::Error),
    #[error("the health-check thread ended during start-up")]
    Died,
}

/// The running checker.
pub struct Checker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts the checker thread, or `None` when no pool has checks.
    pub fn start(pools: Arc<Pools>) -> Result<Option<Checker>, CheckerError> {
        if !pools.pools.iter().any(|p| p.policy.check.is_some()) {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringlb-checks".into())
            .spawn(move || {
                // The ring is single-issuer: made on the thread that uses it.
                let lp = match Ring::new(SQ_ENTRIES) {
                    Ok((ring, _)) => checker::Loop::new(ring, pools, flag),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(lp.targets()));
                if let Err(e) = lp.run() {
                    tracing::error!(
                        "health checks stopped: {e}; every server they had marked down is back in service (unchecked) until ringlb restarts"
                    );
                }
            })
            .map_err(CheckerError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(n)) => tracing::info!("health checks: {n} server(s)"),
            Ok(Err(e)) => return Err(CheckerError::Ring(e)),
            Err(_) => return Err(CheckerError::Died),
        }
        Ok(Some(Checker {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops the checks and waits for the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop();
    }
}
