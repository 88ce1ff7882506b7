#!/bin/sh
# File drop throughput against iperf3 over the same Warren tunnel, in the
# netns lab of test/mesh (root). Run it alone: it measures CPU-bound paths.
set -e
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
WARREN_BENCH_DROP=1 go test -count=1 -run '^TestDropBench$' -v ./test/mesh/ | grep -E 'file drop|FAIL|ok'
