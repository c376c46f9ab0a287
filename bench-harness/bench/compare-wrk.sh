#!/usr/bin/env bash
# Side-by-side figures for ringlb-bench against the tools it replaces, in one
# run on one machine:
#   1. HTTP closed loop, 1 thread, same connection count, against the same
#      nginx: ringlb-bench vs wrk (requests/s and CPU time per request).
#   2. Bulk TCP over loopback, same stream count: ringlb-bench tcp-stream
#      (against `ringlb-bench serve sink`) vs iperf3 (client and server),
#      iperf3 both with its default 128 KiB writes and with -l 1M.
# Rounds alternate the tools; medians are printed. Loopback only.
#
# Environment: RUNS (3), DUR (10s), CONNS (64), STREAMS (2),
# NGINX_WORKERS (1), PORT (18480; PORT+1 iperf3, PORT+2 sink),
# CARGO_TARGET_DIR (target-bench).
set -euo pipefail

RUNS=${RUNS:-3}
DUR=${DUR:-10s}
CONNS=${CONNS:-64}
STREAMS=${STREAMS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-1}
PORT=${PORT:-18480}
IPERF_PORT=$((PORT + 1))
SINK_PORT=$((PORT + 2))
SECS=${DUR%s}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
BIN=$CARGO_TARGET_DIR/release/ringlb-bench

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v iperf3 >/dev/null || missing+=(iperf3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

(cd "$ROOT" && nice -n 10 cargo build --release -q -p ringlb-bench)

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$TMP/nginx/logs"
cat > "$TMP/nginx/nginx.conf" <<CONF
worker_processes $NGINX_WORKERS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$PORT;
        location / { return 200 "hello from nginx\n"; }
    }
}
CONF
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
iperf3 -s -p "$IPERF_PORT" >/dev/null 2>&1 &
PIDS+=($!)
"$BIN" serve sink --chunk 1m --listen "127.0.0.1:$SINK_PORT" >/dev/null &
PIDS+=($!)
sleep 1
URL="http://127.0.0.1:$PORT/"
curl -sf "$URL" >/dev/null 2>&1 || "$BIN" -t 1 -c 1 -n 1 "$URL" >/dev/null

# Runs a command, prints "<stdout file> <user+sys CPU seconds>".
timed() {
    local out=$1; shift
    local t
    t=$( { TIMEFORMAT='%U %S'; time "$@" >"$out" 2>/dev/null; } 2>&1 )
    awk -v t="$t" 'BEGIN { split(t, a, " "); print a[1] + a[2] }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d' + sys.argv[2]))" "$@"; }

echo "machine: $(nproc) cores, kernel $(uname -r); nginx workers $NGINX_WORKERS; $RUNS rounds of $DUR"
echo
echo "== HTTP closed loop: 1 thread, $CONNS connections, $URL =="
printf "%-6s %14s %12s %14s %12s %8s\n" round wrk_rps wrk_us/req ringlb_rps ringlb_us/req ratio
: > "$TMP/http.tsv"
for r in $(seq 1 "$RUNS"); do
    wcpu=$(timed "$TMP/wrk.out" wrk -t1 -c"$CONNS" -d"$DUR" "$URL")
    wr=$(rps "$TMP/wrk.out")
    bcpu=$(timed "$TMP/rb.out" "$BIN" -t 1 -c "$CONNS" -d "$DUR" "$URL")
    br=$(rps "$TMP/rb.out")
    errs=$(grep -c '^  Errors' "$TMP/rb.out" || true)
    [ "$errs" = 0 ] || { echo "ringlb-bench reported errors:"; cat "$TMP/rb.out"; }
    line=$(awk -v wr="$wr" -v wc="$wcpu" -v br="$br" -v bc="$bcpu" -v s="$SECS" -v r="$r" 'BEGIN {
        wu = wc * 1e6 / (wr * s); bu = bc * 1e6 / (br * s);
        printf "%s\t%.0f\t%.2f\t%.0f\t%.2f\t%.3f\n", r, wr, wu, br, bu, br / wr }')
    echo "$line" >> "$TMP/http.tsv"
    echo "$line" | awk -F'\t' '{ printf "%-6s %14s %12s %14s %12s %8s\n", $1, $2, $3, $4, $5, $6 }'
done
for c in 2 3 4 5 6; do printf "%s " "$(cut -f$c "$TMP/http.tsv" | median)"; done |
    awk '{ printf "%-6s %14s %12s %14s %12s %8s\n", "median", $1, $2, $3, $4, $5 }'

echo
echo "== Bulk TCP: $STREAMS streams over loopback (ringlb-bench default 1 MiB operations) =="
printf "%-6s %14s %14s %14s %10s %10s\n" round iperf3_gbit iperf3_1M_gbit ringlb_gbit vs_default vs_1M
: > "$TMP/stream.tsv"
iperf_gbit() {
    iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -P "$STREAMS" -t "$SECS" -J "$@" > "$TMP/iperf.json"
    jget "$TMP/iperf.json" "['end']['sum_received']['bits_per_second'] / 1e9"
}
for r in $(seq 1 "$RUNS"); do
    ig=$(iperf_gbit)
    "$BIN" -w tcp-stream -t 1 -c "$STREAMS" -d "$DUR" --json "$TMP/rs.json" "127.0.0.1:$SINK_PORT" >/dev/null
    bg=$(jget "$TMP/rs.json" "['gbit_per_sec']")
    im=$(iperf_gbit -l 1M)
    line=$(awk -v r="$r" -v i="$ig" -v m="$im" -v b="$bg" 'BEGIN { printf "%s\t%.2f\t%.2f\t%.2f\t%.3f\t%.3f\n", r, i, m, b, b / i, b / m }')
    echo "$line" >> "$TMP/stream.tsv"
    echo "$line" | awk -F'\t' '{ printf "%-6s %14s %14s %14s %10s %10s\n", $1, $2, $3, $4, $5, $6 }'
done
for c in 2 3 4 5 6; do printf "%s " "$(cut -f$c "$TMP/stream.tsv" | median)"; done |
    awk '{ printf "%-6s %14s %14s %14s %10s %10s\n", "median", $1, $2, $3, $4, $5 }'
