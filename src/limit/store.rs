//! The store client: one control-side thread that answers the shards'
//! lease requests (`shared.rs`) from Redis, off the data path.
//!
//! Each round it drains every shard's request queue, sends the requests
//! for one store as one pipeline of `EVALSHA` calls (one Lua script per
//! algorithm, `lua/*.lua`, each atomic in Redis and timed by Redis's own
//! clock, so instances on different hosts agree), and queues the answers
//! back to each shard, ringing its eventfd once. With nothing to do it
//! parks until a shard unparks it.
//!
//! A store that cannot be reached, fails, or answers slower than the
//! limit's `store_timeout` gets every request of the round answered with a
//! failure (the shards then decide by `on_store_error`); the connection is
//! dropped and made again after a back-off from [`BACKOFF_MIN`] doubling
//! to [`BACKOFF_MAX`]; requests meanwhile fail at once. Going down and
//! coming back are logged once each.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::algorithm::Algorithm;
use super::shared::{Grant, LeaseQueues, LeaseReply, LeaseRequest, SharedLimit};

pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The most a connection and its scripts' loading may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(1);

/// Requests sent to a store in one pipeline, at most.
const ROUND: usize = 4096;

/// The scripts, in `script_index` order, each after the prelude.
const SCRIPTS: [&str; 5] = [
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/token_bucket.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/leaky_bucket.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/fixed_window.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/sliding_log.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/sliding_window.lua")
    ),
];

fn script_index(a: Algorithm) -> usize {
    match a {
        Algorithm::TokenBucket => 0,
        Algorithm::LeakyBucket => 1,
        Algorithm::FixedWindow => 2,
        Algorithm::SlidingLog => 3,
        Algorithm::SlidingWindow => 4,
    }
}

/// `url` without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

struct Shared {
    shards: OnceLock<Vec<Arc<LeaseQueues>>>,
    stop: AtomicBool,
}

/// The store client's thread.
pub struct LimitStore {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LimitStore {
    /// Starts the thread; it serves nothing until [`LimitStore::serve`].
    pub fn start() -> std::io::Result<LimitStore> {
        let shared = Arc::new(Shared {
            shards: OnceLock::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ringlb-limit-store".into())
            .spawn(move || run(&s))?;
        Ok(LimitStore {
            shared,
            thread: Some(thread),
        })
    }

    /// What shards unpark after queueing a request.
    pub fn waker(&self) -> Option<Thread> {
        self.thread.as_ref().map(|t| t.thread().clone())
    }

    /// Serves these shards' queues from now on.
    pub fn serve(&self, shards: Vec<Arc<LeaseQueues>>) {
        let _ = self.shared.shards.set(shards);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Ends the thread (before the shards' eventfds close).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for LimitStore {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One store's connection and its state.
struct Store {
    con: Option<redis::Connection>,
    /// The scripts' SHA1s, once loaded on this connection.
    hashes: Vec<String>,
    /// Down since an error; not tried again before `retry_at`.
    down: bool,
    retry_at: Instant,
    backoff: Duration,
}

impl Store {
    fn new() -> Store {
        Store {
            con: None,
            hashes: Vec::new(),
            down: false,
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
        }
    }

    fn connect(&mut self, url: &str, timeout: Duration) -> redis::RedisResult<()> {
        // Setting up (the connect, loading the scripts) may take longer
        // than an answer: clients are decided by their own timers meanwhile.
        let setup = timeout.max(SETUP_TIMEOUT);
        let client = redis::Client::open(url)?;
        let mut con = client.get_connection_with_timeout(setup)?;
        con.set_read_timeout(Some(setup))?;
        con.set_write_timeout(Some(setup))?;
        let mut hashes = Vec::with_capacity(SCRIPTS.len());
        for code in SCRIPTS {
            hashes.push(
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(code)
                    .query::<String>(&mut con)?,
            );
        }
        con.set_read_timeout(Some(timeout))?;
        con.set_write_timeout(Some(timeout))?;
        self.con = Some(con);
        self.hashes = hashes;
        Ok(())
    }

    /// Answers `requests` (all for this store), or fails them all.
    fn answer(&mut self, url: &str, requests: &[&LeaseRequest]) -> Option<Vec<Grant>> {
        let timeout = requests[0].limit.timeout;
        let now = Instant::now();
        if self.con.is_none() {
            if self.down && now < self.retry_at {
                return None;
            }
            if let Err(e) = self.connect(url, timeout) {
                self.failed(url, &e);
                return None;
            }
        }
        let mut pipe = redis::pipe();
        for r in requests {
            let l: &SharedLimit = &r.limit;
            pipe.cmd("EVALSHA")
                .arg(&self.hashes[script_index(l.algorithm)])
                .arg(1)
                .arg(l.key(r.key))
                .arg(l.rate.limit)
                .arg(l.rate.window_us)
                .arg(l.burst)
                .arg(r.want)
                .arg(l.lease_us);
        }
        let con = self.con.as_mut().expect("connected above");
        match pipe.query::<Vec<(i64, i64, i64, i64)>>(con) {
            Ok(answers) => {
                if self.down {
                    tracing::info!(store = %redact(url), "limit store reachable again: shared limits apply");
                }
                self.down = false;
                self.backoff = BACKOFF_MIN;
                Some(
                    answers
                        .into_iter()
                        .map(|(granted, retry, valid, first)| Grant {
                            granted: granted.clamp(0, u32::MAX as i64) as u32,
                            retry_us: retry.max(0) as u64,
                            valid_us: valid.max(0) as u64,
                            first_delay_us: first.max(0) as u64,
                        })
                        .collect(),
                )
            }
            Err(e) => {
                self.failed(url, &e);
                None
            }
        }
    }

    fn failed(&mut self, url: &str, e: &redis::RedisError) {
        // A late answer would desynchronise the connection: start afresh.
        self.con = None;
        if !self.down {
            tracing::warn!(
                store = %redact(url),
                "limit store unreachable or failing: {e}; on_store_error decides until it answers again"
            );
        }
        self.down = true;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

fn ring(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to the shard's eventfd, which
    // the runtime closes only after this thread has ended.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn run(shared: &Shared) {
    let shards = loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        if let Some(s) = shared.shards.get() {
            break s;
        }
        std::thread::park();
    };
    let mut stores: HashMap<String, Store> = HashMap::new();
    let mut round: Vec<(usize, LeaseRequest)> = Vec::with_capacity(ROUND);
    while !shared.stop.load(Ordering::Acquire) {
        round.clear();
        for (i, q) in shards.iter().enumerate() {
            while round.len() < ROUND {
                match q.requests.pop() {
                    Some(r) => round.push((i, r)),
                    None => break,
                }
            }
        }
        if round.is_empty() {
            std::thread::park_timeout(Duration::from_secs(1));
            continue;
        }
        let mut rang = vec![false; shards.len()];
        let mut urls: Vec<&str> = round.iter().map(|(_, r)| r.limit.url.as_str()).collect();
        urls.sort_unstable();
        urls.dedup();
        for url in urls {
            let batch: Vec<&(usize, LeaseRequest)> =
                round.iter().filter(|(_, r)| r.limit.url == url).collect();
            let requests: Vec<&LeaseRequest> = batch.iter().map(|(_, r)| r).collect();
            let store = stores.entry(url.to_string()).or_insert_with(Store::new);
            let grants = store.answer(url, &requests);
            for (n, (shard, r)) in batch.iter().enumerate() {
                let reply = LeaseReply {
                    listener: r.listener,
                    key: r.key,
                    grant: grants.as_ref().map(|g| g[n]),
                };
                // A full queue loses the answer: the shard asks again after
                // the timeout, its clients decided by `on_store_error`.
                let _ = shards[*shard].replies.push(reply);
                rang[*shard] = true;
            }
        }
        for (i, r) in rang.into_iter().enumerate() {
            if r {
                ring(shards[i].wake);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("redis://user:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }
}
