//! Running the `ringlb` binary in tests: start it, find its listener's
//! address in its log, read every log line on a thread (so a chatty process
//! never blocks on a full pipe), limit its open files, deny it a syscall.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub fn ringlb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringlb"))
}

/// A running `ringlb run` and the log lines it has written so far.
pub struct Running {
    pub child: Child,
    /// The first listener's address, from its start-up line.
    pub addr: String,
    /// That start-up line.
    pub listener_line: String,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts `cmd` (an `ringlb run ...`) with logs at `info` and waits for
    /// the line that names its listener's address, however many lines come
    /// before it.
    pub fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut sent = false;
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if !sent && line.contains("listener ") && line.contains(" on ") {
                    let _ = tx.send(line.clone());
                    sent = true;
                }
                sink.lock().unwrap().push(line);
            }
        });
        let listener_line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no listener line; log: {:?}", lines.lock().unwrap());
            }
        };
        let addr = listener_line
            .split(" on ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("no address in {listener_line:?}"))
            .to_string();
        Running {
            child,
            addr,
            listener_line,
            lines,
            reader: Some(reader),
        }
    }

    /// Every log line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `limit` for the process to exit; kills it past that.
    /// Returns its status (None if it had to be killed), how long it took,
    /// and its whole log.
    pub fn wait(mut self, limit: Duration) -> (Option<ExitStatus>, Duration, Vec<String>) {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = t.elapsed();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, took, self.lines())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the child start with this open-file limit (soft and hard), as
/// `prlimit --nofile=N` does.
pub fn limit_open_files(cmd: &mut Command, n: u64) {
    // SAFETY: runs in the forked child before exec; setrlimit is
    // async-signal-safe and reads only the struct on this frame.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// x86_64 syscall numbers of io_uring_setup(2) and io_uring_enter(2).
pub const IO_URING_SETUP: u32 = 425;
pub const IO_URING_ENTER: u32 = 426;

/// Installs a seccomp filter that fails syscall `nr` with EPERM, as a
/// container runtime's profile does.
pub fn deny_syscall(cmd: &mut Command, nr: u32) {
    let filter = [
        // load the syscall number
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if it is `nr`: next, else skip one
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: nr,
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

/// CPU time (user + system) a process has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
