#!/usr/bin/env bash
# Side-by-side benchmark: ringlb vs HAProxy 2.6 vs nginx stream vs a direct
# connection, against the same two nginx backends, in one run.
#   scripts/compare-peers.sh [--base REV] [--rounds N] [--duration SECS] [--out FILE] [--plot-dir DIR]
#                            [--tests ka,close,open,bulk,idle,idlecpu,redis] [--unpinned --backends 1]
# Installs what is missing (Debian packages), builds ringlb and ringlb-bench
# in release mode, then runs scripts/compare_peers.py, which prints the tables
# (and writes them to FILE as Markdown when --out is given) and leaves each
# balancer's keep-alive JSON in DIR for `ringlb-bench plot`. --base REV also
# runs ringlb built at REV (e.g. HEAD~1) as "ringlb@base", in the same run.
# --only haproxy,ringlb+roundrobin,ringlb+p2c,ringlb+source,ringlb+leasttime
# runs one ringlb per balancing algorithm ("ringlb+ALG"; plain "ringlb" uses
# leastconn), to compare the algorithms' cost per request in the same run.
# See `python3 scripts/compare_peers.py --help` for every option.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v wrk >/dev/null || need+=(wrk)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v perf >/dev/null || need+=(linux-perf)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release -q -p ringlb -p ringlb-bench
exec python3 scripts/compare_peers.py --ringlb target/release/ringlb --bench target/release/ringlb-bench "$@"
