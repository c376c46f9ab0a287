//! The binary under pressure: out of fds, against a dead backend, and with
//! a ring that fails. Each ends the way an operator needs: every client
//! served or told, a handful of log lines, and a process that either keeps
//! serving or exits non-zero for its supervisor, never limps on.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::binary::{cpu_ticks, deny_syscall, limit_open_files, ringlb, Running, IO_URING_ENTER};
use common::{Backend, Behaviour};

/// Starts `ringlb run` in quick mode in front of `backend` with `shards`
/// shards, `--grace grace`, and at most `nofile` open files if given.
fn start_ringlb(backend: SocketAddr, shards: u32, grace: u32, nofile: Option<u64>) -> Running {
    let mut cmd = ringlb();
    cmd.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        &shards.to_string(),
    ])
    .args([
        "--backend",
        &backend.to_string(),
        "--grace",
        &grace.to_string(),
    ]);
    if let Some(n) = nofile {
        limit_open_files(&mut cmd, n);
    }
    Running::start(cmd)
}

/// Log lines written after start-up (the listener and budget lines).
fn runtime_lines(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|l| !l.contains(" listener ") && !l.contains("maxconn "))
        .collect()
}

/// With 256 open files, 600 clients that each send one request and close
/// after the reply are all served: ringlb stops accepting at its budget and
/// lets the kernel's backlog hold the rest, instead of failing server
/// sockets and resetting clients. Few log lines, and SIGTERM returns at once
/// when nothing is open.
#[test]
fn out_of_fds_every_client_is_served_and_none_reset() {
    const CLIENTS: usize = 600;
    let backend = Backend::start(Behaviour::Echo);
    let lb = start_ringlb(backend.addr, 2, 10, Some(256));
    let addr: SocketAddr = lb.addr.parse().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Every client is connected before any sends, so all 600 are open at
    // once against a budget of about 80.
    let all_connected = Arc::new(std::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (served, failures) = (served.clone(), failures.clone());
            let all_connected = all_connected.clone();
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let connected = TcpStream::connect_timeout(&addr, Duration::from_secs(20));
                    all_connected.wait();
                    let run = || -> std::io::Result<()> {
                        let mut s = connected?;
                        s.set_read_timeout(Some(Duration::from_secs(30)))?;
                        let request = format!("request {i:04}\n");
                        s.write_all(request.as_bytes())?;
                        let mut reply = vec![0u8; request.len()];
                        s.read_exact(&mut reply)?;
                        if reply != request.as_bytes() {
                            return Err(std::io::Error::other("wrong reply"));
                        }
                        Ok(())
                    };
                    match run() {
                        Ok(()) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(format!("client {i}: {e}")),
                    }
                })
                .unwrap()
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(served.load(Ordering::Relaxed), CLIENTS);
    // Every pair closes once its client has.
    thread::sleep(Duration::from_millis(500));
    lb.signal(libc::SIGTERM);
    let (status, took, log) = lb.wait(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {log:?}");
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM with nothing open took {took:?}"
    );
    let all = log.join("\n");
    assert!(
        all.contains(&format!(
            "stopped: {CLIENTS} connections accepted, 0 unserved"
        )),
        "{all}"
    );
    let lines = runtime_lines(&log);
    assert!(lines.len() <= 50, "{} log lines:\n{all}", lines.len());
    assert!(!all.contains("reset"), "{all}");
    assert!(
        all.contains("connection budget reached"),
        "the budget was reached: {all}"
    );
    eprintln!("{all}");
}

/// An address on which nothing listens.
fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Thousands of clients against a pool whose only server refuses: each
/// client is reset, and the log gets a few lines a second, not one per
/// failure.
#[test]
fn a_dead_backend_under_load_writes_a_few_lines_a_second() {
    let mut cmd = ringlb();
    cmd.args(["run", "--listen", "127.0.0.1:0", "--shards", "2"])
        .args(["--backend", &refused_addr().to_string()])
        .args(["--backend", &refused_addr().to_string()]);
    let lb = Running::start(cmd);
    let addr: SocketAddr = lb.addr.parse().unwrap();
    let run_for = Duration::from_secs(3);
    let start = Instant::now();
    let tried = Arc::new(AtomicUsize::new(0));
    let reset = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (tried, reset) = (tried.clone(), reset.clone());
            thread::spawn(move || {
                while start.elapsed() < run_for {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    tried.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 16];
                    match s.read(&mut buf) {
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                            reset.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("expected a reset, got {other:?}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = start.elapsed();
    let (tried, reset) = (tried.load(Ordering::Relaxed), reset.load(Ordering::Relaxed));
    assert!(tried >= 200, "only {tried} clients in {elapsed:?}");
    assert_eq!(reset, tried, "every client is told with a reset");
    // Let the last summaries come out.
    thread::sleep(Duration::from_millis(1200));
    lb.signal(libc::SIGTERM);
    let (_, _, log) = lb.wait(Duration::from_secs(10));
    let warnings: Vec<_> = log.iter().filter(|l| l.contains("WARN")).collect();
    let secs = (elapsed.as_secs_f64() + 1.2).ceil();
    // Two kinds (failed connects, clients with no server), each at most one
    // line and one summary a second, on each of two shards.
    let bound = (2.0 * 2.0 * 2.0 * secs) as usize;
    assert!(
        warnings.len() <= bound,
        "{} warnings for {tried} failed clients (bound {bound}):\n{}",
        warnings.len(),
        log.join("\n")
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("more failed server connects")),
        "a summary counts what was not written: {warnings:?}"
    );
}

/// A shard whose ring fails (here: `io_uring_enter` denied by seccomp) is
/// not left behind: the process notices within a second, says why, and
/// exits non-zero so its supervisor restarts it.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_failed_ring_stops_the_process_with_an_error() {
    let backend = Backend::start(Behaviour::Echo);
    let mut cmd = ringlb();
    cmd.args(["run", "--listen", "127.0.0.1:0", "--shards", "2"])
        .args(["--backend", &backend.addr.to_string(), "--grace", "1"]);
    deny_syscall(&mut cmd, IO_URING_ENTER);
    let lb = Running::start(cmd);
    let (status, took, log) = lb.wait(Duration::from_secs(10));
    let all = log.join("\n");
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{all}");
    assert!(took < Duration::from_secs(3), "took {took:?}: {all}");
    assert!(all.contains("io_uring_enter failed"), "{all}");
    assert!(
        all.contains("failed: ") && all.contains("restarts"),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

/// Out of fds with clients held open, ringlb waits without spinning and
/// serves again once fds are free.
#[test]
fn out_of_fds_ringlb_waits_without_spinning() {
    let backend = Backend::start(Behaviour::Echo);
    let lb = start_ringlb(backend.addr, 1, 0, Some(64));
    // Far more clients than 64 fds can pair up.
    let held: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(&lb.addr).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(lb.pid());
    thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(lb.pid()) - before;
    assert!(
        spent <= 10,
        "ringlb used {spent} ticks in 1 s while at its budget: it spins"
    );
    drop(held);
    let served = common::wait_until(Duration::from_secs(5), || {
        let Ok(mut s) = TcpStream::connect(&lb.addr) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut back = [0u8; 4];
        s.write_all(b"back").is_ok() && s.read_exact(&mut back).is_ok() && &back == b"back"
    });
    assert!(served, "ringlb serves again after fds are freed");
    lb.signal(libc::SIGTERM);
    let (status, _, log) = lb.wait(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("connection budget reached")),
        "{log:?}"
    );
}

/// The state letter of a process (`R`, `S`, `T` for stopped, ...).
fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|r| r.trim_start().chars().next())
        .unwrap_or('?')
}

/// A burst that arrives while the shard is not running (here: the process
/// is stopped) is accepted all at once when it runs again, and can take
/// every free fd before any pair exists, leaving none for a server socket
/// and no open pair whose close would free one. The shard's spare fd makes
/// room for the first server socket; every client is then served in turn.
#[test]
fn a_burst_that_takes_every_fd_is_still_served() {
    const CLIENTS: usize = 100;
    let backend = Backend::start(Behaviour::Echo);
    let lb = start_ringlb(backend.addr, 1, 0, Some(64));
    let addr: SocketAddr = lb.addr.parse().unwrap();
    lb.signal(libc::SIGSTOP);
    assert!(
        common::wait_until(Duration::from_secs(5), || process_state(lb.pid()) == 'T'),
        "the process stops"
    );
    // The kernel completes the handshakes; the backlog holds them all.
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap())
        .collect();
    lb.signal(libc::SIGCONT);
    let served = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let served = served.clone();
            thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let msg = (i as u32).to_le_bytes();
                s.write_all(&msg).unwrap();
                let mut back = [0u8; 4];
                match s.read_exact(&mut back) {
                    Ok(()) if back == msg => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    other => eprintln!("client {i}: {other:?}"),
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let served = served.load(Ordering::Relaxed);
    lb.signal(libc::SIGTERM);
    let (_, _, log) = lb.wait(Duration::from_secs(10));
    assert_eq!(served, CLIENTS, "{log:?}");
}
