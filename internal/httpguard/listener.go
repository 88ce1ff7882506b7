package httpguard

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Timeouts of a public listener. A connection an HTTP upgrade hijacked
// (the control protocol, relay sessions) keeps none of them: the upgrade
// (package noiseconn) clears its deadlines once the handshake is done.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included.
	Read time.Duration
	// Write bounds writing a response, from the end of its request's
	// headers.
	Write time.Duration
	// Idle bounds how long a keep-alive connection waits for its next
	// request.
	Idle time.Duration
}

// PublicTimeouts are the timeouts of the coordination server, the relay
// and the metrics listener: generous for their small requests and
// answers, short enough that idle or slow clients cannot hold connections.
var PublicTimeouts = Timeouts{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 60 * time.Second, Idle: 60 * time.Second}

// Apply sets t on hs.
func (t Timeouts) Apply(hs *http.Server) {
	hs.ReadHeaderTimeout = t.ReadHeader
	hs.ReadTimeout = t.Read
	hs.WriteTimeout = t.Write
	hs.IdleTimeout = t.Idle
}

// DefaultPerSource is the default cap on concurrent connections from one
// source address to the server or a relay: each node holds one or two,
// and many nodes may share a NAT's address.
const DefaultPerSource = 1024

// LimitListener returns l accepting at most perSource concurrent
// connections from one source IP address (perSource <= 0: no cap). A
// connection over the cap is closed at once and counted; one that ends
// (Close, also after an HTTP hijack) frees its place.
//
// Refusals are logged at warning level on log (nil discards), at most one
// line every few seconds.
func LimitListener(l net.Listener, perSource int, log *slog.Logger) *Limited {
	return &Limited{Listener: l, per: perSource, log: orDiscard(log), open: map[netip.Addr]int{}}
}

// Limited is a listener with a per-source connection cap.
type Limited struct {
	net.Listener
	per     int
	log     *slog.Logger
	refused atomic.Uint64

	mu      sync.Mutex
	open    map[netip.Addr]int
	lastLog time.Time
}

// Refused counts the connections refused for being over the cap.
func (l *Limited) Refused() uint64 { return l.refused.Load() }

// Open returns how many connections from a are open.
func (l *Limited) Open(a netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[a.Unmap()]
}

// Accept returns the next connection under the cap.
func (l *Limited) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.per <= 0 {
			return c, nil
		}
		ap, perr := netip.ParseAddrPort(c.RemoteAddr().String())
		if perr != nil {
			return c, nil // not an IP connection: nothing to count by
		}
		a := ap.Addr().Unmap()
		l.mu.Lock()
		over := l.open[a] >= l.per
		var log bool
		if over {
			if now := time.Now(); now.Sub(l.lastLog) >= 5*time.Second {
				l.lastLog, log = now, true
			}
		} else {
			l.open[a]++
		}
		l.mu.Unlock()
		if over {
			l.refused.Add(1)
			c.Close()
			if log {
				l.log.Warn("http: refusing connections over the cap per source address", "from", a, "open", l.per)
			}
			continue
		}
		return &limitedConn{Conn: c, l: l, a: a}, nil
	}
}

func (l *Limited) release(a netip.Addr) {
	l.mu.Lock()
	if l.open[a]--; l.open[a] <= 0 {
		delete(l.open, a)
	}
	l.mu.Unlock()
}

type limitedConn struct {
	net.Conn
	l    *Limited
	a    netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.a) })
	return err
}
