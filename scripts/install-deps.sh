#!/usr/bin/env bash
# Installs the system packages Warren's demo, tests and benchmarks use, on
# Debian, as root. Safe to run repeatedly; does nothing when all are there.
# With WARREN_WITH_POSTGRES=1 (or --with-postgres) it also installs the
# PostgreSQL server the store tests run against (scripts/pg-test-server.sh).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip      || need+=(iproute2)
have wg      || need+=(wireguard-tools)
have iperf3  || need+=(iperf3)
have ping    || need+=(iputils-ping)
have nft     || need+=(nftables)
have dig     || need+=(dnsutils)
have curl    || need+=(curl)
have setpriv || need+=(util-linux)
have conntrack || need+=(conntrack)
# The capture test (test/mesh TestObserve) reads its pcap files back with tcpdump.
have tcpdump || need+=(tcpdump)
# The port mapping lab (internal/portmap TestMiniupnpd): a real gateway
# speaking PCP, NAT-PMP and UPnP-IGD, on nftables.
have miniupnpd || need+=(miniupnpd-nftables)
have make    || need+=(make)
# make package and its test (test/deploy): dpkg-deb comes with dpkg,
# systemd-analyze (units verified) with systemd, useradd with passwd.
have dpkg-deb || need+=(dpkg)
have systemd-analyze || need+=(systemd)
have useradd || need+=(passwd)
# The bash completion test (internal/cli) completes through bash-completion's
# helpers, as an interactive shell does.
[[ -r /usr/share/bash-completion/bash_completion ]] || need+=(bash-completion)
# The web console's browser test (internal/console): headless Chromium,
# driven over the DevTools protocol (chromedp, a test-only dependency).
have chromium || need+=(chromium)
if [[ "${WARREN_WITH_POSTGRES:-}" == 1 || "${1:-}" == --with-postgres ]]; then
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
fi
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null 2>&1 && [[ ! -x /usr/local/go/bin/go ]]; then
  echo "Go is missing: install Go 1.26+ (e.g. to /usr/local/go)" >&2
  exit 1
fi
