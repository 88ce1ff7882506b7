// Package netns holds Warren's end-to-end tests in Linux network namespaces.
// They build the real binaries (warren, and wireguard-go as the reference
// implementation), run them as their users would, one per namespace on either
// end of a veth pair, configure them with the real wg(8) and wg-quick(8)
// tools, and check what goes through the tunnel with ping and iperf3: interop
// with wireguard-go, Warren against itself (in the foreground and as a
// daemon), wg-quick with Warren as its userspace implementation, an IPv6
// underlay, roaming, garbage datagrams and low-order peer keys.
//
// The tests need root; without it they are skipped, unless
// WARREN_REQUIRE_NETNS=1 (as in CI) turns that, and any missing tool (wg,
// wg-quick, ping, iperf3, ss), into a failure. Nothing outside the tests' own
// namespaces is touched, except that the userspace implementations put their
// configuration sockets in the machine-wide /var/run/wireguard: every
// interface name is therefore unique to its test, and every daemon is stopped
// and its socket gone when its test ends.
package netns
