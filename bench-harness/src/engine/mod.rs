//! The load engine: picks the workload's protocol, splits connections (and a
//! request budget) over threads, runs one io_uring worker per thread
//! (optionally pinned), gathers their one-second interval samples while the
//! run goes on, and merges their figures at the end. See `LIFECYCLE.md` for
//! a connection's life.

mod conn;
mod protocol;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use socket2::SockAddr;
use thiserror::Error;
use uring_kit::RingError;

use crate::clock::now_ns;
use crate::stats::{new_histogram, Stats};
use crate::target::Target;
use crate::workload::{Direction, Workload};
use protocol::Protocol;
use worker::{Shared, Worker, WorkerSpec};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub workload: Workload,
    pub threads: usize,
    pub connections: usize,
    /// Measured duration (after warm-up). `None`: until `requests` are done.
    pub duration: Option<Duration>,
    /// Total requests to issue (after warm-up). `None`: until `duration`.
    pub requests: Option<u64>,
    /// Open loop at this many requests per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// Per-request (and per-connect) timeout.
    pub timeout: Duration,
    pub warmup: Duration,
    /// CPUs to pin threads to (thread t on `cpus[t % len]`).
    pub cpus: Option<Vec<usize>>,
}

/// A run that could not be started or failed.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("invalid run: {0}")]
    Config(String),
    /// io_uring cannot be used here (the message names the usual causes).
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("load thread failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a load thread panicked")]
    Panic,
}

/// One second (or the last part of one) of the measured window, all threads merged.
#[derive(Debug, Clone)]
pub struct Interval {
    pub index: u64,
    pub start_s: f64,
    pub len_s: f64,
    pub latency: Histogram<u64>,
    pub completed: u64,
    pub errors: u64,
    pub bytes: u64,
}

/// CPU time used by the whole process during the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUsage {
    pub user_s: f64,
    pub sys_s: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub stats: Stats,
    pub intervals: Vec<Interval>,
    pub cpu: CpuUsage,
}

fn rusage() -> CpuUsage {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            CpuUsage {
                user_s: s(u.user_time()),
                sys_s: s(u.system_time()),
            }
        }
        Err(_) => CpuUsage::default(),
    }
}

impl RunConfig {
    fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: String| Err(EngineError::Config(m));
        if self.threads == 0 {
            return bad("threads must be at least 1".into());
        }
        if self.connections < self.threads {
            return bad(format!(
                "connections ({}) must be at least threads ({})",
                self.connections, self.threads
            ));
        }
        if self.duration.is_none() && self.requests.is_none() {
            return bad("give a duration or a number of requests".into());
        }
        if self.requests.is_some() && !self.workload.has_requests() {
            return bad("a request count does not apply to tcp-stream; give a duration".into());
        }
        if self.rate.is_some() && !self.workload.has_requests() {
            return bad("a rate does not apply to tcp-stream".into());
        }
        if self.timeout.is_zero() {
            return bad("timeout must be above zero".into());
        }
        if let Workload::Echo(e) = &self.workload {
            if e.size == 0 {
                return bad("echo message size must be at least 1 byte".into());
            }
        }
        if let Workload::Stream(s) = &self.workload {
            if s.chunk == 0 || s.chunk > (1 << 30) {
                return bad("stream buffer must be between 1 byte and 1 GiB".into());
            }
        }
        Ok(())
    }
}

/// Runs a load test. `stop` ends it early (as if its duration were over);
/// `on_interval` sees each completed second while the run goes on.
pub fn run(
    cfg: &RunConfig,
    stop: Arc<AtomicBool>,
    on_interval: &mut dyn FnMut(&Interval),
) -> Result<RunOutcome, EngineError> {
    cfg.validate()?;
    // Said once, before any thread starts, rather than once per thread.
    uring_kit::probe()?;
    match &cfg.workload {
        Workload::Http(h) => run_with(cfg, protocol::Http::new(h, &cfg.target), stop, on_interval),
        Workload::Echo(e) => run_with(cfg, protocol::Echo::new(e), stop, on_interval),
        Workload::Stream(s) => match s.direction {
            Direction::Upload => run_with(cfg, protocol::Upload::new(s), stop, on_interval),
            Direction::Download => run_with(cfg, protocol::Download::new(s), stop, on_interval),
        },
    }
}

/// Runs a validated load test whose connections speak `proto`.
fn run_with<P: Protocol>(
    cfg: &RunConfig,
    proto: P,
    stop: Arc<AtomicBool>,
    on_interval: &mut dyn FnMut(&Interval),
) -> Result<RunOutcome, EngineError> {
    let proto = Arc::new(proto);
    // Give threads time to start so they begin together.
    let start_ns = now_ns() + 20_000_000;
    let measure_start = start_ns + cfg.warmup.as_nanos() as u64;
    let shared = Arc::new(Shared {
        addr: SockAddr::from(cfg.target.addr),
        rate: cfg.rate,
        connections: cfg.connections,
        timeout_ns: cfg.timeout.as_nanos() as u64,
        start_ns,
        measure_start,
        end: cfg.duration.map(|d| measure_start + d.as_nanos() as u64),
        stop,
    });
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(cfg.threads);
    let mut first_conn = 0;
    for t in 0..cfg.threads {
        let conns = cfg.connections / cfg.threads + usize::from(t < cfg.connections % cfg.threads);
        let budget = cfg
            .requests
            .map(|n| n / cfg.threads as u64 + u64::from((t as u64) < n % cfg.threads as u64));
        let spec = WorkerSpec {
            index: t,
            first_conn,
            conns,
            budget,
        };
        first_conn += conns;
        let cpu = cfg
            .cpus
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(|c| c[t % c.len()]);
        let sh = shared.clone();
        let proto = proto.clone();
        let tx = tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("ringlb-bench-{t}"))
            .spawn(move || -> Result<Stats, EngineError> {
                if let Some(id) = cpu {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                Ok(Worker::new(sh, proto, spec, tx)?.run()?)
            })?;
        handles.push(h);
    }
    drop(tx);

    let mut cpu_start: Option<CpuUsage> = None;
    let mut pending: BTreeMap<u64, (usize, Interval)> = BTreeMap::new();
    let mut done: Vec<Interval> = Vec::new();
    loop {
        if cpu_start.is_none() && now_ns() >= measure_start {
            cpu_start = Some(rusage());
        }
        let wait = if cpu_start.is_none() {
            Duration::from_nanos(measure_start.saturating_sub(now_ns()).max(1))
        } else {
            Duration::from_millis(200)
        };
        match rx.recv_timeout(wait) {
            Ok(s) => {
                let e = pending.entry(s.index).or_insert_with(|| {
                    (
                        0,
                        Interval {
                            index: s.index,
                            start_s: s.start_ns as f64 / 1e9,
                            len_s: 0.0,
                            latency: new_histogram(),
                            completed: 0,
                            errors: 0,
                            bytes: 0,
                        },
                    )
                });
                e.0 += 1;
                let iv = &mut e.1;
                iv.len_s = iv.len_s.max(s.len_ns as f64 / 1e9);
                let _ = iv.latency.add(&s.latency);
                iv.completed += s.completed;
                iv.errors += s.errors;
                iv.bytes += s.bytes;
                if e.0 == cfg.threads {
                    if let Some((_, iv)) = pending.remove(&s.index) {
                        on_interval(&iv);
                        done.push(iv);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let cpu_end = rusage();
    let mut stats = Stats::default();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => stats.merge(&s),
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some(EngineError::Panic)),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    done.extend(pending.into_values().map(|(_, iv)| iv));
    done.sort_by_key(|iv| iv.index);
    let cs = cpu_start.unwrap_or_default();
    Ok(RunOutcome {
        stats,
        intervals: done,
        cpu: CpuUsage {
            user_s: cpu_end.user_s - cs.user_s,
            sys_s: cpu_end.sys_s - cs.sys_s,
        },
    })
}
