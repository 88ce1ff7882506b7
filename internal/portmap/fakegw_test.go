package portmap

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
)

// fakeGateway is an in-process PCP and NAT-PMP server on loopback, written
// from the RFCs' packet layouts independently of the client's encoders. Its
// epoch runs on the test's fake clock.
type fakeGateway struct {
	t    *testing.T
	conn *net.UDPConn
	clk  *clock.Fake
	ext  netip.Addr // the public address it reports

	mu       sync.Mutex
	pcp, pmp bool
	start    time.Time         // epoch 0
	maps     map[uint16]uint16 // internal → external port
	nextExt  uint16
	requests map[string]int // "pcp-map", "pmp-map", "pmp-addr", "pcp-announce"
	// before, if set, returns datagrams the gateway's socket sends ahead
	// of each real reply (forgeries that do come from the gateway port).
	before func(req []byte) [][]byte
	// nonces seen in PCP MAP requests, in order.
	nonces   []pcpNonce
	lastFrom netip.AddrPort // the last request's source
}

func newFakeGateway(t *testing.T, clk *clock.Fake, pcp, pmp bool) *fakeGateway {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{t: t, conn: c, clk: clk, ext: netip.MustParseAddr("11.19.0.1"), pcp: pcp, pmp: pmp,
		start: clk.Now(), maps: map[uint16]uint16{}, nextExt: 50000, requests: map[string]int{}}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		g.serve()
	}()
	return g
}

func (g *fakeGateway) port() uint16 { return uint16(g.conn.LocalAddr().(*net.UDPAddr).Port) }

// restart forgets every mapping and starts a new epoch.
func (g *fakeGateway) restart() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.maps = map[uint16]uint16{}
	g.start = g.clk.Now()
}

func (g *fakeGateway) count(k string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests[k]
}

func (g *fakeGateway) mapped(internal uint16) (uint16, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.maps[internal]
	return e, ok
}

func (g *fakeGateway) serve() {
	buf := make([]byte, 2048)
	for {
		n, from, err := g.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		req := append([]byte(nil), buf[:n]...)
		g.mu.Lock()
		g.lastFrom = from
		reply := g.answer(req)
		before := g.before
		g.mu.Unlock()
		if reply == nil {
			continue
		}
		if before != nil {
			for _, f := range before(req) {
				_, _ = g.conn.WriteToUDPAddrPort(f, from)
			}
		}
		_, _ = g.conn.WriteToUDPAddrPort(reply, from)
	}
}

func (g *fakeGateway) epoch() uint32 { return uint32(g.clk.Now().Sub(g.start) / time.Second) }

// assign maps internal to the suggested port when free, else the next one.
func (g *fakeGateway) assign(internal, suggested uint16) uint16 {
	if e, ok := g.maps[internal]; ok {
		return e
	}
	used := map[uint16]bool{}
	for _, e := range g.maps {
		used[e] = true
	}
	ext := suggested
	if ext == 0 || used[ext] || ext == internal { // a hard NAT: never the internal port
		ext = g.nextExt
		g.nextExt++
	}
	g.maps[internal] = ext
	return ext
}

// answer builds the reply to req; g.mu held.
func (g *fakeGateway) answer(req []byte) []byte {
	if len(req) < 2 {
		return nil
	}
	switch req[0] {
	case 0:
		if !g.pmp {
			return nil
		}
		return g.answerPMP(req)
	case 2:
		if g.pcp {
			return g.answerPCP(req)
		}
		if g.pmp { // RFC 6887 §9: a NAT-PMP server's "unsupported version"
			b := make([]byte, 8)
			b[1] = 128 + req[1]&0x7f
			binary.BigEndian.PutUint16(b[2:], 1)
			binary.BigEndian.PutUint32(b[4:], g.epoch())
			return b
		}
	}
	return nil
}

func (g *fakeGateway) answerPMP(req []byte) []byte {
	switch {
	case req[1] == 0 && len(req) == 2:
		g.requests["pmp-addr"]++
		b := make([]byte, 12)
		b[1] = 128
		binary.BigEndian.PutUint32(b[4:], g.epoch())
		ip := g.ext.As4()
		copy(b[8:], ip[:])
		return b
	case req[1] == 1 && len(req) == 12:
		g.requests["pmp-map"]++
		internal := binary.BigEndian.Uint16(req[4:])
		suggested := binary.BigEndian.Uint16(req[6:])
		life := binary.BigEndian.Uint32(req[8:])
		var ext uint16
		if life == 0 {
			delete(g.maps, internal)
		} else {
			ext = g.assign(internal, suggested)
		}
		b := make([]byte, 16)
		b[1] = 129
		binary.BigEndian.PutUint32(b[4:], g.epoch())
		binary.BigEndian.PutUint16(b[8:], internal)
		binary.BigEndian.PutUint16(b[10:], ext)
		binary.BigEndian.PutUint32(b[12:], life)
		return b
	}
	return nil
}

func (g *fakeGateway) answerPCP(req []byte) []byte {
	if len(req) < 24 {
		return nil
	}
	op := req[1] & 0x7f
	life := binary.BigEndian.Uint32(req[4:])
	var b []byte
	switch {
	case op == 0:
		g.requests["pcp-announce"]++
		b = make([]byte, 24)
	case op == 1 && len(req) >= 60:
		g.requests["pcp-map"]++
		b = make([]byte, 60)
		copy(b[24:], req[24:60]) // nonce, protocol, internal port
		g.nonces = append(g.nonces, pcpNonce(req[24:36]))
		internal := binary.BigEndian.Uint16(req[40:])
		suggested := binary.BigEndian.Uint16(req[42:])
		var ext uint16
		if life == 0 {
			delete(g.maps, internal)
		} else {
			ext = g.assign(internal, suggested)
		}
		binary.BigEndian.PutUint16(b[42:], ext)
		ip := netip.AddrFrom16(g.ext.As16()).As16()
		copy(b[44:60], ip[:])
	default:
		return nil
	}
	b[0] = 2
	b[1] = 0x80 | op
	binary.BigEndian.PutUint32(b[4:], life)
	binary.BigEndian.PutUint32(b[8:], g.epoch())
	return b
}

// newTestClient returns a client of the loopback gateway g with protos.
func newTestClient(t *testing.T, g *fakeGateway, clk clock.Clock, protos ...Protocol) *Client {
	lo := netip.MustParseAddr("127.0.0.1")
	return New(Options{
		Port:         41641,
		Gateway:      func() (netip.Addr, netip.Addr, error) { return lo, lo, nil },
		Protocols:    protos,
		Lifetime:     time.Minute,
		ServerPort:   g.port(),
		AnnounceAddr: "127.0.0.1:0",
		Clock:        clk,
	})
}

// announce sends b from the gateway's port to the client's announcement
// port, as the gateway's multicast would arrive.
func (g *fakeGateway) announce(t *testing.T, c *Client, b []byte) {
	t.Helper()
	port := uint16(c.annPort.Load())
	if port == 0 {
		t.Fatal("the client is not listening for announcements")
	}
	if _, err := g.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)); err != nil {
		t.Fatal(err)
	}
}

// rogueSend sends b from another socket to the client that just asked.
func (g *fakeGateway) rogueSend(rogue *net.UDPConn, b []byte) {
	if to := g.lastFrom; to.IsValid() {
		_, _ = rogue.WriteToUDPAddrPort(b, to)
	}
}
