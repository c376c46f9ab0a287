#!/usr/bin/env bash
# The ringlb demo: two local HTTP backends, ringlb in front of them with
# least-connections, a short load through it, and the result.
#   scripts/demo.sh [DURATION]        (default 5s)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-5s}

echo "== building (release)"
cargo build --release -q -p ringlb -p ringlb-bench
bin=target/release
log=$(mktemp -d /tmp/ringlb-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1; logs in $log" >&2
  exit 1
}

echo "== two backends on 127.0.0.1:19101 and :19102 (ringlb-bench serve http)"
for port in 19101 19102; do
  "$bin/ringlb-bench" serve http --listen "127.0.0.1:$port" >"$log/backend-$port.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
done

echo "== ringlb on 127.0.0.1:19100, balance leastconn"
"$bin/ringlb" run --listen 127.0.0.1:19100 \
  --backend 127.0.0.1:19101 --backend 127.0.0.1:19102 \
  --balance leastconn --grace 2 2>"$log/ringlb.log" &
ringlb_pid=$!
pids+=("$ringlb_pid")
wait_port 19100
sed 's/^/   /' "$log/ringlb.log"

echo "== load: 32 keep-alive connections for $duration through ringlb"
"$bin/ringlb-bench" -t 1 -c 32 -d "$duration" http://127.0.0.1:19100/

echo "== stopping"
kill -TERM "$ringlb_pid"
wait "$ringlb_pid" 2>/dev/null || true
grep -E "stopped" "$log/ringlb.log" | sed 's/^/   /'
for i in 0 1; do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
wait "${pids[0]}" "${pids[1]}" 2>/dev/null || true
for port in 19101 19102; do
  echo "   backend $port: $(grep -E '^served' "$log/backend-$port.log" || echo 'no count')"
done
rm -rf "$log"
