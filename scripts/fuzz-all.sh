#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME each (default 20s):
# the targets are discovered with `go test -list`, so a new Fuzz function
# is covered without editing anything.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-20s}
for pkg in $(go list ./...); do
  for f in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $f"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg"
  done
done
