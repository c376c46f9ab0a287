#!/usr/bin/env python3
"""What a feature costs the data path: CPU per request of ringlb with the
feature on, against the same ringlb without it, in one run (alternating,
medians of N rounds), in `Connection: close` mode (per-connection work:
the worst case) and keep-alive. The balancer's shard is pinned to CPU 1
with the load on CPU 0 (balancer-bound); its other threads are not pinned.
The CPU counted is the whole process's.

Features:
- `access_log`: one line per connection written to a file;
- `edge`: an access list of 1,000 prefixes (the load's 127.0.0.0/8 among
  them, allowed) and a token-bucket limit per source that never refuses
  (so only the checks are measured).
- `shared`: the same token-bucket limit shared through a local
  redis-server (started here) against it kept locally: "off" is the local
  limit, "on" the shared one.

    scripts/feature-cost.sh access_log|edge|shared [--rounds N] [--duration SECS]"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_peers as cp  # noqa: E402

PORTS = {"off": 18411, "on": 18412}
ADMIN = 18419
REDIS = 18420
NEVER_REFUSES = 'rate = "10000000/s", burst = 10000000'


def edge_lists():
    """1,000 prefixes: 999 random /24s in 10.0.0.0/8 denied, and
    127.0.0.0/8 allowed."""
    import random
    rng = random.Random(1)
    deny = sorted({f"10.{rng.randrange(256)}.{rng.randrange(256)}.0/24" for _ in range(2000)})[:999]
    return 'allow = ["127.0.0.0/8"]\ndeny = [' + ", ".join(f'"{p}"' for p in deny) + ']\n' \
        f'limit = {{ key = "src", algorithm = "token_bucket", {NEVER_REFUSES} }}\n'


def config(port, feature, log_path):
    head, listener = "", ""
    if feature == "shared_off":
        listener = f'limit = {{ algorithm = "token_bucket", {NEVER_REFUSES} }}\n'
    elif feature == "shared":
        head = f'[admin]\nbind = "127.0.0.1:{ADMIN}"\n'
        listener = (f'limit = {{ algorithm = "token_bucket", {NEVER_REFUSES}, '
                    f'store = "redis://127.0.0.1:{REDIS}/0", scope = "bench" }}\n')
    elif feature == "access_log":
        head = f'[log]\naccess = "{log_path}"\n[admin]\nbind = "127.0.0.1:{ADMIN}"\n'
    elif feature == "edge":
        head = f'[admin]\nbind = "127.0.0.1:{ADMIN}"\n'
        listener = edge_lists()
    servers = [("a", cp.BACKENDS[0]), ("b", cp.BACKENDS[1])]
    return cp.ringlb_pinned_config(port, servers, head=head, listener=listener)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ringlb", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--feature", choices=["access_log", "edge", "shared"], required=True)
    args = ap.parse_args()
    raw = {(mode, name): [] for mode in ("close", "ka") for name in PORTS}
    with tempfile.TemporaryDirectory(prefix="ringlb-access-cost-") as d:
        log_path = os.path.join(d, "access.log")
        lab = cp.Lab(os.path.abspath(args.ringlb), d)
        try:
            lab.start_backends()
            if args.feature == "shared":
                r = lab.spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS),
                               "--save", "", "--appendonly", "no"])
                cp.wait_port(REDIS, r)
            pids = {}
            for name, port in PORTS.items():
                off = "shared_off" if args.feature == "shared" else None
                conf = lab.write(f"{name}.toml", config(port, args.feature if name == "on" else off, log_path))
                p = lab.spawn([lab.ringlb, "run", "--config", conf, "--log-level", "warn"])
                cp.wait_port(port, p)
                pids[name] = p.pid
            for rnd in range(args.rounds):
                for mode in ("close", "ka"):
                    for name, port in PORTS.items():
                        print(f"round {rnd + 1}/{args.rounds}: {mode} {name}", file=sys.stderr, flush=True)
                        r = cp.measured(pids[name], args.duration, lambda: cp.bench(
                            args.bench, port, args.duration, mode == "close",
                            os.path.join(d, f"{name}.json"), name))
                        r["us_per_req"] = r["cpu_s"] / r["requests"] * 1e6
                        raw[(mode, name)].append(r)
            time.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/stats", timeout=5) as resp:
                stats = json.load(resp)
            lines = 0
            if args.feature == "access_log":
                with open(log_path, "rb") as f:
                    lines = sum(1 for _ in f)
        finally:
            lab.stop()
    uname = os.uname()
    print(f"Machine: {os.cpu_count()} CPUs, Linux {uname.release}, {time.strftime('%Y-%m-%d')}. "
          f"ringlb-bench -t1 -c64 -d{args.duration}s, medians of {args.rounds} rounds, "
          f"balancer pinned to CPU {cp.BALANCER_CPU}, load to CPU {cp.LOAD_CPU}; feature: {args.feature}.\n")
    print(f"| mode | {args.feature} | req/s | CPU µs/req | p99 µs | CPU with / without | req/s with / without |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("close", "ka"):
        med = {n: {k: statistics.median(x[k] for x in raw[(mode, n)]) for k in ("rps", "us_per_req", "p99_us")}
               for n in PORTS}
        ratio = med["on"]["us_per_req"] / med["off"]["us_per_req"]
        rps_ratio = med["on"]["rps"] / med["off"]["rps"]
        rounds = [a["us_per_req"] / b["us_per_req"] for a, b in zip(raw[(mode, "on")], raw[(mode, "off")])]
        for n in PORTS:
            m = med[n]
            extra = f"{ratio:.3f} (rounds {', '.join(f'{x:.2f}' for x in rounds)})" if n == "on" else ""
            rps = f"{rps_ratio:.3f}" if n == "on" else ""
            print(f"| {mode} | {n} | {m['rps']:,.0f} | {m['us_per_req']:.2f} | {m['p99_us']:.0f} | {extra} | {rps} |")
    if args.feature == "access_log":
        log_stats = stats["access_log"]
        print(f"\nLines written {log_stats['written']:,} (file: {lines:,}), dropped {log_stats['dropped']:,}, "
              f"write errors {log_stats['write_errors']}.")
    else:
        web = stats["listeners"][0]
        print(f"\nListener: {web['accepted']:,} accepted, {web['denied']} denied, {web['limited']} limited, "
              f"{web.get('store_fallbacks', 0)} decided by on_store_error.")
        if args.feature == "shared":
            asked = sum(s["lease_requests"] for s in stats["shards"])
            failed = sum(s["lease_failures"] for s in stats["shards"])
            print(f"Leases asked of Redis: {asked:,} ({failed} failed).")


if __name__ == "__main__":
    main()
