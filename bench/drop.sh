#!/bin/sh
# File drop throughput against iperf3 over the same Warren tunnel, in the
# netns lab of test/mesh (root): rounds of iperf3 for 5 s then a 1 GiB
# `warren file cp`, so that each pair shares the load of the moment
# (WARREN_BENCH_DROP_ROUNDS, default 2). Run it alone: it measures
# CPU-bound paths.
set -e
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
WARREN_BENCH_DROP=1 go test -count=1 -run '^TestDropBench$' -v ./test/mesh/ | grep -E 'file drop|FAIL|ok'
