#!/usr/bin/env bash
# The waiting room under load: 2 servers at maxconn 8, 200 closed-loop
# clients (a new connection per request); reports the most connections
# each server held at once (counted by the server), errors, and ringlb's
# time-queued p50/p99.
#   scripts/queue-bench.sh [--clients N] [--maxconn N] [--delay 2ms] [--duration SECS] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ringlb -p ringlb-bench
exec python3 scripts/queue_bench.py --ringlb target/release/ringlb --bench target/release/ringlb-bench "$@"
