#!/usr/bin/env bash
# The control plane's cost to the data path: keep-alive CPU per request with
# 100 servers health-checked every second and /metrics scraped every second,
# against the same ringlb without them, in one run (scripts/control_overhead.py).
#   scripts/control-overhead.sh [--rounds N] [--duration SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-stream >/dev/null
}
command -v iperf3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || true
cargo build --release -q -p ringlb -p ringlb-bench
exec python3 scripts/control_overhead.py --ringlb target/release/ringlb --bench target/release/ringlb-bench "$@"
