#!/usr/bin/env bash
# Relay benchmark through the mesh: Warren's relays (the server's embedded
# one, `warren server --relay`, a standalone `warren relay`, and a peer
# relay: a third node approved to relay over UDP) against Tailscale's DERP
# (headscale's embedded DERP server, tailscaled nodes), in one run, on the
# same namespaces, with direct UDP between the nodes blocked so that both
# products relay; iperf3 TCP through the mesh, Gbit/s and CPU-s per GB
# (relaying process + both nodes). See bench/netbench (meshlab.go,
# meshrelay.go, meshpeer.go).
#
# tailscale.com v1.102.5 and headscale v0.29.3 are benchmark-only
# dependencies: built once in a throwaway module under a temp dir into
# bin/bench/ (never in go.mod; delete bin/bench to rebuild).
#
# Usage (as root, from anywhere):
#   bench/relaymesh.sh                             # 2 rounds, 10 s per test
#   bench/relaymesh.sh -rounds 3 -duration 20s -tests tcp1_ab,tcp4_ab
#   bench/relaymesh.sh -quick -setups warren-peer  # smoke: 1 round, 2 s per test
#   bench/relaymesh.sh -warren-relay-rate 10M      # Warren's relays with the old default limit
# Results: the table on stdout, every round as CSV in
# bench/results/relay/relaymesh_<date>_<commit>.csv (or -csv FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[[ $(id -u) == 0 ]] || { echo "relaymesh: must run as root (network namespaces)" >&2; exit 1; }
TAILSCALE_VERSION=v1.102.5
HEADSCALE_VERSION=v0.29.3

./scripts/install-deps.sh
echo "relaymesh: building bin/warren, bin/netbench" >&2
make -s build
go build -o bin/netbench ./bench/netbench

# build_tool MODULE@VERSION PACKAGE... : go build the packages of a module
# in a throwaway module (its go.mod and go.sum stay in the temp dir).
build_tool() {
	local modver=$1; shift
	local tmp; tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	( cd "$tmp" && go mod init relaymesh-tools >/dev/null 2>&1 &&
	  for p in "$@"; do go get "$p@${modver#*@}" >/dev/null; done &&
	  go build -trimpath -o "$OLDPWD/bin/bench/" "$@" )
}
mkdir -p bin/bench
if [[ ! -x bin/bench/tailscaled || ! -x bin/bench/tailscale ]]; then
	echo "relaymesh: building tailscaled and tailscale $TAILSCALE_VERSION (once; several minutes)" >&2
	build_tool "tailscale.com@$TAILSCALE_VERSION" tailscale.com/cmd/tailscaled tailscale.com/cmd/tailscale
fi
if [[ ! -x bin/bench/headscale ]]; then
	echo "relaymesh: building headscale $HEADSCALE_VERSION (once; several minutes)" >&2
	build_tool "github.com/juanfont/headscale@$HEADSCALE_VERSION" github.com/juanfont/headscale/cmd/headscale
fi
bin/bench/tailscale version | head -1 | grep -q "^${TAILSCALE_VERSION#v}" || { echo "relaymesh: bin/bench/tailscale is not $TAILSCALE_VERSION: delete bin/bench" >&2; exit 1; }

csv=bench/results/relay/relaymesh_$(date -u +%Y-%m-%dT%H%MZ)_$(git rev-parse --short HEAD 2>/dev/null || echo dev).csv
args=("$@")
[[ " $* " == *" -csv "* ]] || args+=(-csv "$csv")
echo "relaymesh: load before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec bin/netbench -relay-mesh "${args[@]}"
