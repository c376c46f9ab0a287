//! Limits shared through a real `redis-server` started by the test: two
//! ringlb processes on the same store and scope admit together what one
//! limit allows (within 10%), and a store that stops mid-run is handled by
//! `on_store_error` without stalling traffic, and used again once back.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::binary::{ringlb, Running};
use common::redis::RedisServer;
use common::{echoed_from, wait_until, Backend, Behaviour};
use ringlb::config::{Config, LimitConfig};
use ringlb::limit::{Algorithm, OnStoreError, Rate, StoreConfig};
use ringlb::Runtime;

fn write_config(path: &Path, redis: &RedisServer, backend: &Backend) {
    std::fs::write(
        path,
        format!(
            r#"
[runtime]
shards = 2

[[listener]]
name = "web"
bind = "127.0.0.1:0"
pool = "app"
limit = {{ algorithm = "token_bucket", rate = "50/s", burst = 10, store = "{}", scope = "edge" }}

[[pool]]
name = "app"
servers = [{{ name = "echo", addr = "{}" }}]
"#,
            redis.url(),
            backend.addr
        ),
    )
    .unwrap();
}

#[test]
fn two_instances_on_one_store_admit_one_limit_together() {
    let redis = RedisServer::start();
    let backend = Backend::start(Behaviour::Echo);
    let dir = std::env::temp_dir().join(format!("ringlb-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lb.toml");
    write_config(&config, &redis, &backend);
    let run = || {
        let mut cmd = ringlb();
        cmd.arg("run").arg("--config").arg(&config);
        Running::start(cmd)
    };
    let (a, b) = (run(), run());
    let addrs: Vec<SocketAddr> = [&a, &b].iter().map(|r| r.addr.parse().unwrap()).collect();
    // One source, hammering both instances from two threads each.
    const RUN: Duration = Duration::from_secs(3);
    let start = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let addr = addrs[i % 2];
            std::thread::spawn(move || {
                let (mut ok, mut tries) = (0u64, 0u64);
                while start.elapsed() < RUN {
                    tries += 1;
                    if echoed_from("127.0.0.80", addr) {
                        ok += 1;
                    }
                }
                (i % 2, ok, tries)
            })
        })
        .collect();
    let mut per_instance = [0u64; 2];
    let mut tries = 0;
    for w in workers {
        let (instance, ok, t) = w.join().unwrap();
        per_instance[instance] += ok;
        tries += t;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = backend.accepted.load(Ordering::SeqCst) as f64;
    // The bucket's 10, then 50 per second.
    let allowed = 10.0 + 50.0 * elapsed;
    println!(
        "{tries} tries in {elapsed:.2}s; admitted {admitted} (instances {per_instance:?}) against {allowed:.0} allowed"
    );
    assert!(
        tries as f64 > 3.0 * allowed,
        "the source must be well over the limit: {tries} tries"
    );
    assert!(
        (admitted - allowed).abs() <= 0.1 * allowed,
        "admitted {admitted}, allowed {allowed:.0}"
    );
    assert!(
        per_instance.iter().all(|&n| n > 0),
        "both instances admitted: {per_instance:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn start_in_process(redis: &RedisServer, backend: &Backend, on_error: OnStoreError) -> Runtime {
    let cfg = common::limited_config(
        backend.addr,
        2,
        LimitConfig {
            algorithm: Algorithm::TokenBucket,
            rate: Rate::parse("5/s").unwrap(),
            burst: 5,
            size: 1000,
            store: Some(StoreConfig {
                url: redis.url(),
                scope: format!("down-{}", on_error.as_str()),
                on_error,
                timeout: Duration::from_millis(200),
            }),
        },
    );
    Runtime::start(&cfg).unwrap()
}

/// Tries `n` connections from `src`; returns how many were served and the
/// slowest answer (served or refused).
fn burst_of(src: &str, addr: SocketAddr, n: usize) -> (usize, Duration) {
    let mut slowest = Duration::ZERO;
    let mut ok = 0;
    for _ in 0..n {
        let t = Instant::now();
        if echoed_from(src, addr) {
            ok += 1;
        }
        slowest = slowest.max(t.elapsed());
    }
    (ok, slowest)
}

fn store_stops_mid_run(on_error: OnStoreError) {
    let mut redis = RedisServer::start();
    let backend = Backend::start(Behaviour::Echo);
    let rt = start_in_process(&redis, &backend, on_error);
    let addr = rt.listener_addr("test").unwrap();
    let src = "127.0.0.81";
    // The store up: the bucket's 5 (and maybe one more refilled), then
    // refusals.
    let (ok, _) = burst_of(src, addr, 20);
    assert!((5..=7).contains(&ok), "{ok} served under 5/s, burst 5");
    // The store gone: once the source's refusal from the store has run
    // out (a token in 200 ms), `on_store_error` decides, and nobody stalls.
    redis.stop();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, slowest) = burst_of(src, addr, 40);
    let expected = if on_error == OnStoreError::Allow {
        40
    } else {
        0
    };
    assert_eq!(
        ok, expected,
        "with the store down and on_store_error = {on_error:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "a client stalled {slowest:?}"
    );
    // Counts are published at the end of the shard's turn: let it come.
    let decided = wait_until(Duration::from_secs(2), || {
        rt.listeners()[0].stats.read().store_fallbacks >= 40
    });
    assert!(decided, "{:?}", rt.listeners()[0].stats.read());
    // The store back (empty): the shared limit applies again, with some
    // served and some refused, instead of all or none.
    redis.restart();
    let back = wait_until(Duration::from_secs(15), || {
        let (ok, _) = burst_of(src, addr, 12);
        (1..12).contains(&ok)
    });
    assert!(back, "the limit applies again once the store is back");
    // A full bucket's worth after a second's refill, no more.
    std::thread::sleep(Duration::from_millis(1200));
    let (ok, _) = burst_of(src, addr, 12);
    assert!((5..=7).contains(&ok), "{ok} served after a second");
}

#[test]
fn a_store_that_stops_lets_clients_through_with_on_store_error_allow() {
    store_stops_mid_run(OnStoreError::Allow);
}

#[test]
fn a_store_that_stops_refuses_clients_with_on_store_error_deny() {
    store_stops_mid_run(OnStoreError::Deny);
}

fn shared(
    redis: &RedisServer,
    backend: &Backend,
    algorithm: Algorithm,
    rate: &str,
    burst: u32,
) -> Runtime {
    let cfg = common::limited_config(
        backend.addr,
        2,
        LimitConfig {
            algorithm,
            rate: Rate::parse(rate).unwrap(),
            burst,
            size: 1000,
            store: Some(StoreConfig {
                url: redis.url(),
                scope: "algorithms".into(),
                on_error: OnStoreError::Deny,
                timeout: Duration::from_millis(200),
            }),
        },
    );
    Runtime::start(&cfg).unwrap()
}

#[test]
fn every_algorithm_holds_its_limit_through_the_store() {
    let redis = RedisServer::start();
    let backend = Backend::start(Behaviour::Echo);
    for (algorithm, expect) in [
        (Algorithm::TokenBucket, 4..=4),
        // Up to twice the count across a minute's edge.
        (Algorithm::FixedWindow, 4..=8),
        (Algorithm::SlidingWindow, 4..=5),
        (Algorithm::SlidingLog, 4..=4),
    ] {
        let rt = shared(&redis, &backend, algorithm, "4/m", 4);
        let addr = rt.listener_addr("test").unwrap();
        let (ok, _) = burst_of("127.0.0.82", addr, 12);
        assert!(expect.contains(&ok), "{algorithm:?}: {ok} admitted");
    }
}

#[test]
fn the_shared_leaky_bucket_delays_to_its_rate() {
    let redis = RedisServer::start();
    let backend = Backend::start(Behaviour::Echo);
    // 20/s: one every 50 ms; at most 3 waiting.
    let rt = shared(&redis, &backend, Algorithm::LeakyBucket, "20/s", 3);
    let addr = rt.listener_addr("test").unwrap();
    let t0 = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || (echoed_from("127.0.0.83", addr), t0.elapsed())))
        .collect();
    let mut done: Vec<Duration> = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .filter(|r| r.0)
        .map(|r| r.1)
        .collect();
    done.sort();
    assert_eq!(
        done.len(),
        4,
        "one at once, three delayed, the rest refused: {done:?}"
    );
    assert!(
        done[3] >= Duration::from_millis(130),
        "spaced at the rate: {done:?}"
    );
    assert!(done[3] < Duration::from_secs(2), "{done:?}");
    assert_eq!(rt.listeners()[0].stats.read().shaped, 3);
}

#[test]
fn shared_limit_keys_are_checked() {
    let text = |limit: &str| {
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\npool = \"app\"\nlimit = {{ {limit} }}\n\n\
             [[pool]]\nname = \"app\"\n[[pool.servers]]\nname = \"a\"\naddr = \"127.0.0.1:9\"\n"
        )
    };
    let c = Config::parse(
        &text(
            "algorithm = \"token_bucket\", rate = \"10/s\", store = \"redis://127.0.0.1:6379/0\"",
        ),
        Path::new("lb.toml"),
    )
    .unwrap();
    let store = c.listeners[0]
        .limit
        .as_ref()
        .unwrap()
        .store
        .clone()
        .unwrap();
    assert_eq!(store.scope, "web", "the listener's name by default");
    assert_eq!(store.on_error, ringlb::limit::OnStoreError::Allow);
    assert_eq!(store.timeout, Duration::from_millis(50));
    for (limit, key, needle) in [
        ("algorithm = \"token_bucket\", rate = \"10/s\", scope = \"x\"", "limit.scope", "only with store"),
        ("algorithm = \"token_bucket\", rate = \"10/s\", store = \"http://x\"", "limit.store", "not a Redis URL"),
        ("algorithm = \"token_bucket\", rate = \"10/s\", store = \"redis://127.0.0.1/0\", scope = \"a b\"", "limit.scope", "letters, digits"),
        ("algorithm = \"token_bucket\", rate = \"10/s\", store = \"redis://127.0.0.1/0\", on_store_error = \"maybe\"", "limit.on_store_error", "allow or deny"),
        ("algorithm = \"token_bucket\", rate = \"10/s\", store = \"redis://127.0.0.1/0\", store_timeout = \"10s\"", "limit.store_timeout", "at most 5s"),
    ] {
        let errs = Config::parse(&text(limit), Path::new("lb.toml")).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown.len(), 1, "{limit}: {shown:#?}");
        assert!(shown[0].starts_with("lb.toml:5: "), "{shown:#?}");
        assert!(shown[0].contains(key) && shown[0].contains(needle), "{shown:#?}");
    }
}
