#!/usr/bin/env python3
"""Drives ringlb, HAProxy, nginx stream and a direct connection with the same
loads against the same backends, and measures each balancer's CPU time
(utime+stime from /proc), syscalls (perf stat raw_syscalls:sys_enter), bulk
throughput and RSS per idle proxied connection. Each figure is also given as a
ratio to HAProxy measured in the same run; with --rounds N the median of N
rounds is reported.

Regimes (see BENCHMARKS.md): by default balancers are pinned to CPU 1 and the
load to CPU 0, two backends: the balancer is the bottleneck. --unpinned
--backends 1 pins nothing and uses one backend process: the backend is the
bottleneck and everything shares both cores. --tests open runs fixed rates
(open loop, --rates), idlecpu holds many idle pairs and measures the CPU each
balancer spends meanwhile, redis drives redis-benchmark through each
balancer. --ringlb-base PATH runs a second ringlb binary (e.g. the previous
commit's) as "ringlb@base" beside the current one."""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf("SC_CLK_TCK")
BACKENDS = [18081, 18082]
IPERF_PORT = 18201
REDIS_PORT = 18301
# Per balancer: (http, bulk, redis) listening ports.
PORTS = {"haproxy": (18090, 18190, 18290), "nginx": (18091, 18191, 18291), "ringlb": (18092, 18192, 18292)}
BALANCER_CPU = "1"
LOAD_CPU = "0"
PINNED = True


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, **kw)


def ringlb_pinned_config(port, servers, head="", listener="", pool=""):
    """A one-shard ringlb pinned to the balancer CPU: listener `web` on
    `port` to a leastconn pool of `servers` (names and ports, on
    127.0.0.1); `head`, `listener` and `pool` add TOML to the top, the
    listener and the pool."""
    entries = ",\n  ".join(f'{{ name = "{n}", addr = "127.0.0.1:{p}" }}' for n, p in servers)
    return f"""
{head}
[runtime]
shards = 1
cpus = [{BALANCER_CPU}]

[timeouts]
client_idle = "300s"
server_idle = "300s"

[[listener]]
name = "web"
bind = "127.0.0.1:{port}"
pool = "web"
{listener}
[[pool]]
name = "web"
balance = "leastconn"
{pool}
servers = [
  {entries}
]
"""


def wait_port(port, proc=None, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            log = getattr(proc, "log", None)
            raise RuntimeError(f"{proc.args} exited: {open(log).read() if log else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Lab:
    def __init__(self, ringlb, workdir):
        self.ringlb = ringlb
        self.dir = workdir
        self.procs = []

    def spawn(self, cmd, cpu=None, **kw):
        if cpu is not None and PINNED:
            cmd = ["taskset", "-c", cpu] + cmd
        log = open(os.path.join(self.dir, f"{os.path.basename(cmd[3] if cmd[0] == 'taskset' else cmd[0])}-{len(self.procs)}.log"), "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=log, **kw)
        p.log = log.name
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_backends(self):
        for port in BACKENDS:
            conf = self.write(f"backend-{port}.conf", f"""
daemon off; master_process off; worker_processes 1;
pid {self.dir}/backend-{port}.pid; error_log {self.dir}/backend-{port}.err warn;
events {{ worker_connections 16384; }}
http {{
  access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  server {{ listen 127.0.0.1:{port} reuseport backlog=4096; location / {{ return 200 "hello from {port}\\n"; }} }}
}}
""")
            wait_port(port, self.spawn(["nginx", "-c", conf, "-p", self.dir]))
        wait_port(IPERF_PORT, self.spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(IPERF_PORT)]))
        if shutil.which("redis-server"):
            wait_port(REDIS_PORT, self.spawn(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                                              "--save", "", "--appendonly", "no", "--protected-mode", "no"]))

    def start_haproxy(self):
        http, bulk, redis = PORTS["haproxy"]
        servers = "\n".join(f"  server b{p} 127.0.0.1:{p}" for p in BACKENDS)
        conf = self.write("haproxy.cfg", f"""
global
  nbthread 1
  maxconn 9100
  maxpipes 400
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
listen web
  bind 127.0.0.1:{http}
  balance leastconn
{servers}
listen bulk
  bind 127.0.0.1:{bulk}
  option splice-auto
  server iperf 127.0.0.1:{IPERF_PORT}
listen redis
  bind 127.0.0.1:{redis}
  server redis 127.0.0.1:{REDIS_PORT}
""")
        p = self.spawn(["haproxy", "-f", conf], cpu=BALANCER_CPU)
        wait_port(http, p)
        return p.pid

    def start_nginx_stream(self):
        http, bulk, redis = PORTS["nginx"]
        servers = " ".join(f"server 127.0.0.1:{p};" for p in BACKENDS)
        conf = self.write("nginx-stream.conf", f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off; worker_processes 1; worker_rlimit_nofile 20000;
pid {self.dir}/stream.pid; error_log {self.dir}/stream.err warn;
events {{ worker_connections 19500; }}
stream {{
  upstream web {{ least_conn; {servers} }}
  upstream bulk {{ server 127.0.0.1:{IPERF_PORT}; }}
  upstream redis {{ server 127.0.0.1:{REDIS_PORT}; }}
  server {{ listen 127.0.0.1:{http}; proxy_pass web; proxy_timeout 300s; }}
  server {{ listen 127.0.0.1:{bulk}; proxy_pass bulk; proxy_timeout 300s; }}
  server {{ listen 127.0.0.1:{redis}; proxy_pass redis; proxy_timeout 300s; }}
}}
""")
        master = self.spawn(["nginx", "-c", conf, "-p", self.dir], cpu=BALANCER_CPU)
        wait_port(http, master)
        kids = children(master.pid)
        return kids[0] if kids else master.pid

    def start_ringlb(self, forward, ports, extra="", binary=None, balance="leastconn"):
        http, bulk, redis = ports
        servers = ", ".join(f'{{ name = "b{p}", addr = "127.0.0.1:{p}" }}' for p in BACKENDS)
        conf = self.write(f"ringlb-{http}.toml", f"""
[runtime]
shards = 1
{f"cpus = [{BALANCER_CPU}]" if PINNED else ""}
forward = "{forward}"
{extra}

[timeouts]
client_idle = "300s"
server_idle = "300s"

[[listener]]
name = "web"
bind = "127.0.0.1:{http}"
pool = "web"

[[listener]]
name = "bulk"
bind = "127.0.0.1:{bulk}"
pool = "bulk"

[[listener]]
name = "redis"
bind = "127.0.0.1:{redis}"
pool = "redis"

[[pool]]
name = "web"
balance = "{balance}"
servers = [{servers}]

[[pool]]
name = "bulk"
servers = [{{ name = "iperf", addr = "127.0.0.1:{IPERF_PORT}" }}]

[[pool]]
name = "redis"
servers = [{{ name = "redis", addr = "127.0.0.1:{REDIS_PORT}" }}]
""")
        p = self.spawn([binary or self.ringlb, "run", "--config", conf, "--log-level", "warn"])
        wait_port(http, p)
        return p.pid


def build_rev(rev):
    """The path of ringlb built at git revision `rev` (scripts/build-rev.sh)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build-rev.sh")
    return subprocess.run([script, rev], check=True, capture_output=True, text=True).stdout.strip()


def pin_load(cmd):
    return (["taskset", "-c", LOAD_CPU] if PINNED else []) + cmd


def wrk(port, duration, close):
    cmd = pin_load(["wrk", "-t1", "-c64", f"-d{duration}s", "--latency"])
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout

    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1, "ms": 1e3, "s": 1e6}[unit]

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": requests,
        "p50_us": lat(50),
        "p99_us": lat(99),
        "errors": (errors.group(1) if errors else "") + (f" non2xx {non2xx.group(1)}" if non2xx else ""),
    }


def bench(binary, port, duration, close, json_path, label, rate=None):
    """One HTTP run of ringlb-bench (closed loop, or open loop at `rate`);
    figures come from its JSON."""
    cmd = pin_load([binary, "-t1", "-c64", f"-d{duration}s", "--json", json_path, "--label", label])
    if close:
        cmd.append("--close")
    if rate:
        cmd += ["-R", str(rate)]
    subprocess.run(cmd + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True)
    with open(json_path) as f:
        j = json.load(f)
    errors = j["errors"]["total"]
    return {
        "rps": j["requests_per_sec"],
        "requests": j["requests"],
        "p50_us": j["latency"]["p50_us"],
        "p99_us": j["latency"]["p99_us"],
        "errors": f"{errors} errors {j['errors']}" if errors else "",
    }


def measured(pid, duration, run):
    """Runs `run()` while counting pid's CPU time and syscalls."""
    perf = None
    perf_out = None
    if pid and shutil.which("perf"):
        perf_out = tempfile.NamedTemporaryFile(suffix=".perf", delete=False).name
        perf = subprocess.Popen(
            ["perf", "stat", "-e", "raw_syscalls:sys_enter", "-x", ",", "-o", perf_out, "-p", str(pid), "--", "sleep", str(duration + 1)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
    cpu0 = cpu_seconds(pid) if pid else None
    result = run()
    cpu1 = cpu_seconds(pid) if pid else None
    syscalls = None
    if perf:
        perf.wait()
        with open(perf_out) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) > 2 and "raw_syscalls" in line and parts[0].isdigit():
                    syscalls = int(parts[0])
        os.unlink(perf_out)
    result["cpu_s"] = cpu1 - cpu0 if pid else None
    result["syscalls"] = syscalls
    return result


def iperf(port, seconds):
    out = subprocess.run(pin_load(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-P", "2", "-t", str(seconds), "-J"]),
                         capture_output=True, text=True).stdout
    j = json.loads(out)
    end = j["end"]
    return {"gbps": end["sum_received"]["bits_per_second"] / 1e9, "bytes": end["sum_received"]["bytes"]}


def idle_rss(pid, port, conns):
    """RSS growth of pid per proxied connection held open after one request."""
    base = rss_kib(pid)
    socks = hold_idle(port, conns)
    time.sleep(1.0)
    grown = rss_kib(pid) - base
    for s in socks:
        s.close()
    return grown * 1024 / conns


def hold_idle(port, conns):
    """Opens `conns` connections, each after one request; returns them."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data or b"\n" not in data.split(b"\r\n\r\n", 1)[-1]:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return socks


def idle_cpu(pid, port, conns, seconds):
    """CPU milliseconds pid spends over `seconds` while `conns` proxied
    connections sit idle (after one request each)."""
    socks = hold_idle(port, conns)
    time.sleep(1.0)
    c0 = cpu_seconds(pid)
    time.sleep(seconds)
    spent = cpu_seconds(pid) - c0
    for s in socks:
        s.close()
    time.sleep(1.0)
    return spent * 1000


def redis_bench(port, requests):
    """redis-benchmark GET and SET through `port`; returns req/s (sum of the
    two tests' rates / 2), p50 and p99 in µs (GET) and the request count."""
    out = subprocess.run(pin_load(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "get,set",
                                   "-n", str(requests), "-c", "50", "--csv"]),
                         capture_output=True, text=True, check=True).stdout
    rows = [l.replace('"', "").split(",") for l in out.strip().splitlines()]
    head, body = rows[0], {r[0]: r for r in rows[1:]}
    col = {h: i for i, h in enumerate(head)}
    get = body["GET"]
    rps = (float(body["GET"][col["rps"]]) + float(body["SET"][col["rps"]])) / 2
    return {"rps": rps, "p50_us": float(get[col["p50_latency_ms"]]) * 1000,
            "p99_us": float(get[col["p99_latency_ms"]]) * 1000, "requests": 2 * requests, "errors": ""}


def run_balancer(lab, name, pid, args, rnd):
    http, bulk, redis = PORTS.get(name, (BACKENDS[0], IPERF_PORT, REDIS_PORT))
    time.sleep(0.5)
    tests = args.tests.split(",")
    none = {"rps": None, "requests": 1, "p50_us": None, "p99_us": None, "errors": "", "cpu_s": None, "syscalls": None}
    r = {"ka": dict(none), "wrk": dict(none), "close": dict(none), "bulk": {"gbps": None, "cpu_s_per_gb": None},
         "idle_b_per_conn": None, "idle_cpu_ms": None, "open": {}, "redis": dict(none)}
    # Idle memory first, in the first round only, while every process is fresh.
    if "idle" in tests and pid and rnd == 0:
        r["idle_b_per_conn"] = idle_rss(pid, http, args.idle_conns)
    plot_json = os.path.join(args.plot_dir, f"{name.replace(':', '-')}.json")
    scratch = os.path.join(lab.dir, "run.json")
    if "ka" in tests or "close" in tests:
        bench(args.bench, http, 2, False, scratch, name)  # warm-up
    if "ka" in tests:
        r["ka"] = measured(pid, args.duration, lambda: bench(
            args.bench, http, args.duration, False, plot_json if rnd == 0 else scratch, name))
        r["wrk"] = wrk(http, args.duration, False)
    if "close" in tests:
        r["close"] = measured(pid, args.duration, lambda: bench(args.bench, http, args.duration, True, scratch, name))
    if "open" in tests:
        for rate in args.rates:
            r["open"][rate] = measured(pid, args.duration, lambda: bench(
                args.bench, http, args.duration, False, scratch, name, rate=rate))
    if "redis" in tests and shutil.which("redis-benchmark"):
        r["redis"] = measured(pid, 0, lambda: redis_bench(redis, args.redis_requests))
    if "idlecpu" in tests and pid and rnd == 0:
        r["idle_cpu_ms"] = idle_cpu(pid, http, args.idle_cpu_conns, args.idle_cpu_seconds)
    if "bulk" in tests:
        t0 = cpu_seconds(pid) if pid else 0
        b = iperf(bulk, args.bulk_seconds)
        b["cpu_s_per_gb"] = ((cpu_seconds(pid) - t0) / (b["bytes"] / 1e9)) if pid else None
        r["bulk"] = b
    return r


def open_figure(r, rate, key):
    o = r["open"].get(rate)
    if not o:
        return None
    if key == "cpu_us":
        return o["cpu_s"] / o["requests"] * 1e6 if o["cpu_s"] is not None else None
    if key == "sys":
        return o["syscalls"] / o["requests"] if o["syscalls"] is not None else None
    return {"p99": o["p99_us"], "rps": o["rps"]}[key]


def summarize(name, rounds, rates):
    def med(f):
        vals = [f(r) for r in rounds if f(r) is not None]
        return statistics.median(vals) if vals else None
    return {
        "ka_rps": med(lambda r: r["ka"]["rps"]),
        "ka_p50": med(lambda r: r["ka"]["p50_us"]),
        "ka_p99": med(lambda r: r["ka"]["p99_us"]),
        "ka_cpu_us": med(lambda r: r["ka"]["cpu_s"] / r["ka"]["requests"] * 1e6 if r["ka"]["cpu_s"] is not None else None),
        "ka_sys": med(lambda r: r["ka"]["syscalls"] / r["ka"]["requests"] if r["ka"]["syscalls"] is not None else None),
        "wrk_rps": med(lambda r: r["wrk"]["rps"]),
        "cl_rps": med(lambda r: r["close"]["rps"]),
        "cl_p99": med(lambda r: r["close"]["p99_us"]),
        "cl_cpu_us": med(lambda r: r["close"]["cpu_s"] / r["close"]["requests"] * 1e6 if r["close"]["cpu_s"] is not None else None),
        "cl_sys": med(lambda r: r["close"]["syscalls"] / r["close"]["requests"] if r["close"]["syscalls"] is not None else None),
        "gbps": med(lambda r: r["bulk"]["gbps"]),
        "cpu_per_gb": med(lambda r: r["bulk"]["cpu_s_per_gb"]),
        "idle": med(lambda r: r["idle_b_per_conn"]),
        "idle_cpu": med(lambda r: r["idle_cpu_ms"]),
        "redis_rps": med(lambda r: r["redis"]["rps"]),
        "redis_p99": med(lambda r: r["redis"]["p99_us"]),
        "redis_cpu_us": med(lambda r: r["redis"]["cpu_s"] / r["redis"]["requests"] * 1e6 if r["redis"]["cpu_s"] is not None else None),
        **{f"open{rate}_{k}": med(lambda r, rate=rate, k=k: open_figure(r, rate, k))
           for rate in rates for k in ("cpu_us", "p99", "sys", "rps")},
        "errors": sorted({r["ka"]["errors"] + r["close"]["errors"] + r["wrk"]["errors"] for r in rounds} - {""}),
    }


OPEN_COLUMNS = lambda rates: [c for rate in rates for c in (
    (f"open{rate}_rps", f"{rate // 1000}k/s: req/s", "{:,.0f}", True),
    (f"open{rate}_cpu_us", f"{rate // 1000}k/s: CPU µs/req", "{:.2f}", False),
    (f"open{rate}_sys", f"{rate // 1000}k/s: syscalls/req", "{:.2f}", False),
    (f"open{rate}_p99", f"{rate // 1000}k/s: p99 µs", "{:.0f}", False))]

OTHER_COLUMNS = [
    ("idle_cpu", "CPU ms over the idle window", "{:.0f}", False),
    ("redis_rps", "redis-benchmark req/s", "{:,.0f}", True),
    ("redis_p99", "redis p99 µs (GET)", "{:.0f}", False),
    ("redis_cpu_us", "redis CPU µs/req", "{:.2f}", False),
]

COLUMNS = [
    ("ka_rps", "keep-alive req/s", "{:,.0f}", True),
    ("ka_p50", "p50 µs", "{:.0f}", False),
    ("ka_p99", "p99 µs", "{:.0f}", False),
    ("ka_cpu_us", "CPU µs/req", "{:.2f}", False),
    ("ka_sys", "syscalls/req", "{:.3f}", False),
    ("wrk_rps", "wrk req/s (cross-check)", "{:,.0f}", True),
    ("cl_rps", "close req/s", "{:,.0f}", True),
    ("cl_cpu_us", "CPU µs/conn", "{:.1f}", False),
    ("cl_sys", "syscalls/conn", "{:.1f}", False),
    ("gbps", "bulk Gbit/s", "{:.1f}", True),
    ("cpu_per_gb", "CPU s/GB", "{:.2f}", False),
    ("idle", "idle B/conn", "{:,.0f}", False),
]


def table(results, columns):
    columns = [c for c in columns if any(s.get(c[0]) is not None for s in results.values())]
    if not columns:
        return ""
    base = results.get("haproxy")
    head = "| balancer | " + " | ".join(c[1] for c in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for name, s in results.items():
        cells = []
        for key, _, fmt, _ in columns:
            v = s.get(key)
            if v is None:
                cells.append("–")
                continue
            cell = fmt.format(v)
            if base and name != "haproxy" and base.get(key):
                cell += f" ({v / base[key]:.2f}×)"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ringlb", required=True)
    ap.add_argument("--bench", required=True, help="the ringlb-bench binary")
    ap.add_argument("--plot-dir", default=".", help="where each balancer's first keep-alive JSON goes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--bulk-seconds", type=int, default=5)
    ap.add_argument("--idle-conns", type=int, default=4000)
    ap.add_argument("--idle-cpu-conns", type=int, default=9000, help="idle pairs held for the idlecpu test")
    ap.add_argument("--idle-cpu-seconds", type=int, default=10)
    ap.add_argument("--rates", default="5000,20000", help="open-loop rates for the open test (requests/s)")
    ap.add_argument("--redis-requests", type=int, default=100000, help="per redis-benchmark test (GET, SET)")
    ap.add_argument("--ringlb-base", help="another ringlb binary, run as ringlb@base beside --ringlb")
    ap.add_argument("--base", metavar="REV", help="build ringlb at REV (scripts/build-rev.sh) and use it as --ringlb-base")
    ap.add_argument("--unpinned", action="store_true", help="pin nothing (balancers, load, backends share both CPUs)")
    ap.add_argument("--backends", type=int, default=2, help="HTTP backend processes (1 makes the backend the bottleneck)")
    ap.add_argument("--forward", default="auto", help="ringlb forwarding mode")
    ap.add_argument("--only", default="direct,haproxy,nginx,ringlb",
                    help="comma-separated: direct, haproxy, nginx, ringlb, ringlb:MODE (another ringlb instance in that forwarding mode), ringlb+ALG (another instance balancing with ALG)")
    ap.add_argument("--tests", default="ka,close,open,bulk,idle,idlecpu",
                    help="which of ka,close,open,bulk,idle,idlecpu,redis to run")
    ap.add_argument("--out", help="write the Markdown table here")
    ap.add_argument("--json", help="write every raw figure here")
    args = ap.parse_args()
    if args.base:
        args.ringlb_base = build_rev(args.base)
    global PINNED, BACKENDS
    PINNED = not args.unpinned
    BACKENDS = BACKENDS[:max(1, min(args.backends, len(BACKENDS)))]
    args.rates = [int(r) for r in args.rates.split(",") if r]
    names = args.only.split(",")
    if args.ringlb_base and "ringlb@base" not in names:
        names.append("ringlb@base")
    raw = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="ringlb-peers-") as d:
        lab = Lab(os.path.abspath(args.ringlb), d)
        args.bench = os.path.abspath(args.bench)
        os.makedirs(args.plot_dir, exist_ok=True)
        try:
            lab.start_backends()
            pids = {}
            if "haproxy" in names:
                pids["haproxy"] = lab.start_haproxy()
            if "nginx" in names:
                pids["nginx"] = lab.start_nginx_stream()
            for i, n in enumerate(x for x in names if x.startswith("ringlb")):
                # "ringlb" uses --forward; "ringlb:MODE" runs another instance in MODE.
                # "ringlb:MODE:KEY=VALUE" also sets a [runtime] key (e.g. pipe_size=64k).
                # "ringlb@base" runs the --ringlb-base binary.
                # "ringlb+ALG" balances the web pool with ALG (default leastconn).
                binary = os.path.abspath(args.ringlb_base) if n == "ringlb@base" else None
                n_base, _, balance = n.partition("+")
                parts = n_base.split("@")[0].split(":")
                mode = parts[1] if len(parts) > 1 else args.forward
                extra = "\n".join(f'{k} = "{v}"' for k, v in (p.split("=", 1) for p in parts[2:]))
                PORTS[n] = (18093 + i, 18193 + i, 18293 + i) if n != "ringlb" else PORTS["ringlb"]
                pids[n] = lab.start_ringlb(mode, PORTS[n], extra, binary, balance or "leastconn")
            for rnd in range(args.rounds):
                for n in names:
                    print(f"round {rnd + 1}/{args.rounds}: {n}", file=sys.stderr, flush=True)
                    raw[n].append(run_balancer(lab, n, pids.get(n), args, rnd))
        finally:
            lab.stop()
    results = {n: summarize(n, raw[n], args.rates) for n in names}
    uname = os.uname()
    machine = f"{os.cpu_count()} CPUs, Linux {uname.release}, {time.strftime('%Y-%m-%d')}"
    placement = (f"load pinned to CPU {LOAD_CPU}, balancers to CPU {BALANCER_CPU}" if PINNED
                 else "nothing pinned")
    text = (f"Machine: {machine}. {len(BACKENDS)} HTTP backend process(es); {placement}; one thread/shard per "
            f"balancer; ringlb forward={args.forward}. Medians of {args.rounds} round(s). Closed loop: ringlb-bench "
            f"-t1 -c64 -d{args.duration}s keep-alive, then --close, wrk -t1 -c64 as a cross-check; open loop: the "
            f"same at -R {', '.join(map(str, args.rates))}; iperf3 -P2 -t{args.bulk_seconds}; idle: RSS growth per "
            f"connection with {args.idle_conns} held open after one request each, and CPU over "
            f"{args.idle_cpu_seconds} s with {args.idle_cpu_conns} held, first round, fresh processes; redis: "
            f"redis-benchmark -c50 GET and SET. Ratios are to HAProxy in the same run.\n\n")
    for title, cols in (("Closed loop, bulk, idle memory", COLUMNS), ("Open loop (fixed rate)", OPEN_COLUMNS(args.rates)),
                        ("Idle CPU and a real client", OTHER_COLUMNS)):
        t = table(results, cols)
        if t:
            text += f"**{title}**\n\n{t}\n\n"
    errs = {n: s["errors"] for n, s in results.items() if s["errors"]}
    if errs:
        text += f"\n\nwrk reported errors: {errs}"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "raw": raw, "summary": results}, f, indent=1)


if __name__ == "__main__":
    main()
