//! The algorithms end to end: `first` fills in order, `leasttime` steers
//! away from a slow connect and a slow first byte, and `source` maps a
//! client the same way on every shard and in two separate processes.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::binary::{ringlb, Running};
use common::netns::DelayedNetns;
use common::{assert_drained, config, connect_from, start, Backend, Behaviour};
use ringlb::config::{BalanceKind, ForwardMode, LeastTimeObserve};

fn id_of(s: &mut TcpStream) -> u8 {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut id = [0u8; 1];
    s.read_exact(&mut id).unwrap();
    id[0]
}

fn open(addr: SocketAddr) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(addr).unwrap();
    let id = id_of(&mut s);
    (s, id)
}

#[test]
fn first_fills_servers_in_declared_order() {
    let backends: Vec<_> = (0..3)
        .map(|i| Backend::start(Behaviour::Id(b'a' + i)))
        .collect();
    let servers: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let mut cfg = config(&servers, BalanceKind::First, 2, ForwardMode::Copy);
    for s in &mut cfg.pools[0].servers {
        s.maxconn = 2;
    }
    let (rt, addr) = start(&cfg);
    let mut held: Vec<(TcpStream, u8)> = (0..5).map(|_| open(addr)).collect();
    let ids: Vec<u8> = held.iter().map(|h| h.1).collect();
    assert_eq!(ids, b"aabbc");
    // A slot frees on the first server: it is used before the third's.
    let i = held.iter().position(|h| h.1 == b'a').unwrap();
    held.remove(i);
    thread::sleep(Duration::from_millis(50));
    held.push(open(addr));
    assert_eq!(held.last().unwrap().1, b'a');
    held.push(open(addr));
    assert_eq!(held.last().unwrap().1, b'c');
    drop(held);
    assert_drained(&rt);
}

/// Sequential requests (one byte, then the server's id) to a pool with
/// `leasttime`; how many reached each server, and each server's latency
/// average (ms) at the end.
fn leasttime_counts(
    servers: &[SocketAddr],
    observe: LeastTimeObserve,
    n: usize,
) -> (Vec<usize>, Vec<f64>) {
    let s: Vec<_> = servers.iter().map(|&a| (a, 1)).collect();
    let mut cfg = config(&s, BalanceKind::LeastTime, 2, ForwardMode::Copy);
    cfg.pools[0].policy.leasttime_observe = observe;
    let (rt, addr) = start(&cfg);
    let mut counts = vec![0; servers.len()];
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut c, b"?").unwrap();
        counts[(id_of(&mut c) - b'a') as usize] += 1;
    }
    assert_drained(&rt);
    let pool = &rt.pools().pools[0];
    let now = ringlb::clock::millis(std::time::Instant::now());
    let latency = pool
        .servers
        .iter()
        .map(|s| {
            s.live
                .latency
                .micros(now, pool.policy.ewma_window)
                .unwrap_or(0.0)
                / 1000.0
        })
        .collect();
    (counts, latency)
}

#[test]
fn leasttime_steers_away_from_a_slow_connect() {
    let ns = DelayedNetns::new(Duration::from_millis(20));
    let slow = ns.backend(Behaviour::SlowId(b'a', 0));
    let fast: Vec<_> = [b'b', b'c']
        .iter()
        .map(|&id| Backend::start(Behaviour::SlowId(id, 0)))
        .collect();
    let (counts, ms) = leasttime_counts(
        &[slow.addr, fast[0].addr, fast[1].addr],
        LeastTimeObserve::Connect,
        200,
    );
    // The delay is what ringlb measured...
    assert!(ms[0] >= 15.0 && ms[1] < 5.0 && ms[2] < 5.0, "{ms:?}");
    // ...and each is tried; then the 20 ms connect is avoided.
    assert_fast_servers_take_the_rest(&counts);
}

#[test]
fn leasttime_steers_away_from_a_slow_first_byte() {
    let backends = [
        Backend::start(Behaviour::SlowId(b'a', 20)),
        Backend::start(Behaviour::SlowId(b'b', 0)),
        Backend::start(Behaviour::SlowId(b'c', 0)),
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let (counts, ms) = leasttime_counts(&addrs, LeastTimeObserve::Ttfb, 200);
    assert!(ms[0] >= 15.0 && ms[1] < 5.0 && ms[2] < 5.0, "{ms:?}");
    assert_fast_servers_take_the_rest(&counts);
}

/// The slow server (index 0) gets its first tries only; the two fast ones
/// take the rest, each tried. How they split it follows loopback noise:
/// peak EWMA keeps a server whose sample once peaked (a thread scheduled
/// late) behind the other until its average decays, about a window (10 s)
/// later, so one of them may take nearly all of a 200-request run.
fn assert_fast_servers_take_the_rest(counts: &[usize]) {
    assert!(counts[0] <= 4, "{counts:?}");
    assert!(counts[1] >= 1 && counts[2] >= 1, "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 200, "{counts:?}");
}

/// The server each of `sources` reaches through `addr`.
fn mapping(addr: SocketAddr, sources: &[String]) -> Vec<u8> {
    sources
        .iter()
        .map(|src| id_of(&mut connect_from(src, addr)))
        .collect()
}

#[test]
fn source_maps_a_client_alike_on_every_shard_and_in_every_process() {
    let backends: Vec<_> = (0..4)
        .map(|i| Backend::start(Behaviour::Id(b'a' + i)))
        .collect();
    let servers = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "{{ name = \"s{i}\", addr = \"{}\", weight = {} }}",
                b.addr,
                1 + i % 2
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let dir = std::env::temp_dir().join(format!("ringlb-source-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut procs = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..2 {
        let port = common::dead_addr().port();
        let conf = dir.join(format!("lb{i}.toml"));
        std::fs::write(
            &conf,
            format!(
                "[runtime]\nshards = 2\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:{port}\"\npool = \"p\"\n\n\
                 [[pool]]\nname = \"p\"\nbalance = \"source\"\nservers = [{servers}]\n"
            ),
        )
        .unwrap();
        let mut cmd = ringlb();
        cmd.args(["run", "--config", conf.to_str().unwrap()]);
        procs.push(Running::start(cmd));
        addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    for &a in &addrs {
        assert!(common::wait_until(Duration::from_secs(5), || {
            TcpStream::connect(a).is_ok()
        }));
    }
    let sources: Vec<String> = (0..300)
        .map(|n| format!("127.{}.{}.{}", 1 + n % 3, n / 250, 1 + n % 250))
        .collect();
    // Each process, twice (each connection lands on either shard).
    let first = mapping(addrs[0], &sources);
    assert_eq!(mapping(addrs[0], &sources), first);
    assert_eq!(mapping(addrs[1], &sources), first);
    // Weights 1,2,1,2: roughly a sixth and a third each.
    let mut per: HashMap<u8, usize> = HashMap::new();
    for id in &first {
        *per.entry(*id).or_default() += 1;
    }
    assert_eq!(per.len(), 4, "{per:?}");
    assert!(
        per[&b'b'] > per[&b'a'] && per[&b'd'] > per[&b'c'],
        "{per:?}"
    );
    drop(procs);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hash_on_source_and_port_spreads_one_address() {
    let backends: Vec<_> = (0..3)
        .map(|i| Backend::start(Behaviour::Id(b'a' + i)))
        .collect();
    let servers: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let mut cfg = config(&servers, BalanceKind::Hash, 2, ForwardMode::Copy);
    cfg.pools[0].policy.hash_key = ringlb::config::HashKey::SrcPort;
    let (rt, addr) = start(&cfg);
    let mut seen: Vec<u8> = (0..30).map(|_| open(addr).1).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, b"abc");
    drop(rt);
    // Keyed on the address alone, one source always reaches one server.
    cfg.pools[0].policy.hash_key = ringlb::config::HashKey::Src;
    let (_rt, addr) = start(&cfg);
    let first = id_of(&mut connect_from("127.0.0.9", addr));
    for _ in 0..10 {
        assert_eq!(id_of(&mut connect_from("127.0.0.9", addr)), first);
    }
}
