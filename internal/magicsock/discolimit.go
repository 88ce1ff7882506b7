package magicsock

import (
	"net/netip"
	"sync"
	"time"
)

// Disco handling is limited per source: a token bucket per IPv4 address
// (IPv6: per /64; relayed messages: per sending node), so no one source can
// make the layer open boxes, answer pings or probe addresses faster than
// discoRate. The rate leaves room for many nodes behind one NAT address
// (each heartbeats once a second and answers our probes); the table is
// bounded, and when it is full of active sources new ones are refused
// (counted in Stats.DiscoRateLimited) until some go quiet.
const (
	discoRate       = 100 // disco packets per second per source
	discoBurst      = 200 // a quiet source may send this many back to back
	maxDiscoSources = 4096
	discoCost       = int64(time.Second / discoRate) // in nanosecond tokens
	discoMaxTokens  = discoCost * discoBurst
	// discoSweepEvery bounds how often a full table is swept for quiet
	// sources (a sweep walks the whole table).
	discoSweepEvery = time.Second
)

type discoBucket struct {
	tokens int64 // nanoseconds of credit, 0..discoMaxTokens
	last   time.Time
}

type discoLimiter struct {
	mu        sync.Mutex
	buckets   map[netip.Addr]*discoBucket
	lastSweep time.Time
}

func newDiscoLimiter() discoLimiter {
	return discoLimiter{buckets: map[netip.Addr]*discoBucket{}}
}

// discoSource is the bucket key of a source address.
func discoSource(src netip.AddrPort) netip.Addr {
	a := src.Addr().Unmap()
	if a.Is6() {
		if p, err := a.WithZone("").Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// allow charges src's bucket for one disco packet and reports whether it
// may be handled.
func (l *discoLimiter) allow(src netip.AddrPort, now time.Time) bool {
	k := discoSource(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= maxDiscoSources {
			if now.Sub(l.lastSweep) < discoSweepEvery {
				return false
			}
			l.lastSweep = now
			for a, e := range l.buckets {
				if now.Sub(e.last) >= time.Duration(discoMaxTokens) { // refilled: forgetting it changes nothing
					delete(l.buckets, a)
				}
			}
			if len(l.buckets) >= maxDiscoSources {
				return false
			}
		}
		b = &discoBucket{tokens: discoMaxTokens, last: now}
		l.buckets[k] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+int64(d), discoMaxTokens)
		b.last = now
	}
	if b.tokens < discoCost {
		return false
	}
	b.tokens -= discoCost
	return true
}
