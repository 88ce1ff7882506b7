#!/usr/bin/env bash
# Demo: a warren. A coordination server (embedded SQLite, with its packet
# relay and STUN responder) and three nodes, each in its own network
# namespace behind a router namespace. The admin creates a user and an auth
# key with `warren admin`; each node runs `warren daemon` and joins with
# `warren up`; then `warren status` (paths), `warren netcheck`, names
# (MagicDNS, with a custom record), `warren ping` by name, a kernel ping
# over IPv6, a file drop and a TCP throughput figure through the mesh; a
# node, echo, that joins without an auth key: `warren up` prints a sign-in
# URL and a scripted browser (curl) signs in at the lab's own OpenID Connect
# provider (demo/idp, in its own namespace) and confirms; the web console;
# and a node, delta, run as an ordinary user without root or TUN
# (`warren daemon --userspace`), reached by programs through its SOCKS5 proxy.
# Usage (as root): demo/mesh-demo.sh [path/to/warren [path/to/demo-idp]]
set -euo pipefail
WARREN=$(realpath "${1:-bin/warren}")
IDP=$(realpath "${2:-$(dirname "$WARREN")/demo-idp}")
[[ -x $WARREN ]] || { echo "demo: $WARREN not built (run: make build)" >&2; exit 1; }
[[ -x $IDP ]] || { echo "demo: $IDP not built (run: go build -o $IDP ./demo/idp)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "demo: must run as root (network namespaces)" >&2; exit 1; }

id=$(printf '%04x' $((RANDOM)))
R=wmesh-r-$id S=wmesh-s-$id
NODES=(alpha bravo charlie)
MORE=(delta echo idp) # the userspace node, the node that signs in, the identity provider
tmp=$(mktemp -d)
udir=$(mktemp -d) # the userspace node's state, owned by its user
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${NODES[@]}" "${MORE[@]}"; do ip netns del "wmesh-$n-$id" 2>/dev/null || true; done
  ip netns del "$S" 2>/dev/null || true
  ip netns del "$R" 2>/dev/null || true
  rm -rf "$tmp" "$udir"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }
at() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# attach NS N: a namespace on 198.18.N.0/24 behind the router.
attach() {
  local ns=$1 n=$2
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "r$n" netns "$R" type veth peer name eth0 netns "$ns"
  ip -n "$R" addr add "198.18.$n.1/24" dev "r$n"; ip -n "$R" link set "r$n" up
  ip -n "$ns" addr add "198.18.$n.2/24" dev eth0; ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "198.18.$n.1"
}

step "A router namespace, the server behind it on 198.18.1.0/24, nodes and an identity provider on their own subnets"
ip netns add "$R"; ip -n "$R" link set lo up
at "$R" sysctl -qw net.ipv4.ip_forward=1
attach "$S" 1
i=2
for n in "${NODES[@]}" "${MORE[@]}"; do attach "wmesh-$n-$id" $i; i=$((i + 1)); done
URL=http://198.18.1.2:8080

step "An OpenID Connect identity provider for people to sign in with (demo/idp, in wmesh-idp-$id only)"
# The client secret the server and the provider share, in a file (mode 0600).
(umask 077; head -c 24 /dev/urandom | base64 >"$tmp/oidc-secret")
idpip=198.18.$((i - 1)).2
ip netns exec "wmesh-idp-$id" "$IDP" --listen "$idpip:9000" --client-id warren-demo --client-secret-file "$tmp/oidc-secret" \
  >"$tmp/idp.out" 2>"$tmp/idp.log" &
pids+=($!)
for _ in $(seq 100); do [[ -s $tmp/idp.out ]] && break; sleep 0.1; done
ISSUER=$(head -1 "$tmp/idp.out")
[[ -n $ISSUER ]] || fail "the identity provider did not start: $(cat "$tmp/idp.log")"
echo "issuer $ISSUER, client warren-demo; people of example.com may sign in"

step "warren server (embedded SQLite in $tmp/server, relay and STUN on the same host, sign-in with the provider)"
ip netns exec "$S" "$WARREN" server --listen 198.18.1.2:8080 --data-dir "$tmp/server" --relay --stun-listen :3478 \
  --public-url "$URL" --oidc-issuer "$ISSUER" --oidc-client-id warren-demo --oidc-client-secret-file "$tmp/oidc-secret" \
  --oidc-allowed-domains example.com 2>"$tmp/server.log" &
pids+=($!)
for _ in $(seq 100); do at "$S" bash -c 'exec 3<>/dev/tcp/198.18.1.2/8080' 2>/dev/null && break; sleep 0.1; done
head -3 "$tmp/server.log"
API=$(at "$S" "$WARREN" server apikey create --data-dir "$tmp/server")
# --insecure: plain http to the lab address (the admin CLI refuses to send
# its key over plain http to a host that is not loopback without it).
adm() { at "$S" "$WARREN" admin --server "$URL" --api-key "$API" --insecure "$@"; }

step "warren admin: a user and a reusable auth key"
adm users create alice
KEY=$(adm authkeys create --user alice --reusable)
adm authkeys list

step "Each node: warren daemon, then warren up"
for n in "${NODES[@]}"; do
  ns=wmesh-$n-$id
  extra=()
  [[ $n == alpha ]] && extra=(--metrics-listen "[::]:9100") # for delta below
  ip netns exec "$ns" "$WARREN" daemon --state-dir "$tmp/$n" --socket "$tmp/$n.sock" "${extra[@]}" 2>"$tmp/$n.log" &
  pids+=($!)
done
for n in "${NODES[@]}"; do
  for _ in $(seq 100); do [[ -S $tmp/$n.sock ]] && break; sleep 0.1; done
  at "wmesh-$n-$id" "$WARREN" up --socket "$tmp/$n.sock" --server "$URL" --auth-key "$KEY" --hostname "$n"
done
wn() { local n=$1; shift; at "wmesh-$n-$id" "$WARREN" "$@" --socket "$tmp/$n.sock"; }
for _ in $(seq 100); do
  [[ $(wn alpha status --json | grep -c '"name": "charlie"') -ge 1 ]] && break; sleep 0.1
done

step "warren status on alpha"
wn alpha status

step "warren admin nodes list"
adm nodes list

step "warren netcheck on bravo"
wn bravo netcheck

step "Names: MagicDNS on every node (100.100.100.100), plus a custom record from the admin"
adm dns records add db.warren.internal A node:charlie
sleep 0.5
echo "charlie.warren.internal -> $(at "wmesh-alpha-$id" dig +short @100.100.100.100 charlie.warren.internal)"
echo "db.warren.internal      -> $(at "wmesh-alpha-$id" dig +short @100.100.100.100 db.warren.internal)  (custom record: node:charlie)"

step "warren ping charlie (from alpha, by name, over the tunnel)"
wn alpha ping -c 3 --interval 200ms charlie

step "Kernel ping from bravo to alpha's IPv6 tunnel address"
at "wmesh-bravo-$id" ping -6 -c 3 -i 0.2 -W 2 "$(wn alpha ip -6)"

step "File drop: alpha sends a 20 MiB file to bravo; bravo collects it"
head -c $((20 << 20)) /dev/urandom >"$tmp/photo.bin"
wn alpha file cp "$tmp/photo.bin" bravo:
mkdir -p "$tmp/inbox"
wn bravo file get "$tmp/inbox"
sha256sum "$tmp/photo.bin" "$tmp/inbox/photo.bin" | awk '{print $1}' | uniq | wc -l | grep -qx 1 && echo "hashes match"

step "TCP throughput bravo -> charlie through the mesh (iperf3, 3 s, one stream)"
CIP=$(wn charlie ip -4)
at "wmesh-charlie-$id" iperf3 -s -1 -D --logfile "$tmp/iperf-server.log"
sleep 0.5
at "wmesh-bravo-$id" iperf3 -c "$CIP" -t 3 -f g | grep -E 'sender|receiver'

step "echo joins without an auth key: warren up prints a sign-in URL and waits"
ns=wmesh-echo-$id
ip netns exec "$ns" "$WARREN" daemon --state-dir "$tmp/echo" --socket "$tmp/echo.sock" 2>"$tmp/echo.log" &
pids+=($!)
for _ in $(seq 100); do [[ -S $tmp/echo.sock ]] && break; sleep 0.1; done
ip netns exec "$ns" timeout 120 "$WARREN" up --socket "$tmp/echo.sock" --server "$URL" --hostname echo >"$tmp/echo-up.out" 2>&1 &
upid=$!
pids+=($upid)
for _ in $(seq 100); do grep -q '/oidc/start?reg=' "$tmp/echo-up.out" && break; sleep 0.1; done
SIGNIN=$(grep -oE 'https?://[^[:space:]]+/oidc/start\?reg=[a-z2-7]+' "$tmp/echo-up.out") || fail "no sign-in URL from warren up: $(cat "$tmp/echo-up.out")"
shown=$(wc -l <"$tmp/echo-up.out")
cat "$tmp/echo-up.out"

step "A person on echo opens that URL in a browser and signs in (scripted: curl, following redirects, keeping cookies)"
PERSON=dana@example.com # who signs in (example.com is allowed)
jar=$tmp/browser.cookies
browse() { at "$ns" curl -sS --max-time 10 -c "$jar" -b "$jar" "$@"; }
message() { grep -oP '<p id="message">\K[^<]*' "$1" | sed 's/&#34;/"/g; s/&#39;/'"'"'/g; s/&amp;/\&/g'; }
page=$(browse -L -o "$tmp/page1.html" -w '%{url_effective}' "$SIGNIN")
grep -q 'Demo identity provider' "$tmp/page1.html" || fail "no sign-in page at $page"
echo "browser: GET $SIGNIN"
echo "         -> the provider's sign-in page ${page%%\?*} (state, nonce and PKCE challenge in its query)"
browse -L -o "$tmp/page2.html" --data-urlencode "email=$PERSON" "$page"
ask=$(message "$tmp/page2.html") || fail "no confirmation page after signing in: $(cat "$tmp/page2.html")"
echo "browser: signs in as $PERSON -> back at the server, whose page says:"
echo "         $ask"
echo "provider: $(grep -m1 'signed in' "$tmp/idp.log")"
action=$(grep -oP '<form method="post" action="\K[^"]+' "$tmp/page2.html") || fail "the server did not ask to add the machine"
csrf=$(grep -oP 'name="csrf" value="\K[^"]+' "$tmp/page2.html") || fail "the confirmation form has no CSRF token"
# The form posts back to the server's own page: a browser sends its Origin.
browse -o "$tmp/page3.html" -H "Origin: $URL" -H "Sec-Fetch-Site: same-origin" \
  --data-urlencode "csrf=$csrf" --data-urlencode answer=add "$URL$action"
done_msg=$(message "$tmp/page3.html") || fail "no answer to the confirmation: $(cat "$tmp/page3.html")"
echo "browser: clicks \"Add the machine\" -> $done_msg"
[[ $done_msg == *"echo joined the network; it belongs to $PERSON"* ]] || fail "the machine was not added: $(cat "$tmp/page3.html")"

step "warren up on echo returns: signed in as $PERSON, the node is up; echo pings alpha by name"
wait "$upid" || fail "warren up on echo failed: $(cat "$tmp/echo-up.out")"
tail -n +$((shown + 1)) "$tmp/echo-up.out"
adm nodes list | grep -E '^ID|echo'
for _ in $(seq 100); do
  [[ $(wn echo status --json | grep -c '"name": "alpha"') -ge 1 ]] && break; sleep 0.1
done
echo "alpha.warren.internal -> $(at "$ns" dig +short @100.100.100.100 alpha.warren.internal)  (MagicDNS on echo)"
wn echo ping -c 3 --interval 200ms alpha

step "The web console at $URL/admin/ (sign in with the admin API key): its nodes page, fetched with curl"
jar=$tmp/console.cookies
at "$S" curl -sf -c "$jar" -b "$jar" -o /dev/null -H "Origin: $URL" --data-urlencode "key=$API" "$URL/admin/signin"
at "$S" curl -sf -b "$jar" "$URL/admin/nodes" |
  grep -oE 'nodes/[0-9]+">[a-z]+<|class="online (yes|no)">[a-z]+|class="(os|version)">[^<]*' | sed -E 's/<$//; s/.*>//' | paste - - - - | column -t
echo "(in a browser: $URL/admin/ — docs/CONSOLE.md)"

step "warren status on bravo after the transfer"
wn bravo status

step "delta: a node without root or TUN (warren daemon --userspace, as user nobody), reached through its SOCKS5 proxy"
chown nobody:nogroup "$udir"
asuser() { at "wmesh-delta-$id" setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
# Started directly (not through asuser, a function: & would fork a
# subshell, and its PID in pids would not be the daemon's).
ip netns exec "wmesh-delta-$id" setpriv --reuid=nobody --regid=nogroup --clear-groups \
  "$WARREN" daemon --userspace --state-dir "$udir" --socket "$udir/delta.sock" --socks5 127.0.0.1:1055 2>"$tmp/delta.log" &
pids+=($!)
for _ in $(seq 100); do [[ -S $udir/delta.sock ]] && break; sleep 0.1; done
asuser "$WARREN" up --socket "$udir/delta.sock" --server "$URL" --auth-key "$KEY" --hostname delta
asuser grep -E '^(Uid|CapEff)' /proc/$(pgrep -f "daemon --userspace --state-dir $udir")/status
echo "curl --socks5-hostname 127.0.0.1:1055 http://alpha:9100/metrics (alpha's daemon, by MagicDNS name, through delta's stack):"
for _ in $(seq 50); do
  asuser curl -sf --max-time 5 --socks5-hostname 127.0.0.1:1055 http://alpha:9100/metrics -o "$udir/m.txt" && break; sleep 0.2
done
grep -m3 '^warren_peer_' "$udir/m.txt"
wn alpha status | grep delta
echo
echo "demo ok"
