//! Built-in backends: `http` (HTTP/1.1 with keep-alive and a fixed response),
//! `echo` (returns every byte), `sink` (discards everything) and `source`
//! (sends without pause). One io_uring loop per thread over one shared
//! listening socket. Fault injection: a fixed `delay` before every response
//! and a one-time server-wide `stall` after the Nth request. Counters are
//! readable while running and printed on exit.

pub mod http;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use thiserror::Error;
use uring_kit::RingError;

/// What the server does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http {
        status: u16,
        body_size: usize,
    },
    Echo,
    /// Discards; receives up to `chunk` bytes at a time.
    Sink {
        chunk: usize,
    },
    /// Sends `chunk` bytes at a time without pause.
    Source {
        chunk: usize,
    },
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub mode: Mode,
    pub listen: SocketAddr,
    pub threads: usize,
    /// Wait this long before every response (http, echo).
    pub delay: Duration,
    /// After this many requests, stall every response once for `stall`.
    pub stall_once_after: Option<u64>,
    pub stall: Duration,
}

/// A server that could not start.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server thread failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid server settings: {0}")]
    Config(String),
    /// io_uring cannot be used here (the message names the usual causes).
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// Live server counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub connections: AtomicU64,
    /// Connections open now, and the most open at once (counted out when
    /// the server starts closing one, before its FIN can leave).
    pub open: AtomicU64,
    pub peak: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub requests: u64,
    pub connections: u64,
    pub peak_connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl std::fmt::Display for CounterSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} connections={} peak_connections={} bytes_in={} bytes_out={}",
            self.requests, self.connections, self.peak_connections, self.bytes_in, self.bytes_out
        )
    }
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            peak_connections: self.peak.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// State shared by the server threads.
pub(crate) struct ServerShared {
    pub cfg: ServeConfig,
    pub listener: Socket,
    pub counters: Counters,
    pub stop: Arc<AtomicBool>,
    /// Monotonic ns until which responses are held (the one-time stall).
    pub stall_until: AtomicU64,
    pub responses: http::Responses,
    pub source: Vec<u8>,
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<ServerShared>,
    threads: Vec<JoinHandle<Result<(), ServeError>>>,
}

impl ServerHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// The flag that stops the server when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.shared.stop.clone()
    }

    /// Stops accepting, closes every connection, waits for the threads.
    pub fn stop(self) -> Result<CounterSnapshot, ServeError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Waits until the stop flag is set and the threads have finished.
    pub fn join(self) -> Result<CounterSnapshot, ServeError> {
        let mut err = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => err = err.or(Some(e)),
                Err(_) => {
                    err = err.or(Some(ServeError::Io(std::io::Error::other(
                        "server thread panicked",
                    ))))
                }
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(self.shared.counters.snapshot()),
        }
    }
}

/// Binds and starts a server; `stop` (if given) stops it when set.
pub fn start(cfg: ServeConfig, stop: Option<Arc<AtomicBool>>) -> Result<ServerHandle, ServeError> {
    if cfg.threads == 0 {
        return Err(ServeError::Config("threads must be at least 1".into()));
    }
    if let Mode::Http { status, .. } = cfg.mode {
        if !(100..=999).contains(&status) {
            return Err(ServeError::Config(format!(
                "bad status {status}: expected 100..999"
            )));
        }
    }
    // Before binding: a denied io_uring is said at once, not after
    // "listening on".
    uring_kit::probe()?;
    let listen_err = |source| ServeError::Listen {
        addr: cfg.listen,
        source,
    };
    let sock = Socket::new(
        Domain::for_address(cfg.listen),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(listen_err)?;
    sock.set_reuse_address(true).map_err(listen_err)?;
    sock.bind(&SockAddr::from(cfg.listen)).map_err(listen_err)?;
    sock.listen(4096).map_err(listen_err)?;
    let addr = sock
        .local_addr()
        .map_err(listen_err)?
        .as_socket()
        .ok_or_else(|| listen_err(std::io::Error::other("not an IP address")))?;
    let responses = match cfg.mode {
        Mode::Http { status, body_size } => http::Responses::new(status, body_size),
        _ => http::Responses::new(200, 0),
    };
    let source = match cfg.mode {
        Mode::Source { chunk } => vec![0xa5; chunk.max(1)],
        _ => Vec::new(),
    };
    let threads = cfg.threads;
    let shared = Arc::new(ServerShared {
        cfg,
        listener: sock,
        counters: Counters::default(),
        stop: stop.unwrap_or_default(),
        stall_until: AtomicU64::new(0),
        responses,
        source,
    });
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let sh = shared.clone();
        let h = std::thread::Builder::new()
            .name(format!("ringlb-serve-{t}"))
            .spawn(move || server::run(sh))?;
        handles.push(h);
    }
    Ok(ServerHandle {
        addr,
        shared,
        threads: handles,
    })
}
