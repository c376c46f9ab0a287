#!/usr/bin/env python3
"""What the control plane costs the data path: keep-alive CPU per request of
ringlb with 100 servers health-checked every second and /metrics scraped
every second, against the same ringlb without checks or scrapes, in one run
(alternating, medians of N rounds). Both instances balance the same
100-server pool (50 entries per nginx backend, leastconn), pinned to CPU 1
with the load on CPU 0 (balancer-bound), so only the checks and the scrapes
differ. The CPU counted is the whole process's (shards, checker and admin
threads).

    scripts/control-overhead.sh [--rounds N] [--duration SECS]"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_peers as cp  # noqa: E402

PORTS = {"plain": 18401, "control": 18402}
ADMIN = 18409


def config(port, control):
    servers = [(f"s{i}", cp.BACKENDS[i % 2]) for i in range(100)]
    check = 'check = { kind = "tcp", interval = "1s", timeout = "500ms" }' if control else ""
    admin = f'[admin]\nbind = "127.0.0.1:{ADMIN}"\n' if control else ""
    return cp.ringlb_pinned_config(port, servers, head=admin, pool=check)


def scraper(stop, sizes):
    while not stop.is_set():
        t = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics", timeout=5) as r:
            sizes.append(len(r.read()))
        stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ringlb", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    raw = {"plain": [], "control": []}
    scrapes = []
    with tempfile.TemporaryDirectory(prefix="ringlb-control-") as d:
        lab = cp.Lab(os.path.abspath(args.ringlb), d)
        try:
            lab.start_backends()
            pids = {}
            for name, port in PORTS.items():
                conf = lab.write(f"{name}.toml", config(port, name == "control"))
                p = lab.spawn([lab.ringlb, "run", "--config", conf, "--log-level", "warn"])
                cp.wait_port(port, p)
                pids[name] = p.pid
            time.sleep(3)  # the checks' first round, spread over an interval
            for rnd in range(args.rounds):
                for name, port in PORTS.items():
                    print(f"round {rnd + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                    stop, sizes = threading.Event(), []
                    t = threading.Thread(target=scraper, args=(stop, sizes)) if name == "control" else None
                    if t:
                        t.start()
                    r = cp.measured(pids[name], args.duration, lambda: cp.bench(
                        args.bench, port, args.duration, False, os.path.join(d, f"{name}.json"), name))
                    stop.set()
                    if t:
                        t.join()
                        scrapes.append((len(sizes), statistics.median(sizes) if sizes else 0))
                    r["us_per_req"] = r["cpu_s"] / r["requests"] * 1e6
                    r["sys_per_req"] = (r["syscalls"] or 0) / r["requests"]
                    raw[name].append(r)
        finally:
            lab.stop()
    med = {n: {k: statistics.median(x[k] for x in raw[n]) for k in ("rps", "us_per_req", "sys_per_req", "p99_us")}
           for n in raw}
    uname = os.uname()
    print(f"Machine: {os.cpu_count()} CPUs, Linux {uname.release}, {time.strftime('%Y-%m-%d')}. "
          f"ringlb-bench -t1 -c64 -d{args.duration}s keep-alive, medians of {args.rounds} rounds, "
          f"balancer pinned to CPU {cp.BALANCER_CPU}, load to CPU {cp.LOAD_CPU}; 100-server leastconn pool.\n")
    print("| ringlb | req/s | CPU µs/req | syscalls/req | p99 µs |")
    print("|---|---|---|---|---|")
    for n, label in (("plain", "no checks, no scrapes"),
                     ("control", "100 servers checked every 1 s, /metrics every 1 s")):
        m = med[n]
        print(f"| {label} | {m['rps']:,.0f} | {m['us_per_req']:.2f} | {m['sys_per_req']:.2f} | {m['p99_us']:.0f} |")
    ratio = med["control"]["us_per_req"] / med["plain"]["us_per_req"]
    per_round = [c["us_per_req"] / p["us_per_req"] for c, p in zip(raw["control"], raw["plain"])]
    print(f"\nCPU per request, with / without: {ratio:.3f} (rounds: {', '.join(f'{x:.3f}' for x in per_round)}); "
          f"scrapes per round {[s[0] for s in scrapes]}, median /metrics size {int(statistics.median(s[1] for s in scrapes))} bytes.")


if __name__ == "__main__":
    main()
