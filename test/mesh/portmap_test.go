package mesh

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// portMapExt is the public address the port-mapping NAT N reports: miniupnpd
// refuses to map anything while its external address is in an RFC 6890
// special range (198.18.0.0/15 included), so it is told ext_ip=11.19.N.1,
// which the lab router routes to that NAT (it exists only inside the lab's
// namespaces). miniupnpd's DNAT rules match the WAN interface and port,
// not the address, so the NAT needs no such address of its own.
func portMapExt(n int) string { return fmt.Sprintf("11.19.%d.1", n) }

// startNodeBehindPortMapNAT is startNodeBehindNAT(hardNAT) whose router
// also runs miniupnpd (PCP, NAT-PMP, UPnP-IGD on the LAN), and whose daemon
// gets extra flags.
func (l *lab) startNodeBehindPortMapNAT(name string, daemonArgs ...string) *natNode {
	t := l.t
	needTool(t, "miniupnpd")
	nat, wanAddr := l.attach("mpmnat")
	n := l.nets
	lan := nettest.NewNS(t, "mlan")
	nettest.Veth(t, nat, "lan0", []string{fmt.Sprintf("198.19.%d.1/24", n)}, lan, "eth0", []string{fmt.Sprintf("198.19.%d.2/24", n)})
	lan.Run(t, "ip", "route", "add", "default", "via", fmt.Sprintf("198.19.%d.1", n))
	nat.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.router.Run(t, "ip", "route", "add", portMapExt(n)+"/32", "via", wanAddr)
	// The hard NAT of startNodeBehindNAT, plus the tables and chains
	// miniupnpd 2.3 adds its rules to (all family inet).
	rules := `table inet filter {
	chain forward { type filter hook forward priority filter; policy accept; jump miniupnpd; }
	chain miniupnpd { }
	chain input { type filter hook input priority filter; iifname "eth0" ct state new meta l4proto udp drop; }
}
table inet nat {
	chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump prerouting_miniupnpd; }
	chain postrouting { type nat hook postrouting priority srcnat; policy accept; jump postrouting_miniupnpd; oifname "eth0" masquerade random; }
	chain prerouting_miniupnpd { }
	chain postrouting_miniupnpd { }
}
`
	conf := fmt.Sprintf(`ext_ifname=eth0
ext_ip=%s
listening_ip=lan0
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=no
uuid=3b1c4d5e-6f70-4812-9a3b-%012d
upnp_table_name=filter
upnp_nat_table_name=nat
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 198.19.%d.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`, portMapExt(n), n, n)
	dir := t.TempDir()
	for file, text := range map[string]string{"nat.nft": rules, "miniupnpd.conf": conf} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	nat.Run(t, "nft", "-f", filepath.Join(dir, "nat.nft"))
	nat.Start(t, "miniupnpd", "-d", "-4", "-f", filepath.Join(dir, "miniupnpd.conf"), "-P", filepath.Join(dir, "miniupnpd.pid"))
	wait.For(t, 10*time.Second, "miniupnpd listening", func() bool {
		out, _ := nat.Output("ss", "-Hlun", "sport = :5351")
		return strings.Contains(out, "5351")
	})
	ndir := t.TempDir()
	nd := &node{l: l, name: name, ns: lan, dir: ndir, sock: filepath.Join(ndir, "warrend.sock"), under: fmt.Sprintf("198.19.%d.2", n)}
	os.Remove(nd.sock)
	nd.cmd = lan.Start(t, warrenBin, append([]string{"daemon", "--state-dir", filepath.Join(ndir, "state"), "--socket", nd.sock, "--tun", "warren0", "--verbose"}, daemonArgs...)...)
	waitDaemonSocket(t, name, nd.sock)
	l.nodes = append(l.nodes, nd)
	return &natNode{node: nd, nat: nat}
}

// TestPortMapHardNAT: a node behind a hard (random-port) NAT whose router
// runs miniupnpd gets its port mapped, announces the mapped endpoint and
// reaches a peer behind another hard NAT — and one behind an easy NAT —
// directly; the same router with the daemon's --no-portmap leaves the
// hard/hard pair on the relay. netcheck reports the protocols the gateway
// answered and the mapping.
func TestPortMapHardNAT(t *testing.T) {
	needNft(t)
	needTool(t, "conntrack")
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer("--relay", "--stun-listen", ":3478")
	l.mustAdmin("users", "create", "pm")
	key := l.mustAdmin("authkeys", "create", "--user", "pm", "--reusable")
	mapped := l.startNodeBehindPortMapNAT("mapped")
	ext := portMapExt(l.nets)
	unmapped := l.startNodeBehindPortMapNAT("unmapped", "--no-portmap")
	hard := l.startNodeBehindNAT("hard", hardNAT)
	easy := l.startNodeBehindNAT("easy", easyNAT)
	all := []*node{mapped.node, unmapped.node, hard.node, easy.node}
	parallel(t, all, func(n *node) error { _, err := n.up(key); return err })
	waitPeers(t, all, 3, 10*time.Second)

	// The mapping is announced to the peers like the other endpoints.
	wait.For(t, 10*time.Second, "the mapped endpoint in the hard peer's map", func() bool {
		st, err := hard.status()
		if err != nil {
			return false
		}
		p := peerNamed(st, "mapped")
		return p != nil && strings.Contains(fmt.Sprint(p.Endpoints), ext+":41641")
	})

	for _, peer := range []*node{hard.node, easy.node} {
		d := waitPath(t, peer, mapped.node, "direct", 15*time.Second)
		t.Logf("%s → mapped: direct after %v", peer.name, d.Round(time.Millisecond))
		d = waitPath(t, mapped.node, peer, "direct", 10*time.Second)
		t.Logf("mapped → %s: direct after %v", peer.name, d.Round(time.Millisecond))
		// The peer's direct path is the mapped endpoint (STUN saw another
		// port, which the hard NAT keeps for the STUN server only).
		st, err := peer.status()
		if err != nil {
			t.Fatal(err)
		}
		if p := peerNamed(st, "mapped"); p == nil || p.PathAddr != ext+":41641" {
			t.Errorf("%s → mapped: path %+v, want direct to %s:41641", peer.name, peerStatus(st, "mapped"), ext)
		}
	}

	// Without port mapping the hard/hard pair stays on the relay.
	hV4, _ := hard.ips()
	if !wait.Poll(5*time.Second, func() bool { return unmapped.pingOnce(hV4, time.Second) == nil }) {
		t.Fatal("unmapped cannot reach hard")
	}
	if p, _ := unmapped.path("hard"); p != "relay" {
		t.Errorf("unmapped → hard: path %q, want relay (no port mapping)", p)
	}

	out := l.must(mapped.ns, "netcheck", "--socket", mapped.sock, "--json")
	var rep localapi.NetcheckReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pm := rep.PortMap
	if pm == nil || !pm.PCP || !pm.NATPMP || !pm.UPnP || pm.Mapped != netip.MustParseAddrPort(ext+":41641") || pm.Protocol != "pcp" {
		t.Errorf("netcheck port mapping %+v, want all three protocols and %s:41641 by pcp", pm, ext)
	}
	t.Logf("netcheck:\n%s", l.must(mapped.ns, "netcheck", "--socket", mapped.sock))
	out = l.must(unmapped.ns, "netcheck", "--socket", unmapped.sock, "--json")
	rep = localapi.NetcheckReport{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.PortMap == nil || !rep.PortMap.Disabled {
		t.Errorf("--no-portmap netcheck: %+v %v", rep.PortMap, err)
	}

	// Shutdown deletes the mapping: miniupnpd's DNAT rule goes.
	mapped.cmd.Process.Signal(os.Interrupt)
	mapped.cmd.Process.Wait()
	rules, _ := mapped.nat.Output("nft", "list", "chain", "inet", "nat", "prerouting_miniupnpd")
	if strings.Contains(rules, "dport 41641") {
		t.Errorf("mapping left on the gateway after the daemon stopped:\n%s", rules)
	}
}
