#!/usr/bin/env bash
# Network benchmark: raw veth vs wireguard-go (the version pinned in go.mod)
# vs Warren, in one run, on two network namespaces joined by a veth pair.
# Builds bin/warren, bin/wireguard-go and bin/netbench, installs the tools
# (iproute2, wireguard-tools, iperf3, ping) and runs bench/netbench with the
# given flags; prints one table with the warren/wireguard-go ratios and
# writes it, with every round's values, to bench/results/latest.md (+ .json).
#
# Usage (as root, from anywhere):
#   bench/run.sh                 # full run: 2 rounds, 10 s per iperf3 test (~6 min)
#   bench/run.sh -quick          # smoke test: 1 round, 2 s per test
#   bench/run.sh -rounds 3 -duration 15s -setups wireguard-go,warren -udp-rate 2G -out FILE
# Run it on a quiet machine: throughput swings with other load, so compare
# only figures from the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[[ $(id -u) == 0 ]] || { echo "bench: must run as root (network namespaces)" >&2; exit 1; }

./scripts/install-deps.sh
echo "bench: building bin/warren, bin/wireguard-go, bin/netbench" >&2
make -s build
go build -o bin/wireguard-go golang.zx2c4.com/wireguard
go build -o bin/netbench ./bench/netbench

NETBENCH_COMMAND="bench/run.sh${*:+ $*}" exec bin/netbench "$@"
