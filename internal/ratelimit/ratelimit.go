// Package ratelimit owns the per-source limit on handshake messages that a
// WireGuard responder applies while under load: a token bucket per source
// address (20 packets per second, bursts of 5), with IPv6 sources grouped by
// their /64 so that one host cannot escape the limit by rotating addresses
// inside its own prefix. The table of buckets is bounded, and a background
// goroutine forgets sources that have been quiet for a second.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

const (
	// PacketsPerSecond is the sustained rate allowed per source.
	PacketsPerSecond = 20
	// Burst is how many packets a quiet source may send back to back.
	Burst = 5
	// MaxEntries bounds the number of sources tracked at once. When the
	// table is full, packets from sources not yet in it are refused until
	// garbage collection frees room.
	MaxEntries = 65536

	// packetCost is the price of one packet in tokens, which are counted in
	// nanoseconds of elapsed time: a bucket earns one nanosecond-token per
	// nanosecond and spends packetCost per packet.
	packetCost = int64(time.Second / PacketsPerSecond)
	// maxTokens caps a bucket at Burst packets.
	maxTokens = packetCost * Burst

	// gcInterval is how often the collector runs, and idleTimeout how long
	// a source must have been quiet to be forgotten. An entry idle that long
	// has refilled to a full bucket (1 s earns 20 packets, more than
	// Burst), so forgetting it changes no decision: a new entry also starts
	// full.
	gcInterval  = time.Second
	idleTimeout = time.Second
)

type entry struct {
	mu     sync.Mutex
	last   time.Time // time of the last Allow for this source
	tokens int64     // in nanoseconds of credit, 0..maxTokens
	dead   bool      // removed from the table by the collector
}

// Limiter is a table of token buckets keyed by source. It is safe for
// concurrent use. Allow on a source already in the table does not allocate.
type Limiter struct {
	now func() time.Time

	mu     sync.RWMutex
	table  map[netip.Addr]*entry
	closed bool

	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// New returns a Limiter reading time from now (time.Now if nil) and starts
// its garbage collector, which runs until Close. The collector ticks on real
// time; only the buckets' accounting uses now, so tests can drive it with a
// fake clock.
func New(now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	l := &Limiter{
		now:   now,
		table: make(map[netip.Addr]*entry),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go l.collect()
	return l
}

// Close stops the garbage collector, waits for it to exit and empties the
// table. After Close, Allow refuses everything. Close may be called more
// than once.
func (l *Limiter) Close() {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.table = nil
		l.mu.Unlock()
		close(l.stop)
		<-l.done
	})
}

// key returns the bucket a source belongs to: the address itself for IPv4
// (IPv4-mapped IPv6 addresses are unmapped first, so that they do not all
// share the single /64 ::ffff:0:0/64 and starve each other), and the /64
// for IPv6, without zone.
func key(ip netip.Addr) (netip.Addr, bool) {
	ip = ip.Unmap()
	if ip.Is4() {
		return ip, true
	}
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	p, err := ip.WithZone("").Prefix(64)
	if err != nil {
		return netip.Addr{}, false
	}
	return p.Addr(), true
}

// Allow reports whether a handshake message from ip may be processed now,
// and charges ip's bucket for it. It refuses an invalid address, any new
// source when the table holds MaxEntries sources, and everything after
// Close.
func (l *Limiter) Allow(ip netip.Addr) bool {
	k, ok := key(ip)
	if !ok {
		return false
	}
	for {
		l.mu.RLock()
		e, closed := l.table[k], l.closed
		l.mu.RUnlock()
		if closed {
			return false
		}
		if e == nil {
			allowed, retry := l.insert(k)
			if !retry {
				return allowed
			}
			continue
		}
		e.mu.Lock()
		if e.dead {
			// The collector removed e after we found it; look again.
			e.mu.Unlock()
			continue
		}
		now := l.now()
		if elapsed := now.Sub(e.last); elapsed > 0 {
			if elapsed >= time.Duration(maxTokens) {
				e.tokens = maxTokens
			} else {
				e.tokens = min(e.tokens+int64(elapsed), maxTokens)
			}
			e.last = now
		}
		allowed := e.tokens >= packetCost
		if allowed {
			e.tokens -= packetCost
		}
		e.mu.Unlock()
		return allowed
	}
}

// insert adds a full bucket for k, charged for one packet. retry is true if
// another goroutine inserted k first, in which case the caller charges that
// entry instead.
func (l *Limiter) insert(k netip.Addr) (allowed, retry bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, false
	}
	if _, ok := l.table[k]; ok {
		return false, true
	}
	if len(l.table) >= MaxEntries {
		return false, false
	}
	l.table[k] = &entry{last: now, tokens: maxTokens - packetCost}
	return true, false
}

func (l *Limiter) collect() {
	defer close(l.done)
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.gc()
		}
	}
}

// gc forgets every source whose last Allow was more than idleTimeout ago.
func (l *Limiter) gc() {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, e := range l.table {
		e.mu.Lock()
		if now.Sub(e.last) > idleTimeout {
			e.dead = true
			delete(l.table, k)
		}
		e.mu.Unlock()
	}
}

// size returns the number of sources tracked, for tests.
func (l *Limiter) size() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.table)
}
