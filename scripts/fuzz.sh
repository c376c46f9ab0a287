#!/usr/bin/env bash
# Runs one coverage-guided fuzz target (libFuzzer through cargo-fuzz, on the
# nightly toolchain) for SECONDS, starting from and adding to its corpus in
# fuzz/corpus/TARGET; prints the executions run. A crash leaves its input
# in fuzz/artifacts/TARGET and fails.
#   scripts/fuzz.sh config|proxy_header SECONDS
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz.sh config|proxy_header SECONDS}
seconds=${2:-60}
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked
cd fuzz
set +e
cargo +nightly fuzz run "$target" "corpus/$target" -- \
  -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
  >"/tmp/ringlb-fuzz-$target.log" 2>&1
status=$?
set -e
grep -E "stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY|^Done" "/tmp/ringlb-fuzz-$target.log" || true
[ "$status" -eq 0 ] || { echo "fuzz.sh: cargo fuzz failed ($status); see /tmp/ringlb-fuzz-$target.log"; exit "$status"; }
