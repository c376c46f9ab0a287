//! A network namespace a test creates for itself, reached from this one
//! through a pair of TUN devices and a relay in the test process that
//! delays every packet leaving the namespace (a userspace netem; the
//! kernel here has no netem qdisc): a server in the namespace takes that
//! long to answer a SYN, so a connect to it takes that long. Removed on
//! drop. Needs root and iproute2 (`ip`), as on CI.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::{Backend, Behaviour};

pub struct DelayedNetns {
    name: String,
    /// The namespace's address (this side is .1).
    pub inner: Ipv4Addr,
    stop: Arc<AtomicBool>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 (ip) is installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens TUN device `name` (no packet information header).
fn open_tun(name: &str) -> File {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("/dev/net/tun");
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags: i16 = 0x0001 | 0x1000; // IFF_TUN | IFF_NO_PI
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads a 40-byte ifreq that lives across the call.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), 0x400454ca, ifr.as_mut_ptr()) };
    assert_eq!(
        r,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    tun
}

/// Runs `f` on a thread that has joined namespace `name`.
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{name}");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let ns = File::open(&path).unwrap();
        // SAFETY: setns(2) on an open namespace fd; it moves only this
        // thread, which ends after `f`.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        tx.send(f()).unwrap();
    });
    rx.recv().unwrap()
}

/// Copies packets from `from` to `to`, each `delay` after it was read,
/// in order, until `stop`.
fn relay(mut from: File, mut to: File, delay: Duration, stop: Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let stop2 = stop.clone();
    thread::spawn(move || {
        let mut pending: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        while !stop2.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(p) => pending.push_back(p),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => return,
            }
            while let Ok(p) = rx.try_recv() {
                pending.push_back(p);
            }
            while let Some((due, pkt)) = pending.pop_front() {
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                let _ = to.write_all(&pkt);
                while let Ok(p) = rx.try_recv() {
                    pending.push_back(p);
                }
            }
        }
    });
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let fd = from.as_raw_fd();
        while !stop.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one pollfd that lives across the call.
            if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                continue;
            }
            match from.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
}

impl DelayedNetns {
    /// A namespace whose outgoing packets are delayed by `delay`.
    pub fn new(delay: Duration) -> DelayedNetns {
        let id = std::process::id() % 10_000;
        let name = format!("ringlb-t{id}");
        let net = 1 + (id % 250) as u8;
        let (outer_ip, inner) = (
            Ipv4Addr::new(10, 213, net, 1),
            Ipv4Addr::new(10, 213, net, 2),
        );
        let (outer, peer) = (format!("rlb{id}a"), format!("rlb{id}b"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let stop = Arc::new(AtomicBool::new(false));
        let ns = DelayedNetns {
            name,
            inner,
            stop: stop.clone(),
        };
        let a = open_tun(&outer);
        let peer2 = peer.clone();
        let b = in_netns(&ns.name, move || open_tun(&peer2));
        ip(&[
            "addr",
            "add",
            &outer_ip.to_string(),
            "peer",
            &inner.to_string(),
            "dev",
            &outer,
        ]);
        ip(&["link", "set", &outer, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name];
            all.extend_from_slice(args);
            ip(&all);
        };
        exec(&[
            "ip",
            "addr",
            "add",
            &inner.to_string(),
            "peer",
            &outer_ip.to_string(),
            "dev",
            &peer,
        ]);
        exec(&["ip", "link", "set", &peer, "up"]);
        exec(&["ip", "link", "set", "lo", "up"]);
        relay(
            a.try_clone().unwrap(),
            b.try_clone().unwrap(),
            Duration::ZERO,
            stop.clone(),
        );
        relay(b, a, delay, stop);
        ns
    }

    /// Starts a backend listening inside the namespace.
    pub fn backend(&self, behaviour: Behaviour) -> Backend {
        let addr = SocketAddr::from((self.inner, 0));
        in_netns(&self.name, move || Backend::start_on(addr, behaviour))
    }
}

impl Drop for DelayedNetns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
