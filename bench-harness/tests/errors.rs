//! Errors are counted by kind: refused connects, a server that closes in the
//! middle of a response, timeouts, 5xx statuses and garbage responses.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::*;
use ringlb_bench::serve::Mode;

/// A server answering every connection with `reply` (read one request first),
/// then closing, for at most `conns` connections.
fn misbehaving_server(reply: &'static [u8], conns: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(conns) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
        }
    });
    addr
}

#[test]
fn refused_connections() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = http_run(addr, 1, 2);
    cfg.requests = Some(50);
    let e = run(&cfg).stats.errors;
    assert_eq!(e.connect, 50, "{e:?}");
    assert_eq!(e.total(), 50);
}

#[test]
fn close_mid_response_is_a_read_error() {
    let addr = misbehaving_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
        20,
    );
    let mut cfg = http_run(addr, 1, 2);
    cfg.requests = Some(20);
    let out = run(&cfg);
    assert_eq!(out.stats.errors.read, 20, "{:?}", out.stats.errors);
    assert_eq!(out.stats.completed, 0);
}

#[test]
fn garbage_is_a_protocol_error() {
    let addr = misbehaving_server(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", 10);
    let mut cfg = http_run(addr, 1, 1);
    cfg.requests = Some(10);
    let e = run(&cfg).stats.errors;
    assert_eq!(e.protocol, 10, "{e:?}");
}

#[test]
fn slow_responses_time_out() {
    let mut sc = serve_cfg(Mode::Http {
        status: 200,
        body_size: 1,
    });
    sc.delay = Duration::from_millis(1500);
    let srv = start(sc);
    let mut cfg = http_run(srv.local_addr(), 1, 3);
    cfg.requests = Some(3);
    cfg.timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let out = run(&cfg);
    assert_eq!(out.stats.errors.timeout, 3, "{:?}", out.stats.errors);
    assert_eq!(out.stats.completed, 0);
    assert!(started.elapsed() < Duration::from_millis(1200));
    srv.stop().unwrap();
}

#[test]
fn server_errors_count_as_status_errors() {
    let srv = start(serve_cfg(Mode::Http {
        status: 503,
        body_size: 10,
    }));
    let mut cfg = http_run(srv.local_addr(), 1, 2);
    cfg.requests = Some(100);
    let s = run(&cfg).stats;
    assert_eq!(s.errors.status, 100);
    assert_eq!(s.status_classes[4], 100);
    assert_eq!(s.completed, 100);
    assert_eq!(s.errors.total(), 100);
    srv.stop().unwrap();
}
