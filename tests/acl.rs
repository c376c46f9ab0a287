//! Access lists: a denied client is reset right after accept, before any
//! server is chosen (the server's own count stays 0), on IPv4 and IPv6,
//! counted per listener; a reload changes the list.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::{connect_from, wait_until, Backend, Behaviour};
use ringlb::config::{BalanceKind, ForwardMode, ListenerConfig, Prefix};
use ringlb::Runtime;

fn prefixes(list: &[&str]) -> Vec<Prefix> {
    list.iter().map(|p| Prefix::parse(p).unwrap()).collect()
}

/// Whether an echo exchange through `c` works (false: reset or closed
/// without an answer).
fn served(mut c: TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if c.write_all(b"hello").is_err() {
        return false;
    }
    let _ = c.shutdown(Shutdown::Write);
    let mut back = Vec::new();
    c.read_to_end(&mut back).is_ok() && back == b"hello"
}

fn connect_v6(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).unwrap()
}

#[test]
fn denied_clients_never_reach_a_server_v4_and_v6() {
    let backend = Backend::start(Behaviour::Echo);
    let mut cfg = common::config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        2,
        ForwardMode::Auto,
    );
    // Allow loopback, carve out a host and a /24, and put one host of that
    // /24 back: the most specific prefix decides.
    cfg.listeners[0].allow = prefixes(&["127.0.0.0/8", "127.0.1.7/32"]);
    cfg.listeners[0].deny = prefixes(&["127.0.0.5", "127.0.1.0/24"]);
    let mut v6_deny = ListenerConfig::new("v6-deny", "[::1]:0".parse().unwrap(), 0);
    v6_deny.deny = prefixes(&["::1/128"]);
    let mut v6_allow = ListenerConfig::new("v6-allow", "[::1]:0".parse().unwrap(), 0);
    v6_allow.allow = prefixes(&["::1/128"]);
    v6_allow.deny = prefixes(&["2001:db8::/32"]);
    cfg.listeners.push(v6_deny);
    cfg.listeners.push(v6_allow);
    let mut rt = Runtime::start(&cfg).unwrap();
    let v4 = rt.listener_addr("test").unwrap();

    for (src, expect) in [
        ("127.0.0.5", false),
        ("127.0.0.6", true),
        ("127.0.1.3", false),
        ("127.0.1.7", true),
        ("127.0.0.5", false),
    ] {
        assert_eq!(served(connect_from(src, v4)), expect, "from {src}");
    }
    assert!(!served(connect_v6(rt.listener_addr("v6-deny").unwrap())));
    assert!(served(connect_v6(rt.listener_addr("v6-allow").unwrap())));

    // The server saw exactly the allowed clients.
    assert!(wait_until(Duration::from_secs(5), || rt.counters().closed == 3));
    assert_eq!(
        backend.accepted.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    let count = |name: &str| {
        rt.listeners()
            .iter()
            .find(|l| l.name == name)
            .unwrap()
            .stats
            .read()
    };
    assert!(wait_until(Duration::from_secs(2), || count("test").denied == 3));
    assert_eq!(count("test").accepted, 2);
    assert_eq!(count("v6-deny").denied, 1);
    assert_eq!(
        (count("v6-allow").accepted, count("v6-allow").denied),
        (1, 0)
    );

    // A reload that lifts the deny lets the host in, on the same socket.
    let mut lifted = rt.config().clone();
    lifted.listeners[0].deny = prefixes(&["127.0.1.0/24"]);
    rt.apply(lifted).unwrap();
    assert_eq!(rt.listener_addr("test").unwrap(), v4);
    assert!(wait_until(Duration::from_secs(5), || served(connect_from(
        "127.0.0.5",
        v4
    ))));
    assert!(!served(connect_from("127.0.1.3", v4)));
    rt.stop(Duration::from_secs(1));
}
