#!/usr/bin/env bash
# What a data-path feature costs: CPU per request with it on, against the
# same ringlb without it, in one run (scripts/feature_cost.py):
#   access_log  one line per connection written to a file;
#   edge        an access list of 1,000 prefixes and a token-bucket limit;
#   shared      that limit shared through a local redis-server, against it
#               kept locally.
#   scripts/feature-cost.sh access_log|edge|shared [--rounds N] [--duration SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-stream >/dev/null
}
command -v redis-server >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || true
cargo build --release -q -p ringlb -p ringlb-bench
feature=${1:?usage: feature-cost.sh access_log|edge|shared [--rounds N] [--duration SECS]}
shift
exec python3 scripts/feature_cost.py --feature "$feature" --ringlb target/release/ringlb --bench target/release/ringlb-bench "$@"
