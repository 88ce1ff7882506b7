#!/usr/bin/env bash
# Demo: two hosts in network namespaces, each running `warren wg`, joined by
# a veth "wire" and configured with the stock wg(8) tool. Shows the
# handshake, pings over IPv4 and IPv6, a TCP throughput figure and `wg show`.
# Usage (as root): demo/wg-demo.sh [path/to/warren]
set -euo pipefail
WARREN=$(realpath "${1:-bin/warren}")
[[ -x $WARREN ]] || { echo "demo: $WARREN not built (run: make build)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "demo: must run as root (network namespaces)" >&2; exit 1; }

id=$(printf '%04x' $((RANDOM)))
A=wdemo-a-$id B=wdemo-b-$id IFA=wda$id IFB=wdb$id
tmp=$(mktemp -d)
cleanup() {
  ip -n "$A" link del "$IFA" 2>/dev/null || true
  ip -n "$B" link del "$IFB" 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
inA() { ip netns exec "$A" "$@"; }
inB() { ip netns exec "$B" "$@"; }

step "Two hosts: $A and $B, joined by a veth (underlay 198.18.0.0/24)"
ip netns add "$A"; ip netns add "$B"
ip link add veth-a netns "$A" type veth peer name veth-b netns "$B"
ip -n "$A" addr add 198.18.0.1/24 dev veth-a; ip -n "$B" addr add 198.18.0.2/24 dev veth-b
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set veth-a up; ip -n "$B" link set veth-b up

step "Start 'warren wg' on each host (it daemonizes, like wireguard-go)"
inA "$WARREN" wg "$IFA"
inB "$WARREN" wg "$IFB"
umask 077
wg genkey >"$tmp/a.key"; wg genkey >"$tmp/b.key"
PA=$(wg pubkey <"$tmp/a.key"); PB=$(wg pubkey <"$tmp/b.key")

step "Configure both with the stock wg(8) tool"
inA wg set "$IFA" private-key "$tmp/a.key" listen-port 51820 \
  peer "$PB" allowed-ips 100.64.0.2/32,fd7a:115c:a1e0::2/128 endpoint 198.18.0.2:51820
inB wg set "$IFB" private-key "$tmp/b.key" listen-port 51820 \
  peer "$PA" allowed-ips 100.64.0.1/32,fd7a:115c:a1e0::1/128 endpoint 198.18.0.1:51820
ip -n "$A" addr add 100.64.0.1/24 dev "$IFA"; ip -n "$A" addr add fd7a:115c:a1e0::1/64 dev "$IFA" nodad
ip -n "$B" addr add 100.64.0.2/24 dev "$IFB"; ip -n "$B" addr add fd7a:115c:a1e0::2/64 dev "$IFB" nodad
ip -n "$A" link set "$IFA" up; ip -n "$B" link set "$IFB" up

step "Ping through the tunnel (IPv4, then IPv6)"
inA ping -c 3 -i 0.2 -W 2 100.64.0.2
inB ping -c 3 -i 0.2 -W 2 fd7a:115c:a1e0::1

step "TCP throughput through the tunnel (iperf3, 3 s, one stream)"
inB iperf3 -s -1 -D --logfile "$tmp/iperf-server.log"
sleep 0.5
inA iperf3 -c 100.64.0.2 -t 3 -f g | grep -E 'sender|receiver'

step "What wg(8) sees on host A"
inA wg show "$IFA"
echo
echo "demo ok"
