//! Reload under load: SIGHUP to the real binary while clients keep
//! connecting, with a configuration that adds a server, removes a drained
//! one, changes a weight and adds a listener; then a broken configuration,
//! rejected while the old one keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::binary::{ringlb, Running};
use common::{wait_until, Backend, Behaviour};
use serde_json::Value;

fn write_config(path: &std::path::Path, servers: &str, extra_listener: bool) {
    let mut text = String::from(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n[runtime]\nshards = 2\ngrace = \"2s\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\npool = \"app\"\n\n",
    );
    if extra_listener {
        text.push_str(
            "[[listener]]\nname = \"second\"\nbind = \"127.0.0.1:0\"\npool = \"app\"\n\n",
        );
    }
    text.push_str(&format!(
        "[[pool]]\nname = \"app\"\nservers = [\n{servers}]\n"
    ));
    std::fs::write(path, text).unwrap();
}

/// One echo exchange: 200 bytes there and back, then both sides close.
fn exchange(addr: &str, i: u64) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let msg = vec![(i % 251) as u8; 200];
    s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).map_err(|e| format!("read: {e}"))?;
    if back != msg {
        return Err(format!("{} bytes back, wrong", back.len()));
    }
    Ok(())
}

/// A fresh directory for one test's files.
fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// After a SIGTERM: the process must exit 0.
fn stop_cleanly(lb: Running) {
    let (status, _, log) = lb.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        log.join("\n")
    );
}

fn admin_url(lb: &Running) -> String {
    let ok = wait_until(Duration::from_secs(5), || {
        lb.lines().iter().any(|l| l.contains("admin API on "))
    });
    assert!(ok, "{:?}", lb.lines());
    let line = lb
        .lines()
        .into_iter()
        .find(|l| l.contains("admin API on "))
        .unwrap();
    line.split("admin API on ")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('/')
        .to_string()
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn stats(admin: &str) -> Value {
    serde_json::from_str(&get(&format!("{admin}/stats")).1).unwrap()
}

fn server_total(stats: &Value, name: &str) -> Option<u64> {
    stats["pools"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["total"].as_u64().unwrap())
}

#[test]
fn sighup_under_load_adds_removes_and_reweighs_without_an_error() {
    let b0 = Backend::start(Behaviour::Echo);
    let b1 = Backend::start(Behaviour::Echo);
    let b2 = Backend::start(Behaviour::Echo);
    let dir = test_dir("reload");
    let file = dir.join("lb.toml");
    write_config(
        &file,
        &format!(
            "  {{ name = \"s0\", addr = \"{}\" }},\n  {{ name = \"s1\", addr = \"{}\" }},\n",
            b0.addr, b1.addr
        ),
        false,
    );
    let mut cmd = ringlb();
    cmd.args(["run", "--config", file.to_str().unwrap()]);
    let lb = Running::start(cmd);
    let admin = admin_url(&lb);
    let addr = lb.addr.clone();

    // Constant load: 4 clients, each about 500 exchanges a second.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, ok, errors, addr) = (stop.clone(), ok.clone(), errors.clone(), addr.clone());
            thread::spawn(move || {
                let mut i = c * 1_000_000;
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    match exchange(&addr, i) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("{:?}: {e}", start.elapsed()));
                            0
                        }
                    };
                    i += 1;
                    thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));

    // Drain s1 through ctl, wait for its connections to end.
    let out = ringlb()
        .args(["ctl", "--admin", &admin, "drain", "app", "s1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_until(Duration::from_secs(5), || {
        let st = stats(&admin);
        st["pools"][0]["servers"][1]["active"] == 0
    }));
    let s0_before = server_total(&stats(&admin), "s0").unwrap();
    assert!(s0_before > 0);

    // The new file: s1 gone, s2 added, s0 weighs 2, and a second listener.
    write_config(
        &file,
        &format!(
            "  {{ name = \"s0\", addr = \"{}\", weight = 2 }},\n  {{ name = \"s2\", addr = \"{}\" }},\n",
            b0.addr, b2.addr
        ),
        true,
    );
    let b1_before = b1.accepted.load(Ordering::SeqCst);
    lb.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || lb
            .lines()
            .iter()
            .any(|l| l.contains("configuration reloaded"))),
        "{:?}",
        lb.lines()
    );
    let reloaded = lb
        .lines()
        .into_iter()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    assert!(reloaded.contains("listeners added: second"), "{reloaded}");
    assert!(reloaded.contains("servers added: app/s2"), "{reloaded}");
    assert!(reloaded.contains("servers removed: app/s1"), "{reloaded}");
    let b2_at_reload = b2.accepted.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(800));
    let st = stats(&admin);
    // Counters carried over; the new server takes its third.
    assert!(server_total(&st, "s0").unwrap() > s0_before, "{st}");
    assert_eq!(server_total(&st, "s1"), None, "{st}");
    let s2 = b2.accepted.load(Ordering::SeqCst) - b2_at_reload;
    assert!(s2 > 20, "s2 took {s2} connections");
    assert_eq!(
        b1.accepted.load(Ordering::SeqCst),
        b1_before,
        "the removed server got connections"
    );
    let total = server_total(&st, "s0").unwrap() - s0_before + server_total(&st, "s2").unwrap();
    let share = server_total(&st, "s2").unwrap() as f64 / total as f64;
    assert!(
        (0.25..0.42).contains(&share),
        "s2's share {share} (weights 2:1)"
    );
    // The added listener serves.
    let second = st["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "second")
        .unwrap()["addr"]
        .as_str()
        .unwrap()
        .to_string();
    exchange(&second, 7).unwrap();

    // A broken file is rejected, and the old configuration keeps serving.
    std::fs::write(&file, "[[pool]]\nname = \"app\"\nservers = [{ name = \"x\", addr = \"nowhere\", weight = \"heavy\" }]\n").unwrap();
    lb.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || lb
        .lines()
        .iter()
        .any(|l| l.contains("reload rejected"))));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.post(&format!("{admin}/reload")).send("").unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status().as_u16(), 400, "{body}");
    assert!(body.contains("weight") && body.contains("errors"), "{body}");
    let before = ok.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(300));
    assert!(ok.load(Ordering::Relaxed) > before + 50, "still serving");

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 1000,
        "{} exchanges",
        ok.load(Ordering::Relaxed)
    );
    lb.signal(libc::SIGTERM);
    stop_cleanly(lb);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tells_systemd_ready_reloading_and_stopping() {
    let b0 = Backend::start(Behaviour::Echo);
    let dir = test_dir("notify");
    let file = dir.join("lb.toml");
    write_config(
        &file,
        &format!("  {{ name = \"s0\", addr = \"{}\" }},\n", b0.addr),
        false,
    );
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let mut cmd = ringlb();
    cmd.args(["run", "--config", file.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &path);
    let lb = Running::start(cmd);
    assert!(recv().contains("READY=1"));
    exchange(&lb.addr, 1).unwrap();
    lb.signal(libc::SIGHUP);
    let reloading = recv();
    assert!(
        reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(recv().contains("READY=1"));
    lb.signal(libc::SIGTERM);
    assert!(recv().contains("STOPPING=1"));
    stop_cleanly(lb);
    let _ = std::fs::remove_dir_all(dir);
}

/// In process: a reload applies new timeouts, removes a listener and its
/// pool, and keeps a stick table only while its pool's servers stay the
/// same (its entries name servers by position).
#[test]
fn apply_changes_timeouts_listeners_and_stick_tables() {
    use ringlb::config::{BalanceKind, ForwardMode, ListenerConfig, PoolConfig, StickConfig};
    let b0 = Backend::start(Behaviour::Echo);
    let b1 = Backend::start(Behaviour::Echo);
    let mut cfg = common::config(
        &[(b0.addr, 1), (b1.addr, 1)],
        BalanceKind::RoundRobin,
        2,
        ForwardMode::Copy,
    );
    cfg.pools[0].policy.stick = Some(StickConfig::default());
    cfg.pools.push(PoolConfig::new(
        "other",
        BalanceKind::RoundRobin,
        cfg.pools[0].servers.clone(),
    ));
    cfg.listeners.push(ListenerConfig::new(
        "other",
        "127.0.0.1:0".parse().unwrap(),
        1,
    ));
    let mut rt = ringlb::Runtime::start(&cfg).unwrap();
    let other = rt.listener_addr("other").unwrap();
    exchange(&other.to_string(), 1).unwrap();
    let stick = rt.pools().pools[0].stick.clone().unwrap();

    // Same servers, shorter idle timeout, listener and pool "other" gone.
    let mut next = cfg.clone();
    next.timeouts.client_idle = Duration::from_millis(300);
    next.timeouts.server_idle = Duration::from_millis(300);
    next.listeners.pop();
    next.pools.pop();
    let report = rt.apply(next.clone()).unwrap();
    assert_eq!(report.listeners_removed, vec!["other".to_string()]);
    assert_eq!(report.pools_removed, vec!["other".to_string()]);
    assert!(
        Arc::ptr_eq(&stick, rt.pools().pools[0].stick.as_ref().unwrap()),
        "same servers: the table stays"
    );
    assert!(
        wait_until(Duration::from_secs(2), || TcpStream::connect(other)
            .is_err()),
        "the removed listener still accepts"
    );
    // The new idle timeout applies to new connections.
    let addr = rt.listener_addr("test").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 1];
    let _ = s.read(&mut buf);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "closed after {:?}",
        t.elapsed()
    );

    // A server removed: a new table.
    let mut fewer = next.clone();
    fewer.pools[0].servers.pop();
    rt.apply(fewer).unwrap();
    assert!(
        !Arc::ptr_eq(&stick, rt.pools().pools[0].stick.as_ref().unwrap()),
        "servers changed: a new table"
    );
    exchange(&addr.to_string(), 2).unwrap();
    rt.stop(Duration::ZERO);
}
