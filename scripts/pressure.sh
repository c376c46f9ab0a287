#!/usr/bin/env bash
# ringlb out of fds and against a dead backend: clients served, errors, log
# lines, SIGTERM time (see scripts/pressure.py).
#   scripts/pressure.sh [--base REV] [--out FILE]
# --base REV also measures ringlb built at REV (scripts/build-rev.sh), in the
# same run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ringlb -p ringlb-bench
exec python3 scripts/pressure.py --ringlb target/release/ringlb --bench target/release/ringlb-bench "$@"
