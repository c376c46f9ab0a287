#!/usr/bin/env bash
# Side-by-side benchmark: ringlb vs HAProxy 2.6 vs nginx stream vs a direct
# connection, against the same two nginx backends, in one run.
#   scripts/compare-peers.sh [--rounds N] [--duration SECS] [--out FILE] [--plot-dir DIR]
# Installs what is missing (Debian packages), builds ringlb and ringlb-bench
# in release mode, then runs scripts/compare_peers.py, which prints the table
# (and writes it to FILE as Markdown when --out is given) and leaves each
# balancer's keep-alive JSON in DIR for `ringlb-bench plot`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v wrk >/dev/null || need+=(wrk)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v perf >/dev/null || need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release -q -p ringlb -p ringlb-bench
exec python3 scripts/compare_peers.py --ringlb target/release/ringlb --bench target/release/ringlb-bench "$@"
