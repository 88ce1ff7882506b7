package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The relay lab (-relay-mesh): a router namespace S between two node
// namespaces A and B, and a third node namespace C on a link of its own
// (the peer relay's node, used only by the warren-peer setup). The
// servers and relays run in S on meshServer. S forwards TCP and ICMP
// between A and B but drops every UDP datagram it forwards between them
// (nftables), so the nodes have no direct path and each product falls
// back on its relay, as behind firewalls that block UDP between the two
// sites. UDP between C and either node goes through: C is reachable, as
// a peer relay must be.
const (
	meshServer = "198.18.1.1" // S, on A's side: servers and relays listen here
	meshGWB    = "198.18.2.1" // S, on B's side
	meshGWC    = "198.18.3.1" // S, on C's side
	meshA      = "198.18.1.2"
	meshB      = "198.18.2.2"
	meshC      = "198.18.3.2"
)

// blockUDP is S's ruleset: UDP forwarded between A and B is dropped, and
// counted.
const blockUDP = `table inet netbench_relay {
	chain forward {
		type filter hook forward priority filter; policy accept;
		meta l4proto udp iifname { "nbra", "nbrb" } oifname { "nbra", "nbrb" } counter drop
	}
}
`

// newMeshLab builds the relay lab. Its namespaces, and the processes
// started in them, go with close.
func newMeshLab(ctx context.Context, prefix string) (l *lab, err error) {
	pid := os.Getpid()
	l = &lab{nsA: fmt.Sprintf("%s-a-%d", prefix, pid), nsB: fmt.Sprintf("%s-b-%d", prefix, pid),
		nsS: fmt.Sprintf("%s-s-%d", prefix, pid), nsC: fmt.Sprintf("%s-c-%d", prefix, pid)}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.tmp, err = os.MkdirTemp("", "netbench-relay-"); err != nil {
		return l, err
	}
	for _, ns := range []string{l.nsS, l.nsA, l.nsB, l.nsC} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return l, err
		}
		if err := run(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return l, err
		}
	}
	steps := [][]string{
		{"ip", "-n", l.nsS, "link", "add", "nbra", "mtu", vethMTU, "type", "veth", "peer", "name", "eth0", "mtu", vethMTU, "netns", l.nsA},
		{"ip", "-n", l.nsS, "link", "add", "nbrb", "mtu", vethMTU, "type", "veth", "peer", "name", "eth0", "mtu", vethMTU, "netns", l.nsB},
		{"ip", "-n", l.nsS, "link", "add", "nbrc", "mtu", vethMTU, "type", "veth", "peer", "name", "eth0", "mtu", vethMTU, "netns", l.nsC},
		{"ip", "-n", l.nsS, "addr", "add", meshServer + "/24", "dev", "nbra"},
		{"ip", "-n", l.nsS, "addr", "add", meshGWB + "/24", "dev", "nbrb"},
		{"ip", "-n", l.nsS, "addr", "add", meshGWC + "/24", "dev", "nbrc"},
		{"ip", "-n", l.nsA, "addr", "add", meshA + "/24", "dev", "eth0"},
		{"ip", "-n", l.nsB, "addr", "add", meshB + "/24", "dev", "eth0"},
		{"ip", "-n", l.nsC, "addr", "add", meshC + "/24", "dev", "eth0"},
		{"ip", "-n", l.nsS, "link", "set", "nbra", "up"},
		{"ip", "-n", l.nsS, "link", "set", "nbrb", "up"},
		{"ip", "-n", l.nsS, "link", "set", "nbrc", "up"},
		{"ip", "-n", l.nsA, "link", "set", "eth0", "up"},
		{"ip", "-n", l.nsB, "link", "set", "eth0", "up"},
		{"ip", "-n", l.nsC, "link", "set", "eth0", "up"},
		{"ip", "-n", l.nsA, "route", "add", "default", "via", meshServer},
		{"ip", "-n", l.nsB, "route", "add", "default", "via", meshGWB},
		{"ip", "-n", l.nsC, "route", "add", "default", "via", meshGWC},
		{"ip", "netns", "exec", l.nsS, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return l, err
		}
	}
	rules := filepath.Join(l.tmp, "block-udp.nft")
	if err := os.WriteFile(rules, []byte(blockUDP), 0o600); err != nil {
		return l, err
	}
	if err := run(ctx, "ip", "netns", "exec", l.nsS, "nft", "-f", rules); err != nil {
		return l, err
	}
	if err := waitFor(ctx, 5*time.Second, "A reaching B and C through S", func() bool {
		return l.inA(ctx, "ping", "-c", "1", "-W", "1", meshB).Run() == nil &&
			l.inA(ctx, "ping", "-c", "1", "-W", "1", meshC).Run() == nil
	}); err != nil {
		return l, err
	}
	return l, nil
}

// udpDropped is how many UDP datagrams between A and B S has dropped so
// far (-1: unknown).
func (l *lab) udpDropped(ctx context.Context) int64 {
	out, err := output(ctx, nil, "ip", "netns", "exec", l.nsS, "nft", "list", "chain", "inet", "netbench_relay", "forward")
	if err != nil {
		return -1
	}
	_, after, ok := strings.Cut(out, "counter packets ")
	if !ok {
		return -1
	}
	n, _, _ := strings.Cut(after, " ")
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return -1
	}
	return v
}

// waitTCP waits until something listens on addr ("IP:PORT") as seen from
// namespace ns.
func waitTCP(ctx context.Context, ns, addr, what string, p *proc) error {
	host, port, _ := strings.Cut(addr, ":")
	err := waitFor(ctx, 30*time.Second, what, func() bool {
		if p != nil && p.exited() {
			return true
		}
		return inNS(ctx, ns, []string{"bash", "-c", "exec 3<>/dev/tcp/" + host + "/" + port}).Run() == nil
	})
	if err == nil && p != nil && p.exited() {
		err = fmt.Errorf("%s exited:\n%s", p.name, p.out.String())
	}
	return err
}

// inNSOutput runs a command in ns and returns its trimmed stdout.
func inNSOutput(ctx context.Context, ns string, args ...string) (string, error) {
	out, err := output(ctx, nil, append([]string{"ip", "netns", "exec", ns}, args...)...)
	return strings.TrimSpace(out), err
}
