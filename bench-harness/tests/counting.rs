//! Exact counting: N requests issued ⇒ N responses counted, by the load
//! generator and by the server alike (keep-alive, close, echo).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use ringlb_bench::serve::Mode;
use ringlb_bench::target::Target;
use ringlb_bench::workload::{EchoWorkload, HttpWorkload, Workload};

#[test]
fn keep_alive_counts_match_the_server() {
    let srv = http_server();
    let mut cfg = http_run(srv.local_addr(), 2, 8);
    cfg.requests = Some(5_003);
    let out = run(&cfg);
    let s = &out.stats;
    assert_eq!(s.issued, 5_003);
    assert_eq!(s.completed, 5_003);
    assert_eq!(s.errors.total(), 0);
    assert_eq!(s.in_flight_at_end, 0);
    assert_eq!(s.latency.len(), 5_003);
    assert_eq!(s.status_classes[1], 5_003);
    let served = srv.stop().unwrap();
    assert_eq!(served.requests, 5_003);
    assert_eq!(served.connections, 8);
}

#[test]
fn close_mode_opens_one_connection_per_request() {
    let srv = http_server();
    let mut cfg = http_run(srv.local_addr(), 1, 4);
    cfg.requests = Some(400);
    cfg.workload = Workload::Http(HttpWorkload {
        close: true,
        ..HttpWorkload::default()
    });
    let out = run(&cfg);
    assert_eq!(out.stats.completed, 400);
    assert_eq!(out.stats.errors.total(), 0);
    assert_eq!(out.stats.connect.len(), 400);
    let served = srv.stop().unwrap();
    assert_eq!(served.requests, 400);
    assert_eq!(served.connections, 400);
}

#[test]
fn echo_messages_are_counted_and_checked() {
    let srv = start(serve_cfg(Mode::Echo));
    let addr: SocketAddr = srv.local_addr();
    let mut cfg = http_run(addr, 1, 3);
    cfg.target = Target::parse_tcp(&addr.to_string()).unwrap();
    cfg.workload = Workload::Echo(EchoWorkload { size: 3000 });
    cfg.requests = Some(999);
    cfg.timeout = Duration::from_secs(2);
    let out = run(&cfg);
    assert_eq!(out.stats.completed, 999);
    assert_eq!(out.stats.errors.total(), 0);
    assert_eq!(out.stats.bytes_read, 999 * 3000);
    assert_eq!(out.stats.bytes_written, 999 * 3000);
    let served = srv.stop().unwrap();
    assert_eq!(served.bytes_in, 999 * 3000);
}

#[test]
fn streams_move_bytes_both_ways() {
    use ringlb_bench::workload::{Direction, StreamWorkload};
    for (mode, direction) in [
        (Mode::Sink { chunk: 65536 }, Direction::Upload),
        (Mode::Source { chunk: 65536 }, Direction::Download),
    ] {
        let srv = start(serve_cfg(mode));
        let addr = srv.local_addr();
        let mut cfg = http_run(addr, 1, 2);
        cfg.target = Target::parse_tcp(&addr.to_string()).unwrap();
        cfg.workload = Workload::Stream(StreamWorkload {
            direction,
            chunk: 65536,
        });
        cfg.duration = Some(Duration::from_millis(400));
        let s = run(&cfg).stats;
        let served = srv.stop().unwrap();
        assert_eq!(s.errors.total(), 0, "{direction:?}: {:?}", s.errors);
        assert_eq!(s.connect.len(), 2);
        match direction {
            Direction::Upload => {
                assert!(s.bytes_written > 10_000_000, "{}", s.bytes_written);
                assert!(served.bytes_in >= s.bytes_written);
                assert_eq!(s.bytes_read, 0);
            }
            Direction::Download => {
                assert!(s.bytes_read > 10_000_000, "{}", s.bytes_read);
                assert!(served.bytes_out >= s.bytes_read);
            }
        }
    }
}
