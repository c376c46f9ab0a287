//! A listener that fails every accept with an error outside the
//! fd-shortage family must not spin its shard: accepting backs off.
//! Alone in its test binary so this process's CPU time is ours to read.

mod common;

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use common::{config, start, Backend, Behaviour};
use ringlb::config::{BalanceKind, ForwardMode};

/// One fd per distinct socket of this process listening on `addr` (one
/// per shard; the runtime's copies, kept for a binary upgrade, name the
/// same sockets).
fn listening_fds(addr: SocketAddr) -> Vec<RawFd> {
    let mut fds = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // SAFETY: getsockname writes at most `len` bytes into the storage
        // that try_init provides; a non-socket fd fails harmlessly.
        let Ok(((), sock)) = (unsafe {
            socket2::SockAddr::try_init(|storage, len| {
                if libc::getsockname(fd, storage.cast(), len) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }) else {
            continue;
        };
        let mut listening: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes an int into `listening`, of the size passed.
        let ok = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut listening as *mut libc::c_int).cast(),
                &mut len,
            )
        } == 0;
        let inode = std::fs::read_link(entry.path()).ok();
        if ok && listening == 1 && sock.as_socket() == Some(addr) && seen.insert(inode) {
            fds.push(fd);
        }
    }
    fds
}

fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value, which getrusage fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[test]
fn a_failing_listener_backs_off_instead_of_spinning() {
    let backend = Backend::start(Behaviour::Echo);
    let (rt, addr) = start(&config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    ));
    let fds = listening_fds(addr);
    assert_eq!(fds.len(), 1, "one listening socket per shard");
    // Shutting a listening socket down makes every accept on it fail with
    // EINVAL: an error that says nothing about fds, memory or one client.
    // SAFETY: shutdown(2) on the runtime's own listening socket.
    assert_eq!(unsafe { libc::shutdown(fds[0], libc::SHUT_RD) }, 0);
    let t = Instant::now();
    let cpu0 = process_cpu();
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = process_cpu() - cpu0;
    let errors = rt.counters().accept_errors;
    // Back-off from 10 ms doubling to 1 s: about eight retries in 1.5 s,
    // where an immediate re-arm would make millions.
    assert!(
        (3..=20).contains(&errors),
        "{errors} accept errors in {:?}",
        t.elapsed()
    );
    assert!(
        cpu < Duration::from_millis(300),
        "{cpu:?} of CPU in 1.5 s with a failing listener"
    );
}
