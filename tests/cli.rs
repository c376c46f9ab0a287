//! The `ringlb` binary end to end: quick mode forwards and stops cleanly on
//! SIGTERM; a process denied io_uring gets a clear error, not a panic.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use common::{Backend, Behaviour};

fn ringlb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringlb"))
}

/// Starts `ringlb run` and reads its first log line, which names the
/// listener's address; returns the child, its stderr, that line and the address.
fn spawn_listening(mut cmd: Command) -> (Child, BufReader<ChildStderr>, String, String) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line.split(" on ").nth(1).and_then(|r| r.split(' ').next());
    let addr = addr
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, stderr, line, addr)
}

#[test]
fn quick_mode_forwards_and_stops_on_sigterm() {
    let a = Backend::start(Behaviour::Echo);
    let b = Backend::start(Behaviour::Echo);
    let mut cmd = ringlb();
    cmd.args(["run", "--listen", "127.0.0.1:0", "--balance", "leastconn"])
        .args(["--shards", "2", "--forward", "copy", "--grace", "1"])
        .args(["--backend", &a.addr.to_string()])
        .args(["--backend", &format!("{}=3", b.addr)]);
    let (mut child, mut stderr, line, addr) = spawn_listening(cmd);
    assert!(line.contains("listener quick on 127.0.0.1:"), "{line}");
    assert!(line.contains("2 shard(s), forward copy"), "{line}");
    for i in 0..8u8 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&[i; 100]).unwrap();
        let mut back = [0u8; 100];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, [i; 100]);
    }
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status:?}: {rest}");
    assert!(
        rest.contains("stopped: 8 connections accepted, 0 unserved"),
        "{rest}"
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
        .args(["--retries", "500", "--shards", "0", "--balance", "random"])
        .args(["--maxconn", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "error: <command line>: key `--retries`: must be from 0 to 100",
        "error: <command line>: key `--shards`: must be between 1 and 1024",
        "error: <command line>: key `--balance`: unknown algorithm `random`",
        "error: <command line>: key `--maxconn`: must be from 1 to 10000000",
    ] {
        assert!(err.contains(expected), "`{expected}` in:\n{err}");
    }
}

/// Installs a seccomp filter that fails io_uring_setup(2) with EPERM, as a
/// container runtime's default profile does.
fn deny_io_uring(cmd: &mut Command) {
    const IO_URING_SETUP: u32 = 425;
    let filter = [
        // load the syscall number
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if io_uring_setup: next, else skip one
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: IO_URING_SETUP,
        },
        // return ERRNO(EPERM)
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x0005_0000 | libc::EPERM as u32,
        },
        // return ALLOW
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        },
    ];
    // SAFETY: runs in the forked child before exec; only async-signal-safe
    // prctl calls on memory (`filter`) that the child's copy of this frame owns.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const _,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn io_uring_denied_exits_1_naming_the_cause() {
    let mut cmd = ringlb();
    cmd.args(["run", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"]);
    deny_io_uring(&mut cmd);
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

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Out of fds, ringlb pauses accepting instead of spinning, and serves again
/// once fds are free.
#[test]
fn fd_exhaustion_pauses_accepts_without_spinning() {
    let backend = Backend::start(Behaviour::Echo);
    let mut cmd = ringlb();
    cmd.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--forward",
        "copy",
    ])
    .args(["--backend", &backend.addr.to_string(), "--grace", "0"]);
    // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (mut child, mut stderr, _, addr) = spawn_listening(cmd);

    // Far more clients than 48 fds can pair up.
    let held: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(child.id()) - before;
    assert!(
        spent <= 20,
        "ringlb used {spent} ticks in 1 s while out of fds: it spins"
    );

    drop(held);
    // Once the held pairs are gone, a new client is served.
    let served = common::wait_until(Duration::from_secs(5), || {
        let Ok(mut s) = TcpStream::connect(&addr) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut back = [0u8; 4];
        s.write_all(b"back").is_ok() && s.read_exact(&mut back).is_ok() && &back == b"back"
    });
    assert!(served, "ringlb serves again after fds are freed");
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("pausing accepts for 100ms"), "{rest}");
}
