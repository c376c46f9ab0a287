//! The `ringlb` binary: parses the command line, sets up logging, and runs
//! or checks a configuration.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use ringlb::cli::{Cli, Command};
use ringlb::control::admin::Admin;
use ringlb::control::upgrade::{self, ControlSocket};
use ringlb::control::{notify, Control};
use ringlb::Runtime;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
        Command::Ctl(args) => match ringlb::control::ctl::run(&args) {
            Ok(out) => {
                print!("{out}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("ringlb ctl: {e}");
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
            let args_upgrade = args.upgrade;
            // Block the signals before any thread exists, so they all
            // inherit the mask and only `wait_signal` below receives them.
            let mut signals = SigSet::empty();
            signals.add(Signal::SIGINT);
            signals.add(Signal::SIGTERM);
            signals.add(Signal::SIGHUP);
            signals
                .thread_block()
                .context("cannot block SIGINT/SIGTERM/SIGHUP")?;
            let (takeover, inherited) = if args.upgrade {
                let (t, inherited) = upgrade::take_over(&config.runtime.control_socket)
                    .context("cannot take over from the running ringlb")?;
                tracing::info!(
                    old_pid = t.old_pid,
                    listeners = inherited.len(),
                    "binary upgrade: received the running process's listening sockets"
                );
                (Some(t), inherited)
            } else {
                (None, Vec::new())
            };
            let runtime =
                Runtime::start_with(&config, inherited).context("cannot start the data plane")?;
            log_start(&runtime, &config);
            let control = Arc::new(Control::new(runtime, Box::new(move || args.config())));
            if let Some(t) = takeover {
                let old_pid = t.old_pid;
                if let Err(e) = t.finish() {
                    // The old process goes on serving; the clients this one
                    // took meanwhile finish before it exits.
                    let grace = config.runtime.grace;
                    tracing::error!(
                        "binary upgrade abandoned: {e}; the old process keeps serving; the connections this one accepted have {grace:?} to finish"
                    );
                    drain(&control, &signals, grace);
                    return Ok(ExitCode::FAILURE);
                }
                tracing::info!(
                    old_pid,
                    "binary upgrade: serving; the old process drains and exits"
                );
            }
            let handed_over = Arc::new(AtomicBool::new(false));
            let mut control_socket = ControlSocket::open(
                &config.runtime.control_socket,
                args_upgrade,
                control.clone(),
                handed_over.clone(),
            )
            .context("cannot open the control socket")?;
            // After an upgrade the old process lets go of the admin address
            // within a moment of the hand-over, or once it has drained if it
            // was already stopping: until then it is retried every loop
            // turn, and ringlb serves without it.
            let mut admin = None;
            let mut admin_wanted = config.admin.clone();
            if let Some(a) = &admin_wanted {
                match Admin::start(a.bind, a.token.clone(), control.clone()) {
                    Ok(started) => {
                        admin = Some(started);
                        admin_wanted = None;
                    }
                    Err(e) if args_upgrade => tracing::warn!(
                        "{e}; the old process still holds it: retrying until it lets go"
                    ),
                    Err(e) => return Err(e).context("cannot start the admin API"),
                }
            }
            notify::ready("serving");
            // Wait for a signal, looking every quarter second for a shard
            // that stopped on its own (see shard/driver.rs).
            let failure = loop {
                if let Some(a) = &admin_wanted {
                    if let Ok(started) = Admin::start(a.bind, a.token.clone(), control.clone()) {
                        admin = Some(started);
                        admin_wanted = None;
                    }
                }
                if handed_over.load(Ordering::Acquire) {
                    // The new process binds the admin address next.
                    admin = None;
                    let grace = control.lock().config().runtime.grace;
                    tracing::info!(
                        "handed over to a new process: stopping, open connections have {grace:?} to finish (a signal ends them at once)"
                    );
                    notify::stopping();
                    drain(&control, &signals, grace);
                    break None;
                }
                match wait_signal(&signals, Duration::from_millis(250)) {
                    Some(Signal::SIGHUP) => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        let _ = control.reload();
                        continue;
                    }
                    Some(signal) => {
                        let grace = control.lock().config().runtime.grace;
                        tracing::info!(
                            "{signal:?}: stopping, open connections have {grace:?} to finish (a second signal ends them at once)"
                        );
                        notify::stopping();
                        drain(&control, &signals, grace);
                        break None;
                    }
                    None => {}
                }
                let failed = control.lock().failure();
                if let Some(f) = failed {
                    let grace = control.lock().config().runtime.grace;
                    tracing::error!(
                        "shard {} failed: {}; stopping (open connections on the other shards have {grace:?} to finish) and exiting with an error so a supervisor restarts ringlb",
                        f.shard,
                        f.reason
                    );
                    notify::stopping();
                    drain(&control, &signals, grace);
                    break Some(f);
                }
            };
            if let Some(a) = admin.as_mut() {
                a.stop();
            }
            if let Some(c) = control_socket.as_mut() {
                c.stop();
            }
            log_stop(&control.lock());
            Ok(if failure.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn log_start(runtime: &Runtime, config: &ringlb::Config) {
    for l in runtime.listeners() {
        let pool = &config.pools[l.pool];
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
}

fn log_stop(runtime: &Runtime) {
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
}

/// Stops the runtime, letting open connections finish for up to `grace`;
/// a stop signal meanwhile resets them at once.
fn drain(control: &Control, signals: &SigSet, grace: Duration) {
    control.lock().request_stop(grace);
    while !control.lock().stopped() {
        match wait_signal(signals, Duration::from_millis(100)) {
            Some(Signal::SIGHUP) => tracing::info!("SIGHUP while stopping: ignored"),
            Some(again) => {
                tracing::warn!("{again:?} again: resetting open connections now");
                control.lock().request_stop(Duration::ZERO);
            }
            None => {}
        }
    }
    control.lock().stop(grace);
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
