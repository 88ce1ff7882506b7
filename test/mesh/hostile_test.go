package mesh

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestHostilePeer puts a rogue member M (test/mesh/hostile: a node joined
// with a valid pre-auth key, with its own keys and a real WireGuard
// engine) in a mesh of honest nodes a, v (on the shared underlay) and b
// (behind an endpoint-independent NAT), and lets it attack, one attack at
// a time, while every honest pair pings and a streams to v with iperf3
// (after a control round with M idle):
//
//  1. call-me-maybe messages listing the other peers' endpoints as M's
//     (directly and through the relay), 50 a second to each peer;
//  2. disco pings from the other peers' endpoints (spoofed source),
//     replays of them, and pings from M naming another peer's node key;
//  3. disco garbage at 5,000 datagrams a second;
//  4. EndpointUpdates to the server at 500 a second;
//  5. v's disco key reported as M's own on M's map stream, then M's again;
//  6. WireGuard packets over M's own sessions with spoofed inner sources;
//  7. packets through v, made a subnet router approved for one /24, to
//     destinations outside that route (another subnet, a metadata
//     address): none is delivered, the approved one is, and v counts
//     destination drops.
//
// During every attack: every honest pair keeps pinging, no
// honest node's path or engine endpoint to an honest peer is ever M's
// address, a → v reaches at least half of the iperf3 throughput measured
// just before the attack, no node's map ever gives two peers one disco
// key; within 10 s after it every pair pings and a and v are back on
// their direct path to each other (if not, the honest daemons are
// restarted, so that the next attack's failures are its own). Spoofed
// inner packets are never delivered (a UDP listener on every honest node,
// and the engine's source_addr drop counter), while M's genuine ones are;
// the server answers admin requests during the update flood.
//
// nftables counters on a and v (outside Warren) show each UDP attack
// reached them, so a pass is never an attack that missed.
//
// The lab's LAN does not filter spoofed sources (rp_filter off on the
// router), as many real LANs do not: the attacker gets the strongest
// position a member on the LAN has.
func TestHostilePeer(t *testing.T) {
	needNft(t)
	needTool(t, "iperf3")
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	for _, k := range []string{"all", "default"} {
		l.router.Run(t, "sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0")
	}
	l.startServer("--relay", "--stun-listen", ":3478")
	l.mustAdmin("users", "create", "lab")
	key := l.mustAdmin("authkeys", "create", "--user", "lab", "--reusable")
	a := l.startNode("a")
	v := l.startNode("v")
	b := l.startNodeBehindNAT("b", easyNAT)
	honest := []*node{a, v, b.node}
	parallel(t, honest, func(n *node) error { _, err := n.up(key); return err })
	for _, n := range honest {
		// The kernel must not hide what the engine lets through (spoofed
		// sources arrive on warren0 with no route back there).
		for _, k := range []string{"all", "default", "warren0"} {
			n.ns.Run(t, "sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0")
		}
	}

	mns, mUnder := l.attach("mhost")
	m := l.startAttacker(mns, mUnder, key)
	m.joined = m.must("wait-peers 3", 30*time.Second)
	t.Logf("M joined: %s", m.joined)
	waitPeers(t, honest, 3, 15*time.Second)
	arrived := map[*node]*arrivals{a: m.countArrivals(t, a), v: m.countArrivals(t, v)}

	// Baseline.
	pingAll(t, honest)
	vV4, _ := v.ips()
	vEP := netip.AddrPortFrom(netip.MustParseAddr(v.under), 41641)
	aEP := netip.AddrPortFrom(netip.MustParseAddr(a.under), 41641)
	waitDirect(t, a, v, vEP, 10*time.Second)
	waitDirect(t, v, a, aEP, 10*time.Second)

	// attack runs one attacker command while the honest nodes work, and
	// checks them during and after it.
	// reach, if set, names the arrivals counter (see countArrivals) that
	// must show the attack reached a and v.
	var idleRate float64 // a → v during the control round (the first)
	attack := func(name, cmd string, d time.Duration, reach string, during func()) {
		t.Helper()
		t.Logf("── %s: %s", name, cmd)
		arrivedBefore := map[*node]int{}
		for n, c := range arrived {
			arrivedBefore[n] = c.get(reach)
		}
		// The bar is this moment's speed: the machine is shared.
		baseline, why := iperf(t, a, v, vV4, 3)
		if baseline <= 0 {
			t.Errorf("%s: no baseline a → v before the attack: %s", name, why)
			baseline = 1
		}
		watch := startPathWatch(t, honest, m.under)
		pings := startPingMonitor(t, honest)
		wait := m.start(cmd, d+30*time.Second)
		duringDone := make(chan struct{})
		go func() {
			defer close(duringDone)
			if during != nil {
				during()
			}
		}()
		// iperf3 runs while the attack is in full swing (every attack
		// lasts at least 6 s): a defence must hold throughout, so the
		// moment it starts does not decide the outcome.
		time.Sleep(time.Second)
		rate, why := iperf(t, a, v, vV4, 4)
		<-duringDone
		t.Logf("%s: attacker: %s", name, wait())
		if reach != "" {
			for _, n := range []*node{a, v} {
				got := arrived[n].get(reach) - arrivedBefore[n]
				t.Logf("%s: %d %s datagrams reached %s", name, got, reach, n.name)
				if got < 100 {
					t.Errorf("%s: only %d %s datagrams reached %s (nftables count), want at least 100: the attack missed, the checks prove nothing", name, got, reach, n.name)
				}
			}
		}
		pings.check(t, name)
		watch.check(t, name)
		t.Logf("%s: iperf3 a → v during the attack: %.0f Mbit/s, just before it %.0f Mbit/s (%.0f%%) %s", name, rate, baseline, 100*rate/baseline, why)
		// The bar is half the lower of the speed just before and the
		// speed during the control round: one 3 s measurement on a shared
		// 2-core machine (other test packages run beside this one) can
		// catch a burst well above the usual (5.8 against 3.2 Gbit/s
		// seen), and an attack that works brings a → v to 0-25%.
		ref := baseline
		if idleRate > 0 && idleRate < ref {
			ref = idleRate
		}
		if rate < ref/2 {
			t.Errorf("%s: a → v reached %.0f Mbit/s during the attack, under half the %.0f Mbit/s of the lower of just before it and the control round %s", name, rate, ref, why)
		}
		if idleRate == 0 {
			idleRate = rate
		}
		if err := meshHealthy(honest, vEP, aEP); err != nil {
			t.Errorf("%s: the mesh is not whole again after the attack: %v", name, err)
			// So that the next attack's failures are its own.
			t.Logf("%s: restarting the honest daemons", name)
			restartDaemons(t, honest)
			if err := meshHealthy(honest, vEP, aEP); err != nil {
				t.Errorf("%s: the mesh is not whole even after restarting the honest daemons: %v", name, err)
			}
		}
	}

	// The control: the same checks with M idle. If this fails, the lab
	// (or the machine) is the problem, not an attack.
	attack("control (M idle)", "idle 6s", 6*time.Second, "", nil)
	attack("path claims by call-me-maybe", "claim cmm 8s", 8*time.Second, "m_disco", nil)
	attack("path claims by spoofed and replayed pings", "claim ping 8s", 8*time.Second, "m_disco", nil)
	attack("disco garbage", "garbage 6s", 6*time.Second, "from_m", nil)
	attack("endpoint update flood", "flood 6s 500", 6*time.Second, "", func() {
		// While the flood runs the server must keep answering.
		checkServerResponsive(t, l, v, 5*time.Second)
	})
	// Last of the path attacks: what it breaks may stay broken.
	attack("v's disco key claimed by M", "steal-disco v 6s", 6*time.Second, "", func() {
		// No honest node may be handed two peers with one disco key.
		checkDiscoKeysUnique(t, honest, 6*time.Second)
	})

	// Spoofed inner sources over M's own sessions.
	t.Logf("── spoofed inner sources")
	const port = 7777
	sinks := map[*node]*udpSink{}
	before := map[*node]float64{}
	for _, n := range honest {
		sinks[n] = startUDPSink(t, n, port)
		before[n] = n.metric(`warren_drops_total{reason="source_addr"}`)
	}
	// Every honest node sends to M first, so that M has a session with
	// each, also with b behind its NAT (the ping is not answered: M's
	// engine reads nothing back). M's engine takes no relayed packets, so
	// the handshake must go directly, which a node's path layer does only
	// once it has called M through the relay a second before (so that a
	// peer's NAT is open, docs/NAT.md): ping until the handshake is done.
	mAddr := m.tunnelAddr()
	for _, n := range honest {
		if !wait.Poll(15*time.Second, func() bool {
			n.pingOnce(mAddr, 500*time.Millisecond)
			st, err := n.status()
			if err != nil {
				return false
			}
			p := peerNamed(st, "m")
			return p != nil && !p.LastHandshake.IsZero()
		}) {
			t.Errorf("spoof: %s has no session with M", n.name)
		}
	}
	t.Logf("attacker: %s", m.must(fmt.Sprintf("spoof %d", port), 30*time.Second))
	for _, n := range honest {
		s := sinks[n]
		if !wait.Poll(10*time.Second, func() bool { g4, g6, _ := s.counts(); return g4 > 0 && g6 > 0 }) {
			g4, g6, _ := s.counts()
			t.Errorf("spoof: %s received %d of M's genuine IPv4 packets and %d IPv6 ones, want some of both (the check below would prove nothing)", n.name, g4, g6)
		}
		if !wait.Poll(10*time.Second, func() bool {
			return n.metric(`warren_drops_total{reason="source_addr"}`) > before[n]
		}) {
			t.Errorf("spoof: %s's engine counted no source_addr drop (%v before)", n.name, before[n])
		}
		g4, g6, spoofed := s.counts()
		t.Logf("spoof: %s received %d+%d genuine packets from M (IPv4+IPv6) and %d with spoofed sources", n.name, g4, g6, len(spoofed))
		for _, p := range spoofed {
			t.Errorf("spoof: %s delivered a packet with a spoofed inner source from M: %s", n.name, p)
		}
	}

	// Nothing is delivered or forwarded beyond approvals: v becomes a
	// subnet router approved for 198.19.1.0/24 only, and M (which decides
	// its own engine's allowed IPs) sends through v to an address in that
	// route, to another subnet on v's side and to a metadata address. All
	// three are v's local addresses (on a veth end), so the kernel
	// would take each of them: only the engine's destination check stands
	// between M and the two that were never approved.
	t.Logf("── packets beyond v's approved routes")
	v.ns.Run(t, "ip", "link", "add", "wbeyond0", "type", "veth", "peer", "name", "wbeyond1")
	for _, a := range []string{"198.19.1.1/24", "198.19.2.1/24", "169.254.169.254/32"} {
		v.ns.Run(t, "ip", "addr", "add", a, "dev", "wbeyond0")
	}
	v.ns.Run(t, "ip", "link", "set", "wbeyond0", "up")
	v.ns.Run(t, "ip", "link", "set", "wbeyond1", "up")
	v.set(t, "--advertise-routes", "198.19.1.0/24")
	wait.For(t, 10*time.Second, "v's route advertised", func() bool {
		out, err := l.admin("routes", "list")
		return err == nil && strings.Contains(out, "198.19.1.0/24")
	})
	l.mustAdmin("routes", "approve", "v", "198.19.1.0/24")
	const beyondPort = 7778
	bs := startBeyondSink(t, v, beyondPort)
	destDrops := v.metric(`warren_drops_total{reason="destination"}`)
	approved := "198.19.1.1"
	forbidden := []string{"198.19.2.1", "169.254.169.254"}
	cmd := fmt.Sprintf("beyond v %d %s 2s", beyondPort, strings.Join(append([]string{approved}, forbidden...), ","))
	// Repeated until the approved destination gets through (v applies the
	// approval from its next map), so the check below proves something.
	if !wait.Poll(30*time.Second, func() bool {
		t.Logf("attacker: %s", m.must(cmd, 30*time.Second))
		return bs.count(approved) > 0
	}) {
		t.Errorf("beyond: nothing from M reached v's approved route %s (the check below would prove nothing)", approved)
	}
	for _, f := range forbidden {
		if n := bs.count(f); n > 0 {
			t.Errorf("beyond: v delivered %d packets from M to %s, outside its approved routes", n, f)
		}
	}
	if after := v.metric(`warren_drops_total{reason="destination"}`); after <= destDrops {
		t.Errorf("beyond: v counted no destination drop (%v before, %v after)", destDrops, after)
	}
	t.Logf("beyond: v delivered %d packets to its approved %s and none to %v; destination drops %v → %v",
		bs.count(approved), approved, forbidden, destDrops, v.metric(`warren_drops_total{reason="destination"}`))

	// After everything: the mesh is whole. (parallel and pingAll stop at
	// an earlier failure: not used after the first attack.)
	if err := meshHealthy(honest, vEP, aEP); err != nil {
		t.Errorf("after the attacks: %v", err)
	}
}

// pollDirect waits until from's path to peer to (at tunnel address toV4)
// is direct at addr, keeping traffic flowing.
func pollDirect(from, to *node, toV4 string, addr netip.AddrPort, within time.Duration) bool {
	return wait.Poll(within, func() bool {
		from.pingOnce(toV4, 200*time.Millisecond)
		st, err := from.status()
		if err != nil {
			return false
		}
		p := peerNamed(st, to.name)
		return p != nil && p.Path == "direct" && p.PathAddr == addr.String() && p.CurrentAddr == addr.String()
	})
}

func waitDirect(t *testing.T, from, to *node, addr netip.AddrPort, within time.Duration) {
	t.Helper()
	toV4, _ := to.ips()
	if !pollDirect(from, to, toV4, addr, within) {
		t.Fatalf("%s: want direct at %s", pathOf(from, to), addr)
	}
}

// pathOf describes from's path and engine endpoint to peer to.
func pathOf(from, to *node) string {
	st, err := from.status()
	if err != nil {
		return fmt.Sprintf("%s → %s: status: %v", from.name, to.name, err)
	}
	p := peerNamed(st, to.name)
	if p == nil {
		return fmt.Sprintf("%s → %s: no such peer", from.name, to.name)
	}
	return fmt.Sprintf("%s → %s: path %s %s, engine endpoint %s", from.name, to.name, p.Path, p.PathAddr+p.PathRelay, p.CurrentAddr)
}

// checkServerResponsive asks the admin API for the node list for d, and
// fails on an error, an answer slower than 3 s or a list without v.
func checkServerResponsive(t *testing.T, l *lab, v *node, d time.Duration) {
	t.Helper()
	var n int
	var slowest time.Duration
	for end := time.Now().Add(d); n == 0 || time.Now().Before(end); n++ {
		start := time.Now()
		out, err := l.admin("nodes", "list")
		el := time.Since(start)
		slowest = max(slowest, el)
		if err != nil {
			t.Errorf("endpoint update flood: the server did not answer `admin nodes list`: %v", err)
			return
		}
		if !strings.Contains(out, v.name) {
			t.Errorf("endpoint update flood: node list without v:\n%s", out)
		}
		if el > 3*time.Second {
			t.Errorf("endpoint update flood: `admin nodes list` took %v", el)
		}
	}
	t.Logf("endpoint update flood: %d admin requests answered, slowest %v", n, slowest.Round(time.Millisecond))
}

// meshHealthy reports whether, within 10 s, every ordered pair of nodes
// pings (IPv4) and a ↔ v (the first two nodes) are direct at their
// addresses.
func meshHealthy(nodes []*node, vEP, aEP netip.AddrPort) error {
	v4 := map[*node]string{}
	for _, n := range nodes {
		v4[n], _ = n.ips()
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, x := range nodes {
		for _, y := range nodes {
			if x == y {
				continue
			}
			yV4 := v4[y]
			wg.Go(func() {
				if !wait.Poll(10*time.Second, func() bool { return x.pingOnce(yV4, time.Second) == nil }) {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s cannot ping %s (%s)", x.name, y.name, pathOf(x, y)))
					mu.Unlock()
				}
			})
		}
	}
	a, v := nodes[0], nodes[1]
	for _, p := range []struct {
		from, to *node
		at       netip.AddrPort
	}{{a, v, vEP}, {v, a, aEP}} {
		wg.Go(func() {
			if !pollDirect(p.from, p.to, v4[p.to], p.at, 10*time.Second) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("not back on the direct path: %s (want direct at %s)", pathOf(p.from, p.to), p.at))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// restartDaemons kills and restarts the nodes' daemons (same state: same
// keys, new disco keys) and waits until they run again.
func restartDaemons(t *testing.T, nodes []*node) {
	t.Helper()
	for _, n := range nodes {
		n.kill()
		n.startDaemon()
	}
	for _, n := range nodes {
		if !wait.Poll(15*time.Second, func() bool {
			st, err := n.status()
			return err == nil && st.BackendState == "Running" && st.Connected && len(st.Peers) == len(nodes) // the others and M
		}) {
			t.Errorf("%s is not running again after a restart", n.name)
		}
	}
}

// checkDiscoKeysUnique reads the maps the nodes saved, over and over for
// d, and fails if one ever gave two peers the same disco key.
func checkDiscoKeysUnique(t *testing.T, nodes []*node, d time.Duration) {
	t.Helper()
	seen := map[string]bool{}
	reads := 0
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, n := range nodes {
			nm, err := netmap.Load(filepath.Join(n.dir, "state", "netmap.json"))
			if err != nil {
				continue
			}
			reads++
			owner := map[pubkey.Disco]string{}
			for _, p := range nm.Peers {
				if p.DiscoKey.IsZero() {
					continue
				}
				if o := owner[p.DiscoKey]; o != "" && !seen[n.name] {
					seen[n.name] = true
					t.Errorf("%s's map (version %d) gives peers %s and %s the same disco key %s: the server accepted a claim of another node's disco key", n.name, nm.Version, o, p.Name, p.DiscoKey)
				}
				owner[p.DiscoKey] = p.Name
			}
		}
	}
	if reads == 0 {
		t.Errorf("no saved map could be read")
	}
}
