#!/usr/bin/env bash
# Compares two ringlb binaries with counts that do not swing with the
# machine's noise: io_uring operations and io_uring_enter calls per request
# (kernel tracepoints, perf stat), and user-space instructions per request
# (valgrind callgrind, after a warm-up). Same backends, same load, one binary
# after the other.
#   perf/ab-counts.sh NEW_BINARY BASE_BINARY [ka|close|open] [REQUESTS]
# `open` sends keep-alive requests at a fixed rate (RATE, default 300/s), so
# that each request is a wake-up of its own: what a request costs when
# nothing batches.
# e.g. perf/ab-counts.sh target/release/ringlb "$(scripts/build-rev.sh HEAD~1)" close 5000
# BALANCE_NEW / BALANCE_BASE set each side's algorithm (default leastconn),
# so one binary can be compared with itself across algorithms:
#   BALANCE_NEW=p2c BALANCE_BASE=roundrobin perf/ab-counts.sh target/release/ringlb target/release/ringlb close 5000
# EXTRA_NEW / EXTRA_BASE append TOML to each side's configuration ($out is
# the run's scratch directory), e.g. the access log's cost:
#   EXTRA_NEW='[log]
#   access = "$out/access.log"' perf/ab-counts.sh target/release/ringlb target/release/ringlb close 5000
set -euo pipefail
cd "$(dirname "$0")/.."
new=$(realpath "$1"); base=$(realpath "$2"); mode=${3:-ka}; n=${4:-20000}
for tool in perf valgrind callgrind_annotate; do
  command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf valgrind >/dev/null; break; }
done
cargo build --release -q -p ringlb-bench
bench=target/release/ringlb-bench
out=$(mktemp -d /tmp/ringlb-ab.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
config() {
cat >"$out/lb-$1.toml" <<CONF
[runtime]
shards = 1
[timeouts]
client_idle = "300s"
server_idle = "300s"
[[listener]]
name = "web"
bind = "127.0.0.1:18600"
pool = "web"
[[pool]]
name = "web"
balance = "$2"
servers = [{ name = "a", addr = "127.0.0.1:18601" }, { name = "b", addr = "127.0.0.1:18602" }]
CONF
printf '%s\n' "${3//\$out/$out}" >>"$out/lb-$1.toml"
}
config new "${BALANCE_NEW:-leastconn}" "${EXTRA_NEW:-}"
config base "${BALANCE_BASE:-leastconn}" "${EXTRA_BASE:-}"
for port in 18601 18602; do
  "$bench" serve http --listen "127.0.0.1:$port" >/dev/null 2>&1 & pids+=($!)
done
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/18600) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
extra=(); [ "$mode" = close ] && extra=(--close); [ "$mode" = open ] && extra=(-R "${RATE:-300}")
load() { "$bench" -t1 -c16 "${extra[@]}" --timeout 20s -n "$1" http://127.0.0.1:18600/ >/dev/null 2>&1; }

echo "io_uring operations per request ($mode, $n requests):"
for label in new base; do
  bin=$new; [ $label = base ] && bin=$base
  "$bin" run --config "$out/lb-$label.toml" --log-level warn & lb=$!; pids+=($lb)
  wait_port; load 2000
  perf stat -x, -o "$out/stat" -e io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm,syscalls:sys_enter_io_uring_enter -p "$lb" & ps=$!
  sleep 0.3; load "$n"; kill -INT "$ps"; wait "$ps" || true
  kill "$lb"; wait "$lb" || true
  awk -F, -v l=$label -v n="$n" '$1 ~ /^[0-9]+$/ { printf "  %-5s %-40s %.3f\n", l, $3, $1 / n }' "$out/stat"
done

echo "user-space instructions per request ($mode, callgrind):"
for label in new base; do
  bin=$new; [ $label = base ] && bin=$base
  valgrind --tool=callgrind --callgrind-out-file="$out/cg-$label" "$bin" run --config "$out/lb-$label.toml" --log-level warn 2>"$out/vg-$label.log" & lb=$!; pids+=($lb)
  wait_port; sleep 1; load 2000; sleep 0.5
  callgrind_control -z "$lb" >/dev/null 2>&1
  load "$n"; sleep 0.5
  callgrind_control -d "$lb" >/dev/null 2>&1; sleep 1
  kill -9 "$lb"; wait "$lb" 2>/dev/null || true
  f=$(ls -t "$out"/cg-$label.* | head -1)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  echo "  $label $((ir / n))"
done
[ -n "${KEEP:-}" ] && echo "kept $out" || rm -rf "$out"
