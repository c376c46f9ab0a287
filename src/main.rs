//! The `ringlb` binary: parses the command line, sets up logging, and runs
//! or checks a configuration.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use ringlb::cli::{Cli, Command};
use ringlb::Runtime;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringlb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => match ringlb::Config::load(&config) {
            Ok(c) => {
                print!("{c}");
                println!("{}: OK", config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("error: {e}");
                }
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Run(args) => {
            let config = match args.config() {
                Ok(c) => c,
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("error: {e}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            // Block the stop signals before any shard thread exists, so they
            // all inherit the mask and only `wait` below receives them.
            let mut signals = SigSet::empty();
            signals.add(Signal::SIGINT);
            signals.add(Signal::SIGTERM);
            signals
                .thread_block()
                .context("cannot block SIGINT/SIGTERM")?;
            let mut runtime = Runtime::start(&config).context("cannot start the data plane")?;
            for l in runtime.listeners() {
                let pool = &config.pools[config
                    .listeners
                    .iter()
                    .find(|c| c.name == l.name)
                    .map_or(0, |c| c.pool)];
                tracing::info!(
                    "listener {} on {} -> pool {} ({}, {} servers): {} shard(s), forward {}, ring {:?}",
                    l.name,
                    l.addr,
                    pool.name,
                    pool.policy.balance.as_str(),
                    pool.servers.len(),
                    runtime.shards(),
                    config.runtime.forward,
                    runtime.ring_flags()
                );
            }
            let plan = runtime.fd_plan();
            tracing::info!(
                "maxconn {} ({}), up to {} pipes per shard, RLIMIT_NOFILE {}",
                plan.maxconn,
                if config.runtime.maxconn.is_some() {
                    "runtime.maxconn"
                } else {
                    "from RLIMIT_NOFILE"
                },
                plan.pipes_per_shard,
                plan.nofile
            );
            // Wait for a stop signal, looking every quarter second for a
            // shard that stopped on its own (see shard/driver.rs).
            let failure = loop {
                if let Some(signal) = wait_signal(&signals, Duration::from_millis(250)) {
                    let grace = config.runtime.grace;
                    tracing::info!(
                        "{signal:?}: stopping, open connections have {grace:?} to finish (a second signal ends them at once)"
                    );
                    drain(&mut runtime, &signals, grace);
                    break None;
                }
                if let Some(f) = runtime.failure() {
                    let grace = config.runtime.grace;
                    tracing::error!(
                        "shard {} failed: {}; stopping (open connections on the other shards have {grace:?} to finish) and exiting with an error so a supervisor restarts ringlb",
                        f.shard,
                        f.reason
                    );
                    drain(&mut runtime, &signals, grace);
                    break Some(f);
                }
            };
            let c = runtime.counters();
            tracing::info!(
                "stopped: {} connections accepted, {} unserved, {} connect failures, {} ejections",
                c.accepted,
                c.unserved,
                c.connect_failures,
                c.ejections
            );
            for pool in &runtime.pools().pools {
                let q = pool.queue_stats(ringlb::clock::millis(std::time::Instant::now()));
                if q.queued > 0 {
                    tracing::info!(
                        "pool {}: {} clients queued, {} served from the queue, {} queue timeouts, {} turned away (maxqueue); time queued p50 {:?} p99 {:?}; mean slot hold {:?}",
                        pool.name,
                        q.queued,
                        q.served,
                        q.timeouts,
                        q.full,
                        q.waited_p50.unwrap_or_default(),
                        q.waited_p99.unwrap_or_default(),
                        q.mean_hold
                    );
                }
            }
            Ok(if failure.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Stops the runtime, letting open connections finish for up to `grace`;
/// a stop signal meanwhile resets them at once.
fn drain(runtime: &mut Runtime, signals: &SigSet, grace: Duration) {
    runtime.request_stop(grace);
    while !runtime.stopped() {
        if let Some(again) = wait_signal(signals, Duration::from_millis(100)) {
            tracing::warn!("{again:?} again: resetting open connections now");
            runtime.request_stop(Duration::ZERO);
        }
    }
    runtime.stop(grace);
}

/// Waits up to `timeout` for one of the blocked `signals`.
fn wait_signal(signals: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait reads the set and the timespec we pass and
    // writes no info (null); both outlive the call.
    let n = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &ts) };
    if n > 0 {
        Signal::try_from(n).ok()
    } else {
        None
    }
}
