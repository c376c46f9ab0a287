//! The PROXY protocol through ringlb: `send_proxy` v1 and v2 as a server
//! receives them, `accept_proxy` taking the client's address from v1, v2
//! and LOCAL headers (for the access list and the log), a header split over
//! two writes, malformed and missing headers and untrusted peers closed and
//! counted; and interop with HAProxy both ways (HAProxy receiving ringlb's
//! header, and sending one to ringlb).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect_from, wait_until, Backend, Behaviour};
use ringlb::config::{
    AccessFormat, AccessLogConfig, AccessTarget, BalanceKind, Config, ForwardMode, Prefix,
    SendProxy,
};
use ringlb::proxy_protocol::{self, Header, Parsed, PP2_TYPE_UNIQUE_ID, V2_SIGNATURE};
use ringlb::Runtime;

/// What a header-reading backend saw on one connection.
#[derive(Debug, Clone)]
struct Seen {
    header: Header,
    raw: Vec<u8>,
}

/// A backend that reads a PROXY header first, records it, then echoes.
struct HeaderBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl HeaderBackend {
    fn start() -> HeaderBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (len, header) = loop {
                        let n = s.read(&mut chunk).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        match proxy_protocol::parse(&buf) {
                            Ok(Parsed::Complete { len, header }) => break (len, header),
                            Ok(Parsed::Incomplete) => continue,
                            Err(_) => return,
                        }
                    };
                    record.lock().unwrap().push(Seen {
                        header,
                        raw: buf[..len].to_vec(),
                    });
                    if s.write_all(&buf[len..]).is_err() {
                        return;
                    }
                    loop {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&chunk[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = s.shutdown(Shutdown::Write);
                });
            }
        });
        HeaderBackend { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Sends "hello" from 127.0.0.7 through the listener of `rt`, and checks
/// that `backend`'s last header named that client and that listener.
fn check_client_reaches(rt: &Runtime, backend: &HeaderBackend, what: &str) -> Seen {
    let addr = rt.listener_addr("test").unwrap();
    let c = connect_from("127.0.0.7", addr);
    let client = c.local_addr().unwrap();
    assert_eq!(exchange(c, b"", b"hello").unwrap(), b"hello");
    let seen = backend.seen().pop().unwrap();
    assert_eq!(
        seen.header,
        Header::Proxied {
            src: client,
            dst: addr
        },
        "{what}"
    );
    seen
}

/// Sends `prefix` then `msg`, half-closes, and returns what came back (or
/// the error that ended the exchange).
fn exchange(mut c: TcpStream, prefix: &[u8], msg: &[u8]) -> Result<Vec<u8>, String> {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(prefix).map_err(|e| e.to_string())?;
    c.write_all(msg).map_err(|e| e.to_string())?;
    c.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut back = Vec::new();
    c.read_to_end(&mut back).map_err(|e| e.to_string())?;
    Ok(back)
}

fn single(server: SocketAddr) -> Config {
    common::config(
        &[(server, 1)],
        BalanceKind::RoundRobin,
        2,
        ForwardMode::Auto,
    )
}

#[test]
fn send_proxy_v1_and_v2_carry_the_client_and_the_listener_address() {
    let backend = HeaderBackend::start();
    for (version, unique) in [
        (SendProxy::V1, false),
        (SendProxy::V2, false),
        (SendProxy::V2, true),
    ] {
        let mut cfg = single(backend.addr);
        cfg.pools[0].policy.send_proxy = version;
        cfg.pools[0].policy.send_proxy_unique_id = unique;
        let mut rt = Runtime::start(&cfg).unwrap();
        let addr = rt.listener_addr("test").unwrap();
        let seen = check_client_reaches(&rt, &backend, &format!("{version:?}"));
        let Header::Proxied { src: client, .. } = seen.header else {
            unreachable!()
        };
        match version {
            SendProxy::V1 => assert_eq!(
                seen.raw,
                format!(
                    "PROXY TCP4 127.0.0.7 127.0.0.1 {} {}\r\n",
                    client.port(),
                    addr.port()
                )
                .as_bytes()
            ),
            _ => {
                assert_eq!(&seen.raw[..12], &V2_SIGNATURE);
                let tlvs = &seen.raw[16 + 12..];
                if unique {
                    assert_eq!(tlvs[0], PP2_TYPE_UNIQUE_ID);
                    assert_eq!(u16::from_be_bytes([tlvs[1], tlvs[2]]), 32);
                    assert!(tlvs[3..].iter().all(u8::is_ascii_hexdigit), "{tlvs:?}");
                } else {
                    assert!(tlvs.is_empty());
                }
            }
        }
        rt.stop(Duration::from_secs(1));
    }
    // A server's own setting overrides its pool's.
    let mut cfg = single(backend.addr);
    cfg.pools[0].policy.send_proxy = SendProxy::V2;
    cfg.pools[0].servers[0].send_proxy = Some(SendProxy::V1);
    let rt = Runtime::start(&cfg).unwrap();
    let c = TcpStream::connect(rt.listener_addr("test").unwrap()).unwrap();
    exchange(c, b"", b"x").unwrap();
    assert!(backend
        .seen()
        .pop()
        .unwrap()
        .raw
        .starts_with(b"PROXY TCP4 "));
}

fn accept_proxy_config(server: SocketAddr, log: &std::path::Path) -> Config {
    let mut cfg = single(server);
    cfg.listeners[0].accept_proxy = true;
    cfg.listeners[0].proxy_trusted = vec![Prefix::parse("127.0.0.0/8").unwrap()];
    cfg.listeners[0].deny = vec![Prefix::parse("203.0.113.66").unwrap()];
    cfg.timeouts.proxy_header = Duration::from_millis(300);
    cfg.access_log = Some(AccessLogConfig {
        target: AccessTarget::File(log.to_path_buf()),
        format: AccessFormat::Text,
        queue: 1024,
    });
    cfg
}

#[test]
fn accept_proxy_takes_the_client_address_from_the_header() {
    let echo = Backend::start(Behaviour::Echo);
    let dir = std::env::temp_dir().join(format!("ringlb-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let _ = std::fs::remove_file(&log);
    let mut rt = Runtime::start(&accept_proxy_config(echo.addr, &log)).unwrap();
    let addr = rt.listener_addr("test").unwrap();
    let connect = || TcpStream::connect(addr).unwrap();

    // v1, v2, and a v1 header split over two writes, each with data after.
    let v1 = b"PROXY TCP4 203.0.113.9 192.0.2.1 40001 443\r\n".to_vec();
    let mut v2 = Vec::new();
    proxy_protocol::write_v2(
        &mut v2,
        "[2001:db8::9]:40002".parse().unwrap(),
        "[2001:db8::1]:443".parse().unwrap(),
        None,
    );
    assert_eq!(exchange(connect(), &v1, b"one").unwrap(), b"one");
    assert_eq!(exchange(connect(), &v2, b"two").unwrap(), b"two");
    let mut split = connect();
    split.write_all(b"PROXY TCP4 203.0.113.10 192.0.").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        exchange(split, b"2.1 40003 443\r\n", b"three").unwrap(),
        b"three"
    );
    // LOCAL: the connection's own address.
    let local = [&V2_SIGNATURE[..], &[0x20, 0x00, 0x00, 0x00]].concat();
    let c = connect_from("127.0.0.8", addr);
    assert_eq!(exchange(c, &local, b"four").unwrap(), b"four");
    // The access list applies to the address carried.
    let denied = b"PROXY TCP4 203.0.113.66 192.0.2.1 40005 443\r\n";
    let out = exchange(connect(), denied, b"five");
    assert!(out.as_ref().map_or(true, |b| b.is_empty()), "{out:?}");
    // Malformed, missing (timed out), and a client that closes first.
    let bad = exchange(connect(), b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n", b"six");
    assert!(
        bad.map_or(true, |b| b.is_empty()),
        "a malformed header gets nothing back"
    );
    let started = Instant::now();
    let mut silent = connect();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = silent.read_to_end(&mut sink);
    assert!(sink.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    drop(connect());

    assert!(wait_until(Duration::from_secs(5), || rt.counters().closed == 8));
    let counts = rt.listeners()[0].stats.read();
    assert_eq!(counts.denied, 1);
    assert_eq!(
        counts.proxy_errors, 3,
        "malformed, missing, closed: {counts:?}"
    );
    // The echo server saw only the four good clients.
    assert_eq!(echo.accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    rt.stop(Duration::from_secs(1));
    let text = std::fs::read_to_string(&log).unwrap();
    let client_of = |needle: &str| text.lines().any(|l| l.split(' ').nth(1) == Some(needle));
    assert!(client_of("203.0.113.9:40001"), "{text}");
    assert!(client_of("[2001:db8::9]:40002"), "{text}");
    assert!(client_of("203.0.113.10:40003"), "{text}");
    assert!(text.lines().any(|l| l.contains(" 127.0.0.8:")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("203.0.113.66:40005") && l.contains(" PR ")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains(" cR ")),
        "the silent client timed out waiting for its header: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_trusted_peers_may_send_a_header() {
    let echo = Backend::start(Behaviour::Echo);
    let mut cfg = single(echo.addr);
    cfg.listeners[0].accept_proxy = true;
    cfg.listeners[0].proxy_trusted = vec![Prefix::parse("127.0.0.1/32").unwrap()];
    let rt = Runtime::start(&cfg).unwrap();
    let addr = rt.listener_addr("test").unwrap();
    let header = b"PROXY TCP4 198.51.100.1 192.0.2.1 1 2\r\n";
    assert_eq!(
        exchange(connect_from("127.0.0.1", addr), header, b"ok").unwrap(),
        b"ok"
    );
    let refused = exchange(connect_from("127.0.0.2", addr), header, b"no");
    assert!(refused.map_or(true, |b| b.is_empty()));
    assert!(wait_until(Duration::from_secs(5), || rt.listeners()[0]
        .stats
        .read()
        .proxy_errors
        == 1));
    assert_eq!(echo.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy (Debian's) in TCP mode on `port` to `server`, with `bind` and
/// `server` options.
fn haproxy(port: u16, bind_opts: &str, server: SocketAddr, server_opts: &str) -> Haproxy {
    let dir = std::env::temp_dir().join(format!("ringlb-haproxy-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend f\n  bind 127.0.0.1:{port} {bind_opts}\n  default_backend b\n\
             backend b\n  server s {server} {server_opts}\n"
        ),
    )
    .unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (Debian's haproxy package) must be installed");
    let up = wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "haproxy did not start");
    Haproxy(child)
}

#[test]
fn interop_with_haproxy_both_ways() {
    let backend = HeaderBackend::start();
    // ringlb (send_proxy v1, then v2) → HAProxy (accept-proxy, send-proxy)
    // → backend: HAProxy read ringlb's header and passes the client on.
    for version in [SendProxy::V1, SendProxy::V2] {
        let port = free_port();
        let _h = haproxy(port, "accept-proxy", backend.addr, "send-proxy");
        let mut cfg = single(format!("127.0.0.1:{port}").parse().unwrap());
        cfg.pools[0].policy.send_proxy = version;
        let rt = Runtime::start(&cfg).unwrap();
        check_client_reaches(&rt, &backend, &format!("HAProxy read ringlb's {version:?}"));
    }
    // Client → HAProxy (send-proxy-v2) → ringlb (accept_proxy, send_proxy
    // v1) → backend: ringlb read HAProxy's header.
    let ringlb_port = free_port();
    let mut cfg = single(backend.addr);
    cfg.listeners[0].bind = format!("127.0.0.1:{ringlb_port}").parse().unwrap();
    cfg.listeners[0].accept_proxy = true;
    cfg.pools[0].policy.send_proxy = SendProxy::V1;
    let _rt = Runtime::start(&cfg).unwrap();
    let port = free_port();
    let _h = haproxy(
        port,
        "",
        format!("127.0.0.1:{ringlb_port}").parse().unwrap(),
        "send-proxy-v2",
    );
    let c = connect_from("127.0.0.9", format!("127.0.0.1:{port}").parse().unwrap());
    let client = c.local_addr().unwrap();
    assert_eq!(exchange(c, b"", b"from haproxy").unwrap(), b"from haproxy");
    // (HAProxy's start-up probe may have gone through too: pick ours.)
    let seen = backend
        .seen()
        .into_iter()
        .find(|s| matches!(s.header, Header::Proxied { src, .. } if src == client))
        .expect("the client's connection reached the backend");
    assert_eq!(
        seen.header,
        Header::Proxied {
            src: client,
            dst: format!("127.0.0.1:{port}").parse().unwrap()
        },
        "ringlb read HAProxy's v2 header and passed the client on"
    );
}

/// Clients that sent part of a header and stop do not keep the shard busy:
/// it sleeps until more bytes come (or the header deadline).
#[test]
fn partial_headers_do_not_spin_the_shard() {
    let echo = Backend::start(Behaviour::Echo);
    let cfg = common::accept_proxy_config(echo.addr);
    let rt = Runtime::start(&cfg).unwrap();
    let addr = rt.listener_addr("test").unwrap();
    let mut held: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for c in &mut held {
        c.write_all(b"PROXY TCP4 198.51.100.2 ").unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = rt.counters().wakes;
    std::thread::sleep(Duration::from_millis(500));
    let wakes = rt.counters().wakes - before;
    assert!(
        wakes < 50,
        "{wakes} loop wake-ups in 500 ms with 50 partial headers"
    );
    // The rest of a header still completes it.
    let c = &mut held[0];
    c.write_all(b"192.0.2.1 1 2\r\nping").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"ping");
}

/// A client that sends part of a header and half-closes is closed at once
/// (its socket stays readable: waiting for more would spin).
#[test]
fn a_partial_header_then_fin_is_closed_at_once() {
    let echo = Backend::start(Behaviour::Echo);
    let cfg = common::accept_proxy_config(echo.addr);
    let rt = Runtime::start(&cfg).unwrap();
    let addr = rt.listener_addr("test").unwrap();
    let before = rt.counters().wakes;
    let started = Instant::now();
    let out = exchange(TcpStream::connect(addr).unwrap(), b"PROXY TCP4 ", b"");
    assert!(out.map_or(true, |b| b.is_empty()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(wait_until(Duration::from_secs(2), || rt.listeners()[0]
        .stats
        .read()
        .proxy_errors
        == 1));
    assert!(
        rt.counters().wakes - before < 50,
        "{} wake-ups",
        rt.counters().wakes - before
    );
}
