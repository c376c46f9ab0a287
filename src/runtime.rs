//! Starting and stopping the data plane: binds every listener once per
//! shard, starts one pinned thread per shard, and keeps the control side's
//! links to them (command queues, counters).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::config::Config;
use crate::net::{bind_reuseport_group, close_fd};
use crate::pool::Pools;
use crate::shard::{
    ring, Command, Counters, RingError, RingFlags, Shard, ShardLink, ShardSpec, ShardStats,
};

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("cannot listen on {addr} (listener `{name}`): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot register the provided-buffer ring: {0}")]
    Buffers(std::io::Error),
    #[error("cannot create the shard's eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("cannot start a shard thread: {0}")]
    Thread(std::io::Error),
    #[error("shard {0} stopped during start-up")]
    ShardDied(usize),
}

/// A bound listener.
#[derive(Debug, Clone)]
pub struct BoundListener {
    pub name: String,
    pub addr: SocketAddr,
}

/// The running data plane.
pub struct Runtime {
    links: Vec<ShardLink>,
    threads: Vec<JoinHandle<()>>,
    listeners: Vec<BoundListener>,
    pools: Arc<Pools>,
    ring_flags: RingFlags,
}

impl Runtime {
    /// Binds the listeners and starts the shards. Returns once every shard
    /// has its ring and is accepting.
    pub fn start(config: &Config) -> Result<Runtime, StartError> {
        ring::probe()?;
        // SAFETY: ignoring SIGPIPE process-wide: a write to a closed peer
        // (splice(2) has no MSG_NOSIGNAL) must be an EPIPE, not a kill.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let shards = config.runtime.shards.max(1);
        let pools = Pools::from_config(config);
        // per_shard[i]: shard i's listening fd for each listener, with its pool.
        let mut per_shard: Vec<Vec<(RawFd, usize)>> = vec![Vec::new(); shards];
        let mut listeners = Vec::new();
        let close_all = |per_shard: &[Vec<(RawFd, usize)>]| {
            per_shard.iter().flatten().for_each(|&(fd, _)| close_fd(fd));
        };
        for l in &config.listeners {
            let (fds, addr) = bind_reuseport_group(l.bind, shards).map_err(|source| {
                close_all(&per_shard);
                StartError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                }
            })?;
            for (shard, fd) in per_shard.iter_mut().zip(fds) {
                shard.push((fd, l.pool));
            }
            listeners.push(BoundListener {
                name: l.name.clone(),
                addr,
            });
        }
        let cpus = pick_cpus(&config.runtime.cpus, shards);
        let (ready_tx, ready_rx) = mpsc::channel();
        // Built up as shards start, so that an error stops those already
        // running (Drop) and closes the listening fds not yet handed over.
        let mut runtime = Runtime {
            links: Vec::new(),
            threads: Vec::new(),
            listeners,
            pools: pools.clone(),
            ring_flags: RingFlags::Plain,
        };
        let mut per_shard = per_shard.into_iter();
        for (id, cpu) in cpus.into_iter().enumerate() {
            let shard_listeners = per_shard.next().unwrap_or_default();
            // SAFETY: eventfd(2) with valid flags; the result is checked.
            let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if wake < 0 {
                let err = std::io::Error::last_os_error();
                close_all(&[shard_listeners]);
                close_all(&per_shard.collect::<Vec<_>>());
                return Err(StartError::EventFd(err));
            }
            let commands = Arc::new(ArrayQueue::new(64));
            let stats = Arc::new(ShardStats::default());
            let spec = ShardSpec {
                id,
                listeners: shard_listeners,
                pools: pools.clone(),
                timeouts: config.timeouts,
                forward: config.runtime.forward,
                buffer_size: config.runtime.buffer_size,
                buffers: config.runtime.buffers,
                pipes: config.runtime.pipes,
                pipe_size: config.runtime.pipe_size,
                commands: commands.clone(),
                wake,
                stats: stats.clone(),
            };
            runtime.links.push(ShardLink {
                commands,
                wake,
                stats,
            });
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringlb-shard-{id}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if !core_affinity::set_for_current(cpu) {
                            tracing::warn!(shard = id, cpu = cpu.id, "cannot pin shard to its CPU");
                        }
                    }
                    match Shard::new(spec) {
                        Ok((shard, flags)) => {
                            let _ = ready.send(Ok(flags));
                            shard.run();
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })
                .map_err(|e| {
                    close_all(&per_shard.clone().collect::<Vec<_>>());
                    StartError::Thread(e)
                })?;
            runtime.threads.push(thread);
        }
        drop(ready_tx);
        let mut ring_flags = RingFlags::Plain;
        for id in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(flags)) => ring_flags = flags,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(StartError::ShardDied(id)),
            }
        }
        runtime.ring_flags = ring_flags;
        Ok(runtime)
    }

    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The address listener `name` is bound to (its real port when the
    /// configuration asked for port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.addr)
    }

    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    pub fn shards(&self) -> usize {
        self.links.len()
    }

    pub fn ring_flags(&self) -> RingFlags {
        self.ring_flags
    }

    /// Counters of each shard.
    pub fn shard_counters(&self) -> Vec<Counters> {
        self.links.iter().map(|l| l.stats.read()).collect()
    }

    /// Counters summed over the shards.
    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for c in self.shard_counters() {
            total.add(&c);
        }
        total
    }

    /// Stops accepting, lets open pairs finish for up to `grace`, and waits
    /// for every shard thread to end. Counters stay readable.
    pub fn stop(&mut self, grace: Duration) {
        for link in &self.links {
            if link.wake < 0 {
                continue;
            }
            while !link.send(Command::Stop { grace }) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for link in &mut self.links {
            if link.wake >= 0 {
                close_fd(link.wake);
                link.wake = -1;
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// The CPU each shard is pinned to: `cpus[i % len]` when given, else the
/// i-th CPU this process may run on.
fn pick_cpus(cpus: &[usize], shards: usize) -> Vec<Option<core_affinity::CoreId>> {
    let available = core_affinity::get_core_ids().unwrap_or_default();
    (0..shards)
        .map(|i| {
            if cpus.is_empty() {
                if available.is_empty() {
                    None
                } else {
                    Some(available[i % available.len()])
                }
            } else {
                Some(core_affinity::CoreId {
                    id: cpus[i % cpus.len()],
                })
            }
        })
        .collect()
}
