//! The waiting room: clients beyond every server's `maxconn` wait, in
//! order, and reach a server intact; the bound holds across shards;
//! `timeouts.queue` and `maxqueue` close clients on time and count them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_drained, config, start, wait_until, Backend, Behaviour};
use ringlb::config::{BalanceKind, Config, ForwardMode};

fn limited(backends: &[&Backend], maxconn: u32, shards: usize) -> Config {
    let servers: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let mut c = config(&servers, BalanceKind::RoundRobin, shards, ForwardMode::Copy);
    for s in &mut c.pools[0].servers {
        s.maxconn = maxconn;
    }
    c.timeouts.queue = Duration::from_secs(20);
    c
}

/// Connects, sends `line`, and returns the stream once the server echoed it.
fn served(addr: SocketAddr, line: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut echo = String::new();
    BufReader::new(&s).read_line(&mut echo).unwrap();
    assert_eq!(echo.trim_end(), line);
    s
}

/// Reads until ringlb closes the connection (EOF or reset); false if data
/// arrives or the read times out instead.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// 500 concurrent clients through 2 shards to 2 servers of `maxconn = 8`:
/// counted at the servers, neither ever holds more than 8, both are
/// filled, and every client is served.
#[test]
fn maxconn_holds_across_shards_under_500_clients() {
    let a = Backend::start(Behaviour::Record);
    let b = Backend::start(Behaviour::Record);
    let (rt, addr) = start(&limited(&[&a, &b], 8, 2));
    let clients: Vec<_> = (0..500)
        .map(|i| {
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let s = served(addr, &format!("c{i}"));
                    thread::sleep(Duration::from_millis(2));
                    drop(s);
                })
                .unwrap()
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        a.log.lock().unwrap().len() + b.log.lock().unwrap().len(),
        500
    );
    assert_eq!(a.peak.load(Ordering::SeqCst), 8, "server a's peak");
    assert_eq!(b.peak.load(Ordering::SeqCst), 8, "server b's peak");
    let q = rt.pools().pools[0].queue.stats();
    assert!(q.queued > 0 && q.served == q.queued, "{q:?}");
    assert_eq!((q.len, q.timeouts, q.full), (0, 0, 0));
    assert!(q.waited_p50.is_some() && q.waited_p99 >= q.waited_p50);
    let c = rt.counters();
    assert_eq!(c.queued, q.queued);
    assert_eq!(c.queue_len, 0);
    assert_drained(&rt);
}

/// One slot, twelve clients queued 25 ms apart on either shard: the server
/// sees them in the order they arrived.
#[test]
fn a_freed_slot_goes_to_the_oldest_waiter_across_shards() {
    let server = Backend::start(Behaviour::Record);
    let (rt, addr) = start(&limited(&[&server], 1, 2));
    let holder = served(addr, "holder");
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let t = thread::spawn(move || drop(served(addr, &format!("{i}"))));
            let queued = wait_until(Duration::from_secs(5), || {
                rt.pools().pools[0].queue.len() == i + 1
            });
            assert!(queued, "client {i} queued");
            thread::sleep(Duration::from_millis(25));
            t
        })
        .collect();
    let per_shard: Vec<u64> = rt.shard_counters().iter().map(|c| c.queued).collect();
    drop(holder);
    for c in clients {
        c.join().unwrap();
    }
    let log = server.log.lock().unwrap().clone();
    let expected: Vec<String> = std::iter::once("holder".to_string())
        .chain((0..12).map(|i| i.to_string()))
        .collect();
    assert_eq!(log, expected);
    let c = rt.counters();
    // Every slot reached a waiter as it was freed, not at a poll.
    assert_eq!(c.queue_poll_finds, 0, "{c:?}");
    if per_shard.iter().all(|&n| n > 0) {
        // Both shards had waiters: slots crossed between them.
        assert!(
            c.handoffs_sent > 0 && c.handoffs_received == c.handoffs_sent,
            "{c:?}"
        );
    }
    assert_drained(&rt);
}

/// What a client sends while it waits stays in its socket and reaches the
/// server intact once a slot frees.
#[test]
fn bytes_sent_while_queued_arrive_intact() {
    let echo = Backend::start(Behaviour::Echo);
    let (rt, addr) = start(&limited(&[&echo], 1, 2));
    let mut holder = TcpStream::connect(addr).unwrap();
    holder.write_all(b"h").unwrap();
    let mut one = [0u8; 1];
    holder.read_exact(&mut one).unwrap();

    let data: Vec<u8> = (0..2 << 20).map(|i: usize| (i * 7 % 251) as u8).collect();
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let w = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    assert!(wait_until(Duration::from_secs(5), || rt
        .counters()
        .queue_len
        == 1));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        echo.accepted.load(Ordering::SeqCst),
        1,
        "the waiter is not connected yet"
    );
    drop(holder);
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    w.join().unwrap();
    assert!(back == data, "{} bytes back of {}", back.len(), data.len());
    assert_drained(&rt);
}

/// Waiters for a pool whose servers all go down are reset at once, not
/// left to the queue timeout, and so are newcomers.
#[test]
fn waiters_are_reset_when_no_server_is_up() {
    let server = Backend::start(Behaviour::Record);
    let (rt, addr) = start(&limited(&[&server], 1, 2));
    let holder = served(addr, "holder");
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"w\n").unwrap();
            s
        })
        .collect();
    assert!(wait_until(Duration::from_secs(2), || rt.pools().pools[0]
        .queue
        .len()
        == 3));
    let pool = &rt.pools().pools[0];
    pool.servers[0]
        .live
        .set_flag(ringlb::pool::HEALTH_DOWN, true);
    let t0 = Instant::now();
    for mut w in waiters {
        assert!(closed_by_peer(&mut w));
    }
    // At the next poll (50 ms), far from the 20 s queue timeout.
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let mut late = TcpStream::connect(addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(closed_by_peer(&mut late));
    assert_eq!(pool.queue.stats().timeouts, 0);
    assert_eq!(rt.counters().unserved, 4);
    drop(holder);
    assert_drained(&rt);
}

/// `maxqueue` turns the next client away at once; `timeouts.queue` closes
/// the waiters on time; neither reaches the server.
#[test]
fn maxqueue_rejects_and_the_queue_timeout_closes_on_time() {
    let server = Backend::start(Behaviour::Record);
    let mut cfg = limited(&[&server], 1, 2);
    cfg.pools[0].policy.maxqueue = 2;
    cfg.timeouts.queue = Duration::from_millis(400);
    let (rt, addr) = start(&cfg);
    // One connection that came and went: the room knows how long a slot is held.
    drop(served(addr, "first"));
    let room = &rt.pools().pools[0].queue;
    assert!(wait_until(Duration::from_secs(2), || room.mean_hold() > Duration::ZERO));
    let _holder = served(addr, "holder");
    let waiters: Vec<_> = (0..2)
        .map(|i| {
            let t0 = Instant::now();
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"w\n").unwrap();
            assert!(wait_until(Duration::from_secs(2), || {
                rt.pools().pools[0].queue.len() == i + 1
            }));
            (t0, s)
        })
        .collect();
    let now = ringlb::clock::millis(Instant::now());
    assert_eq!(
        rt.pools().pools[0].queue_stats(now).estimated_wait,
        room.mean_hold() * 2
    );

    // The third is turned away at once.
    let t0 = Instant::now();
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(closed_by_peer(&mut third));
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );

    for (t0, mut s) in waiters {
        assert!(closed_by_peer(&mut s));
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(380) && waited < Duration::from_millis(1500),
            "closed after {waited:?}"
        );
    }
    let q = room.stats();
    assert_eq!((q.full, q.timeouts, q.len, q.served), (1, 2, 0, 0), "{q:?}");
    let c = rt.counters();
    assert_eq!((c.queue_full, c.queue_timeouts), (1, 2));
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}
