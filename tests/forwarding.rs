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
        // A direction holds at most MAX_HELD (3) buffers: its receive ends
        // at a byte limit, exactly for reads that fill their buffers; reads
        // that come in pieces may go up to two past it before the cancel
        // lands. Kernels without the limit cancel the receive instead,
        // which a burst of up to 32 receives can overtake.
        let bound = if rt.recv_limit() { 3 + 2 } else { 3 + 32 };
        eprintln!("{forward}: peak {peak} buffers");
        assert!(
            peak <= bound,
            "{forward}: {peak} buffers held for one stalled reader (bound {bound})"
        );
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

/// The reordering the old auto mode allowed when buffers ran out: a
/// give-back woke the same direction, which started splicing fresh bytes
/// before the buffer it had just taken off its queue was sent. Many
/// multi-MB echo flows through 16 buffers of 4 KiB, in auto mode, must come
/// back byte for byte.
#[test]
fn auto_mode_with_scarce_buffers_keeps_every_byte_in_order() {
    let backend = Backend::start(Behaviour::Echo);
    let mut cfg = config(
        &[(backend.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Auto,
    );
    cfg.runtime.buffers = 16;
    cfg.runtime.buffer_size = 4096;
    let (rt, addr) = start(&cfg);
    let workers: Vec<_> = (0..24)
        .map(|i| thread::spawn(move || echo_exact(addr, (2 << 20) + i * 7919)))
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_drained(&rt);
    let c = rt.counters();
    assert!(c.buffer_starved > 0, "the ring ran dry: {c:?}");
    assert!(c.pipes > 0, "directions moved to splice: {c:?}");
}

/// Stalled peers cannot starve a shard of buffers for good, and starving
/// is not idleness: five uploads into a server that never reads hold their
/// cap of 3 buffers each and no more; a sixth takes the ring's last one.
/// Echo flows started meanwhile wait for buffers longer than their idle
/// timeout and are not closed, then finish intact once the uploads go
/// away. The uploads themselves are not idle on the client side either:
/// the shard stopped reading them, not the client.
#[test]
fn stalled_peers_hold_their_cap_and_starved_pairs_are_not_idle() {
    const HOGS: usize = 5;
    let stall = Backend::start(Behaviour::Stall);
    let echo = Backend::start(Behaviour::Echo);
    // One shard, one buffer ring, two listeners: uploads into the stalled
    // server, echo flows into the echo server.
    let mut cfg = config(
        &[(stall.addr, 1)],
        BalanceKind::RoundRobin,
        1,
        ForwardMode::Copy,
    );
    cfg.runtime.buffers = 16;
    cfg.runtime.buffer_size = 4096;
    cfg.timeouts.client_idle = Duration::from_secs(1);
    cfg.timeouts.server_idle = Duration::from_secs(20);
    let mut echo_pool = cfg.pools[0].clone();
    echo_pool.name = "echo".into();
    echo_pool.servers[0].addr = echo.addr;
    cfg.pools.push(echo_pool);
    let mut echo_listener = cfg.listeners[0].clone();
    echo_listener.name = "echo".into();
    echo_listener.pool = 1;
    cfg.listeners.push(echo_listener);
    let (rt, stall_addr) = start(&cfg);
    let echo_addr = rt.listener_addr("echo").unwrap();

    let hog = || {
        let s = TcpStream::connect(stall_addr).unwrap();
        let mut w = s.try_clone().unwrap();
        thread::spawn(move || {
            let chunk = vec![7u8; 256 * 1024];
            // Blocks once every buffer on the way is full.
            while w.write_all(&chunk).is_ok() {}
        });
        s
    };
    if !rt.recv_limit() {
        eprintln!(
            "this kernel cannot end a receive at a byte limit: the cap is not exact; skipping"
        );
        return;
    }
    let mut hogs: Vec<TcpStream> = (0..HOGS).map(|_| hog()).collect();
    let cap = 3;
    let held = common::wait_until(Duration::from_secs(10), || {
        rt.counters().buffers_in_use == (cap * HOGS) as u64
    });
    assert!(
        held,
        "each stalled upload holds its cap of {cap} buffers: {:?}",
        rt.counters()
    );
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        rt.counters().buffers_in_use,
        (cap * HOGS) as u64,
        "and no more"
    );
    // One more takes the ring's last buffer.
    hogs.push(hog());
    assert!(common::wait_until(Duration::from_secs(10), || {
        rt.counters().buffers_in_use == 16
    }));

    let flows: Vec<_> = (0..4)
        .map(|i| thread::spawn(move || echo_exact(echo_addr, 300_000 + i * 101)))
        .collect();
    // Starved for two and a half times the client idle timeout.
    thread::sleep(Duration::from_millis(2500));
    let c = rt.counters();
    assert_eq!(
        c.idle_timeouts, 0,
        "nobody was idle by its own fault: {c:?}"
    );
    assert!(
        c.buffer_starved > 0,
        "the echo flows waited for buffers: {c:?}"
    );
    // The stalled server goes away (its unread data makes that a reset):
    // the uploads end and give their buffers back.
    drop(stall);
    for f in flows {
        f.join().unwrap();
    }
    drop(hogs);
    assert_drained(&rt);
    let c = rt.counters();
    assert_eq!(c.idle_timeouts, 0, "{c:?}");
    assert_eq!(c.resets, HOGS as u64 + 1, "{c:?}");
}
