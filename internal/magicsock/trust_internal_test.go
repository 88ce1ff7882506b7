package magicsock

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/udp"
)

// newTestConn is a path layer that is never opened: the tests drive its
// handlers directly, with their own clock.
func newTestConn(t *testing.T) (*Conn, noise.PrivateKey) {
	t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	d, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return New(udp.New(), Options{NodeKey: nodeOf(k), DiscoKey: d}), d
}

// TestPingReplayWindow: a peer's ping is accepted once; the same txid again,
// or a ping older than the window behind the newest, is refused; a new
// disco key starts afresh.
func TestPingReplayWindow(t *testing.T) {
	p := newPeerEP(nil, pubkey.Node{PublicKey: noise.PublicKey{1}})
	base := uint64(time.Hour)
	if !p.acceptPingLocked(txID{1}, base) {
		t.Fatal("first ping refused")
	}
	if p.acceptPingLocked(txID{1}, base) {
		t.Fatal("replayed ping accepted")
	}
	if !p.acceptPingLocked(txID{2}, base-uint64(pingWindow)/2) {
		t.Fatal("a ping reordered within the window refused")
	}
	if p.acceptPingLocked(txID{3}, base-uint64(pingWindow)-1) {
		t.Fatal("a ping older than the window accepted")
	}
	if !p.acceptPingLocked(txID{4}, base+uint64(3*pingWindow)) {
		t.Fatal("a later ping refused")
	}
	if p.acceptPingLocked(txID{5}, base) {
		t.Fatal("a ping from before the window moved accepted")
	}
	// Past maxPingsSeen in one window: refused (fail closed) until the
	// window moves on.
	now := base + uint64(3*pingWindow)
	for i := range maxPingsSeen {
		p.acceptPingLocked(txID{6, byte(i), byte(i >> 8)}, now)
	}
	if p.acceptPingLocked(txID{7}, now) {
		t.Fatal("accepted past the bound")
	}
	if !p.acceptPingLocked(txID{8}, now+uint64(2*pingWindow)) {
		t.Fatal("refused after the window moved on")
	}
	p.resetPingsLocked()
	if !p.acceptPingLocked(txID{1}, 1) {
		t.Fatal("refused after a reset (new disco key)")
	}
}

// TestDiscoRateLimit: a source flooding disco packets is cut to the rate,
// the drops are counted, and it is served again once it slows down; other
// sources are not affected.
func TestDiscoRateLimit(t *testing.T) {
	c, _ := newTestConn(t)
	junk := append([]byte(discoMagic), make([]byte, 32+24+16+1+12+32)...)
	src := netip.MustParseAddrPort("198.18.0.9:41641")
	now := time.Unix(1000, 0)
	const flood = 1000
	for range flood {
		c.handleDisco(junk, src, pubkey.Node{}, now)
	}
	if got := c.Stats.DiscoRateLimited.Load(); got != flood-discoBurst {
		t.Fatalf("rate limited %d of %d at one instant, want %d", got, flood, flood-discoBurst)
	}
	if got := c.Stats.DiscoBad.Load(); got != discoBurst {
		t.Fatalf("handled %d, want the burst %d", got, discoBurst)
	}
	// Another source (another host behind another address) is served.
	c.handleDisco(junk, netip.MustParseAddrPort("198.18.0.10:41641"), pubkey.Node{}, now)
	if got := c.Stats.DiscoBad.Load(); got != discoBurst+1 {
		t.Fatal("another source was limited")
	}
	// A second later the flooder has earned discoRate packets back.
	limited := c.Stats.DiscoRateLimited.Load()
	for range discoRate + 1 {
		c.handleDisco(junk, src, pubkey.Node{}, now.Add(time.Second))
	}
	if got := c.Stats.DiscoRateLimited.Load() - limited; got != 1 {
		t.Fatalf("after a second: %d limited, want 1", got)
	}
	// Relayed disco is limited per sending node.
	relayed := pubkey.Node{PublicKey: noise.PublicKey{7}}
	for range discoBurst + 1 {
		c.handleDisco(junk, netip.AddrPort{}, relayed, now)
	}
	if got := c.Stats.DiscoRateLimited.Load() - limited; got != 2 {
		t.Fatalf("relayed flood: %d limited, want 2", got-1)
	}
}

// TestDiscoLimiterBounded: the table never grows past maxDiscoSources;
// new sources are refused while it is full of active ones and served once
// those go quiet.
func TestDiscoLimiterBounded(t *testing.T) {
	l := newDiscoLimiter()
	now := time.Unix(1000, 0)
	for i := range maxDiscoSources {
		a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		if !l.allow(netip.AddrPortFrom(a, 1), now) {
			t.Fatalf("source %d refused", i)
		}
	}
	extra := netip.MustParseAddrPort("198.19.0.1:1")
	if l.allow(extra, now) {
		t.Fatal("a new source accepted into a full table")
	}
	if len(l.buckets) != maxDiscoSources {
		t.Fatalf("table has %d entries", len(l.buckets))
	}
	if !l.allow(extra, now.Add(time.Duration(discoMaxTokens))) {
		t.Fatal("a new source refused after the others went quiet")
	}
}

// TestContestedAddress: when two peers both prove the same address (each
// answered our ping there with its own disco key), the address is bound to
// neither — incoming datagrams get a raw endpoint and the engine's keys
// attribute them — and it is bound again once only one still answers.
func TestContestedAddress(t *testing.T) {
	c, _ := newTestConn(t)
	k1, _ := noise.GeneratePrivateKey()
	k2, _ := noise.GeneratePrivateKey()
	x := netip.MustParseAddrPort("192.168.1.10:41641")
	c.SetPeers([]PeerInfo{{Key: nodeOf(k1), Endpoints: []netip.AddrPort{x}}, {Key: nodeOf(k2), Endpoints: []netip.AddrPort{x}}})
	c.mu.RLock()
	p1, p2 := c.peers[nodeOf(k1)], c.peers[nodeOf(k2)]
	bound := c.byAddr[x]
	c.mu.RUnlock()
	if bound != nil {
		t.Fatalf("a reported address was bound to %v before any pong", bound.key)
	}
	now := time.Now()
	pong := func(p *peerEP, at time.Time) {
		p.mu.Lock()
		tx := p.newPingLocked(x, at)
		if !p.pongLocked(tx, x, at) {
			t.Fatal("pong refused")
		}
		p.mu.Unlock()
		c.mu.Lock()
		c.bindLocked(x, p, at)
		c.mu.Unlock()
	}
	pong(p1, now)
	if c.byAddr[x] != p1 {
		t.Fatal("not bound to the peer that answered")
	}
	pong(p2, now)
	if c.byAddr[x] != nil || !c.contested[x] {
		t.Fatal("an address both peers answered at is bound to one")
	}
	pong(p1, now) // heartbeats keep it contested
	if c.byAddr[x] != nil {
		t.Fatal("bound while both still answer")
	}
	// p2 stops answering there: the next pong from p1 binds it again.
	later := now.Add(trustFor + time.Second)
	pong(p1, later)
	if c.byAddr[x] != p1 || c.contested[x] {
		t.Fatal("not bound again once only one peer answers")
	}
}

// TestCallMeMaybeThrottled: a peer's call-me-maybe makes us probe the
// addresses it lists; more than one per callMinGap is dropped and counted,
// so a member cannot aim a stream of our probes at a target.
func TestCallMeMaybeThrottled(t *testing.T) {
	c, ourDisco := newTestConn(t)
	k, _ := noise.GeneratePrivateKey()
	d, _ := noise.GeneratePrivateKey()
	c.SetPeers([]PeerInfo{{Key: nodeOf(k), DiscoKey: discoOf(d)}})
	shared := sharedKey(d, discoOf(ourDisco))
	call := func(a string) []byte {
		return seal(discoOf(d), shared, &discoMsg{typ: msgCallMeMaybe, addrs: []netip.AddrPort{netip.MustParseAddrPort(a)}})
	}
	src := netip.MustParseAddrPort("198.18.0.5:41641")
	now := time.Unix(1000, 0)
	c.handleDisco(call("203.0.113.1:1"), src, pubkey.Node{}, now)
	c.handleDisco(call("203.0.113.2:2"), src, pubkey.Node{}, now.Add(callMinGap/2))
	c.handleDisco(call("203.0.113.3:3"), src, pubkey.Node{}, now.Add(callMinGap))
	p := c.peers[nodeOf(k)]
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, want := range map[string]bool{"203.0.113.1:1": true, "203.0.113.2:2": false, "203.0.113.3:3": true} {
		if _, got := p.cands[netip.MustParseAddrPort(a)]; got != want {
			t.Errorf("candidate %s: %v, want %v", a, got, want)
		}
	}
	if got := c.Stats.DiscoRateLimited.Load(); got != 1 {
		t.Errorf("%d call-me-maybes dropped, want 1", got)
	}
	if c.Stats.DiscoBad.Load() != 0 {
		t.Errorf("%d bad", c.Stats.DiscoBad.Load())
	}
}

// TestClaimsDoNotBind: a ping's source, a call-me-maybe's addresses, the
// netmap's endpoints and a packet the engine authenticated make candidates,
// never a binding; only a pong to our ping does.
func TestClaimsDoNotBind(t *testing.T) {
	c, ourDisco := newTestConn(t)
	k, _ := noise.GeneratePrivateKey()
	d, _ := noise.GeneratePrivateKey()
	reported := netip.MustParseAddrPort("198.18.0.1:41641")
	c.SetPeers([]PeerInfo{{Key: nodeOf(k), DiscoKey: discoOf(d), Endpoints: []netip.AddrPort{reported}}})
	shared := sharedKey(d, discoOf(ourDisco))
	now := time.Now()
	pingSrc := netip.MustParseAddrPort("198.18.0.2:41641")
	c.handleDisco(seal(discoOf(d), shared, &discoMsg{typ: msgPing, tx: txID{1}, nodeKey: nodeOf(k), clock: 1}), pingSrc, pubkey.Node{}, now)
	called := netip.MustParseAddrPort("198.18.0.3:41641")
	c.handleDisco(seal(discoOf(d), shared, &discoMsg{typ: msgCallMeMaybe, addrs: []netip.AddrPort{called}}), pingSrc, pubkey.Node{}, now)
	heard := netip.MustParseAddrPort("198.18.0.4:41641")
	udpEP, err := c.udp.ParseEndpoint(heard.String())
	if err != nil {
		t.Fatal(err)
	}
	if ep := (&rawEP{c: c, udp: udpEP}).FromPeer(k.PublicKey()); ep != conn.Endpoint(c.peers[nodeOf(k)]) {
		t.Fatal("FromPeer did not return the peer's endpoint")
	}
	p := c.peers[nodeOf(k)]
	for _, a := range []netip.AddrPort{reported, pingSrc, called, heard} {
		if c.byAddr[a] != nil {
			t.Errorf("%s bound on a claim", a)
		}
		p.mu.Lock()
		_, cand := p.cands[a]
		p.mu.Unlock()
		if !cand {
			t.Errorf("%s is not a candidate", a)
		}
	}
	// A pong from an address we did not ping binds nothing either.
	c.handleDisco(seal(discoOf(d), shared, &discoMsg{typ: msgPong, tx: txID{9}}), called, pubkey.Node{}, now)
	if c.byAddr[called] != nil || c.Stats.DiscoBad.Load() != 1 {
		t.Fatal("an unsolicited pong was taken as proof")
	}
	// Our ping to called, answered from there: bound.
	p.mu.Lock()
	tx := p.newPingLocked(called, now)
	p.mu.Unlock()
	c.handleDisco(seal(discoOf(d), shared, &discoMsg{typ: msgPong, tx: tx}), called, pubkey.Node{}, now)
	if c.byAddr[called] != p {
		t.Fatal("not bound after the pong to our ping")
	}
	// The same pong again (replayed): nothing more, and counted as bad.
	c.handleDisco(seal(discoOf(d), shared, &discoMsg{typ: msgPong, tx: tx}), heard, pubkey.Node{}, now)
	if c.byAddr[heard] != nil {
		t.Fatal("a replayed pong bound another address")
	}
}
