package mesh

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/stun"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// natKind is how a NAT router maps a LAN node's UDP flows.
type natKind string

const (
	// easyNAT keeps the source port for every destination (endpoint-
	// independent mapping, like most home routers); it filters by
	// destination (conntrack), so holes are punched by sending first.
	easyNAT natKind = "easy"
	// hardNAT picks a random port for every destination (endpoint-
	// dependent mapping, like many carrier-grade and corporate NATs).
	hardNAT natKind = "hard"
)

// natNode is a node behind its own NAT router namespace: node (LAN
// 198.19.N.2) ─ nat (LAN 198.19.N.1, WAN 198.18.N.2) ─ the lab router.
type natNode struct {
	*node
	nat *nettest.NS
	wan string // the router's public address
}

func needNft(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv(nettest.RequireEnv) == "1" {
			t.Fatal("nft not installed (nftables)")
		}
		t.Skip("nft not installed (nftables)")
	}
}

// startNodeBehindNAT starts a daemon behind a NAT router on its own link
// to the core that drops unsolicited UDP to itself, like a home router's
// firewall: such datagrams never hold a conntrack entry that would make
// the NAT pick another port for its node's outgoing flow.
func (l *lab) startNodeBehindNAT(name string, kind natKind) *natNode {
	return l.startNodeBehind(name, natSpec{kind: kind, inputFilter: true, uplink: uplinkCore})
}

// blockUDP drops (or with false, lets through again) every UDP datagram
// the NAT router forwards for its node.
func (n *natNode) blockUDP(t *testing.T, on bool) {
	n.nat.Run(t, "nft", "flush", "chain", "inet", "filter", "gate")
	if on {
		n.nat.Run(t, "nft", "add", "rule", "inet", "filter", "gate", "meta", "l4proto", "udp", "drop")
		n.nat.Run(t, "conntrack", "-F") // forget mappings, as a real block would
	}
}

func (n *node) path(peer string) (string, error) {
	st, err := n.status()
	if err != nil {
		return "", err
	}
	p := peerNamed(st, peer)
	if p == nil {
		return "", fmt.Errorf("no peer %s", peer)
	}
	return p.Path, nil
}

// waitPath keeps traffic flowing from a to b (a ping every 200 ms) until
// a's path to b is want, and returns how long it took.
func waitPath(t *testing.T, a, b *node, want string, within time.Duration) time.Duration {
	t.Helper()
	bV4, _ := b.ips()
	start := time.Now()
	last := ""
	for time.Since(start) < within {
		a.pingOnce(bV4, 200*time.Millisecond)
		if p, err := a.path(b.name); err == nil {
			last = p
			if p == want {
				return time.Since(start)
			}
		}
	}
	st, _ := a.status()
	t.Fatalf("%s → %s: path %q, want %q after %v (status %+v)", a.name, b.name, last, want, within, peerStatus(st, b.name))
	return 0
}

func peerStatus(st *localapi.Status, name string) any {
	if st == nil {
		return nil
	}
	return peerNamed(st, name)
}

// TestNATTraversal builds the reachability lab: server, relay and STUN in
// the "internet", nodes behind their own NAT routers (nftables), and
// checks the path layer end to end:
//  1. both behind endpoint-independent NATs: direct within 5 s;
//  2. one behind a NAT with random ports per destination, the other easy:
//     the design does not predict ports, so the pair uses the relay and
//     traffic flows;
//  3. both hard: relay, traffic flows;
//  4. all UDP blocked for one node: relay (over TCP), traffic flows;
//  5. the block lifted: the pair goes direct without restarting anything;
//  6. the direct path cut mid-transfer: traffic resumes over the relay
//     within 5 s and a TCP stream survives.
func TestNATTraversal(t *testing.T) {
	needNft(t)
	if _, err := exec.LookPath("conntrack"); err != nil {
		if os.Getenv(nettest.RequireEnv) == "1" {
			t.Fatal("conntrack not installed")
		}
		t.Skip("conntrack not installed")
	}
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer("--relay", "--stun-listen", ":3478")
	l.mustAdmin("users", "create", "nat")
	key := l.mustAdmin("authkeys", "create", "--user", "nat", "--reusable")
	e1 := l.startNodeBehindNAT("easy1", easyNAT)
	e2 := l.startNodeBehindNAT("easy2", easyNAT)
	h1 := l.startNodeBehindNAT("hard1", hardNAT)
	h2 := l.startNodeBehindNAT("hard2", hardNAT)
	all := []*node{e1.node, e2.node, h1.node, h2.node}
	parallel(t, all, func(n *node) error { _, err := n.up(key); return err })
	waitPeers(t, all, 3, 10*time.Second)

	// 1. easy ↔ easy: direct.
	if os.Getenv("NATDEBUG") != "" {
		defer func() {
			for _, n := range []*natNode{e1, e2} {
				out, _ := n.nat.Output("conntrack", "-L", "-p", "udp")
				t.Logf("%s conntrack:\n%s", n.name, out)
			}
		}()
	}
	d := waitPath(t, e1.node, e2.node, "direct", 5*time.Second)
	t.Logf("1. easy↔easy direct after %v", d.Round(time.Millisecond))
	waitPath(t, e2.node, e1.node, "direct", 3*time.Second)

	// 2. hard ↔ easy and 3. hard ↔ hard: relay, and traffic flows.
	for _, pair := range [][2]*node{{h1.node, e1.node}, {h1.node, h2.node}} {
		a, b := pair[0], pair[1]
		bV4, _ := b.ips()
		if !wait.Poll(5*time.Second, func() bool { return a.pingOnce(bV4, time.Second) == nil }) {
			t.Fatalf("%s cannot reach %s", a.name, b.name)
		}
		if p, _ := a.path(b.name); p != "relay" {
			t.Errorf("%s → %s path %q, want relay", a.name, b.name, p)
		}
		t.Logf("%s ↔ %s: relay, traffic flows", a.name, b.name)
	}

	// 4. all UDP blocked for easy2: relay over TCP.
	e2.blockUDP(t, true)
	d = waitPath(t, e1.node, e2.node, "relay", 10*time.Second)
	t.Logf("4. UDP blocked: relay after %v", d.Round(time.Millisecond))
	e2V4, _ := e2.ips()
	// Both sides notice within the trust window (two missed heartbeats).
	if !wait.Poll(5*time.Second, func() bool { return e1.pingOnce(e2V4, time.Second) == nil }) {
		t.Fatal("no traffic over the relay with UDP blocked")
	}

	// 5. block lifted: direct again, nothing restarted.
	e2.blockUDP(t, false)
	d = waitPath(t, e1.node, e2.node, "direct", 20*time.Second)
	t.Logf("5. block lifted: direct after %v", d.Round(time.Millisecond))

	// 6. direct path cut mid-transfer: a TCP stream (iperf3 at a fixed rate)
	// keeps going over the relay; the gap is under 5 s.
	needTool(t, "iperf3")
	e2.ns.Start(t, "iperf3", "-s", "-1", "-B", e2V4)
	wait.For(t, 5*time.Second, "iperf3 server listening", func() bool {
		out, err := e2.ns.Output("ss", "-Hltn", "sport = :5201")
		return err == nil && strings.Contains(out, ":5201")
	})
	done := make(chan string, 1)
	go func() {
		out, err := e1.ns.Output("iperf3", "-c", e2V4, "-t", "12", "-b", "20M", "-i", "1", "-f", "m")
		if err != nil {
			out += "\nERROR: " + err.Error()
		}
		done <- out
	}()
	time.Sleep(3 * time.Second)
	e2.blockUDP(t, true)
	cut := time.Now()
	d = waitPath(t, e1.node, e2.node, "relay", 10*time.Second)
	t.Logf("6. direct cut: relay after %v", time.Since(cut).Round(time.Millisecond))
	out := <-done
	if strings.Contains(out, "ERROR") || !strings.Contains(out, "receiver") {
		t.Fatalf("the TCP stream did not survive the cut:\n%s", out)
	}
	gap := longestStall(out)
	if gap >= 5 {
		t.Errorf("iperf3 stalled for %d s around the cut (want < 5):\n%s", gap, out)
	}
	t.Logf("6. the TCP stream survived; longest stall %d s", gap)
}

// longestStall counts the longest run of 1-second iperf3 intervals that
// moved (almost) nothing.
func longestStall(out string) int {
	run, longest := 0, 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// [  5]   3.00-4.00   sec  2.38 MBytes  20.0 Mbits/sec
		if len(f) < 8 || f[3] != "sec" || !strings.Contains(f[2], "-") || strings.Contains(line, "sender") || strings.Contains(line, "receiver") {
			continue
		}
		mbits, err := strconv.ParseFloat(f[6], 64)
		if err != nil {
			continue
		}
		if mbits < 1 {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return longest
}

func needTool(t *testing.T, name string) {
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv(nettest.RequireEnv) == "1" {
			t.Fatalf("%s not installed", name)
		}
		t.Skipf("%s not installed", name)
	}
}

// TestNetcheck: behind an easy NAT two STUN servers see one mapping; behind
// a hard NAT they see two; both report UDP, the public IPv4 address and
// every relay region's latency.
func TestNetcheck(t *testing.T) {
	needNft(t)
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer("--relay", "--stun-listen", ":3478")
	// A second STUN server elsewhere in the "internet", offered as region 2
	// (relaying through the same server).
	stunNS, stunAddr := l.attach("mstun")
	var pc net.PacketConn
	if err := stunNS.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", stunAddr+":3478")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go (&stun.Server{}).Serve(pc)
	t.Cleanup(func() { pc.Close() })
	serverKey := l.must(l.srv.ns, "server", "key", "--data-dir", l.srv.dir, "--db", l.db)
	relayMap := filepath.Join(t.TempDir(), "relays.json")
	os.WriteFile(relayMap, []byte(fmt.Sprintf(`{"regions":[{"id":2,"code":"second","url":%q,"public_key":%q,"stun":"%s:3478"}]}`,
		l.srv.url, serverKey, stunAddr)), 0o644)
	l.killServer()
	l.runServer("--relay", "--stun-listen", ":3478", "--relay-map", relayMap)

	l.mustAdmin("users", "create", "nc")
	key := l.mustAdmin("authkeys", "create", "--user", "nc", "--reusable")
	easy := l.startNodeBehindNAT("easy", easyNAT)
	hard := l.startNodeBehindNAT("hard", hardNAT)
	for _, n := range []*natNode{easy, hard} {
		if _, err := n.up(key); err != nil {
			t.Fatal(err)
		}
		out := l.must(n.ns, "netcheck", "--socket", n.sock, "--json")
		var rep localapi.NetcheckReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%s: %v\n%s", n.name, err, out)
		}
		want := map[string]string{"easy": "no", "hard": "yes"}[n.name]
		if !rep.UDP || !strings.HasPrefix(rep.PublicIPv4.String(), "198.18.") || rep.MappingVaries != want || len(rep.Regions) != 2 {
			t.Errorf("%s: report %+v, want UDP, a 198.18 address, mapping varies %q, 2 regions", n.name, rep, want)
		}
		for _, r := range rep.Regions {
			if r.RelayError != "" || r.RelayLatency <= 0 || r.STUNLatency <= 0 {
				t.Errorf("%s: region %+v", n.name, r)
			}
		}
		text := l.must(n.ns, "netcheck", "--socket", n.sock)
		t.Logf("%s:\n%s", n.name, text)
	}
}
