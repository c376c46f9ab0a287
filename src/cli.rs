//! The command line: `ringlb run` (from a file or in quick mode) and
//! `ringlb check`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    resolve, BalanceKind, Config, ConfigError, ConfigErrors, ForwardMode, ListenerConfig,
    PoolConfig, RuntimeConfig, ServerConfig, Timeouts, MAX_WEIGHT,
};

#[derive(Debug, Parser)]
#[command(
    name = "ringlb",
    version,
    about = "A thread-per-core io_uring TCP load balancer"
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the balancer, from a configuration file or from flags.
    Run(RunArgs),
    /// Validate a configuration file and print what it resolves to.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short, conflicts_with_all = ["listen", "backend"])]
    pub config: Option<PathBuf>,
    /// Quick mode: address to listen on.
    #[arg(long, requires = "backend")]
    pub listen: Option<String>,
    /// Quick mode: a backend server, `ADDR` or `ADDR=WEIGHT`; repeat for more.
    #[arg(long)]
    pub backend: Vec<String>,
    /// Quick mode: roundrobin or leastconn.
    #[arg(long, default_value = "roundrobin")]
    pub balance: String,
    /// Number of shards (default: one per online CPU; overrides the file).
    #[arg(long)]
    pub shards: Option<usize>,
    /// copy, splice, splice-ring or auto (overrides the file).
    #[arg(long)]
    pub forward: Option<String>,
    /// Quick mode: connect attempts after the first failure.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Seconds open connections may take to finish on SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10)]
    pub grace: u64,
}

fn cli_error(key: &str, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: PathBuf::from("<command line>"),
        line: None,
        key: key.to_string(),
        message,
    }])
}

impl RunArgs {
    /// The configuration to run: the file, or one built from the flags;
    /// then the command-line overrides.
    pub fn config(&self) -> Result<Config, ConfigErrors> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => self.quick_config()?,
        };
        if let Some(n) = self.shards {
            if !(1..=1024).contains(&n) {
                return Err(cli_error("--shards", "must be between 1 and 1024".into()));
            }
            config.runtime.shards = n;
        }
        if let Some(f) = &self.forward {
            config.runtime.forward = ForwardMode::parse(f).ok_or_else(|| {
                cli_error(
                    "--forward",
                    format!("unknown mode `{f}` (expected copy, splice, splice-ring or auto)"),
                )
            })?;
        }
        Ok(config)
    }

    fn quick_config(&self) -> Result<Config, ConfigErrors> {
        let Some(listen) = &self.listen else {
            return Err(cli_error(
                "--config",
                "give --config FILE, or --listen ADDR with one or more --backend ADDR[=WEIGHT]"
                    .into(),
            ));
        };
        let bind = resolve(listen).map_err(|m| cli_error("--listen", m))?;
        let balance = BalanceKind::parse(&self.balance).ok_or_else(|| {
            cli_error(
                "--balance",
                format!(
                    "unknown algorithm `{}` (expected roundrobin or leastconn)",
                    self.balance
                ),
            )
        })?;
        let mut servers = Vec::new();
        for (i, b) in self.backend.iter().enumerate() {
            let (addr, weight) = match b.rsplit_once('=') {
                Some((a, w)) => {
                    let w = w
                        .parse::<u32>()
                        .ok()
                        .filter(|w| *w <= MAX_WEIGHT)
                        .ok_or_else(|| {
                            cli_error(
                                "--backend",
                                format!("`{b}`: weight must be from 0 to {MAX_WEIGHT}"),
                            )
                        })?;
                    (a, w)
                }
                None => (b.as_str(), 1),
            };
            let addr = resolve(addr).map_err(|m| cli_error("--backend", m))?;
            servers.push(ServerConfig {
                name: format!("s{}", i + 1),
                addr,
                weight,
                backup: false,
            });
        }
        if servers.iter().all(|s| s.weight == 0) {
            return Err(cli_error("--backend", "every backend has weight 0".into()));
        }
        Ok(Config {
            runtime: RuntimeConfig::default(),
            timeouts: Timeouts::default(),
            listeners: vec![ListenerConfig {
                name: "quick".into(),
                bind,
                pool: 0,
            }],
            pools: vec![PoolConfig {
                name: "quick".into(),
                balance,
                retries: self.retries,
                servers,
            }],
        })
    }
}
