//! The binary end to end: `serve` (port 0, counters on SIGTERM), a load run
//! with `--json` and `--latency`, `plot` to SVG and PNG, and what it says
//! when io_uring is denied.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringlb-bench");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringlb-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Served {
    child: std::process::Child,
    addr: String,
}

fn serve(args: &[&str]) -> Served {
    let mut child = Command::new(BIN)
        .args(["serve", "http", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_string();
    Served { child, addr }
}

impl Served {
    /// SIGTERM, then the counters it prints.
    fn stop(self) -> String {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let out = self.child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }
}

fn load(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn counter(text: &str, name: &str) -> u64 {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text:?}"))
}

/// Every field the README documents, by JSON path.
const FIELDS: &[&str] = &[
    "tool",
    "version",
    "label",
    "target",
    "workload",
    "model",
    "rate",
    "threads",
    "connections",
    "duration_s",
    "warmup_s",
    "requests",
    "issued",
    "in_flight_at_end",
    "requests_per_sec",
    "bytes_read",
    "bytes_written",
    "transfer_bytes_per_sec",
    "gbit_per_sec",
    "errors.connect",
    "errors.read",
    "errors.write",
    "errors.timeout",
    "errors.status",
    "errors.protocol",
    "errors.total",
    "status.1xx",
    "status.2xx",
    "status.3xx",
    "status.4xx",
    "status.5xx",
    "cpu.user_s",
    "cpu.sys_s",
    "cpu.us_per_request",
];
const HIST_FIELDS: &[&str] = &[
    "count",
    "min_us",
    "mean_us",
    "stdev_us",
    "max_us",
    "within_stdev_pct",
    "p50_us",
    "p75_us",
    "p90_us",
    "p99_us",
    "p99_9_us",
    "p99_99_us",
    "spectrum",
];

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| {
        v.get(k).unwrap_or_else(|| panic!("missing {path}"))
    })
}

#[test]
fn run_json_latency_and_server_counter() {
    let dir = tmpdir("json");
    let json = dir.join("run.json");
    let srv = serve(&["--body-size", "100"]);
    let url = format!("http://{}/hello", srv.addr);
    let text = load(&[
        "-t",
        "2",
        "-c",
        "4",
        "-d",
        "1s",
        "-R",
        "3k",
        "--warmup",
        "300ms",
        "--latency",
        "--label",
        "direct",
        "--json",
        json.to_str().unwrap(),
        "--hdr-log",
        dir.join("run.hlog").to_str().unwrap(),
        &url,
    ]);
    let served = srv.stop();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for f in FIELDS {
        get(&v, f);
    }
    for h in ["latency", "latency_uncorrected", "connect", "ttfb"] {
        for f in HIST_FIELDS {
            get(&v, &format!("{h}.{f}"));
        }
    }
    assert_eq!(v["label"], "direct");
    assert_eq!(v["model"], "open");
    let requests = v["requests"].as_u64().unwrap();
    assert!((2800..=3200).contains(&requests), "{requests}");
    // Every request the server answered is counted (or was in flight at the
    // end, or belonged to the warm-up).
    let answered = counter(&served, "requests");
    let in_flight = v["in_flight_at_end"].as_u64().unwrap();
    assert!(
        answered >= requests + in_flight,
        "{answered} < {requests} + {in_flight}"
    );
    assert!(answered <= requests + in_flight + 1000, "{answered}");
    assert!(text.contains("Requests/sec:"));

    // The printed spectrum parses back into the JSON's percentiles.
    let spec = text
        .split("Detailed Percentile spectrum:")
        .nth(1)
        .expect("spectrum printed");
    let lines = ringlb_bench::report::spectrum::parse_classic(spec);
    assert!(lines.len() > 20);
    let lat = &v["latency"];
    assert_eq!(lines.last().unwrap().2, lat["count"].as_u64().unwrap());
    assert!((lines.last().unwrap().0 - lat["max_us"].as_f64().unwrap() / 1000.0).abs() < 1e-9);
    for (q, key) in [
        (0.5, "p50_us"),
        (0.9, "p90_us"),
        (0.99, "p99_us"),
        (0.999, "p99_9_us"),
    ] {
        let want = lat[key].as_f64().unwrap() / 1000.0;
        let at = lines.iter().find(|l| l.1 >= q).unwrap();
        let below = lines.iter().rev().find(|l| l.1 < q).unwrap();
        assert!(
            below.0 <= want && want <= at.0,
            "{key}: {below:?} {want} {at:?}"
        );
    }
    let spec_json = lat["spectrum"].as_array().unwrap();
    assert_eq!(spec_json.len(), lines.len());
    let hlog = std::fs::read_to_string(dir.join("run.hlog")).unwrap();
    assert!(
        hlog.lines()
            .filter(|l| !l.starts_with('#') && l.contains(",HIST"))
            .count()
            >= 1
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plot_draws_one_curve_per_input() {
    let dir = tmpdir("plot");
    let srv = serve(&["--body-size", "10"]);
    let url = format!("http://{}/", srv.addr);
    let mut inputs = Vec::new();
    for (i, label) in ["direct", "haproxy", "ringlb"].iter().enumerate() {
        let p = dir.join(format!("{i}.json"));
        load(&[
            "-t",
            "1",
            "-c",
            "2",
            "-n",
            "3000",
            "--label",
            label,
            "--json",
            p.to_str().unwrap(),
            &url,
        ]);
        inputs.push(p);
    }
    srv.stop();
    let svg = dir.join("latency.svg");
    let mut args = vec!["plot".to_string()];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap().to_string()));
    args.extend(["-o".into(), svg.to_str().unwrap().into()]);
    load(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("valid SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // Data curves are polylines with many points (legend samples have two).
    let curves = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| {
            n.attribute("points")
                .is_some_and(|p| p.split_whitespace().count() > 5)
        })
        .count();
    assert_eq!(curves, 3);
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    for want in ["direct", "haproxy", "ringlb", "50%", "90%", "99%", "99.9%"] {
        assert!(texts.iter().any(|t| t.trim() == want), "no label {want}");
    }

    let png = dir.join("latency.png");
    args.pop();
    args.extend([
        png.to_str().unwrap().into(),
        "--format".into(),
        "png".into(),
    ]);
    load(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_named() {
    let out = Command::new(BIN)
        .args(["-d", "3s", "localhost:80/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("localhost:80/x") && err.contains("http://"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["-R", "lots", "http://127.0.0.1:1/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"lots\""));
}

/// Runs the binary with `io_uring_setup(2)` refused with EPERM by a seccomp
/// filter, as Docker's default profile does.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn without_io_uring(args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // seccomp_data: nr at offset 0, arch at offset 4.
    let filter = [
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 0, 3, AUDIT_ARCH),
        op(LD_W_ABS, 0, 0, 0),
        op(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        op(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        op(RET_K, 0, 0, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    let prog_addr = &prog as *const libc::sock_fprog as usize;
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // SAFETY: only prctl(2) runs between fork and exec, with no allocation;
    // `filter` and `prog` outlive the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, prog_addr) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("spawn with a seccomp filter")
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn denied_io_uring_is_explained() {
    for args in [
        &["-t", "1", "-c", "1", "-d", "1s", "http://127.0.0.1:1/"][..],
        &["serve", "http", "--listen", "127.0.0.1:0"][..],
    ] {
        let out = without_io_uring(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        for want in ["io_uring", "kernel.io_uring_disabled", "seccomp"] {
            assert!(err.contains(want), "{args:?}: no {want:?} in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.stdout.is_empty(), "{args:?}: printed before failing");
    }
}
