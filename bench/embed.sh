#!/usr/bin/env bash
# Embedded-node benchmark (#18): Warren's embeddable node (package node)
# against tsnet from tailscale.com v1.102.5 on headscale v0.29.3, in one
# run on the same namespaces: a control server in S, a kernel-TUN node in
# T (warren daemon / tailscaled), and in E the embedded node (the program
# bench/embedbench, built with each library) and a userspace daemon with
# a SOCKS5 proxy (warren daemon --userspace / tailscaled
# --tun=userspace-networking). T and E reach each other directly through
# S (UDP allowed). Tests, each with an HTTP download of -size bytes and a
# -duration TCP stream:
#   emb_to_tun   the embedded node downloads from / streams to T's host sockets
#   tun_to_emb   T's host sockets download from / stream to the embedded node
#   socks_to_tun a client in E through the SOCKS5 proxy to T
# Products: warren (the embedded node), warren-tun (the baseline: the
# same emb_to_tun and tun_to_emb tests between a kernel-TUN Warren daemon
# in E and T, with E's host sockets in place of the embedded node; its
# node CPU is E's daemon plus E's client or service process, its RSS the
# daemon's) and tsnet.
# Reported per test: Gbit/s; CPU-s per GB of the embedded process (or of
# the userspace daemon plus the client for socks) and of T's daemon; the
# embedded process's RSS idle (after Up) and peak (VmHWM at the end).
#
# tailscale.com, headscale and the tsnet build of embedbench are
# benchmark-only: built in throwaway modules under a temp dir into
# bin/bench/ (never in go.mod; delete bin/bench to rebuild), as
# bench/relaymesh.sh does.
#
# Usage (as root; one benchmark on the machine at a time):
#   flock /tmp/warren-bench.lock bench/embed.sh                          # 1 GiB, 30 s, all products
#   flock /tmp/warren-bench.lock bench/embed.sh -size 64M -duration 3s  # a short check
#   bench/embed.sh -products warren -tests emb_to_tun
#   bench/embed.sh -profile DIR   # CPU profiles of the embedded process, one per test:
#                                 # DIR/<product>-<n>-<get|stream|serve-http|serve-tcp>.pprof
# Results: the table on stdout and CSV in
# bench/results/embed/embed_<date>_<commit>.csv (or -csv FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[[ $(id -u) == 0 ]] || { echo "embed: must run as root (network namespaces)" >&2; exit 1; }
TAILSCALE_VERSION=v1.102.5
HEADSCALE_VERSION=v0.29.3

size=1G duration=30s products=warren,warren-tun,tsnet tests=emb_to_tun,tun_to_emb,socks_to_tun csv="" profile=""
while [[ $# -gt 0 ]]; do
	case $1 in
	-size) size=$2; shift 2 ;;
	-duration) duration=$2; shift 2 ;;
	-products) products=$2; shift 2 ;;
	-tests) tests=$2; shift 2 ;;
	-csv) csv=$2; shift 2 ;;
	-profile) profile=$(realpath -m "$2"); shift 2 ;;
	*) echo "embed: unknown argument $1 (see the usage in $0)" >&2; exit 2 ;;
	esac
done
bytes=$(numfmt --from=iec "$size") || { echo "embed: -size $size: want e.g. 1G or 64M" >&2; exit 2; }
[[ $duration =~ ^[0-9]+s$ ]] || { echo "embed: -duration $duration: want seconds, e.g. 30s" >&2; exit 2; }
[[ -n $csv ]] || csv=bench/results/embed/embed_$(date -u +%Y-%m-%dT%H%MZ)_$(git rev-parse --short HEAD 2>/dev/null || echo dev).csv
mkdir -p "$(dirname "$csv")" bin/bench

./scripts/install-deps.sh >/dev/null
echo "embed: building bin/warren, bin/embedbench" >&2
make -s build
go build -o bin/embedbench ./bench/embedbench

build_tool() { # MODULE@VERSION PACKAGE...: go build in a throwaway module
	local modver=$1; shift
	local tmp; tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	( cd "$tmp" && go mod init embed-tools >/dev/null 2>&1 &&
	  for p in "$@"; do go get "$p@${modver#*@}" >/dev/null; done &&
	  go build -trimpath -o "$OLDPWD/bin/bench/" "$@" )
}
if [[ ,$products, == *,tsnet,* ]]; then
	if [[ ! -x bin/bench/tailscaled || ! -x bin/bench/tailscale ]]; then
		echo "embed: building tailscaled and tailscale $TAILSCALE_VERSION (once; several minutes)" >&2
		build_tool "tailscale.com@$TAILSCALE_VERSION" tailscale.com/cmd/tailscaled tailscale.com/cmd/tailscale
	fi
	if [[ ! -x bin/bench/headscale ]]; then
		echo "embed: building headscale $HEADSCALE_VERSION (once; several minutes)" >&2
		build_tool "github.com/juanfont/headscale@$HEADSCALE_VERSION" github.com/juanfont/headscale/cmd/headscale
	fi
	bin/bench/tailscale version | head -1 | grep -q "^${TAILSCALE_VERSION#v}" || { echo "embed: bin/bench/tailscale is not $TAILSCALE_VERSION: delete bin/bench" >&2; exit 1; }
	src=$(cat bench/embedbench/common.go bench/embedbench/tsnet.go.in | sha256sum | cut -d' ' -f1)
	if [[ ! -x bin/bench/embedbench-tsnet || $(cat bin/bench/embedbench-tsnet.src 2>/dev/null) != "$src" ]]; then
		echo "embed: building embedbench with tsnet $TAILSCALE_VERSION" >&2
		tmp=$(mktemp -d)
		cp bench/embedbench/common.go "$tmp/" && cp bench/embedbench/tsnet.go.in "$tmp/tsnet.go"
		( cd "$tmp" && go mod init embedbench-tsnet >/dev/null 2>&1 &&
		  go get "tailscale.com/tsnet@$TAILSCALE_VERSION" golang.org/x/net/proxy >/dev/null 2>&1 &&
		  go build -trimpath -o "$OLDPWD/bin/bench/embedbench-tsnet" . )
		rm -rf "$tmp"
		echo "$src" >bin/bench/embedbench-tsnet.src
	fi
fi

# --- the lab -------------------------------------------------------------
S=eb-s-$$ T=eb-t-$$ E=eb-e-$$
SRV=198.18.1.1 TA=198.18.1.2 GWE=198.18.2.1 EA=198.18.2.2
work=$(mktemp -d /tmp/warren-embed-bench.XXXXXX)
pids=()
cleanups=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	for c in "${cleanups[@]}"; do eval "$c" >/dev/null 2>&1; done
	for ns in $S $T $E; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
for ns in $S $T $E; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n $S link add ebt type veth peer name eth0 netns $T
ip -n $S link add ebe type veth peer name eth0 netns $E
ip -n $S addr add $SRV/24 dev ebt; ip -n $S addr add $GWE/24 dev ebe
ip -n $T addr add $TA/24 dev eth0; ip -n $E addr add $EA/24 dev eth0
for l in "$S ebt" "$S ebe" "$T eth0" "$E eth0"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n $T route add default via $SRV; ip -n $E route add default via $GWE
inns $S sysctl -qw net.ipv4.ip_forward=1
for _ in $(seq 50); do inns $E ping -c1 -W1 $TA >/dev/null 2>&1 && break; sleep 0.1; done

# bg NS LOGNAME CMD...: start a background process, remember its pid.
# (ip netns exec execs the command, and so does env: $! is its pid.)
bg() { local ns=$1 log=$2; shift 2; ip netns exec "$ns" "$@" >"$work/$log.log" 2>&1 & pids+=($!); prod_pids+=($!); last=$!; }
prod_pids=()
# stop_product: stops the current product's processes (its ports and CPU
# are the next one's).
stop_product() {
	for p in "${prod_pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${prod_pids[@]}"; do wait "$p" 2>/dev/null || true; done # killed: status 143
	prod_pids=()
}
# waitfor WHAT CMD...: retry CMD for up to 60 s.
waitfor() {
	local what=$1; shift
	for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "embed: timed out waiting for $what" >&2; tail -n 20 "$work"/*.log >&2; exit 1
}
# sockready SOCK: something accepts on the unix socket (the file appears
# at bind, a moment before listen).
sockready() { curl -s -o /dev/null --max-time 2 --unix-socket "$1" http://local/; }
clk=$(getconf CLK_TCK)
cpu_of() { awk -v c="$clk" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / c }' "/proc/$1/stat"; }
kb_of() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# The embedded process reads commands from a fifo, answers a line each.
emb_start() { # BIN ENV...: runs BIN embed in E; sets emb_pid, emb_ip
	local bin=$1; shift
	rm -f "$work/emb.in" "$work/emb.out"; mkfifo "$work/emb.in"; : >"$work/emb.out"
	local prof=()
	[[ -z $profile ]] || { mkdir -p "$profile"; prof=(-cpuprofile "$profile/$product"); }
	ip netns exec $E env "$@" "$bin" embed -dir "$work/emb-$product" -server "$ctl" -hostname emb "${prof[@]}" <"$work/emb.in" >"$work/emb.out" 2>"$work/emb.log" &
	emb_pid=$!; pids+=($emb_pid)
	exec 7>"$work/emb.in"
	waitfor "the embedded node" grep -q '^ready' "$work/emb.out"
	emb_ip=$(awk '/^ready/ { print $2 }' "$work/emb.out")
}
emb() { # CMD: one command to the embedded process, its answer on stdout
	local n; n=$(wc -l <"$work/emb.out")
	echo "$*" >&7
	while (( $(wc -l <"$work/emb.out") <= n )); do
		kill -0 "$emb_pid" 2>/dev/null || { echo "embed: the embedded node died:" >&2; tail "$work/emb.log" >&2; exit 1; }
		sleep 0.05
	done
	tail -1 "$work/emb.out"
}
emb_stop() { echo quit >&7; exec 7>&-; wait "$emb_pid" 2>/dev/null || true; }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }

echo "product,test,kind,bytes,seconds,gbit_s,node_cpu_s_per_gb,tun_cpu_s_per_gb,node_rss_idle_mb,node_rss_peak_mb" >"$csv"
# record PRODUCT TEST KIND RESULT NODE_CPU_S TUN_CPU_S RSS_IDLE_KB RSS_PEAK_KB
record() {
	local b s; b=$(field bytes "$4"); s=$(field seconds "$4")
	[[ -n $b && -n $s && $b != 0 ]] || { echo "embed: $1 $2 $3: $4" >&2; return; }
	awk -v p="$1" -v t="$2" -v k="$3" -v b="$b" -v s="$s" -v nc="$5" -v tc="$6" -v ri="$7" -v rp="$8" 'BEGIN {
		gb = b / 1e9; printf "%s,%s,%s,%.0f,%.2f,%.2f,%.2f,%.2f,%.1f,%.1f\n", p, t, k, b, s, b * 8 / s / 1e9, nc / gb, tc / gb, ri / 1024, rp / 1024 }' | tee -a "$csv"
}

# run_tests: the tests on the current product's setup.
run_tests() {
	local url="http://$tun_ip:8080/bytes?n=$bytes" r c0 c1 t0 t1 idle
	for i in $(seq 60); do
		r=$(emb get "http://$tun_ip:8080/bytes?n=1000" 2s)
		[[ $r == "ok bytes=1000 "* ]] && break
		(( i < 60 )) || { echo "embed: $product: the embedded node does not reach T: $r" >&2; exit 1; }
		sleep 1
	done
	idle=$(field vmrss_kb "$(emb rss)")
	if [[ ,$tests, == *,emb_to_tun,* ]]; then
		for kind in http tcp; do
			c0=$(field cpu_s "$(emb cpu)"); t0=$(cpu_of "$tun_pid")
			if [[ $kind == http ]]; then r=$(emb get "$url"); else r=$(emb stream "$tun_ip:5201" "$duration"); fi
			c1=$(field cpu_s "$(emb cpu)"); t1=$(cpu_of "$tun_pid")
			record "$product" emb_to_tun $kind "$r" "$(calc "$c1 - $c0")" "$(calc "$t1 - $t0")" "$idle" "$(field vmhwm_kb "$(emb rss)")"
		done
	fi
	if [[ ,$tests, == *,tun_to_emb,* ]]; then
		for kind in http tcp; do
			[[ -z $profile ]] || emb profile "serve-$kind" >/dev/null
			c0=$(field cpu_s "$(emb cpu)"); t0=$(cpu_of "$tun_pid")
			if [[ $kind == http ]]; then r=$(inns $T bin/embedbench client get "http://$emb_ip:8080/bytes?n=$bytes")
			else r=$(inns $T bin/embedbench client stream "$emb_ip:5201" "$duration"); fi
			c1=$(field cpu_s "$(emb cpu)"); t1=$(cpu_of "$tun_pid")
			[[ -z $profile ]] || emb endprofile >/dev/null
			record "$product" tun_to_emb $kind "$r" "$(calc "$c1 - $c0")" "$(calc "$t1 - $t0")" "$idle" "$(field vmhwm_kb "$(emb rss)")"
		done
	fi
}

# run_socks: a client in E through the userspace daemon's SOCKS5 proxy.
run_socks() {
	local url="http://$tun_ip:8080/bytes?n=$bytes" r c0 c1 t0 t1 idle
	waitfor "$product: SOCKS5 reaching T" timeout 10 ip netns exec $E bin/embedbench client -socks5 127.0.0.1:1055 get "http://$tun_ip:8080/bytes?n=1000"
	idle=$(kb_of "$socks_pid" VmRSS)
	for kind in http tcp; do
		c0=$(cpu_of "$socks_pid"); t0=$(cpu_of "$tun_pid")
		if [[ $kind == http ]]; then r=$(inns $E bin/embedbench client -socks5 127.0.0.1:1055 get "$url")
		else r=$(inns $E bin/embedbench client -socks5 127.0.0.1:1055 stream "$tun_ip:5201" "$duration"); fi
		c1=$(cpu_of "$socks_pid"); t1=$(cpu_of "$tun_pid")
		# The proxy's client is part of the path: its CPU counts too.
		record "$product" socks_to_tun $kind "$r" "$(calc "$c1 - $c0 + $(field cpu_s "$r")")" "$(calc "$t1 - $t0")" "$idle" "$(kb_of "$socks_pid" VmHWM)"
	done
}

bg $T host-serve bin/embedbench host
prod_pids=() # T's service stays for both products
waitfor "T's host service" inns $T bash -c "exec 3<>/dev/tcp/127.0.0.1/8080"

# run_tun_tests: the warren-tun baseline, E's kernel-TUN daemon (pid
# etun_pid, address etun_ip) and E's host service (pid ehost_pid).
run_tun_tests() {
	local url="http://$tun_ip:8080/bytes?n=$bytes" r c0 c1 t0 t1 h0 h1 idle
	waitfor "E's TUN node reaching T" timeout 5 ip netns exec $E bin/embedbench client get "http://$tun_ip:8080/bytes?n=1000"
	idle=$(kb_of "$etun_pid" VmRSS)
	if [[ ,$tests, == *,emb_to_tun,* ]]; then
		for kind in http tcp; do
			c0=$(cpu_of "$etun_pid"); t0=$(cpu_of "$tun_pid")
			if [[ $kind == http ]]; then r=$(inns $E bin/embedbench client get "$url")
			else r=$(inns $E bin/embedbench client stream "$tun_ip:5201" "$duration"); fi
			c1=$(cpu_of "$etun_pid"); t1=$(cpu_of "$tun_pid")
			record "$product" emb_to_tun $kind "$r" "$(calc "$c1 - $c0 + $(field cpu_s "$r")")" "$(calc "$t1 - $t0")" "$idle" "$(kb_of "$etun_pid" VmHWM)"
		done
	fi
	if [[ ,$tests, == *,tun_to_emb,* ]]; then
		for kind in http tcp; do
			c0=$(cpu_of "$etun_pid"); t0=$(cpu_of "$tun_pid"); h0=$(cpu_of "$ehost_pid")
			if [[ $kind == http ]]; then r=$(inns $T bin/embedbench client get "http://$etun_ip:8080/bytes?n=$bytes")
			else r=$(inns $T bin/embedbench client stream "$etun_ip:5201" "$duration"); fi
			c1=$(cpu_of "$etun_pid"); t1=$(cpu_of "$tun_pid"); h1=$(cpu_of "$ehost_pid")
			record "$product" tun_to_emb $kind "$r" "$(calc "$c1 - $c0 + $h1 - $h0")" "$(calc "$t1 - $t0")" "$idle" "$(kb_of "$etun_pid" VmHWM)"
		done
	fi
}

# --- Warren --------------------------------------------------------------
if [[ ,$products, == *,warren,* || ,$products, == *,warren-tun,* ]]; then
	product=warren ctl=http://$SRV:8080
	bg $S warren-server bin/warren server --listen $SRV:8080 --data-dir "$work/ws" --public-url "$ctl"
	waitfor "warren server" inns $S bash -c "exec 3<>/dev/tcp/$SRV/8080"
	apikey=$(bin/warren server apikey create --data-dir "$work/ws")
	skey=$(bin/warren server key --data-dir "$work/ws")
	admin() { inns $S bin/warren admin --server "$ctl" --api-key "$apikey" --insecure "$@"; }
	admin users create bench >/dev/null
	key=$(admin authkeys create --user bench --reusable --expiration 2h)
	bg $T warren-tun bin/warren daemon --state-dir "$work/wt" --socket "$work/wt.sock" --tun wbt$$
	tun_pid=$last
	waitfor "warren daemon in T" sockready "$work/wt.sock"
	inns $T bin/warren up --socket "$work/wt.sock" --server "$ctl" --auth-key "$key" --server-key "$skey" --hostname tun --timeout 60s >/dev/null
	tun_ip=$(inns $T bin/warren ip -4 --socket "$work/wt.sock")
	if [[ ,$products, == *,warren,* && ( ,$tests, == *,emb_to_tun,* || ,$tests, == *,tun_to_emb,* ) ]]; then
		emb_start bin/embedbench BENCH_AUTH_KEY="$key"
		run_tests
		emb_stop
	fi
	if [[ ,$products, == *,warren-tun,* && ( ,$tests, == *,emb_to_tun,* || ,$tests, == *,tun_to_emb,* ) ]]; then
		product=warren-tun
		bg $E warren-etun bin/warren daemon --state-dir "$work/we" --socket "$work/we.sock" --tun wbe$$ --port 0
		etun_pid=$last
		waitfor "warren daemon in E" sockready "$work/we.sock"
		inns $E bin/warren up --socket "$work/we.sock" --server "$ctl" --auth-key "$key" --server-key "$skey" --hostname etun --timeout 60s >/dev/null
		etun_ip=$(inns $E bin/warren ip -4 --socket "$work/we.sock")
		bg $E host-serve-e bin/embedbench host
		ehost_pid=$last
		waitfor "E's host service" inns $E bash -c "exec 3<>/dev/tcp/127.0.0.1/8080"
		run_tun_tests
		product=warren
	fi
	if [[ ,$products, == *,warren,* && ,$tests, == *,socks_to_tun,* ]]; then
		bg $E warren-socks bin/warren daemon --userspace --socks5 127.0.0.1:1055 --state-dir "$work/wu" --socket "$work/wu.sock" --port 0
		socks_pid=$last
		waitfor "warren userspace daemon" sockready "$work/wu.sock"
		inns $E bin/warren up --socket "$work/wu.sock" --server "$ctl" --auth-key "$key" --server-key "$skey" --hostname socks --timeout 60s >/dev/null
		run_socks
	fi
	stop_product
fi

# --- tsnet on headscale ----------------------------------------------------
if [[ ,$products, == *,tsnet,* ]]; then
	product=tsnet ctl=https://$SRV:8443
	hs=$work/hs; mkdir -p "$hs"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=$SRV" \
		-addext "subjectAltName=IP:$SRV" -addext "basicConstraints=critical,CA:TRUE" \
		-keyout "$hs/key.pem" -out "$hs/cert.pem" 2>/dev/null
	cat >"$hs/config.yaml" <<-EOF
	server_url: $ctl
	listen_addr: $SRV:8443
	metrics_listen_addr: 127.0.0.1:9090
	grpc_listen_addr: 127.0.0.1:50443
	grpc_allow_insecure: false
	tls_cert_path: $hs/cert.pem
	tls_key_path: $hs/key.pem
	noise:
	  private_key_path: $hs/noise_private.key
	prefixes:
	  v4: 100.64.0.0/10
	  v6: fd7a:115c:a1e0::/48
	  allocation: sequential
	derp:
	  server:
	    enabled: true
	    region_id: 999
	    region_code: "headscale"
	    region_name: "Headscale Embedded DERP"
	    verify_clients: true
	    stun_listen_addr: "$SRV:3478"
	    private_key_path: $hs/derp_server_private.key
	    automatically_add_embedded_derp_region: true
	    ipv4: $SRV
	  urls: []
	  paths: []
	  auto_update_enabled: false
	  update_frequency: 24h
	disable_check_updates: true
	database:
	  type: sqlite
	  sqlite:
	    path: $hs/db.sqlite
	    write_ahead_log: true
	log:
	  level: warn
	  format: text
	policy:
	  mode: file
	  path: ""
	dns:
	  magic_dns: false
	  base_domain: bench.example
	  override_local_dns: false
	  nameservers:
	    global: []
	unix_socket: $hs/headscale.sock
	unix_socket_permission: "0770"
	logtail:
	  enabled: false
	EOF
	bg $S headscale bin/bench/headscale serve -c "$hs/config.yaml"
	waitfor headscale inns $S bash -c "exec 3<>/dev/tcp/$SRV/8443"
	hsc() { inns $S bin/bench/headscale -c "$hs/config.yaml" "$@"; }
	uid=$(hsc users create bench -o json | sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | head -1)
	key=$(hsc preauthkeys create --user "$uid" --reusable -e 2h | tail -1)
	tsenv=(SSL_CERT_FILE="$hs/cert.pem" TS_NO_LOGS_NO_SUPPORT=true)
	bg $T tailscaled-tun env "${tsenv[@]}" bin/bench/tailscaled --state="$work/tt/tailscaled.state" --statedir="$work/tt" \
		--socket="$work/tt.sock" --tun=tsbt$$ --port=41641 --no-logs-no-support
	tun_pid=$last
	cleanups+=("inns $T bin/bench/tailscaled --cleanup --socket=$work/tt.sock --tun=tsbt$$")
	waitfor "tailscaled in T" sockready "$work/tt.sock"
	inns $T bin/bench/tailscale --socket="$work/tt.sock" up --login-server="$ctl" --authkey="$key" --hostname=tun \
		--accept-dns=false --netfilter-mode=off --timeout=60s >/dev/null
	tun_ip=$(inns $T bin/bench/tailscale --socket="$work/tt.sock" ip -4)
	# `env` execs the daemon: its pid is the daemon's.
	if [[ ,$tests, == *,emb_to_tun,* || ,$tests, == *,tun_to_emb,* ]]; then
		emb_start bin/bench/embedbench-tsnet BENCH_AUTH_KEY="$key" "${tsenv[@]}"
		run_tests
		emb_stop
	fi
	if [[ ,$tests, == *,socks_to_tun,* ]]; then
		bg $E tailscaled-socks env "${tsenv[@]}" bin/bench/tailscaled --state="$work/tu/tailscaled.state" --statedir="$work/tu" \
			--socket="$work/tu.sock" --tun=userspace-networking --socks5-server=127.0.0.1:1055 --port=0 --no-logs-no-support
		socks_pid=$last
		waitfor "tailscaled userspace in E" sockready "$work/tu.sock"
		inns $E bin/bench/tailscale --socket="$work/tu.sock" up --login-server="$ctl" --authkey="$key" --hostname=socks \
			--accept-dns=false --timeout=60s >/dev/null
		run_socks
	fi
fi
echo "embed: results in $csv" >&2
