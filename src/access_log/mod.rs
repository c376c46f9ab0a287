//! The access log (`[log] access`): one line per connection, written by
//! one thread off the data path.
//!
//! Each shard owns a bounded lock-free queue of fixed-size [`Record`]s
//! (one producer: the shard; one consumer: the writer). A shard never
//! waits: when its queue is full the line is dropped and counted in the
//! shard's `access_log_dropped`. The writer drains every queue in turns,
//! formats lines into one buffer and writes it with one `write(2)` per
//! batch; when idle it sleeps for [`IDLE`]. A reload reopens the file (log
//! rotation).
//!
//! - `record.rs`: what a line says, and the termination codes.
//! - `format.rs`: the `text` and `json` line formats.

pub mod format;
pub mod record;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::config::{AccessLogConfig, AccessTarget};
use format::{LineFormat, WallClock};
pub use record::{Cause, Name, Phase, Record};

/// How long the writer sleeps when every queue is empty.
pub const IDLE: Duration = Duration::from_millis(20);

/// How long stopping waits for the writer to finish.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// Bytes formatted before they are written out, within a batch.
const BATCH_BYTES: usize = 64 * 1024;

/// Where a shard puts its records.
pub type AccessQueue = Arc<ArrayQueue<Record>>;

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("cannot open the access log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the access log thread: {0}")]
    Thread(std::io::Error),
}

/// What the writer has done, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub written: u64,
    pub write_errors: u64,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    reopen: AtomicBool,
    written: AtomicU64,
    write_errors: AtomicU64,
}

/// The running writer and the shards' queues.
pub struct AccessLog {
    queues: Vec<AccessQueue>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

enum Sink {
    /// A copy of fd 2, written without `std::io::stderr()`'s lock (which
    /// ringlb's own log takes: a blocked access log write must not hold
    /// it).
    Stderr(File),
    File {
        path: PathBuf,
        file: File,
    },
}

fn open(path: &Path) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stderr(file) | Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match open(path) {
                Ok(f) => {
                    *file = f;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(e) => tracing::error!("{e}; still writing to the file opened before"),
            }
        }
    }
}

impl AccessLog {
    /// Opens the destination and starts the writer, with one queue per
    /// shard.
    pub fn start(config: &AccessLogConfig, shards: usize) -> Result<AccessLog, AccessLogError> {
        let sink = match &config.target {
            AccessTarget::Stderr => {
                Sink::Stderr(File::from(crate::net::dup_fd(2).map_err(|source| {
                    AccessLogError::Open {
                        path: PathBuf::from("stderr"),
                        source,
                    }
                })?))
            }
            AccessTarget::File(path) => Sink::File {
                path: path.clone(),
                file: open(path)?,
            },
        };
        let queues: Vec<AccessQueue> = (0..shards)
            .map(|_| Arc::new(ArrayQueue::new(config.queue)))
            .collect();
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            queues: queues.clone(),
            shared: shared.clone(),
            sink,
            format: LineFormat::new(config.format),
            failing: false,
        };
        let thread = std::thread::Builder::new()
            .name("ringlb-access-log".into())
            .spawn(move || writer.run())
            .map_err(AccessLogError::Thread)?;
        Ok(AccessLog {
            queues,
            shared,
            thread: Some(thread),
        })
    }

    /// Shard `shard`'s queue.
    pub fn queue(&self, shard: usize) -> AccessQueue {
        self.queues[shard].clone()
    }

    /// Reopens the file at its path (after a rotation); nothing for stderr.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            written: self.shared.written.load(Ordering::Relaxed),
            write_errors: self.shared.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Writes what the queues still hold and ends the writer. Call once
    /// the shards are gone. A writer stuck in a write (a full pipe, a hung
    /// disk) is left behind after [`STOP_WAIT`], so it cannot hold up the
    /// process's exit.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let Some(t) = self.thread.take() else { return };
        t.thread().unpark();
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while !t.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            let left: usize = self.queues.iter().map(|q| q.len()).sum();
            tracing::warn!(
                "the access log writer is blocked in a write; leaving it ({left} lines not written)"
            );
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Writer {
    queues: Vec<AccessQueue>,
    shared: Arc<Shared>,
    sink: Sink,
    format: LineFormat,
    /// The last write failed (logged once per change of state).
    failing: bool,
}

impl Writer {
    fn run(mut self) {
        let mut out = Vec::with_capacity(BATCH_BYTES * 2);
        loop {
            // Read before draining: a record queued before the stop is
            // then always drained.
            let stopping = self.shared.stop.load(Ordering::Acquire);
            if self.shared.reopen.swap(false, Ordering::Relaxed) {
                self.sink.reopen();
            }
            let clock = WallClock::now();
            // One pass: up to 256 records per queue, so that one busy shard
            // does not starve the others' lines, and a reopen is never
            // further away than one pass.
            let mut lines = 0;
            for q in &self.queues {
                for _ in 0..256 {
                    let Some(r) = q.pop() else { break };
                    self.format.line(&mut out, &r, &clock);
                    lines += 1;
                    if out.len() >= BATCH_BYTES {
                        break;
                    }
                }
            }
            self.flush(&mut out, lines);
            if lines == 0 {
                if stopping {
                    return;
                }
                std::thread::park_timeout(IDLE);
            }
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>, lines: u64) {
        if out.is_empty() {
            return;
        }
        match self.sink.write_all(out) {
            Ok(()) => {
                self.shared.written.fetch_add(lines, Ordering::Relaxed);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("access log writes succeed again");
                }
            }
            Err(e) => {
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(
                        "cannot write the access log: {e}; lines are lost until a write succeeds"
                    );
                }
            }
        }
        out.clear();
    }
}
