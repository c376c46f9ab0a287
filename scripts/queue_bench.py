#!/usr/bin/env python3
"""The waiting room under load: two HTTP backends (ringlb-bench serve, each
response delayed by --delay) behind ringlb with maxconn per server, and a
closed loop of --clients clients opening a new connection per request
(ringlb-bench --close), far more than the servers' slots. Reports the most
connections each server held at once (counted by the server itself:
accepted in, counted out when it starts closing), every request served or
not, and ringlb's own figures
for the queue (time queued p50/p99, queue timeouts, turned away), from the
line it logs when it stops."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from compare_peers import wait_port

BACKENDS = [18481, 18482]
LISTEN = 18480


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ringlb", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--maxconn", type=int, default=8)
    ap.add_argument("--delay", default="2ms", help="each backend response is delayed by this much")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--out", help="write the Markdown result here")
    args = ap.parse_args()
    procs = []
    with tempfile.TemporaryDirectory(prefix="ringlb-queue-") as d:
        try:
            for port in BACKENDS:
                procs.append(subprocess.Popen([args.bench, "serve", "http", "--listen", f"127.0.0.1:{port}",
                                               "--delay", args.delay], stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True))
                wait_port(port)
            servers = ", ".join(f'{{ name = "b{p}", addr = "127.0.0.1:{p}", maxconn = {args.maxconn} }}'
                                for p in BACKENDS)
            conf = os.path.join(d, "lb.toml")
            with open(conf, "w") as f:
                f.write(f"""[runtime]
shards = {args.shards}

[timeouts]
queue = "30s"

[[listener]]
name = "web"
bind = "127.0.0.1:{LISTEN}"
pool = "web"

[[pool]]
name = "web"
balance = "leastconn"
servers = [{servers}]
""")
            log = open(os.path.join(d, "ringlb.log"), "w+")
            lb = subprocess.Popen([args.ringlb, "run", "--config", conf, "--log-level", "info"],
                                  stdout=log, stderr=log)
            procs.append(lb)
            wait_port(LISTEN)
            out = os.path.join(d, "run.json")
            subprocess.run([args.bench, "-t1", f"-c{args.clients}", f"-d{args.duration}s", "--close",
                            "--json", out, f"http://127.0.0.1:{LISTEN}/"], check=True, capture_output=True)
            lb.send_signal(signal.SIGTERM)
            lb.wait(timeout=30)
            log.seek(0)
            text = log.read()
            with open(out) as f:
                j = json.load(f)
            peaks = {}
            for port, b in zip(BACKENDS, procs):
                b.send_signal(signal.SIGTERM)
                served = b.communicate(timeout=10)[0]
                peaks[port] = int(re.search(r"peak_connections=(\d+)", served).group(1))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    m = re.search(r"pool web: (\d+) clients queued, (\d+) served from the queue, (\d+) queue timeouts, "
                  r"(\d+) turned away \(maxqueue\); time queued p50 (\S+) p99 (\S+); mean slot hold (\S+)", text)
    if not m:
        sys.exit(f"no queue figures in ringlb's log:\n{text}")
    queued, served, timeouts, full, p50, p99, hold = m.groups()
    uname = os.uname()
    res = (f"Machine: {os.cpu_count()} CPUs, Linux {uname.release}, {time.strftime('%Y-%m-%d')}. "
           f"ringlb {args.shards} shard(s), 2 servers (ringlb-bench serve http, {args.delay} per response) "
           f"at maxconn {args.maxconn}; ringlb-bench -c{args.clients} --close for {args.duration} s; "
           f"each server counts the connections it holds at once.\n\n"
           f"| requests | errors | req/s | most connections at b{BACKENDS[0]} / b{BACKENDS[1]} | "
           f"queued | served from the queue | queue timeouts | turned away | time queued p50 | p99 | "
           f"mean slot hold | client p50 / p99 µs |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
           f"| {j['requests']:,} | {j['errors']['total']} | {j['requests_per_sec']:,.0f} | "
           f"{peaks[BACKENDS[0]]} / {peaks[BACKENDS[1]]} | {int(queued):,} | {int(served):,} | {timeouts} | "
           f"{full} | {p50} | {p99} | {hold} | {j['latency']['p50_us']:.0f} / {j['latency']['p99_us']:.0f} |\n")
    print(res)
    if args.out:
        with open(args.out, "w") as f:
            f.write(res)


if __name__ == "__main__":
    main()
