package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The warren-peer setup (-relay-mesh): Warren's peer relay, set up as
// TestPeerRelayHardHard (test/mesh) does and as users run it, with
// default settings. The warren-server setup (`warren server --relay`, a
// node in A and in B, on the server's TCP relay first) plus a third node
// in C that offers to relay (`warren up --relay-server-port 3480`) and is
// approved by the admin (`warren admin nodes approve-relay c`); there is
// no policy, so every node may use every approved peer relay
// (docs/POLICY.md, "Peer relays"). C's daemon is the relaying process.
//
// The bench measures nothing until both nodes report the peer relay
// through c as their path to each other (`warren status --json`: path
// "peer-relay", pathRelay "c") and the counters show data through it, and
// around every test it checks that the path stayed: both still report it,
// c's relay forwarded the test's packets and the TCP relay carried
// (almost) none of them. Otherwise the test fails.

// peerRelayPort is the UDP port C's node offers to relay on.
const peerRelayPort = "3480"

// peerRelayPath is how `warren status` names the path through C.
const peerRelayPath = "peer-relay c"

// startWarrenPeer runs the warren-peer setup.
func (l *lab) startWarrenPeer(ctx context.Context, bin, name, rate, profDir string) (m *meshSetup, err error) {
	m, err = l.startWarren(ctx, bin, name, false, rate, profDir)
	if err != nil {
		return m, err
	}
	defer func() {
		if err != nil {
			l.stopMesh(m)
		}
	}()
	w := m.warren
	if m.relay, err = l.startWarrenNode(ctx, m, l.nsC, "c", "--relay-server-port", peerRelayPort); err != nil {
		return m, err
	}
	if _, err := w.admin("nodes", "approve-relay", "c"); err != nil {
		return m, err
	}
	if out, err := w.admin("nodes", "relays"); err != nil || !strings.Contains(out, "serving on UDP port "+peerRelayPort) {
		return m, fmt.Errorf("c is not an approved peer relay: %v\n%s", err, out)
	}
	targetA, err := inNSOutput(ctx, l.nsA, bin, "ip", "-4", "--socket", w.socks["a"])
	if err != nil {
		return m, err
	}
	paths := func() (ab, ba string) {
		return warrenPath(ctx, l.nsA, bin, w.socks["a"], "b"), warrenPath(ctx, l.nsB, bin, w.socks["b"], "a")
	}
	var ab, ba string
	err = waitFor(ctx, 30*time.Second, "A and B reporting the peer relay through c as their path to each other", func() bool {
		// Traffic both ways: a node looks for a peer relay for a peer in use.
		_ = l.inA(ctx, "ping", "-c", "1", "-W", "1", m.targetB).Run()
		_ = l.inB(ctx, "ping", "-c", "1", "-W", "1", targetA).Run()
		ab, ba = paths()
		return ab == peerRelayPath && ba == peerRelayPath
	})
	if err != nil {
		return m, fmt.Errorf("%w: A → B %q, B → A %q", err, ab, ba)
	}
	m.path = ab
	// The counters agree: the nodes sent through the peer relay and it
	// forwarded.
	before, err := l.peerRelayCounters(ctx, w)
	if err == nil && (before.forwarded == 0 || before.peerSent == 0) {
		err = fmt.Errorf("on the peer relay path, but c forwarded %.0f packets and A and B sent %.0f through it", before.forwarded, before.peerSent)
	}
	if err != nil {
		return m, err
	}
	m.guard = func() func() error {
		before, err0 := l.peerRelayCounters(ctx, w)
		return func() error {
			after, err := l.peerRelayCounters(ctx, w)
			if err = errors.Join(err0, err); err != nil {
				return err
			}
			if ab, ba := paths(); ab != peerRelayPath || ba != peerRelayPath {
				return fmt.Errorf("after the test A → B is %q and B → A %q, not %q", ab, ba, peerRelayPath)
			}
			d := after.minus(before)
			logf("  %s: during the test the peer relay forwarded %.0f packets, the TCP relay carried %.0f", name, d.forwarded, d.tcpRelay)
			return peerRelayCarried(d)
		}
	}
	m.drops = func() string {
		var parts []string
		for _, h := range []struct{ ns, host string }{{l.nsA, "a"}, {l.nsB, "b"}} {
			out, _ := inNSOutput(ctx, h.ns, bin, "metrics", "--socket", w.socks[h.host])
			parts = append(parts, strings.ToUpper(h.host)+": "+metricLines(out, "warren_peer_relay_packets_total"))
		}
		out, _ := inNSOutput(ctx, l.nsC, bin, "metrics", "--socket", w.socks["c"])
		return strings.Join(append(parts, "peer relay c: "+metricLines(out, "warren_peer_relay_server_packets_total")), "; ")
	}
	return m, nil
}

// peerCounters are the packet counters that show which path carried a
// test: c's peer relay forwarded, A and B sent through a peer relay, A
// and B sent through the TCP relay.
type peerCounters struct{ forwarded, peerSent, tcpRelay float64 }

func (c peerCounters) minus(o peerCounters) peerCounters {
	return peerCounters{c.forwarded - o.forwarded, c.peerSent - o.peerSent, c.tcpRelay - o.tcpRelay}
}

// peerRelayCounters reads the nodes' counters (`warren metrics`).
func (l *lab) peerRelayCounters(ctx context.Context, w *warrenMesh) (peerCounters, error) {
	var c peerCounters
	read := func(ns, host, series string) (float64, error) {
		out, err := inNSOutput(ctx, ns, w.bin, "metrics", "--socket", w.socks[host])
		if err != nil {
			return 0, err
		}
		return metricValue(out, series)
	}
	var errs [5]error
	c.forwarded, errs[0] = read(l.nsC, "c", `warren_peer_relay_server_packets_total{event="forwarded"}`)
	for i, h := range []struct{ ns, host string }{{l.nsA, "a"}, {l.nsB, "b"}} {
		peer, err1 := read(h.ns, h.host, `warren_peer_relay_packets_total{event="sent"}`)
		tcp, err2 := read(h.ns, h.host, `warren_relay_packets_total{event="sent"}`)
		c.peerSent, c.tcpRelay = c.peerSent+peer, c.tcpRelay+tcp
		errs[1+2*i], errs[2+2*i] = err1, err2
	}
	return c, errors.Join(errs[:]...)
}

// peerRelayCarried says whether a test's traffic went through the peer
// relay, from the counters' increase during it: the relay forwarded at
// least 1000 packets (a second of the slowest relayed TCP moves tens of
// thousands) and the TCP relay carried no more than 1% of that, plus 100
// for what may use it besides (probes, keepalives).
func peerRelayCarried(d peerCounters) error {
	if d.forwarded < 1000 {
		return fmt.Errorf("the peer relay forwarded only %.0f packets during the test", d.forwarded)
	}
	if d.tcpRelay > 100+d.forwarded/100 {
		return fmt.Errorf("the TCP relay carried %.0f packets during the test (the peer relay %.0f)", d.tcpRelay, d.forwarded)
	}
	return nil
}

// metricValue is the value of one series ("name{label=\"v\"}") in
// Prometheus text.
func metricValue(text, series string) (float64, error) {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no metric %s", series)
}
