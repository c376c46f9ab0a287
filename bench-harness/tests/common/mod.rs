//! Helpers shared by the integration tests: in-process servers and runs.
#![allow(dead_code)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ringlb_bench::engine::{self, RunConfig, RunOutcome};
use ringlb_bench::serve::{self, Mode, ServeConfig, ServerHandle};
use ringlb_bench::target::Target;
use ringlb_bench::workload::{HttpWorkload, Workload};

pub fn serve_cfg(mode: Mode) -> ServeConfig {
    ServeConfig {
        mode,
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        delay: Duration::ZERO,
        stall_once_after: None,
        stall: Duration::ZERO,
    }
}

pub fn start(cfg: ServeConfig) -> ServerHandle {
    serve::start(cfg, None).expect("server starts")
}

pub fn http_server() -> ServerHandle {
    start(serve_cfg(Mode::Http {
        status: 200,
        body_size: 32,
    }))
}

/// A closed-loop HTTP run of `requests` requests.
pub fn http_run(addr: std::net::SocketAddr, threads: usize, conns: usize) -> RunConfig {
    RunConfig {
        target: Target::parse_http(&format!("http://{addr}/")).unwrap(),
        workload: Workload::Http(HttpWorkload::default()),
        threads,
        connections: conns,
        duration: None,
        requests: None,
        rate: None,
        timeout: Duration::from_secs(2),
        warmup: Duration::ZERO,
        cpus: None,
    }
}

pub fn run(cfg: &RunConfig) -> RunOutcome {
    engine::run(cfg, Arc::new(AtomicBool::new(false)), &mut |_| {}).expect("run succeeds")
}
