//! The `ringlb` binary end to end: quick mode forwards and stops cleanly on
//! SIGTERM; a process denied io_uring gets a clear error, not a panic.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::binary::{deny_syscall, ringlb, Running, IO_URING_SETUP};
use common::{Backend, Behaviour};

#[test]
fn quick_mode_forwards_and_stops_on_sigterm() {
    let a = Backend::start(Behaviour::Echo);
    let b = Backend::start(Behaviour::Echo);
    let mut cmd = ringlb();
    cmd.args(["run", "--listen", "127.0.0.1:0", "--balance", "leastconn"])
        .args(["--shards", "2", "--forward", "copy", "--grace", "1"])
        .args(["--backend", &a.addr.to_string()])
        .args(["--backend", &format!("{}=3", b.addr)]);
    let lb = Running::start(cmd);
    let line = lb.listener_line.clone();
    assert!(line.contains("listener quick on 127.0.0.1:"), "{line}");
    assert!(line.contains("2 shard(s), forward copy"), "{line}");
    for i in 0..8u8 {
        let mut s = TcpStream::connect(&lb.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&[i; 100]).unwrap();
        let mut back = [0u8; 100];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, [i; 100]);
    }
    lb.signal(libc::SIGTERM);
    let (status, _, log) = lb.wait(Duration::from_secs(10));
    let log = log.join("\n");
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {log}");
    assert!(
        log.contains("stopped: 8 connections accepted, 0 unserved"),
        "{log}"
    );
}

/// SIGTERM leaves open connections their grace; a second signal resets
/// them and the process exits at once, with 0.
#[test]
fn a_second_signal_stops_at_once() {
    let a = Backend::start(Behaviour::Echo);
    let mut cmd = ringlb();
    cmd.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--grace",
        "30",
    ])
    .args(["--backend", &a.addr.to_string()]);
    let lb = Running::start(cmd);
    let mut held = TcpStream::connect(&lb.addr).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    held.write_all(b"hi").unwrap();
    let mut back = [0u8; 2];
    held.read_exact(&mut back).unwrap();
    lb.signal(libc::SIGTERM);
    // The open connection keeps working during the grace period.
    std::thread::sleep(Duration::from_millis(500));
    held.write_all(b"on").unwrap();
    held.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"on");
    let t = std::time::Instant::now();
    lb.signal(libc::SIGTERM);
    let (status, waited, log) = lb.wait(Duration::from_secs(10));
    let log = log.join("\n");
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {log}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "exited after {waited:?}: {log}"
    );
    assert!(
        log.contains("again: resetting open connections now"),
        "{log}"
    );
}

#[test]
fn bad_quick_mode_arguments_are_named() {
    let out = ringlb()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:9=999",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("key `--backend`") && err.contains("weight must be from 0 to 256"),
        "{err}"
    );

    // Every rule a file gets applies to the flags, all reported at once.
    let out = ringlb()
        .args(["run", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"])
        .args(["--retries", "500", "--shards", "0", "--balance", "fastest"])
        .args(["--maxconn", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "error: <command line>: key `--retries`: must be from 0 to 100",
        "error: <command line>: key `--shards`: must be between 1 and 1024",
        "error: <command line>: key `--balance`: unknown algorithm `fastest`",
        "error: <command line>: key `--maxconn`: must be from 1 to 10000000",
    ] {
        assert!(err.contains(expected), "`{expected}` in:\n{err}");
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn io_uring_denied_exits_1_naming_the_cause() {
    let mut cmd = ringlb();
    cmd.args(["run", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"]);
    deny_syscall(&mut cmd, IO_URING_SETUP);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("io_uring is not permitted"), "{err}");
    assert!(
        err.contains("kernel.io_uring_disabled") && err.contains("seccomp"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
