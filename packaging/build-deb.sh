#!/usr/bin/env bash
# Builds the warren .deb with dpkg-deb (see the Makefile's package target):
#   packaging/build-deb.sh BINARY VERSION OUTDIR
# prints the path of the package it wrote. The tree is staged in a fresh
# temporary directory, so concurrent builds do not meet.
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 BINARY VERSION OUTDIR" >&2; exit 2; }
bin=$1 version=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
for t in dpkg-deb dpkg; do
	command -v "$t" >/dev/null || { echo "$0: $t is missing (apt-get install dpkg)" >&2; exit 1; }
done
[[ -x $bin ]] || { echo "$0: $bin is not an executable (run make build)" >&2; exit 1; }

# A Debian version must start with a digit, use only [A-Za-z0-9.+~-] and
# grow from build to build: v1.2.3 -> 1.2.3; anything else (a commit from
# git describe --always) -> 0~git<commit time>.<commit>, which sorts below
# any release and in commit order.
v=${version#v}
v=$(printf '%s' "$v" | tr -c 'A-Za-z0-9.+~-' '.')
if [[ ! $v =~ ^[0-9]+\.[0-9]+ ]]; then
	stamp=$(git -C "$here" log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || date -u +%Y%m%d%H%M%S)
	v="0~git$stamp.$v"
fi
arch=$(dpkg --print-architecture)
unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || true)
unitdir=${unitdir:-/lib/systemd/system}

stage=$(mktemp -d "${TMPDIR:-/tmp}/warren-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root$unitdir" "$root/etc/warren" "$root/usr/share/doc/warren"
install -m 0755 "$bin" "$root/usr/bin/warren"
for u in warren-server warren-relay warren-daemon; do
	install -m 0644 "$here/systemd/$u.service" "$root$unitdir/$u.service"
done
install -m 0644 "$here/etc/server.env" "$here/etc/daemon.env" "$here/etc/server.json.example" \
	"$here/etc/server.yaml.example" "$here/etc/relay.yaml.example" "$root/etc/warren/"
install -m 0600 "$here/etc/relay.env" "$root/etc/warren/" # will hold the relay key
install -m 0644 "$here/../README.md" "$root/usr/share/doc/warren/README.md"
install -m 0644 "$here/debian/conffiles" "$root/DEBIAN/conffiles"
install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$v/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" "$here/debian/control.in" >"$root/DEBIAN/control"

mkdir -p "$out"
deb=$out/warren_${v}_${arch}.deb
# --root-owner-group: every file root:root without fakeroot.
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
