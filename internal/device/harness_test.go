package device

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/tun"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
	"github.com/warrenmesh/warren/internal/wire"
)

// watchedTransport wraps a real UDP transport, counting what is sent by
// message type and optionally dropping it (a link cut in one direction).
type watchedTransport struct {
	conn.Transport
	sent   [5]atomic.Uint64
	cut    atomic.Bool
	mu     sync.Mutex
	onSend func(b []byte)
}

func (w *watchedTransport) Send(bufs [][]byte, ep conn.Endpoint) error {
	for _, b := range bufs {
		if len(b) > 0 && b[0] < 5 {
			w.sent[b[0]].Add(1)
		}
		w.mu.Lock()
		f := w.onSend
		w.mu.Unlock()
		if f != nil {
			f(b)
		}
	}
	if w.cut.Load() {
		return nil
	}
	return w.Transport.Send(bufs, ep)
}

type node struct {
	dev  *Device
	tun  *tuntest.ChannelTUN
	tr   *watchedTransport
	key  noise.PrivateKey
	addr netip.Addr // tunnel IPv4
	ip6  netip.Addr // tunnel IPv6
}

func newNode(t *testing.T, clock Clock, i byte) *node {
	t.Helper()
	return newNodeWith(t, clock, i, nil)
}

// newNodeWith is newNode with the engine reading and writing wrap(n.tun)
// rather than n.tun, if wrap is not nil.
func newNodeWith(t *testing.T, clock Clock, i byte, wrap func(*tuntest.ChannelTUN) tun.Device) *node {
	t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{
		tun:  tuntest.New(1420),
		tr:   &watchedTransport{Transport: udp.New()},
		key:  k,
		addr: netip.AddrFrom4([4]byte{100, 64, 0, i}),
		ip6:  netip.MustParseAddr("fd7a:115c:a1e0::" + string('0'+rune(i))),
	}
	var logger *slog.Logger
	if os.Getenv("WARREN_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", i)
	}
	// Odd nodes run to completion, even ones through the pipeline: every
	// two-node test covers both datapaths, against each other.
	var td tun.Device = n.tun
	if wrap != nil {
		td = wrap(n.tun)
	}
	n.dev = New(td, n.tr, Options{Clock: clock, Logger: logger, RunToCompletion: i%2 == 1})
	t.Cleanup(n.dev.Close)
	port := uint16(0)
	if err := n.dev.Apply(&uapi.Config{PrivateKey: &k, ListenPort: &port}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "device up", func() bool { return n.dev.Port() != 0 })
	return n
}

func (n *node) pub() noise.PublicKey { return n.key.PublicKey() }

func (n *node) endpoint() string {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.dev.Port()).String()
}

// connect makes b a peer of a, reachable at b's loopback port.
func connect(t *testing.T, a, b *node, keepalive uint16) {
	t.Helper()
	pc := uapi.PeerConfig{
		PublicKey:  b.pub(),
		Endpoint:   b.endpoint(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.addr, 32), netip.PrefixFrom(b.ip6, 128)},
	}
	if keepalive > 0 {
		pc.PersistentKeepalive = &keepalive
	}
	if err := a.dev.Apply(&uapi.Config{Peers: []uapi.PeerConfig{pc}}); err != nil {
		t.Fatal(err)
	}
}

func newPair(t *testing.T, clock Clock) (a, b *node) {
	a, b = newNode(t, clock, 1), newNode(t, clock, 2)
	connect(t, a, b, 0)
	connect(t, b, a, 0)
	return a, b
}

// ping sends a UDP packet from a to b through the tunnel and checks that b's
// host side receives it unchanged.
func ping(t *testing.T, a, b *node, v6 bool) {
	t.Helper()
	src, dst := a.addr, b.addr
	if v6 {
		src, dst = a.ip6, b.ip6
	}
	pkt := tuntest.UDPPacket(netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 5000), []byte("hello warren"))
	if !tryPing(a, b, pkt, 5*time.Second) {
		t.Logf("a: %s", statsString(&a.dev.Stats))
		t.Logf("b: %s", statsString(&b.dev.Stats))
		if os.Getenv("WARREN_TEST_LOG") != "" {
			buf := make([]byte, 1<<20)
			t.Logf("%s", buf[:runtime.Stack(buf, true)])
		}
		t.Fatalf("packet %v -> %v not delivered", src, dst)
	}
}

func tryPing(a, b *node, pkt []byte, timeout time.Duration) bool {
	a.tun.Inbound <- pkt
	deadline := time.After(timeout)
	for {
		select {
		case got := <-b.tun.Outbound:
			if string(got) == string(pkt) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func noPacket(t *testing.T, n *node, d time.Duration) {
	t.Helper()
	select {
	case p := <-n.tun.Outbound:
		t.Fatalf("unexpected packet delivered: % x", p[:min(len(p), 40)])
	case <-time.After(d):
	}
}

var _ = wire.TypeTransport

func statsString(s *Stats) string {
	return fmt.Sprintf("invalid=%d mac1=%d cookie=%d unknownpeer=%d hs=%d ts=%d flood=%d nosession=%d expired=%d decrypt=%d replay=%d src=%d noroute=%d staged=%d sent=%d done=%d",
		s.DropInvalid.Load(), s.DropMAC1.Load(), s.DropNeedCookie.Load(), s.DropUnknownPeer.Load(), s.DropHandshake.Load(),
		s.DropTimestamp.Load(), s.DropFlood.Load(), s.DropNoSession.Load(), s.DropExpiredKey.Load(), s.DropDecrypt.Load(),
		s.DropReplay.Load(), s.DropSourceAddr.Load(), s.DropNoRoute.Load(), s.DropStaged.Load(), s.HandshakesSent.Load(), s.HandshakesDone.Load())
}
