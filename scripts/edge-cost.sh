#!/usr/bin/env bash
# The edge checks' cost: CPU per request with an access list of 1,000
# prefixes and a token-bucket limit per source, against the same ringlb
# without them, in one run
# (scripts/feature_cost.py).
#   scripts/edge-cost.sh [--rounds N] [--duration SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-stream >/dev/null
}
command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || true
cargo build --release -q -p ringlb -p ringlb-bench
exec python3 scripts/feature_cost.py --feature edge --ringlb target/release/ringlb --bench target/release/ringlb-bench "$@"
