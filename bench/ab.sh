#!/usr/bin/env bash
# A/B comparison of two warren builds on the netns lab of bench/run.sh, for
# data-plane work: each round runs build A then build B (interleaved) and
# reports iperf3 TCP throughput and the CPU seconds per GB of both warren
# processes (utime+stime from /proc). With PROFILE=DIR each warren writes a
# CPU profile (WARREN_CPUPROFILE) to DIR/{A,B}-ROUND-{a,b}.pprof; with PING=1
# 300 pings every 10 ms run during the transfer (iperf3 -t must cover them).
#
# Usage (as root): bench/ab.sh BIN_A BIN_B [ROUNDS] [-- IPERF3 ARGS...]
#   bench/ab.sh /tmp/warren-old bin/warren 3 -- -t 6 -P 4 -R
# Compare figures within one run only; the machine must be otherwise quiet.
# Each round also shows the CPU time stolen by the hypervisor (steal) over
# it: on a shared host, discard rounds with much of it.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "ab: must run as root" >&2; exit 1; }
A=$(realpath "$1") B=$(realpath "$2")
shift 2
ROUNDS=3
if [[ $# -gt 0 && $1 != -- ]]; then ROUNDS=$1; shift; fi
[[ ${1:-} == -- ]] && shift
IPERF=("$@")
[[ ${#IPERF[@]} -gt 0 ]] || IPERF=(-t 6)

P=ab$$
NA=$P-a NB=$P-b
TMP=$(mktemp -d)
cleanup() {
	pkill -f "warren wg ${P}" 2>/dev/null || true
	ip netns del "$NA" 2>/dev/null || true
	ip netns del "$NB" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$NA"
ip netns add "$NB"
ip link add "${P}va" netns "$NA" type veth peer name "${P}vb" netns "$NB"
ip -n "$NA" addr add 198.18.250.1/24 dev "${P}va"
ip -n "$NB" addr add 198.18.250.2/24 dev "${P}vb"
for n in "$NA" "$NB"; do ip -n "$n" link set lo up; done
ip -n "$NA" link set "${P}va" up
ip -n "$NB" link set "${P}vb" up
ip netns exec "$NB" iperf3 -s -D -1 >/dev/null 2>&1 || true
pkill -f "iperf3 -s -D -1" 2>/dev/null || true
ka=$(wg genkey) kb=$(wg genkey)
echo "$ka" >"$TMP/a.key"
echo "$kb" >"$TMP/b.key"
chmod 600 "$TMP"/*.key
pa=$(echo "$ka" | wg pubkey) pb=$(echo "$kb" | wg pubkey)

cpu() { # utime+stime ticks of the given pids
	local t=0 p
	for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done
	echo "$t"
}

run() { # label bin round
	local label=$1 bin=$2 round=$3 ifa=${P}a ifb=${P}b env=()
	[[ -n ${PROFILE:-} ]] && mkdir -p "$PROFILE"
	[[ -n ${PROFILE:-} ]] && env=(WARREN_CPUPROFILE="$PROFILE/$label-$round-a.pprof")
	env "${env[@]}" LOG_LEVEL=error ip netns exec "$NA" "$bin" wg -f "$ifa" >"$TMP/a.log" 2>&1 &
	local pida=$!
	[[ -n ${PROFILE:-} ]] && env=(WARREN_CPUPROFILE="$PROFILE/$label-$round-b.pprof")
	env "${env[@]}" LOG_LEVEL=error ip netns exec "$NB" "$bin" wg -f "$ifb" >"$TMP/b.log" 2>&1 &
	local pidb=$!
	for i in $(seq 50); do [[ -S /var/run/wireguard/$ifa.sock && -S /var/run/wireguard/$ifb.sock ]] && break; sleep 0.1; done
	ip netns exec "$NA" wg set "$ifa" private-key "$TMP/a.key" listen-port 51820 peer "$pb" allowed-ips 100.64.250.2/32 endpoint 198.18.250.2:51820
	ip netns exec "$NB" wg set "$ifb" private-key "$TMP/b.key" listen-port 51820 peer "$pa" allowed-ips 100.64.250.1/32 endpoint 198.18.250.1:51820
	ip -n "$NA" addr add 100.64.250.1/24 dev "$ifa"
	ip -n "$NB" addr add 100.64.250.2/24 dev "$ifb"
	ip -n "$NA" link set "$ifa" mtu 1420 up
	ip -n "$NB" link set "$ifb" mtu 1420 up
	for i in $(seq 30); do ip netns exec "$NA" ping -c1 -W1 100.64.250.2 >/dev/null 2>&1 && break; done
	ip netns exec "$NB" iperf3 -s -1 >/dev/null 2>&1 &
	local srv=$!
	sleep 0.3
	local procs
	procs=$(pgrep -f "wg -f ${P}[ab]\$" | tr '\n' ' ')
	local c0 c1
	c0=$(cpu $procs)
	local s0
	s0=$(head -1 /proc/stat)
	local pingpid=
	if [[ -n ${PING:-} ]]; then
		(sleep 1; ip netns exec "$NA" ping -i 0.01 -c 300 100.64.250.2 >"$TMP/ping.txt" 2>&1) &
		pingpid=$!
	fi
	ip netns exec "$NA" iperf3 -c 100.64.250.2 -J "${IPERF[@]}" >"$TMP/iperf.json"
	c1=$(cpu $procs)
	local s1
	s1=$(head -1 /proc/stat)
	if [[ -n $pingpid ]]; then
		wait "$pingpid" || true
		grep -oP 'time=\K[0-9.]+' "$TMP/ping.txt" | sort -n | awk '{a[NR]=$1; s+=$1} END {if (NR) printf "  ping under load: n=%d avg %.2f p50 %.2f p99 %.2f max %.2f ms\n", NR, s/NR, a[int(NR*0.5)+1], a[int(NR*0.99)], a[NR]}'
	fi
	wait "$srv" 2>/dev/null || true
	kill $procs 2>/dev/null || true
	wait "$pida" "$pidb" 2>/dev/null || true
	python3 - "$TMP/iperf.json" "$c0" "$c1" "$(getconf CLK_TCK)" "$label" "$round" "$s0" "$s1" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
c0, c1, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# The share of the machine's time the hypervisor gave to others (steal):
# rounds with much of it measure the host, not the builds.
# Fields 1-8 (user .. steal): guest time is already counted in user and nice.
d = [int(b) - int(a) for a, b in zip(sys.argv[7].split()[1:9], sys.argv[8].split()[1:9])]
steal = 100 * d[7] / max(sum(d), 1) if len(d) > 7 else 0
rx = j["end"]["sum_received"]["bytes"]
bps = j["end"]["sum_received"]["bits_per_second"]
cpu = (c1 - c0) / hz
print(f"{sys.argv[5]} round {sys.argv[6]}: {bps/1e9:.2f} Gbit/s  {cpu/(rx/1e9):.2f} CPU-s/GB  ({cpu:.1f} CPU-s, {rx/1e9:.2f} GB, steal {steal:.0f}%)")
EOF
}

for r in $(seq "$ROUNDS"); do
	run A "$A" "$r"
	run B "$B" "$r"
done
