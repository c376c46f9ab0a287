//! The admin API: every verb through HTTP and through `ringlb ctl`, checked
//! against the servers' own counts; the token; `/metrics` read by an
//! independent Prometheus parser; the stats page in headless Chromium.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{binary::ringlb, config, wait_until, Backend, Behaviour};
use ringlb::config::{AdminConfig, BalanceKind, ForwardMode};
use ringlb::control::admin::Admin;
use ringlb::control::Control;
use ringlb::Runtime;
use serde_json::Value;

const TOKEN: &str = "s3cret-token";

struct Lb {
    control: Arc<Control>,
    admin: Admin,
    addr: SocketAddr,
}

impl Lb {
    fn start(backends: &[&Backend], token: Option<&str>) -> Lb {
        let servers: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
        let mut cfg = config(&servers, BalanceKind::RoundRobin, 1, ForwardMode::Copy);
        cfg.admin = Some(AdminConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            token: token.map(str::to_string),
        });
        let runtime = Runtime::start(&cfg).unwrap();
        let addr = runtime.listener_addr("test").unwrap();
        let reload = cfg.clone();
        let control = Arc::new(Control::new(runtime, Box::new(move || Ok(reload.clone()))));
        let admin = Admin::start(
            "127.0.0.1:0".parse().unwrap(),
            token.map(str::to_string),
            control.clone(),
        )
        .unwrap();
        Lb {
            control,
            admin,
            addr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.addr())
    }

    /// (status, body) of a request with the token (when `auth`).
    fn call(&self, method: &str, path: &str, body: &str, auth: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = self.url(path);
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let with = |r: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match &bearer {
            Some(b) => r.header("Authorization", b),
            None => r,
        };
        let withb = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| match &bearer {
            Some(b) => r.header("Authorization", b),
            None => r,
        };
        let mut resp = match method {
            "GET" => with(agent.get(&url)).call(),
            "DELETE" => with(agent.delete(&url)).call(),
            "PUT" => withb(agent.put(&url)).send(body),
            _ => withb(agent.post(&url)).send(body),
        }
        .unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    }

    fn stats(&self, auth: Option<&str>) -> Value {
        let (status, body) = self.call("GET", "/stats", "", auth);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = ringlb()
            .args(["ctl", "--admin", &self.url(""), "--token", TOKEN])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// Opens `n` connections one after the other; the id byte each got.
fn connect_ids(addr: SocketAddr, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8];
            s.read_exact(&mut b).unwrap();
            b[0]
        })
        .collect()
}

fn server<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["pools"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no server {name} in {stats}"))
}

fn accepted(b: &Backend) -> u64 {
    b.accepted.load(Ordering::SeqCst) as u64
}

#[test]
fn every_verb_through_http_and_ctl_agrees_with_the_servers() {
    let b0 = Backend::start(Behaviour::Id(0));
    let b1 = Backend::start(Behaviour::Id(1));
    let b2 = Backend::start(Behaviour::Id(2));
    let lb = Lb::start(&[&b0, &b1], Some(TOKEN));

    // The token is enforced on every endpoint.
    for path in ["/", "/stats", "/metrics", "/pools/p/servers/s0"] {
        assert_eq!(
            lb.call("GET", path, "", None).0,
            401,
            "{path} without a token"
        );
        assert_eq!(
            lb.call("GET", path, "", Some("wrong")).0,
            401,
            "{path} with a wrong token"
        );
    }
    assert_eq!(
        lb.call("POST", "/pools/p/servers/s0/drain", "", None).0,
        401
    );
    assert_eq!(lb.call("POST", "/reload", "", Some("s3cret-tokeN")).0, 401);

    let ids = connect_ids(lb.addr, 20);
    assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 10);
    let st = lb.stats(Some(TOKEN));
    assert_eq!(server(&st, "s0")["total"].as_u64(), Some(accepted(&b0)));
    assert_eq!(server(&st, "s1")["total"].as_u64(), Some(accepted(&b1)));
    assert_eq!(st["listeners"][0]["accepted"].as_u64(), Some(20));

    // Drain through HTTP: new connections all go to s0.
    let (status, body) = lb.call("POST", "/pools/p/servers/s1/drain", "", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state":"drain""#), "{body}");
    let before = accepted(&b1);
    assert!(connect_ids(lb.addr, 10).iter().all(|&i| i == 0));
    assert_eq!(accepted(&b1), before, "a drained server got a connection");

    // Maint and ready through ctl.
    let (ok, out) = lb.ctl(&["maint", "p", "s1"]);
    assert!(ok && out.contains("state=maint"), "{out}");
    assert_eq!(server(&lb.stats(Some(TOKEN)), "s1")["state"], "maint");
    assert!(connect_ids(lb.addr, 4).iter().all(|&i| i == 0));
    let (ok, out) = lb.ctl(&["ready", "p", "s1"]);
    assert!(ok && out.contains("state=up"), "{out}");
    let ids = connect_ids(lb.addr, 10);
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 5, "{ids:?}");

    // Weight through HTTP (3:1), then through ctl (back to 1:1).
    assert_eq!(
        lb.call("PUT", "/pools/p/servers/s0/weight", "3", Some(TOKEN))
            .0,
        200
    );
    let ids = connect_ids(lb.addr, 40);
    assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 30, "{ids:?}");
    let (ok, out) = lb.ctl(&["weight", "p", "s0", "1"]);
    assert!(ok && out.contains("weight=1"), "{out}");
    let ids = connect_ids(lb.addr, 10);
    assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 5, "{ids:?}");
    // Counters carried over both snapshots.
    let st = lb.stats(Some(TOKEN));
    assert_eq!(server(&st, "s0")["total"].as_u64(), Some(accepted(&b0)));
    assert_eq!(server(&st, "s1")["total"].as_u64(), Some(accepted(&b1)));

    // Add a server through HTTP: it takes its share at once.
    let body = format!(r#"{{"name":"s2","addr":"{}","weight":1}}"#, b2.addr);
    let (status, out) = lb.call("POST", "/pools/p/servers", &body, Some(TOKEN));
    assert_eq!(status, 201, "{out}");
    let ids = connect_ids(lb.addr, 9);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 3, "{ids:?}");
    assert_eq!(
        lb.call("POST", "/pools/p/servers", &body, Some(TOKEN)).0,
        409,
        "a duplicate name"
    );

    // Remove: refused while up, accepted once drained (through ctl).
    let (ok, out) = lb.ctl(&["remove", "p", "s2"]);
    assert!(!ok && out.contains("409"), "{out}");
    assert_eq!(
        lb.call("DELETE", "/pools/p/servers/s2", "", Some(TOKEN)).0,
        409
    );
    assert!(lb.ctl(&["drain", "p", "s2"]).0);
    let (ok, out) = lb.ctl(&["remove", "p", "s2"]);
    assert!(ok, "{out}");
    let st = lb.stats(Some(TOKEN));
    assert_eq!(st["pools"][0]["servers"].as_array().unwrap().len(), 2);
    let before = accepted(&b2);
    assert!(connect_ids(lb.addr, 6).iter().all(|&i| i != 2));
    assert_eq!(accepted(&b2), before);

    // Errors: unknown pool or server, bad bodies, wrong methods.
    for (method, path, body, status) in [
        ("POST", "/pools/nope/servers/s0/drain", "", 404),
        ("POST", "/pools/p/servers/nope/drain", "", 404),
        ("POST", "/pools/p/servers/s0/explode", "", 404),
        ("GET", "/nowhere", "", 404),
        ("PUT", "/pools/p/servers/s0/weight", "heavy", 400),
        ("PUT", "/pools/p/servers/s0/weight", "999", 400),
        ("POST", "/pools/p/servers", r#"{"name":1}"#, 400),
        (
            "POST",
            "/pools/p/servers",
            r#"{"name":"x","addr":"nowhere"}"#,
            400,
        ),
        ("GET", "/pools/p/servers/s0/drain", "", 405),
        ("DELETE", "/stats", "", 405),
    ] {
        let (got, answer) = lb.call(method, path, body, Some(TOKEN));
        assert_eq!(got, status, "{method} {path} {body}: {answer}");
        assert!(answer.contains("\"error\""), "{answer}");
    }
    let (ok, out) = lb.ctl(&["drain", "p", "nope"]);
    assert!(!ok && out.contains("404"), "{out}");

    // Reload through HTTP and ctl (same configuration: nothing changes
    // but the API-made changes are replaced by the file's).
    let (status, out) = lb.call("POST", "/reload", "", Some(TOKEN));
    assert_eq!(status, 200, "{out}");
    let (ok, out) = lb.ctl(&["reload"]);
    assert!(ok, "{out}");
    let (ok, out) = lb.ctl(&["stats"]);
    assert!(ok && out.contains("s0") && out.contains("s1"), "{out}");
    drop(lb.admin);
    lb.control.lock().stop(Duration::ZERO);
}

#[test]
fn metrics_parse_and_agree_with_the_servers() {
    let b0 = Backend::start(Behaviour::Echo);
    let b1 = Backend::start(Behaviour::Echo);
    let lb = Lb::start(&[&b0, &b1], None);
    for i in 0..16 {
        let mut s = std::net::TcpStream::connect(lb.addr).unwrap();
        std::io::Write::write_all(&mut s, &vec![7u8; 1000 + i]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 1000 + i);
    }
    // Bytes are counted when a connection ends on ringlb's side.
    assert!(wait_until(Duration::from_secs(3), || lb
        .control
        .lock()
        .counters()
        .active
        == 0));
    let (status, text) = lb.call("GET", "/metrics", "", None);
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    // The sample of `metric` with these labels.
    let sample = |metric: &str, labels: &[(&str, &str)]| -> &prometheus_parse::Value {
        &scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {metric} {labels:?} in:\n{text}"))
            .value
    };
    // Counters, gauges and (the TYPE line names the family, `…_accepted`,
    // OpenMetrics style, so this older-format parser reads a `_total`
    // sample as untyped) untyped samples, as a number.
    let number = |metric: &str, labels: &[(&str, &str)]| -> f64 {
        match sample(metric, labels) {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{metric}: {other:?}"),
        }
    };
    let mut bytes = 0.0;
    for (name, b) in [("s0", &b0), ("s1", &b1)] {
        let server = [("server", name)];
        let value = |metric: &str| number(metric, &server);
        assert_eq!(value("ringlb_server_connections_total"), accepted(b) as f64);
        assert_eq!(value("ringlb_server_active"), 0.0);
        assert_eq!(value("ringlb_server_connect_errors_total"), 0.0);
        let bytes_in = value("ringlb_server_bytes_in_total");
        assert_eq!(bytes_in, value("ringlb_server_bytes_out_total"));
        bytes += bytes_in;
        assert_eq!(
            number("ringlb_server_state", &[("server", name), ("state", "up")]),
            1.0
        );
        assert_eq!(
            number(
                "ringlb_server_state",
                &[("server", name), ("state", "drain")]
            ),
            0.0
        );
        let prometheus_parse::Value::Histogram(buckets) =
            sample("ringlb_server_connect_seconds", &server)
        else {
            panic!("not a histogram");
        };
        let top = buckets.last().unwrap();
        assert!(top.less_than.is_infinite(), "{buckets:?}");
        assert_eq!(top.count, accepted(b) as f64, "{buckets:?}");
        let under_2_5s = buckets.iter().find(|b| b.less_than == 2.5).unwrap();
        assert_eq!(
            under_2_5s.count,
            accepted(b) as f64,
            "every connect is under 2.5 s"
        );
    }
    assert_eq!(bytes, (0..16).map(|i| 1000.0 + i as f64).sum::<f64>());
    assert_eq!(
        number("ringlb_listener_accepted_total", &[("listener", "test")]),
        16.0
    );
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "ringlb_shard_completions_total"));
    drop(lb.admin);
    lb.control.lock().stop(Duration::ZERO);
}

#[test]
fn the_stats_page_renders_in_headless_chromium() {
    let backends: Vec<Backend> = (0..4).map(|i| Backend::start(Behaviour::Id(i))).collect();
    let refs: Vec<&Backend> = backends.iter().collect();
    let lb = Lb::start(&refs, None);
    connect_ids(lb.addr, 8);
    for (server, verb) in [("s1", "drain"), ("s2", "maint")] {
        let path = format!("/pools/p/servers/{server}/{verb}");
        assert_eq!(lb.call("POST", &path, "", None).0, 200);
    }
    lb.control.lock().pools().pools[0].servers[3]
        .live
        .set_flag(ringlb::pool::HEALTH_DOWN, true);
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect("chromium is needed for this test (.ci/run installs Debian's `chromium`)");
    let profile = tempdir("chromium-profile");
    let base = [
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        format!("--user-data-dir={}", profile.display()),
        "--virtual-time-budget=5000".into(),
    ];
    let out = Command::new(chromium)
        .args(&base)
        .arg("--dump-dom")
        .arg(lb.url("/"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    for (server, state) in [
        ("s0", "up"),
        ("s1", "drain"),
        ("s2", "maint"),
        ("s3", "down"),
    ] {
        let row = format!(r#"<tr class="{state}" data-server="{server}" data-state="{state}">"#);
        assert!(
            dom.contains(&row),
            "no row {row} in:\n{dom}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dom.contains("Pool p (roundrobin)"), "{dom}");
    assert!(
        dom.contains("updated "),
        "the page did not refresh from /stats: {dom}"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("stats-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new(chromium)
        .args(&base)
        .arg("--hide-scrollbars")
        .arg("--window-size=1280,720")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(lb.url("/"))
        .output()
        .unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let _ = std::fs::remove_dir_all(profile);
    drop(lb.admin);
    lb.control.lock().stop(Duration::ZERO);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
