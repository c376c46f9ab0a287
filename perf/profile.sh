#!/usr/bin/env bash
# Profiles ringlb under a keep-alive load: where its CPU goes (perf record,
# cpu-clock, call graphs) and how many syscalls it makes per request
# (perf stat, raw_syscalls:sys_enter).
#   perf/profile.sh [SECONDS] [FORWARD]     (default 10s, auto)
# Backends: two nginx instances (installed if missing); load: wrk -t1 -c64.
# Writes perf.data and the report to a temporary directory it names.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
forward=${2:-auto}
for tool in nginx wrk perf; do
  command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk linux-perf >/dev/null; break; }
done
cargo build --release -q --bin ringlb
out=$(mktemp -d /tmp/ringlb-profile.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
for port in 18281 18282; do
  cat >"$out/b$port.conf" <<CONF
daemon off; master_process off; worker_processes 1;
pid $out/b$port.pid; error_log $out/b$port.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen 127.0.0.1:$port; location / { return 200 "hello\n"; } } }
CONF
  nginx -c "$out/b$port.conf" -p "$out" & pids+=($!)
done
target/release/ringlb run --listen 127.0.0.1:18280 --backend 127.0.0.1:18281 --backend 127.0.0.1:18282 \
  --balance leastconn --shards 1 --forward "$forward" --log-level warn & pids+=($!)
rpid=$!
sleep 0.5
wrk -t1 -c64 -d$((secs + 4))s http://127.0.0.1:18280/ >"$out/wrk.txt" &
wpid=$!
sleep 2
perf stat -e raw_syscalls:sys_enter -x, -o "$out/syscalls.csv" -p "$rpid" -- sleep 2
perf record -e cpu-clock -g -p "$rpid" -o "$out/perf.data" -- sleep "$secs" 2>/dev/null
wait "$wpid"
perf report -i "$out/perf.data" --no-children --sort symbol -g none --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -40 >"$out/report.txt"
rps=$(grep -oP 'Requests/sec:\s+\K[\d.]+' "$out/wrk.txt")
sys=$(grep raw_syscalls "$out/syscalls.csv" | cut -d, -f1)
echo "requests/s: $rps; syscalls over 2 s: $sys (~$(python3 -c "print(round($sys / 2 / $rps, 3))") per request)"
echo "top symbols (perf report, cpu-clock):"
cat "$out/report.txt"
echo "perf.data and reports: $out"
