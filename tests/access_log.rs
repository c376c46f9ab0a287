//! The access log: one line per connection with the documented fields and
//! termination codes, checked against what each client did; and a writer
//! that cannot keep up drops (and counts) lines without slowing clients.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{connect_from, dead_addr, wait_until, Backend, Behaviour};
use ringlb::config::{
    AccessFormat, AccessLogConfig, AccessTarget, BalanceKind, Config, ForwardMode, ListenerConfig,
    PoolConfig, ServerConfig,
};
use ringlb::Runtime;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringlb-access-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn server(addr: SocketAddr) -> ServerConfig {
    ServerConfig::new("s0", addr)
}

/// The access log to a file.
fn to_file(path: &Path, format: AccessFormat, queue: usize) -> AccessLogConfig {
    AccessLogConfig {
        target: AccessTarget::File(path.to_path_buf()),
        format,
        queue,
    }
}

/// Listeners `echo`, `reset` and `dead`, each with a pool of the same name
/// and one server.
fn config(echo: SocketAddr, reset: SocketAddr, dead: SocketAddr, log: AccessLogConfig) -> Config {
    let mut c = common::config(&[(echo, 1)], BalanceKind::RoundRobin, 2, ForwardMode::Auto);
    c.timeouts.client_idle = Duration::from_millis(500);
    c.pools = ["echo", "reset", "dead"]
        .iter()
        .zip([echo, reset, dead])
        .map(|(name, addr)| PoolConfig::new(name, BalanceKind::RoundRobin, vec![server(addr)]))
        .collect();
    c.listeners = ["echo", "reset", "dead"]
        .iter()
        .enumerate()
        .map(|(pool, name)| ListenerConfig::new(name, "127.0.0.1:0".parse().unwrap(), pool))
        .collect();
    c.access_log = Some(log);
    c
}

/// A text line split into its documented fields.
#[derive(Debug)]
struct Line {
    time: SystemTime,
    client: String,
    listener: String,
    pool_server: String,
    server_addr: String,
    times: [f64; 3],
    bytes_in: u64,
    bytes_out: u64,
    code: String,
    attempts: u32,
}

fn parse(line: &str) -> Line {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 10, "ten fields: {line}");
    let times: Vec<f64> = f[5].split('/').map(|t| t.parse().unwrap()).collect();
    Line {
        time: humantime::parse_rfc3339(f[0]).unwrap(),
        client: f[1].into(),
        listener: f[2].into(),
        pool_server: f[3].into(),
        server_addr: f[4].into(),
        times: [times[0], times[1], times[2]],
        bytes_in: f[6].parse().unwrap(),
        bytes_out: f[7].parse().unwrap(),
        code: f[8].into(),
        attempts: f[9].parse().unwrap(),
    }
}

/// Lines by client IP (each case below connects from its own address).
fn by_client_ip(text: &str) -> HashMap<String, Vec<Line>> {
    let mut out: HashMap<String, Vec<Line>> = HashMap::new();
    for l in text.lines().map(parse) {
        let ip = l.client.rsplit_once(':').unwrap().0.to_string();
        out.entry(ip).or_default().push(l);
    }
    out
}

#[test]
fn every_line_says_how_its_connection_ended() {
    let echo = Backend::start(Behaviour::Echo);
    let reset = Backend::start(Behaviour::ResetAfterByte);
    let dead = dead_addr();
    let d = dir("codes");
    let path = d.join("access.log");
    let log = to_file(&path, AccessFormat::Text, 1024);
    let rt = Runtime::start(&config(echo.addr, reset.addr, dead, log)).unwrap();
    let at = |name| rt.listener_addr(name).unwrap();
    let started = SystemTime::now();

    // 127.0.0.5: five complete exchanges of 1000 bytes each way.
    for _ in 0..5 {
        let mut c = connect_from("127.0.0.5", at("echo"));
        c.write_all(&[7u8; 1000]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 1000);
    }
    // 127.0.0.6: the server resets after one byte.
    let mut c = connect_from("127.0.0.6", at("reset"));
    c.write_all(b"x").unwrap();
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink);
    // 127.0.0.7: the only server refuses.
    let mut c = connect_from("127.0.0.7", at("dead"));
    let _ = c.read_to_end(&mut sink);
    // 127.0.0.8: connected, then silent past the client timeout (500 ms).
    let mut c = connect_from("127.0.0.8", at("echo"));
    let _ = c.read_to_end(&mut sink);
    // 127.0.0.9: still open when ringlb stops with no grace.
    let mut held = connect_from("127.0.0.9", at("echo"));
    held.write_all(b"ping").unwrap();
    let mut four = [0u8; 4];
    held.read_exact(&mut four).unwrap();
    assert!(wait_until(Duration::from_secs(5), || rt.counters().closed == 8));
    let mut rt = rt;
    rt.stop(Duration::ZERO);

    let text = std::fs::read_to_string(&path).unwrap();
    let lines = by_client_ip(&text);
    assert_eq!(text.lines().count(), 9, "one line per connection:\n{text}");
    let now = SystemTime::now();
    for l in lines.values().flatten() {
        // Accepted during the test, to the millisecond the clock allows.
        assert!(
            l.time >= started - Duration::from_millis(5) && l.time <= now,
            "{l:?}"
        );
        assert!(l.times[2] >= 0.0);
    }

    let normal = &lines["127.0.0.5"];
    assert_eq!(normal.len(), 5);
    for l in normal {
        assert_eq!(l.listener, "echo");
        assert_eq!(l.pool_server, "echo/s0");
        assert_eq!(l.server_addr, echo.addr.to_string());
        assert_eq!((l.bytes_in, l.bytes_out), (1000, 1000));
        assert_eq!(l.code, "--");
        assert_eq!(l.attempts, 1);
        assert!(l.times[0] >= 0.0 && l.times[1] >= 0.0, "{l:?}");
        assert!(l.times[0] + l.times[1] <= l.times[2] + 0.002, "{l:?}");
    }
    let l = &lines["127.0.0.6"][0];
    assert_eq!(
        (l.pool_server.as_str(), l.code.as_str()),
        ("reset/s0", "SD"),
        "{l:?}"
    );
    assert_eq!(l.bytes_in, 1);

    let l = &lines["127.0.0.7"][0];
    assert_eq!(
        (l.pool_server.as_str(), l.code.as_str()),
        ("dead/s0", "SC"),
        "{l:?}"
    );
    assert_eq!(l.server_addr, dead.to_string());
    assert_eq!(l.times[1], -1.0, "never connected: {l:?}");
    assert_eq!((l.bytes_in, l.bytes_out), (0, 0));

    let l = &lines["127.0.0.8"][0];
    assert_eq!(l.code, "cD", "{l:?}");
    assert!(l.times[2] >= 500.0, "{l:?}");

    let l = &lines["127.0.0.9"][0];
    assert_eq!(l.code, "KD", "{l:?}");
    assert_eq!((l.bytes_in, l.bytes_out), (4, 4));
    drop(held);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn json_lines_carry_the_same_fields() {
    let echo = Backend::start(Behaviour::Echo);
    let d = dir("json");
    let path = d.join("access.json");
    let log = to_file(&path, AccessFormat::Json, 1024);
    let mut rt = Runtime::start(&config(echo.addr, dead_addr(), dead_addr(), log)).unwrap();
    for i in 0..3u8 {
        let mut c = TcpStream::connect(rt.listener_addr("echo").unwrap()).unwrap();
        c.write_all(&vec![i; 10 + i as usize]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || rt.counters().closed == 3));
    rt.stop(Duration::ZERO);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut sizes: Vec<u64> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["termination"], "--");
            assert_eq!(v["listener"], "echo");
            assert_eq!(v["server"], "s0");
            assert_eq!(v["bytes_in"], v["bytes_out"]);
            assert!(v["connect_ms"].as_f64().unwrap() >= 0.0);
            v["bytes_in"].as_u64().unwrap()
        })
        .collect();
    sizes.sort();
    assert_eq!(sizes, [10, 11, 12]);
    let _ = std::fs::remove_dir_all(&d);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// The log goes to a pipe nobody reads: the writer blocks, the shards'
/// queues fill, and lines are dropped and counted, while every client is
/// served as usual. Every connection is then either written or counted
/// as dropped.
#[test]
fn a_stalled_writer_drops_lines_and_never_slows_clients() {
    let echo = Backend::start(Behaviour::Echo);
    let d = dir("fifo");
    let fifo = d.join("access.fifo");
    mkfifo(&fifo);
    // Held open, never read until the end: the writer's open does not wait.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let log = to_file(&fifo, AccessFormat::Text, 64);
    let mut rt = Runtime::start(&config(echo.addr, dead_addr(), dead_addr(), log)).unwrap();
    let addr = rt.listener_addr("echo").unwrap();
    const CLIENTS: usize = 4;
    const EACH: usize = 500;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    let mut c = TcpStream::connect(addr).unwrap();
                    // A shard waiting on the writer would show here.
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    c.write_all(b"0123456789").unwrap();
                    c.shutdown(Shutdown::Write).unwrap();
                    let mut back = Vec::new();
                    c.read_to_end(&mut back).unwrap();
                    assert_eq!(back, b"0123456789");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let total = (CLIENTS * EACH) as u64;
    assert!(wait_until(Duration::from_secs(5), || rt.counters().closed == total));
    let dropped = rt.counters().access_log_dropped;
    // The pipe holds 64 KiB (~600 lines) and the queues 2 × 64 records.
    assert!(dropped > 0, "nothing dropped: {:?}", rt.counters());

    // Now read everything; the writer finishes once ringlb stops.
    // SAFETY: fcntl on an fd this test owns.
    unsafe {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&reader);
        libc::fcntl(fd, libc::F_SETFL, 0);
    }
    let drain = std::thread::spawn(move || {
        let mut reader = reader;
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        text
    });
    let written_before = rt.access_log().unwrap().written;
    rt.stop(Duration::from_secs(1));
    let text = drain.join().unwrap();
    let lines = text.lines().count() as u64;
    assert!(lines >= written_before);
    assert_eq!(rt.access_log().unwrap().written, lines);
    assert_eq!(rt.access_log().unwrap().write_errors, 0);
    assert_eq!(
        lines + dropped,
        total,
        "every connection is either logged or counted as dropped"
    );
    for l in text.lines() {
        assert_eq!(parse(l).code, "--");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A full server: the client that waits too long is `sQ`, the one turned
/// away by `maxqueue` is `PQ`.
#[test]
fn queued_clients_end_with_queue_codes() {
    let echo = Backend::start(Behaviour::Echo);
    let d = dir("queue");
    let path = d.join("access.log");
    let mut c = common::config(
        &[(echo.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Auto,
    );
    c.timeouts.queue = Duration::from_millis(300);
    c.pools[0].servers[0].maxconn = 1;
    c.pools[0].policy.maxqueue = 1;
    c.access_log = Some(to_file(&path, AccessFormat::Text, 1024));
    let (mut rt, addr) = common::start(&c);
    let mut holder = connect_from("127.0.0.20", addr);
    holder.write_all(b"a").unwrap();
    let mut one = [0u8; 1];
    holder.read_exact(&mut one).unwrap();
    let mut queued = connect_from("127.0.0.21", addr);
    assert!(wait_until(Duration::from_secs(5), || rt
        .counters()
        .queue_len
        == 1));
    let mut refused = connect_from("127.0.0.22", addr);
    let mut sink = Vec::new();
    let _ = refused.read_to_end(&mut sink);
    let _ = queued.read_to_end(&mut sink);
    drop(holder);
    assert!(wait_until(Duration::from_secs(5), || rt.counters().closed == 3));
    rt.stop(Duration::ZERO);
    let lines = by_client_ip(&std::fs::read_to_string(&path).unwrap());
    let code = |ip: &str| lines[ip][0].code.clone();
    assert_eq!(code("127.0.0.21"), "sQ");
    assert!(lines["127.0.0.21"][0].times[2] >= 300.0);
    assert_eq!(lines["127.0.0.21"][0].times[0], -1.0, "never dispatched");
    assert_eq!(code("127.0.0.22"), "PQ");
    assert_eq!(code("127.0.0.20"), "--");
    let _ = std::fs::remove_dir_all(&d);
}

/// A reload reopens the file: after a rotation (rename), lines go to a new
/// file at the configured path.
#[test]
fn reopening_follows_a_rotation() {
    let echo = Backend::start(Behaviour::Echo);
    let d = dir("rotate");
    let path = d.join("access.log");
    let log = to_file(&path, AccessFormat::Text, 1024);
    let mut rt = Runtime::start(&config(echo.addr, dead_addr(), dead_addr(), log)).unwrap();
    let addr = rt.listener_addr("echo").unwrap();
    let exchange = |n: usize| {
        for _ in 0..n {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"x").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            c.read_to_end(&mut back).unwrap();
        }
    };
    exchange(3);
    assert!(wait_until(Duration::from_secs(5), || rt
        .access_log()
        .unwrap()
        .written
        == 3));
    let rotated = d.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    rt.reopen_access_log();
    // The writer reopens at its next pass (within its idle wait).
    std::thread::sleep(ringlb::access_log::IDLE * 3);
    exchange(2);
    assert!(wait_until(Duration::from_secs(5), || rt
        .access_log()
        .unwrap()
        .written
        == 5));
    rt.stop(Duration::ZERO);
    let count = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    assert_eq!(count(&rotated), 3);
    assert_eq!(count(&path), 2);
    let _ = std::fs::remove_dir_all(&d);
}
