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
                    pool.balance.as_str(),
                    pool.servers.len(),
                    runtime.shards(),
                    config.runtime.forward,
                    runtime.ring_flags()
                );
            }
            let signal = signals.wait().context("waiting for a signal")?;
            let grace = Duration::from_secs(args.grace);
            tracing::info!("{signal:?}: stopping, open connections have {grace:?} to finish");
            runtime.stop(grace);
            let c = runtime.counters();
            tracing::info!(
                "stopped: {} connections accepted, {} unserved, {} connect failures",
                c.accepted,
                c.unserved,
                c.connect_failures
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
