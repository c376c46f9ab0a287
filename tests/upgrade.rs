//! Binary upgrade (`ringlb run --upgrade`): under constant load, a new
//! process takes the running one's listening sockets over the control
//! socket, and the old one drains and exits 0; twice in a row, with no
//! client refused, reset or cut short. Also the refusals: nobody to take
//! over from, and a control socket already held.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::{ringlb, Running};
use common::{wait_until, Backend, Behaviour};

fn test_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringlb-upgrade-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(path: &Path, socket: &Path, admin_port: u16, servers: &[&Backend]) {
    let servers: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{{ name = \"s{i}\", addr = \"{}\" }}", b.addr))
        .collect();
    std::fs::write(
        path,
        format!(
            r#"
[runtime]
shards = 2
grace = "10s"
control_socket = "{}"

[admin]
bind = "127.0.0.1:{admin_port}"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
pool = "app"

[[pool]]
name = "app"
servers = [{}]
"#,
            socket.display(),
            servers.join(", ")
        ),
    )
    .unwrap();
}

fn run(config: &Path, upgrade: bool) -> Running {
    let mut cmd = ringlb();
    cmd.arg("run").arg("--config").arg(config);
    if upgrade {
        cmd.arg("--upgrade");
    }
    Running::start(cmd)
}

/// One complete exchange on a new connection: every byte back, then EOF.
fn exchange(addr: &str, i: u64) -> Result<(), String> {
    let mut c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let msg = format!("request {i} {}", "x".repeat((i % 200) as usize));
    c.write_all(msg.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    c.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut back = String::new();
    c.read_to_string(&mut back)
        .map_err(|e| format!("read: {e}"))?;
    if back != msg {
        return Err(format!("{} of {} bytes came back", back.len(), msg.len()));
    }
    Ok(())
}

/// Clients that each open one new connection after another until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, clients: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|t| {
                let (addr, stop, ok, errors) =
                    (addr.to_string(), stop.clone(), ok.clone(), errors.clone());
                std::thread::spawn(move || {
                    let mut i = t * 1_000_000;
                    while !stop.load(Ordering::Relaxed) {
                        match exchange(&addr, i) {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                errors.lock().unwrap().push(e);
                                0
                            }
                        };
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            errors,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

/// A connection opened before an upgrade and used across it: it stays
/// with the old process, which must let it finish.
struct LongLived(TcpStream);

impl LongLived {
    fn open(addr: &str) -> LongLived {
        let c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut l = LongLived(c);
        l.ping(0);
        l
    }

    fn ping(&mut self, i: u32) {
        let msg = format!("ping {i}\n");
        self.0.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        self.0.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }

    fn finish(mut self) {
        self.ping(99);
        self.0.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        self.0.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}

fn admin_answers(port: u16) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = c.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

#[test]
fn upgrade_under_constant_load_refuses_and_resets_nothing() {
    let backends = [
        Backend::start(Behaviour::Echo),
        Backend::start(Behaviour::Echo),
    ];
    let dir = test_dir("load");
    let config = dir.join("lb.toml");
    let socket = dir.join("run").join("ringlb.sock");
    let admin = free_port();
    write_config(&config, &socket, admin, &[&backends[0], &backends[1]]);

    let mut old = run(&config, false);
    let addr = old.addr.clone();
    assert!(wait_until(Duration::from_secs(5), || socket.exists()));
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let mut socket_inode = inode(&socket);
    let load = Load::start(&addr, 6);
    let mut served_before = 0;
    for round in 0..2 {
        assert!(wait_until(Duration::from_secs(5), || load.ok() > served_before + 500));
        let mut long_lived: Vec<LongLived> = (0..3).map(|_| LongLived::open(&addr)).collect();

        let new = run(&config, true);
        assert_eq!(new.addr, addr, "the new process serves the same address");
        // The old process keeps the connections it had and lets them
        // finish; the new one takes every new client meanwhile.
        for (i, l) in long_lived.iter_mut().enumerate() {
            l.ping(i as u32 + 1);
        }
        let before = load.ok();
        assert!(wait_until(Duration::from_secs(5), || load.ok() > before + 500));
        for l in long_lived {
            l.finish();
        }
        let old_pid = old.pid();
        let (status, took, log) = old.wait(Duration::from_secs(15));
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: the old process exits 0 once drained, took {took:?}: {status:?}\n{}",
            log.join("\n")
        );
        assert!(
            log.iter()
                .any(|l| l.contains("handed over to a new process")),
            "{log:#?}"
        );
        let new_log = new.lines();
        assert!(
            new_log
                .iter()
                .any(|l| l.contains("binary upgrade: serving") && l.contains(&old_pid.to_string())),
            "{new_log:#?}"
        );
        // The new process owns the control socket and the admin address.
        let now = inode(&socket);
        assert_ne!(now, socket_inode, "the path names the new process's socket");
        socket_inode = now;
        assert!(
            wait_until(Duration::from_secs(5), || admin_answers(admin)),
            "the admin API moved to the new process"
        );
        served_before = load.ok();
        old = new;
    }
    let after = load.ok();
    assert!(wait_until(Duration::from_secs(5), || load.ok() > after + 100));
    let (ok, errors) = load.stop();
    assert!(
        errors.is_empty(),
        "{} of {} exchanges failed across two upgrades: {:?}",
        errors.len(),
        ok + errors.len() as u64,
        &errors[..errors.len().min(10)]
    );
    old.signal(libc::SIGTERM);
    let (status, _, _) = old.wait(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()));
    assert!(
        !socket.exists(),
        "the last process removes its control socket"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `ringlb run --config CONFIG [--upgrade]` to its end, expecting it
/// to fail; returns its stderr.
fn refused(config: &Path, upgrade: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlb"));
    cmd.args(["run", "--config"]).arg(config);
    if upgrade {
        cmd.arg("--upgrade");
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn upgrade_refusals_are_clear_and_change_nothing() {
    let backend = Backend::start(Behaviour::Echo);
    let dir = test_dir("refusals");
    let config = dir.join("lb.toml");
    let socket = dir.join("ringlb.sock");
    write_config(&config, &socket, free_port(), &[&backend]);

    // Nothing to take over from.
    let err = refused(&config, true);
    assert!(
        err.contains("no running ringlb answers on") && err.contains("ringlb.sock"),
        "{err}"
    );

    // A second process on a held control socket without --upgrade.
    let first = run(&config, false);
    let addr = first.addr.clone();
    assert!(wait_until(Duration::from_secs(5), || socket.exists()));
    let err = refused(&config, false);
    assert!(
        err.contains("another ringlb is running and holds it"),
        "{err}"
    );
    // A new process with fewer shards than the sockets it would receive.
    let fewer = dir.join("fewer.toml");
    std::fs::write(
        &fewer,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("shards = 2", "shards = 1"),
    )
    .unwrap();
    let err = refused(&fewer, true);
    assert!(err.contains("set runtime.shards to at least 2"), "{err}");
    // The first one never noticed.
    exchange(&addr, 1).unwrap();
    let started = Instant::now();
    first.signal(libc::SIGTERM);
    let (status, _, _) = first.wait(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
