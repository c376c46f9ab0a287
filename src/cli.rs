//! The command line: `ringlb run` (from a file or in quick mode),
//! `ringlb check`, and `ringlb ctl` (the admin API, `control/ctl.rs`).
//!
//! Quick mode describes a configuration with flags; it is built in the raw
//! shape a file is read into, each value naming its flag, and validated by
//! the same rules, so every rule lives in one place (`config::validate`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    build, read_file, Config, ConfigErrors, Item, Origin, RawConfig, RawListener, RawPool,
    RawServer, Report,
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
    /// Talk to a running ringlb through its admin API.
    Ctl(crate::control::ctl::CtlArgs),
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
    /// Quick mode: roundrobin (default) or leastconn.
    #[arg(long)]
    pub balance: Option<String>,
    /// Number of shards (default: one per online CPU; overrides the file).
    #[arg(long)]
    pub shards: Option<usize>,
    /// copy, splice, splice-ring or auto (overrides the file).
    #[arg(long)]
    pub forward: Option<String>,
    /// Most connection pairs held at once, 1 to 10000000 (default: derived
    /// from RLIMIT_NOFILE; overrides the file).
    #[arg(long)]
    pub maxconn: Option<u64>,
    /// Quick mode: connect attempts after the first failure (default 2).
    #[arg(long)]
    pub retries: Option<u32>,
    /// Seconds open connections may take to finish on SIGTERM/SIGINT
    /// (default 30; overrides `runtime.grace`). A second signal resets
    /// them at once.
    #[arg(long)]
    pub grace: Option<u64>,
    /// Take over from the ringlb serving `runtime.control_socket`: receive
    /// its listening sockets, serve them, then tell it to drain and exit
    /// (zero-downtime binary upgrade).
    #[arg(long)]
    pub upgrade: bool,
}

/// A flag's value as the schema holds integers.
fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

fn from_flag<T>(value: T, flag: &'static str) -> Item<T> {
    Item::new(value, Origin::flag(flag))
}

impl RunArgs {
    /// The configuration to run: the file, or one built from the flags;
    /// then the command-line overrides. Either way it goes through the same
    /// validation, and every error (the file's, and the flags') is reported.
    pub fn config(&self) -> Result<Config, ConfigErrors> {
        let (mut raw, report) = match &self.config {
            Some(path) => {
                let (raw, mut report) = read_file(path);
                self.quick_only(&mut report);
                (raw, report)
            }
            None => {
                let mut report = Report::command_line();
                let raw = self.quick_raw(&mut report);
                (raw, report)
            }
        };
        self.overrides(&mut raw);
        build(raw, report)
    }

    /// The flags that only mean something in quick mode.
    fn quick_only(&self, report: &mut Report) {
        for (flag, given) in [
            ("--balance", self.balance.is_some()),
            ("--retries", self.retries.is_some()),
        ] {
            if given {
                report.at(
                    &Origin::flag(flag),
                    flag,
                    "applies only in quick mode (--listen); with --config set it in the file's [[pool]]",
                );
            }
        }
    }

    /// Quick mode: the configuration the flags describe, in the shape a
    /// file would have, with each value naming its flag. One listener and
    /// one pool, both named `quick`; servers named s1, s2, ...
    fn quick_raw(&self, report: &mut Report) -> RawConfig {
        let mut raw = RawConfig::default();
        match &self.listen {
            Some(listen) => raw.listeners.push(RawListener {
                name: Some(from_flag("quick".into(), "--listen")),
                bind: Some(from_flag(listen.clone(), "--listen")),
                pool: Some(from_flag("quick".into(), "--listen")),
                ..RawListener::empty()
            }),
            // Without a listener there is no configuration to check as a
            // whole, but the other flags still are.
            None => {
                report.incomplete(
                    "--config",
                    "give --config FILE, or --listen ADDR with one or more --backend ADDR[=WEIGHT]"
                        .into(),
                );
                if self.backend.is_empty() {
                    return raw;
                }
            }
        }
        let servers = self
            .backend
            .iter()
            .enumerate()
            .map(|(i, b)| quick_server(i, b, report))
            .collect();
        raw.pools.push(RawPool {
            name: Some(from_flag("quick".into(), "--backend")),
            balance: self.balance.clone().map(|b| from_flag(b, "--balance")),
            retries: self.retries.map(|r| from_flag(int(r), "--retries")),
            servers: Some(from_flag(servers, "--backend")),
            ..RawPool::empty(Origin::flag("--backend"))
        });
        raw
    }

    /// The flags that override the file (or quick mode's defaults).
    fn overrides(&self, raw: &mut RawConfig) {
        let rt = &mut raw.runtime;
        if let Some(n) = self.shards {
            rt.shards = Some(from_flag(int(n), "--shards"));
        }
        if let Some(f) = &self.forward {
            rt.forward = Some(from_flag(f.clone(), "--forward"));
        }
        if let Some(n) = self.maxconn {
            rt.maxconn = Some(from_flag(int(n), "--maxconn"));
        }
        if let Some(s) = self.grace {
            rt.grace = Some(from_flag(format!("{s}s"), "--grace"));
        }
    }
}

/// The `i`-th `--backend ADDR[=WEIGHT]`, named `s{i + 1}`.
fn quick_server(i: usize, b: &str, report: &mut Report) -> RawServer {
    let (addr, weight) = match b.rsplit_once('=') {
        Some((addr, w)) => {
            let at = Origin::flag_part("--backend", format!("`{b}`: weight"));
            let weight = match w.parse::<i64>() {
                Ok(w) => Some(Item::new(w, at)),
                Err(_) => {
                    report.at(&at, "--backend", format!("`{w}` is not an integer"));
                    None
                }
            };
            (addr, weight)
        }
        None => (b, None),
    };
    RawServer {
        name: Some(from_flag(format!("s{}", i + 1), "--backend")),
        addr: Some(from_flag(addr.to_string(), "--backend")),
        weight,
        ..RawServer::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BalanceKind, ConfigError};

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from([&["ringlb", "run"], args].concat()).unwrap();
        match cli.command {
            Command::Run(args) => args,
            _ => unreachable!(),
        }
    }

    fn errors(args: &[&str]) -> Vec<ConfigError> {
        run_args(args).config().expect_err("must be rejected").0
    }

    fn shown(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn quick_mode_builds_one_listener_and_pool() {
        let c = run_args(&[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:9001",
            "--backend",
            "[::1]:9002=3",
            "--balance",
            "leastconn",
            "--retries",
            "5",
            "--shards",
            "1",
            "--forward",
            "copy",
        ])
        .config()
        .unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].name, "quick");
        assert_eq!(c.pools[0].name, "quick");
        assert_eq!(c.pools[0].policy.balance, BalanceKind::LeastConn);
        assert_eq!(c.pools[0].policy.retries, 5);
        let servers: Vec<(&str, u32)> = c.pools[0]
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.weight))
            .collect();
        assert_eq!(servers, [("s1", 1), ("s2", 3)]);
        assert_eq!(c.runtime.shards, 1);
        assert_eq!(c.runtime.forward.as_str(), "copy");
    }

    #[test]
    fn retries_get_the_pool_rule() {
        let errs = errors(&[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:9",
            "--retries",
            "500",
        ]);
        assert_eq!(
            shown(&errs),
            ["<command line>: key `--retries`: must be from 0 to 100"]
        );
    }

    #[test]
    fn every_bad_flag_is_reported_at_once() {
        let errs = errors(&[
            "--listen",
            "127.0.0.1",
            "--backend",
            "127.0.0.1:9=999",
            "--backend",
            "127.0.0.1:10=x",
            "--balance",
            "fastest",
            "--retries",
            "101",
            "--shards",
            "0",
            "--forward",
            "teleport",
        ]);
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "--backend",
                "--shards",
                "--forward",
                "--balance",
                "--retries",
                "--backend",
                "--listen"
            ],
            "{:#?}",
            shown(&errs)
        );
        let text = shown(&errs).join("\n");
        for needle in [
            "`127.0.0.1:10=x`: weight `x` is not an integer",
            "must be between 1 and 1024",
            "unknown mode `teleport`",
            "unknown algorithm `fastest`",
            "must be from 0 to 100",
            "`127.0.0.1:9=999`: weight must be from 0 to 256",
            "`127.0.0.1` is not an address",
        ] {
            assert!(text.contains(needle), "`{needle}` in:\n{text}");
        }
        assert!(errs
            .iter()
            .all(|e| e.line.is_none() && e.file.to_str() == Some("<command line>")));
    }

    #[test]
    fn maxconn_flag_gets_the_runtime_rule() {
        let quick = ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"];
        let c = run_args(&[&quick[..], &["--maxconn", "5000"]].concat())
            .config()
            .unwrap();
        assert_eq!(c.runtime.maxconn, Some(5000));
        assert_eq!(run_args(&quick).config().unwrap().runtime.maxconn, None);
        for bad in ["0", "10000001"] {
            let errs = errors(&[&quick[..], &["--maxconn", bad]].concat());
            assert_eq!(
                shown(&errs),
                ["<command line>: key `--maxconn`: must be from 1 to 10000000"]
            );
        }
    }

    #[test]
    fn every_weight_zero_is_the_pools_rule() {
        let errs = errors(&["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9=0"]);
        assert_eq!(
            shown(&errs),
            ["<command line>: key `--backend`: every server of pool `quick` has weight 0, so none can be picked"]
        );
    }

    #[test]
    fn a_missing_listen_is_reported_with_the_other_flags() {
        let errs = errors(&["--backend", "127.0.0.1:9=999", "--shards", "0"]);
        let text = shown(&errs);
        assert_eq!(errs.len(), 3, "{text:#?}");
        assert!(
            text.iter()
                .any(|e| e.contains("key `--config`: give --config FILE")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(|e| e.contains("key `--backend`")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(|e| e.contains("key `--shards`")),
            "{text:#?}"
        );
        let errs = errors(&[]);
        assert_eq!(errs.len(), 1, "{:#?}", shown(&errs));
    }

    #[test]
    fn with_a_file_quick_only_flags_are_errors_beside_the_files() {
        let dir = std::env::temp_dir().join(format!("ringlb-cli-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("lb.toml");
        std::fs::write(
            &file,
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\npool = \"nope\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let errs = errors(&[
            "--config",
            path,
            "--retries",
            "3",
            "--balance",
            "leastconn",
            "--shards",
            "0",
        ]);
        let keys: Vec<(&str, Option<usize>)> =
            errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            [
                ("listener[0].pool", Some(4)),
                ("--balance", None),
                ("--retries", None),
                ("--shards", None)
            ],
            "{:#?}",
            shown(&errs)
        );
        let c = run_args(&["--config", path, "--shards", "1"]).config();
        assert!(c.is_err(), "the file's error stays");
        std::fs::write(
            &file,
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\
             [[pool]]\nname = \"p\"\nservers = [{ name = \"a\", addr = \"127.0.0.1:1\" }]\n\
             [runtime]\nshards = 2\nforward = \"splice\"\n",
        )
        .unwrap();
        let c = run_args(&["--config", path, "--shards", "1", "--forward", "copy"])
            .config()
            .unwrap();
        assert_eq!(c.runtime.shards, 1);
        assert_eq!(c.runtime.forward.as_str(), "copy");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
