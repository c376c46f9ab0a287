#!/usr/bin/env python3
"""ringlb under pressure, measured: what operators see when the process runs
out of fds, and when its only backend is dead.

- fds: ringlb runs with RLIMIT_NOFILE 256 (as `prlimit --nofile=256`); 600
  clients connect at once, each sends one HTTP request and closes after the
  reply (ringlb-bench --close -c600 -n600). Reports clients served, errors by
  kind (a reset shows as a read or connect error), log lines written, and how
  long SIGTERM takes once nothing is open.
- dead backend: the pool's servers refuse; ringlb-bench --close -c64 for a few
  seconds. Reports clients tried, log lines and lines per second.

Each binary given (--ringlb, and --ringlb-base for a comparison) is measured
in the same run against the same load."""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from compare_peers import build_rev, wait_port


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_ringlb(binary, backend_port, nofile, log_path):
    port = free_port()
    cmd = [binary, "run", "--listen", f"127.0.0.1:{port}", "--backend", f"127.0.0.1:{backend_port}",
           "--shards", "2", "--grace", "10", "--log-level", "info"]
    if nofile:
        cmd = ["prlimit", f"--nofile={nofile}", "--"] + cmd
    log = open(log_path, "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=log)
    time.sleep(0.2)
    return p, port


def stop(p):
    t = time.time()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return time.time() - t


def log_lines(path, after_startup=True):
    with open(path) as f:
        lines = [l for l in f if l.strip()]
    if after_startup:
        lines = [l for l in lines if " listener " not in l and "maxconn " not in l
                 and "stopping" not in l and "stopped:" not in l]
    return lines


def bench(bench_bin, port, args, json_path):
    cmd = [bench_bin, "-t1", "--close", "--timeout", "30s", "--json", json_path] + args + [f"http://127.0.0.1:{port}/"]
    subprocess.run(cmd, capture_output=True, text=True)
    with open(json_path) as f:
        return json.load(f)


def fd_pressure(binary, bench_bin, backend_port, d, label):
    log = os.path.join(d, f"fds-{label}.log")
    p, port = start_ringlb(binary, backend_port, 256, log)
    wait_port(port, p)
    j = bench(bench_bin, port, ["-c600", "-n600"], os.path.join(d, f"fds-{label}.json"))
    time.sleep(0.5)
    took = stop(p)
    errors = {k: v for k, v in j["errors"].items() if v and k != "total"}
    return {"served": j["requests"], "errors": j["errors"]["total"], "by_kind": errors,
            "log_lines": len(log_lines(log)), "sigterm_s": took}


def dead_backend(binary, bench_bin, seconds, d, label):
    dead = free_port()  # nothing listens there
    log = os.path.join(d, f"dead-{label}.log")
    p, port = start_ringlb(binary, dead, None, log)
    wait_port(port, p)
    t = time.time()
    j = bench(bench_bin, port, ["-c64", f"-d{seconds}s"], os.path.join(d, f"dead-{label}.json"))
    elapsed = time.time() - t
    time.sleep(1.2)
    stop(p)
    lines = log_lines(log)
    return {"clients": j["requests"] + j["errors"]["total"], "log_lines": len(lines),
            "lines_per_s": len(lines) / (elapsed + 1.2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ringlb", required=True)
    ap.add_argument("--ringlb-base", help="another ringlb binary measured beside --ringlb")
    ap.add_argument("--base", metavar="REV", help="build ringlb at REV (scripts/build-rev.sh) and use it as --ringlb-base")
    ap.add_argument("--bench", required=True, help="the ringlb-bench binary")
    ap.add_argument("--dead-seconds", type=int, default=3)
    ap.add_argument("--out", help="write the Markdown tables here")
    args = ap.parse_args()
    if args.base:
        args.ringlb_base = build_rev(args.base)
    binaries = [("ringlb", os.path.abspath(args.ringlb))]
    if args.ringlb_base:
        binaries.append(("ringlb@base", os.path.abspath(args.ringlb_base)))
    with tempfile.TemporaryDirectory(prefix="ringlb-pressure-") as d:
        backend_port = free_port()
        backend = subprocess.Popen([args.bench, "serve", "http", "--listen", f"127.0.0.1:{backend_port}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(backend_port, backend)
            fds = {label: fd_pressure(b, args.bench, backend_port, d, label) for label, b in binaries}
            dead = {label: dead_backend(b, args.bench, args.dead_seconds, d, label) for label, b in binaries}
        finally:
            backend.terminate()
            backend.wait()
    uname = os.uname()
    text = (f"Machine: {os.cpu_count()} CPUs, Linux {uname.release}, {time.strftime('%Y-%m-%d')}; ringlb with 2 shards.\n\n"
            "**Out of fds** (RLIMIT_NOFILE 256; 600 clients at once, one request each, `--close`):\n\n"
            "| binary | served | errors | errors by kind | log lines | SIGTERM with nothing open |\n|---|---|---|---|---|---|\n")
    for label, r in fds.items():
        text += (f"| {label} | {r['served']} | {r['errors']} | {r['by_kind'] or '–'} | {r['log_lines']} | "
                 f"{r['sigterm_s']:.2f} s |\n")
    text += (f"\n**Dead backend** (`--close -c64` for {args.dead_seconds} s against a pool whose server refuses):\n\n"
             "| binary | clients turned away | log lines | lines per second |\n|---|---|---|---|\n")
    for label, r in dead.items():
        text += f"| {label} | {r['clients']:,} | {r['log_lines']:,} | {r['lines_per_s']:,.1f} |\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
