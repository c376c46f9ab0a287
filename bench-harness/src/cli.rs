//! The command line: `ringlb-bench [OPTIONS] URL` (wrk-compatible flags) plus
//! the `plot` and `serve` subcommands, and its translation into a
//! [`RunConfig`] or [`ServeConfig`] with errors that name the bad input.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::RunConfig;
use crate::serve::{Mode, ServeConfig};
use crate::target::Target;
use crate::units::{parse_duration, parse_rate, parse_size};
use crate::workload::http::parse_header;
use crate::workload::{Direction, EchoWorkload, HttpWorkload, StreamWorkload, Workload};

#[derive(Debug, Parser)]
#[command(
    name = "ringlb-bench",
    version,
    about = "io_uring load generator: wrk-style closed loop, wrk2-style constant rate, HdrHistogram output",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plot latency by percentile from one or more --json reports.
    Plot(PlotArgs),
    /// Run a built-in backend (http, echo, sink, source).
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    Http,
    TcpEcho,
    TcpStream,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Threads (one io_uring event loop each).
    #[arg(short, long, default_value_t = 2)]
    pub threads: usize,
    /// Connections kept open, spread over the threads.
    #[arg(short, long, default_value_t = 10)]
    pub connections: usize,
    /// Measured duration, e.g. 30s, 2m (default 10s unless -n is given).
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Total requests to issue instead of a duration (both: whichever ends first).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Constant rate (open loop), requests per second, e.g. 2000, 10k.
    #[arg(short = 'R', long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Print the full latency percentile spectrum (HdrHistogram text format).
    #[arg(long)]
    pub latency: bool,
    /// With --latency in open loop, also print the uncorrected spectrum.
    #[arg(long)]
    pub u_latency: bool,
    /// Extra request header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Per-request timeout (also for connects).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub timeout: Duration,
    /// Load applied before measuring starts (not counted).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Pin threads to these CPUs, e.g. 0,1 or 0-3.
    // The full path keeps clap from taking `Vec` as "several values of
    // usize": parse_cpus gives the whole list from one value.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<::std::vec::Vec<usize>>,
    /// Workload.
    #[arg(short, long, value_enum, default_value_t = WorkloadKind::Http)]
    pub workload: WorkloadKind,
    /// HTTP: a new TCP connection for every request (Connection: close).
    #[arg(long)]
    pub close: bool,
    /// HTTP method.
    #[arg(short, long, default_value = "GET")]
    pub method: String,
    /// HTTP request body.
    #[arg(long)]
    pub body: Option<String>,
    /// tcp-echo: message size, e.g. 64, 4k.
    #[arg(long, value_parser = parse_size, default_value = "64")]
    pub size: u64,
    /// tcp-stream: upload or download.
    #[arg(long, default_value = "upload")]
    pub direction: Direction,
    /// tcp-stream: bytes per send/receive, e.g. 128k, 1m.
    #[arg(long, value_parser = parse_size, default_value = "1m")]
    pub chunk: u64,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write one histogram per second as an HdrHistogram interval log.
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Label of this run in JSON and plots (default: the target).
    #[arg(long)]
    pub label: Option<String>,
    /// Target: http://host:port/path, or host:port for tcp-echo / tcp-stream.
    #[arg(required = true)]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// JSON reports written with --json.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// svg or png (default: from the output's extension, else svg).
    #[arg(long)]
    pub format: Option<String>,
    /// Plot title.
    #[arg(long, default_value = "Latency by percentile")]
    pub title: String,
    /// Also draw uncorrected latency of open-loop runs (dashed).
    #[arg(long)]
    pub uncorrected: bool,
    /// Image size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x640", value_parser = parse_dims)]
    pub size: (u32, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeKind {
    Http,
    Echo,
    Sink,
    Source,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// What to serve.
    #[arg(value_enum)]
    pub kind: ServeKind,
    /// Address to listen on (port 0 picks one; the bound address is printed).
    #[arg(short, long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Server threads.
    #[arg(short, long, default_value_t = 1)]
    pub threads: usize,
    /// http: response body size, e.g. 0, 64, 16k.
    #[arg(long, value_parser = parse_size, default_value = "64")]
    pub body_size: u64,
    /// http: response status.
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Delay every response by this much.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub delay: Duration,
    /// After this many requests, hold all responses once for --stall.
    #[arg(long)]
    pub stall_once_after: Option<u64>,
    /// Length of the one-time stall.
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    pub stall: Duration,
    /// sink, source: bytes per receive or send (a sink holds one such
    /// buffer per connection).
    #[arg(long, value_parser = parse_size, default_value = "128k")]
    pub chunk: u64,
}

/// Parses `0,1,4-6` into CPU numbers.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("bad CPU list {s:?}: expected e.g. 0,1 or 0-3");
    let mut v = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if a > b {
                    return Err(bad());
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(v)
}

fn parse_dims(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("bad size {s:?}: expected WIDTHxHEIGHT, e.g. 1024x640");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if !(100..=10_000).contains(&w) || !(100..=10_000).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

impl RunArgs {
    /// The run these arguments describe.
    pub fn to_config(&self) -> anyhow::Result<RunConfig> {
        let raw = self.target.as_deref().unwrap_or_default();
        let (target, workload) = match self.workload {
            WorkloadKind::Http => (
                Target::parse_http(raw)?,
                Workload::Http(HttpWorkload {
                    close: self.close,
                    method: self.method.clone(),
                    headers: self.headers.clone(),
                    body: self.body.clone().unwrap_or_default().into_bytes(),
                }),
            ),
            WorkloadKind::TcpEcho => (
                Target::parse_tcp(raw)?,
                Workload::Echo(EchoWorkload {
                    size: self.size as usize,
                }),
            ),
            WorkloadKind::TcpStream => (
                Target::parse_tcp(raw)?,
                Workload::Stream(StreamWorkload {
                    direction: self.direction,
                    chunk: self.chunk as usize,
                }),
            ),
        };
        if self.close && self.workload != WorkloadKind::Http {
            anyhow::bail!("--close applies to the http workload only");
        }
        if !self.method.chars().all(|c| c.is_ascii_uppercase()) || self.method.is_empty() {
            anyhow::bail!(
                "bad method {:?}: expected e.g. GET, POST, HEAD",
                self.method
            );
        }
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        };
        Ok(RunConfig {
            target,
            workload,
            threads: self.threads,
            connections: self.connections,
            duration,
            requests: self.requests,
            rate: self.rate,
            timeout: self.timeout,
            warmup: self.warmup,
            cpus: self.cpus.clone(),
        })
    }
}

impl ServeArgs {
    /// The server these arguments describe.
    pub fn to_config(&self) -> ServeConfig {
        let mode = match self.kind {
            ServeKind::Http => Mode::Http {
                status: self.status,
                body_size: self.body_size as usize,
            },
            ServeKind::Echo => Mode::Echo,
            ServeKind::Sink => Mode::Sink {
                chunk: self.chunk as usize,
            },
            ServeKind::Source => Mode::Source {
                chunk: self.chunk as usize,
            },
        };
        ServeConfig {
            mode,
            listen: self.listen,
            threads: self.threads,
            delay: self.delay,
            stall_once_after: self.stall_once_after,
            stall: self.stall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_style_command_line() {
        let cli = Cli::try_parse_from([
            "ringlb-bench",
            "-t",
            "1",
            "-c",
            "64",
            "-d",
            "30s",
            "-R",
            "10k",
            "--latency",
            "-H",
            "X-A: 1",
            "--timeout",
            "500ms",
            "--warmup",
            "2s",
            "--cpus",
            "0,2-3",
            "http://127.0.0.1:8080/",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let cfg = cli.run.to_config().unwrap();
        assert_eq!(cfg.threads, 1);
        assert_eq!(cfg.connections, 64);
        assert_eq!(cfg.duration, Some(Duration::from_secs(30)));
        assert_eq!(cfg.rate, Some(10_000.0));
        assert_eq!(cfg.timeout, Duration::from_millis(500));
        assert_eq!(cfg.warmup, Duration::from_secs(2));
        assert_eq!(cfg.cpus, Some(vec![0, 2, 3]));
    }

    #[test]
    fn bad_values_are_named() {
        let e = Cli::try_parse_from(["ringlb-bench", "-d", "soon", "http://127.0.0.1:1/"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"soon\""), "{e}");
        let cli = Cli::try_parse_from(["ringlb-bench", "ftp://x/"]).unwrap();
        let e = cli.run.to_config().unwrap_err().to_string();
        assert!(e.contains("ftp://x/"), "{e}");
    }

    #[test]
    fn subcommands() {
        let cli = Cli::try_parse_from(["ringlb-bench", "plot", "a.json", "b.json", "-o", "x.svg"])
            .unwrap();
        assert!(matches!(cli.command, Some(Command::Plot(ref p)) if p.inputs.len() == 2));
        let cli = Cli::try_parse_from([
            "ringlb-bench",
            "serve",
            "http",
            "--listen",
            "127.0.0.1:0",
            "--stall-once-after",
            "100",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Serve(s)) => assert_eq!(s.to_config().stall_once_after, Some(100)),
            _ => panic!(),
        }
        assert_eq!(parse_cpus("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_cpus("3-1").is_err());
    }
}
