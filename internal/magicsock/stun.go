package magicsock

import (
	"net/netip"
	"slices"
	"time"

	"github.com/warrenmesh/warren/internal/stun"
)

// stunEvery is how often the STUN servers are asked for our public
// address; stunRetry while no answer came yet.
const (
	stunEvery = 20 * time.Second
	stunRetry = 3 * time.Second
)

// stunState tracks STUN requests sent on the WireGuard socket, so the
// mapping found is the one peers must use.
type stunState struct {
	servers    []netip.AddrPort
	pending    map[stun.TxID]netip.AddrPort // tx → server
	found      map[netip.AddrPort]netip.AddrPort
	lastSent   time.Time
	soon       bool      // a direct path was lost: ask again after stunRetry
	firstSent  time.Time // first request to these servers (zero: none yet)
	answered   time.Time // last answer from any of them (zero: none yet)
	onDiscover func([]netip.AddrPort)
}

// SetSTUN sets the STUN servers to ask (relay regions' responders) and a
// function called (from the prober) whenever the set of public addresses
// they report changes.
func (c *Conn) SetSTUN(servers []netip.AddrPort, onDiscover func([]netip.AddrPort)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Equal(c.stun.servers, servers) {
		c.stun.servers = slices.Clone(servers)
		c.stun.found = nil
		c.stun.lastSent = time.Time{}
		c.stun.firstSent, c.stun.answered = time.Time{}, time.Time{}
	}
	c.stun.onDiscover = onDiscover
}

// Discovered returns the public addresses STUN reported for our socket.
func (c *Conn) Discovered() []netip.AddrPort {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.discoveredLocked()
}

func (c *Conn) discoveredLocked() []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range c.stun.found {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int {
		if addrLess(a, b) {
			return -1
		}
		return 1
	})
	return out
}

// stunDue sends STUN requests when due; called by the prober.
func (c *Conn) stunDue(now time.Time) {
	c.mu.Lock()
	every := stunEvery
	if len(c.stun.found) == 0 || c.stun.soon {
		every = stunRetry // nothing found yet (or UDP was blocked), or a path lost: retry soon
	}
	if len(c.stun.servers) == 0 || now.Sub(c.stun.lastSent) < every {
		c.mu.Unlock()
		return
	}
	c.stun.lastSent, c.stun.soon = now, false
	if c.stun.firstSent.IsZero() {
		c.stun.firstSent = now
	}
	if c.stun.pending == nil || len(c.stun.pending) > 64 {
		c.stun.pending = map[stun.TxID]netip.AddrPort{}
	}
	type req struct {
		to  netip.AddrPort
		pkt []byte
	}
	var reqs []req
	for _, s := range c.stun.servers {
		tx := stun.NewTxID()
		c.stun.pending[tx] = s
		reqs = append(reqs, req{s, stun.AppendRequest(nil, tx)})
	}
	c.mu.Unlock()
	for _, r := range reqs {
		if ep, err := c.udp.ParseEndpoint(r.to.String()); err == nil {
			c.udp.Send([][]byte{r.pkt}, ep)
		}
	}
}

// handleSTUN takes a STUN answer off the socket.
func (c *Conn) handleSTUN(b []byte, from netip.AddrPort) {
	m, err := stun.Parse(b)
	if err != nil || !m.IsBindingSuccess() || !m.Mapped.IsValid() {
		return
	}
	c.mu.Lock()
	server, ok := c.stun.pending[m.TxID]
	if !ok || server != from {
		c.mu.Unlock()
		return
	}
	delete(c.stun.pending, m.TxID)
	c.stun.answered = c.clock.Now()
	before := c.discoveredLocked()
	if c.stun.found == nil {
		c.stun.found = map[netip.AddrPort]netip.AddrPort{}
	}
	c.stun.found[server] = netip.AddrPortFrom(m.Mapped.Addr().Unmap(), m.Mapped.Port())
	after := c.discoveredLocked()
	cb := c.stun.onDiscover
	c.mu.Unlock()
	if cb != nil && !slices.Equal(before, after) {
		cb(after)
	}
}

// udpBlockedAfter is how long STUN servers may go unanswered (since the
// first request, or since the last answer) before UDP counts as blocked.
const udpBlockedAfter = 3 * stunRetry

// udpBlockedLocked reports whether UDP looks blocked: there are STUN
// servers, we have asked them for longer than udpBlockedAfter, and none
// answered in that time (c.mu held, either way).
func (c *Conn) udpBlockedLocked(now time.Time) bool {
	st := &c.stun
	if len(st.servers) == 0 || st.firstSent.IsZero() || now.Sub(st.firstSent) < udpBlockedAfter {
		return false
	}
	return st.answered.IsZero() || now.Sub(st.answered) > max(udpBlockedAfter, 2*stunEvery)
}
