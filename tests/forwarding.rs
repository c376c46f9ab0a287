//! Byte-exact forwarding in every mode, both directions at once, and
//! half-close.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use common::{assert_drained, config, start, Backend, Behaviour};
use rand::RngCore;
use ringlb::config::{BalanceKind, ForwardMode};
use sha2::{Digest, Sha256};

/// Sends `size` random bytes through ringlb to an echo backend while reading
/// the echo on another thread; both digests must match.
fn echo_exact(addr: std::net::SocketAddr, size: usize) {
    let mut payload = vec![0u8; size];
    rand::rng().fill_bytes(&mut payload);
    let sent = Sha256::digest(&payload);
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let w = thread::spawn(move || {
        for chunk in payload.chunks(256 * 1024) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = stream;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.expect("read echo"),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n;
    }
    w.join().unwrap();
    assert_eq!(total, size, "echoed byte count");
    assert_eq!(hasher.finalize(), sent, "SHA-256 of {size} bytes");
}

const SIZES: [usize; 6] = [1, 1000, 65_543, 1 << 20, 5 << 20 | 3, 64 << 20];

fn exact_in_mode(forward: ForwardMode) {
    let backend = Backend::start(Behaviour::Echo);
    let (rt, addr) = start(&config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        forward,
    ));
    for size in SIZES {
        echo_exact(addr, size);
    }
    assert_drained(&rt);
    let c = rt.counters();
    let expected: usize = SIZES.iter().sum();
    assert_eq!(c.bytes_up as usize, expected);
    assert_eq!(c.bytes_down as usize, expected);
}

#[test]
fn copy_mode_is_byte_exact() {
    exact_in_mode(ForwardMode::Copy);
}

#[test]
fn splice_mode_is_byte_exact() {
    exact_in_mode(ForwardMode::Splice);
}

#[test]
fn ring_splice_mode_is_byte_exact() {
    exact_in_mode(ForwardMode::SpliceRing);
}

#[test]
fn auto_mode_is_byte_exact() {
    exact_in_mode(ForwardMode::Auto);
}

#[test]
fn concurrent_streams_stay_apart() {
    let backend = Backend::start(Behaviour::Echo);
    let (rt, addr) = start(&config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        2,
        ForwardMode::Auto,
    ));
    let workers: Vec<_> = (0..16)
        .map(|i| thread::spawn(move || echo_exact(addr, 300_000 + i * 7919)))
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_drained(&rt);
}

fn half_close_in_mode(forward: ForwardMode) {
    let backend = Backend::start(Behaviour::ReplyAfterFin);
    let (rt, addr) = start(&config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        forward,
    ));
    for size in [0usize, 10, 200_000] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        s.write_all(&payload).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        assert_eq!(reply.len(), 8 + size, "reply after half-close");
        assert_eq!(
            u64::from_le_bytes(reply[..8].try_into().unwrap()),
            size as u64
        );
        assert_eq!(&reply[8..], &payload[..]);
    }
    assert_drained(&rt);
}

#[test]
fn half_close_copy() {
    half_close_in_mode(ForwardMode::Copy);
}

#[test]
fn half_close_splice() {
    half_close_in_mode(ForwardMode::Splice);
}

/// A client that stops reading must push back on the server: ringlb holds a
/// bounded number of buffers meanwhile, and every byte still arrives.
#[test]
fn slow_reader_pushes_back() {
    const SIZE: usize = 48 << 20;
    for forward in [ForwardMode::Copy, ForwardMode::Auto] {
        let backend = Backend::start(Behaviour::Blast(SIZE));
        let (rt, addr) = start(&config(
            &[(backend.addr, 1)],
            BalanceKind::RoundRobin,
            1,
            forward,
        ));
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut peak = 0;
        for _ in 0..40 {
            thread::sleep(Duration::from_millis(10));
            peak = peak.max(rt.counters().buffers_in_use);
        }
        // One send in flight, the queue that triggers the pause, and what
        // multishot bursts add before the cancel lands: a few dozen at most,
        // where without backpressure the whole 1,024-buffer ring would go.
        assert!(
            peak <= 128,
            "{forward}: {peak} buffers held for one stalled reader"
        );
        eprintln!("{forward}: peak {peak} buffers");
        let mut got = Vec::with_capacity(SIZE);
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), SIZE);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, &b)| b == common::pattern(i)),
            "{forward}: bytes intact"
        );
        drop(s);
        assert_drained(&rt);
    }
}

/// An IPv6 listener in front of an IPv6 server.
#[test]
fn ipv6_listener_and_server() {
    let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let server_addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let mut cfg = config(
        &[(server_addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    );
    cfg.listeners[0].bind = "[::1]:0".parse().unwrap();
    let (rt, addr) = start(&cfg);
    assert!(addr.is_ipv6());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"six!!").unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"six!!");
    server.join().unwrap();
    drop(s);
    assert_drained(&rt);
}

/// With far fewer buffers than busy directions, receives hit an empty
/// buffer ring (ENOBUFS) and must wait and resume without losing a byte.
#[test]
fn scarce_buffers_only_slow_things_down() {
    let backend = Backend::start(Behaviour::Echo);
    let mut cfg = config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    );
    cfg.runtime.buffers = 16;
    cfg.runtime.buffer_size = 4096;
    let (rt, addr) = start(&cfg);
    let workers: Vec<_> = (0..32)
        .map(|i| thread::spawn(move || echo_exact(addr, 400_000 + i * 101)))
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_drained(&rt);
    assert!(
        rt.counters().buffer_starved > 0,
        "the ring ran dry at least once"
    );
}
