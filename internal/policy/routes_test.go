package policy

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	"github.com/warrenmesh/warren/internal/filter"
)

const routesPolicy = `{
	"groups": {"group:eng": ["alice@"]},
	"tagOwners": {"tag:router": ["alice@"], "tag:exit": ["alice@"]},
	"hosts": {"lan": "198.19.1.0/24", "printer": "198.19.1.9"},
	"acls": [
		// eng reaches the whole LAN behind the router on 443, the printer on all ports
		{"action": "accept", "src": ["group:eng"], "dst": ["lan:443", "printer:*"]},
		// and the router itself on 22 only
		{"action": "accept", "src": ["group:eng"], "dst": ["tag:router:22"]},
		// bob uses exit nodes
		{"action": "accept", "src": ["bob@"], "dst": ["autogroup:internet:*"]},
	],
	"tests": [
		{"src": "alice@", "deny": ["autogroup:internet:443"]},
		{"src": "alice@", "accept": ["198.19.1.20:443", "198.19.1.9:631", "tag:router:22"], "deny": ["198.19.1.20:22", "tag:router:443"]},
		{"src": "bob@", "accept": ["8.8.8.8:53", "198.18.5.5:80", "autogroup:internet:443"], "deny": ["192.168.1.1:443", "10.1.2.3:80", "100.64.0.9:80"]},
	],
}`

func TestCompileRoutes(t *testing.T) {
	p, err := Check([]byte(routesPolicy))
	if err != nil {
		t.Fatal(err)
	}
	nodes := []Node{
		{ID: 1, User: "alice", Addrs: pfx("100.64.0.1/32")},
		{ID: 2, User: "bob", Addrs: pfx("100.64.0.2/32")},
		{ID: 3, User: "alice", Tags: []string{"tag:router"}, Addrs: pfx("100.64.0.3/32"), Routes: pfx("198.19.1.0/24", "198.19.2.0/24")},
		{ID: 4, User: "alice", Tags: []string{"tag:exit"}, Addrs: pfx("100.64.0.4/32"), Routes: pfx("0.0.0.0/0", "::/0")},
		// Not a router: its rules carry no destination, as before routes.
		{ID: 5, User: "carol", Tags: []string{"tag:router"}, Addrs: pfx("100.64.0.5/32")},
	}
	got := p.Compile(nodes)
	js := func(id uint64) string { b, _ := json.Marshal(got[id]); return string(b) }
	want := map[uint64]string{
		// The router: the LAN on 443 and the printer on all ports are
		// forwarded, the router itself answers on 22 only; nothing for the
		// other subnet 198.19.2.0/24.
		3: `{"rules":[{"src":["100.64.0.1/32"],"protos":[6,17,1,58],"ports":["443"],"dst":["198.19.1.0/24"]},` +
			`{"src":["100.64.0.1/32"],"protos":[6,17,1,58],"dst":["198.19.1.9/32"]},` +
			`{"src":["100.64.0.1/32"],"protos":[6,17,1,58],"ports":["22"],"dst":["100.64.0.3/32"]}]}`,
		5: `{"rules":[{"src":["100.64.0.1/32"],"protos":[6,17,1,58],"ports":["22"]}]}`,
		1: `{"rules":[]}`,
	}
	for id, w := range want {
		if g := js(id); g != w {
			t.Errorf("node %d:\n got %s\nwant %s", id, g, w)
		}
	}
	// The exit node forwards bob's traffic to the internet only, and
	// answers his DNS queries.
	exit := got[4]
	if len(exit.Rules) != 2 || !slices.Equal(exit.Rules[0].Src, pfx("100.64.0.2/32")) || !slices.Equal(exit.Rules[0].Dst, Internet) ||
		!slices.Equal(exit.Rules[1].Dst, pfx("100.64.0.4/32")) || !slices.Equal(exit.Rules[1].Ports, dnsPorts) {
		t.Fatalf("exit node rules: %s", js(4))
	}
	f := filter.New(0)
	f.Set(exit)
	for _, c := range []struct {
		dst  string
		want bool
	}{{"8.8.8.8", true}, {"198.18.5.5", true}, {"10.1.2.3", false}, {"192.168.1.1", false}, {"100.64.0.4", false}, {"100.64.0.1", false}} {
		if g := f.Allow(tcpSYN("100.64.0.2", c.dst, 80)); g != c.want {
			t.Errorf("bob → %s:80 through the exit node: %v, want %v", c.dst, g, c.want)
		}
	}
	if !f.Allow(udp("100.64.0.2", "100.64.0.4", 53)) {
		t.Error("bob's DNS query to the exit node refused")
	}
	if f.Allow(tcpSYN("100.64.0.1", "8.8.8.8", 80)) {
		t.Error("alice may not use the exit node")
	}
}

func TestInternet(t *testing.T) {
	for s, want := range map[string]bool{"8.8.8.8": true, "198.18.0.1": true, "1.1.1.1": true, "223.255.255.255": true,
		"10.0.0.1": false, "100.64.0.1": false, "100.127.255.255": false, "172.16.0.1": false, "172.32.0.1": true,
		"192.168.0.1": false, "127.0.0.1": false, "169.254.1.1": false, "224.0.0.1": false, "255.255.255.255": false, "0.1.2.3": false,
		"2001:db8::1": true, "fd00::1": false, "fe80::1": false} {
		a := netip.MustParseAddr(s)
		if got := slices.ContainsFunc(Internet, func(p netip.Prefix) bool { return p.Contains(a) }); got != want {
			t.Errorf("%s in Internet: %v, want %v", s, got, want)
		}
	}
	for i := 1; i < len(Internet); i++ {
		if Internet[i-1].Overlaps(Internet[i]) {
			t.Fatalf("%v overlaps %v", Internet[i-1], Internet[i])
		}
	}
}

func tcpSYN(src, dst string, port uint16) []byte {
	return ipPacket(src, dst, filter.ProtoTCP, port, 20)
}
func udp(src, dst string, port uint16) []byte { return ipPacket(src, dst, filter.ProtoUDP, port, 8) }

// ipPacket is a minimal IPv4 packet with a TCP (SYN) or UDP header.
func ipPacket(src, dst string, proto uint8, dport uint16, l4len int) []byte {
	b := make([]byte, 20+l4len)
	b[0] = 0x45
	b[2], b[3] = byte(len(b)>>8), byte(len(b))
	b[8], b[9] = 64, proto
	copy(b[12:16], netip.MustParseAddr(src).AsSlice())
	copy(b[16:20], netip.MustParseAddr(dst).AsSlice())
	b[20], b[21] = 0x9c, 0x40
	b[22], b[23] = byte(dport>>8), byte(dport)
	if proto == filter.ProtoTCP {
		b[32], b[33] = 5<<4, 0x02
	}
	return b
}
