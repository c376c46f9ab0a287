#!/usr/bin/env bash
# Builds ringlb (release) at a git revision, for side-by-side runs against the
# working tree's binary (compare_peers.py --ringlb-base, pressure.py
# --ringlb-base). Prints the binary's path.
#   scripts/build-rev.sh REV
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(git rev-parse --short "${1:?usage: build-rev.sh REV}")
out="target/rev-$rev"
if [ ! -x "$out/ringlb" ]; then
  tree=$(mktemp -d /tmp/ringlb-rev-XXXXXX)
  git worktree add -q --detach "$tree" "$rev"
  trap 'git worktree remove --force "$tree"' EXIT
  (cd "$tree" && CARGO_TARGET_DIR="$PWD/../$(basename "$tree")-target" cargo build --release -q -p ringlb) >&2
  mkdir -p "$out"
  cp "$tree-target/release/ringlb" "$out/ringlb"
  rm -rf "$tree-target"
fi
echo "$PWD/$out/ringlb"
