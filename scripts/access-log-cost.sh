#!/usr/bin/env bash
# The access log's cost: CPU per connection with one line per connection
# written to a file, against the same ringlb without it, in one run
# (scripts/feature_cost.py).
#   scripts/access-log-cost.sh [--rounds N] [--duration SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-stream >/dev/null
}
command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || true
cargo build --release -q -p ringlb -p ringlb-bench
exec python3 scripts/feature_cost.py --feature access_log --ringlb target/release/ringlb --bench target/release/ringlb-bench "$@"
