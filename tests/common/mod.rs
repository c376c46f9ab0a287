//! In-process backends and a ringlb runtime on ephemeral loopback ports,
//! shared by the end-to-end tests.
#![allow(dead_code)]

pub mod binary;
pub mod netns;
pub mod redis;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringlb::config::{
    BalanceKind, Config, ForwardMode, ListenerConfig, PoolConfig, RuntimeConfig, ServerConfig,
    Timeouts,
};
use ringlb::Runtime;

/// What a backend does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Returns every byte until the client's FIN, then sends its own FIN.
    Echo,
    /// Writes its id byte, then holds the connection open until the client
    /// closes it.
    Id(u8),
    /// Reads until FIN, then replies with the byte count (8 bytes, LE) and
    /// the data again, then FIN: proves the reply travels after a half-close.
    ReplyAfterFin,
    /// Resets the connection (SO_LINGER 0) after reading one byte.
    ResetAfterByte,
    /// Writes this many bytes of `pattern(i)` as fast as it can, then FIN.
    Blast(usize),
    /// Never reads nor writes; holds the connection until the backend is
    /// dropped (at most 30 s).
    Stall,
    /// Reads one line, appends it to the backend's `log`, sends it back,
    /// then holds the connection until the client closes it.
    Record,
    /// Reads one byte, waits this many milliseconds, writes its id byte,
    /// then holds the connection until the client closes it.
    SlowId(u8, u64),
}

/// The byte at offset `i` of a `Blast` stream.
pub fn pattern(i: usize) -> u8 {
    (i % 253) as u8 ^ (i >> 16) as u8
}

/// A backend on 127.0.0.1 with a thread per connection.
pub struct Backend {
    pub addr: SocketAddr,
    /// Connections open right now / ever accepted / most open at once.
    pub active: Arc<AtomicUsize>,
    pub accepted: Arc<AtomicUsize>,
    pub peak: Arc<AtomicUsize>,
    /// The lines `Record` read, in the order their connections sent them.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Set when a connection ended with a read error or reset from ringlb.
    pub saw_reset: Arc<AtomicBool>,
    /// Set when a connection ended with a clean EOF from ringlb.
    pub saw_eof: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    pub fn start(behaviour: Behaviour) -> Backend {
        Self::start_on("127.0.0.1:0".parse().unwrap(), behaviour)
    }

    /// A backend on `addr` (e.g. the port of a server that was down).
    pub fn start_on(addr: SocketAddr, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let active = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let saw_reset = Arc::new(AtomicBool::new(false));
        let saw_eof = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let b = Backend {
            addr,
            active: active.clone(),
            accepted: accepted.clone(),
            peak: peak.clone(),
            log: log.clone(),
            saw_reset: saw_reset.clone(),
            saw_eof: saw_eof.clone(),
            stop: stop.clone(),
        };
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let log = log.clone();
                let (active, saw_reset, saw_eof, stop) = (
                    active.clone(),
                    saw_reset.clone(),
                    saw_eof.clone(),
                    stop.clone(),
                );
                thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        let mut stream = stream;
                        match serve(&mut stream, behaviour, &stop, &log) {
                            Ok(()) => saw_eof.store(true, Ordering::SeqCst),
                            Err(_) => saw_reset.store(true, Ordering::SeqCst),
                        }
                        // Counted out before the close can reach ringlb.
                        active.fetch_sub(1, Ordering::SeqCst);
                        drop(stream);
                    })
                    .unwrap();
            }
        });
        b
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    s: &mut TcpStream,
    behaviour: Behaviour,
    stop: &AtomicBool,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    match behaviour {
        Behaviour::Echo => loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                s.shutdown(Shutdown::Write)?;
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        },
        Behaviour::Id(id) => {
            s.write_all(&[id])?;
            while s.read(&mut buf)? > 0 {}
            Ok(())
        }
        Behaviour::ReplyAfterFin => {
            let mut all = Vec::new();
            s.read_to_end(&mut all)?;
            s.write_all(&(all.len() as u64).to_le_bytes())?;
            s.write_all(&all)?;
            s.shutdown(Shutdown::Write)?;
            Ok(())
        }
        Behaviour::Blast(n) => {
            let data: Vec<u8> = (0..n).map(pattern).collect();
            s.write_all(&data)?;
            s.shutdown(Shutdown::Write)?;
            while s.read(&mut buf)? > 0 {}
            Ok(())
        }
        Behaviour::Stall => {
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
        Behaviour::Record => {
            let mut line = Vec::new();
            let mut one = [0u8; 1];
            while s.read(&mut one)? == 1 && one[0] != b'\n' {
                line.push(one[0]);
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            log.lock().unwrap().push(line.clone());
            s.write_all(format!("{line}\n").as_bytes())?;
            while s.read(&mut buf)? > 0 {}
            Ok(())
        }
        Behaviour::SlowId(id, ms) => {
            let mut one = [0u8; 1];
            s.read_exact(&mut one)?;
            thread::sleep(Duration::from_millis(ms));
            s.write_all(&[id])?;
            while s.read(&mut buf)? > 0 {}
            Ok(())
        }
        Behaviour::ResetAfterByte => {
            let mut one = [0u8; 1];
            s.read_exact(&mut one)?;
            socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO))?;
            Ok(())
        }
    }
}

/// A loopback address nothing listens on (a port bound, then freed).
pub fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Connects to `addr` from source address `src` (any 127.x.y.z).
/// One connection from `src` to an echo behind `addr`: true when its
/// bytes came back (false when refused, reset or closed).
pub fn echoed_from(src: &str, addr: SocketAddr) -> bool {
    let Some(mut c) = try_connect_from(src, addr) else {
        return false;
    };
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if c.write_all(b"hi").is_err() {
        return false;
    }
    let _ = c.shutdown(Shutdown::Write);
    let mut back = Vec::new();
    c.read_to_end(&mut back).is_ok() && back == b"hi"
}

/// Like [`connect_from`], but a connect that fails is `None`: under a
/// flood of refusals the reset may reach the client before its connect
/// returns.
pub fn try_connect_from(src: &str, addr: SocketAddr) -> Option<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{src}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect(&addr.into()).ok()?;
    Some(sock.into())
}

pub fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{src}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.into()
}

/// Builds a one-listener, one-pool configuration on 127.0.0.1:0.
pub fn config(
    servers: &[(SocketAddr, u32)],
    balance: BalanceKind,
    shards: usize,
    forward: ForwardMode,
) -> Config {
    Config {
        runtime: RuntimeConfig {
            shards,
            forward,
            ..RuntimeConfig::default()
        },
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            client_idle: Duration::from_secs(30),
            server_idle: Duration::from_secs(30),
            queue: Duration::from_secs(5),
            proxy_header: Duration::from_secs(3),
        },
        admin: None,
        access_log: None,
        listeners: vec![ListenerConfig::new(
            "test",
            "127.0.0.1:0".parse().unwrap(),
            0,
        )],
        pools: vec![PoolConfig::new(
            "p",
            balance,
            servers
                .iter()
                .enumerate()
                .map(|(i, &(addr, weight))| ServerConfig {
                    weight,
                    ..ServerConfig::new(&format!("s{i}"), addr)
                })
                .collect(),
        )],
    }
}

/// `shards` shards, one listener with `limit`, in front of `server`.
pub fn limited_config(
    server: SocketAddr,
    shards: usize,
    limit: ringlb::config::LimitConfig,
) -> Config {
    let mut cfg = config(
        &[(server, 1)],
        BalanceKind::RoundRobin,
        shards,
        ForwardMode::Auto,
    );
    cfg.listeners[0].limit = Some(limit);
    cfg
}

/// One shard, one listener taking PROXY headers (header deadline 5 s), in
/// front of `server`.
pub fn accept_proxy_config(server: SocketAddr) -> Config {
    let mut cfg = config(
        &[(server, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Auto,
    );
    cfg.listeners[0].accept_proxy = true;
    cfg.timeouts.proxy_header = Duration::from_secs(5);
    cfg
}

pub fn start(config: &Config) -> (Runtime, SocketAddr) {
    let rt = Runtime::start(config).expect("ringlb starts");
    let addr = rt.listener_addr("test").unwrap();
    (rt, addr)
}

/// Polls `f` until it is true or `limit` passes; returns whether it became true.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// Waits until ringlb holds no pair and no buffer, no server slot is
/// counted and no client waits in a queue.
pub fn assert_drained(rt: &Runtime) {
    let ok = wait_until(Duration::from_secs(5), || {
        let c = rt.counters();
        c.active == 0 && c.buffers_in_use == 0
    });
    assert!(
        ok,
        "ringlb still holds pairs or buffers: {:?}",
        rt.counters()
    );
    // Every close cancelled exactly what its pair had in flight.
    assert_eq!(rt.counters().cancel_fallbacks, 0, "{:?}", rt.counters());
    for pool in &rt.pools().pools {
        for s in &pool.servers {
            assert_eq!(
                s.live.active(),
                0,
                "pool {} server {}: slots still counted",
                pool.name,
                s.name
            );
        }
        assert_eq!(
            pool.queue.len(),
            0,
            "pool {}: clients still counted in the queue",
            pool.name
        );
    }
}

/// Open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
