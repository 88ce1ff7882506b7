package device

// Helpers for the interop tests (interop_test.go) between this engine and the
// real wireguard-go, used as a test oracle: both run in this process, each on
// real UDP sockets over loopback, each with an in-memory TUN whose packets the
// tests inject and read.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	wgconn "golang.zx2c4.com/wireguard/conn"
	wgdevice "golang.zx2c4.com/wireguard/device"
	wgtuntest "golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
	"github.com/warrenmesh/warren/internal/wire"
)

const interopTimeout = 5 * time.Second

// rxSniffer wraps a transport and records what the engine receives, before
// the engine sees it: message counts by type, and the receiver index of the
// last transport message carrying data.
type rxSniffer struct {
	conn.Transport
	rx         [5]atomic.Uint64
	lastDataRx atomic.Uint32
}

func (s *rxSniffer) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, p, err := s.Transport.Open(port)
	for i, fn := range fns {
		fns[i] = func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(bufs, sizes, eps)
			for j := 0; j < n; j++ {
				b := bufs[j][:sizes[j]]
				if len(b) == 0 || b[0] >= 5 {
					continue
				}
				s.rx[b[0]].Add(1)
				if b[0] == wire.TypeTransport && len(b) > wire.MinTransportSize {
					s.lastDataRx.Store(uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24)
				}
			}
			return n, err
		}
	}
	return fns, p, err
}

// wnode is one of our devices with its received traffic observed, and the
// receiver index of the last data message it sent.
type wnode struct {
	*node
	rx         *rxSniffer
	lastDataTx atomic.Uint32
	sendMu     sync.Mutex
	initMAC2s  [][]byte // MAC2 field of every initiation sent
}

// newWarren is newNode with a sniffing transport.
// interopNodes counts the Warren nodes made by newWarren: they alternate
// between the two datapaths, so the interop tests cover both.
var interopNodes atomic.Int32

func newWarren(t *testing.T, clock Clock, i byte) *wnode {
	t.Helper()
	interopRunToCompletion := interopNodes.Add(1)%2 == 1
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	sn := &rxSniffer{Transport: udp.New()}
	w := &wnode{rx: sn, node: &node{
		tun:  tuntest.New(1420),
		tr:   &watchedTransport{Transport: sn},
		key:  k,
		addr: netip.AddrFrom4([4]byte{100, 64, 0, i}),
		ip6:  netip.MustParseAddr("fd7a:115c:a1e0::" + strconv.Itoa(int(i))),
	}}
	w.tr.onSend = func(b []byte) {
		switch {
		case len(b) > wire.MinTransportSize && b[0] == wire.TypeTransport:
			w.lastDataTx.Store(uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24)
		case len(b) == wire.InitiationSize && b[0] == wire.TypeInitiation:
			w.sendMu.Lock()
			w.initMAC2s = append(w.initMAC2s, append([]byte(nil), b[wire.InitiationMac2Offset:]...))
			w.sendMu.Unlock()
		}
	}
	var logger *slog.Logger
	if os.Getenv("WARREN_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", "warren")
	}
	w.dev = New(w.tun, w.tr, Options{Clock: clock, Logger: logger, RunToCompletion: interopRunToCompletion})
	t.Cleanup(w.dev.Close)
	port := uint16(0)
	if err := w.dev.Apply(&uapi.Config{PrivateKey: &k, ListenPort: &port}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "warren device up", func() bool { return w.dev.Port() != 0 })
	return w
}

func (w *wnode) initiationMAC2s() [][]byte {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return append([][]byte(nil), w.initMAC2s...)
}

// keypairs returns our sessions with wireguard-go (previous, current, next).
func (w *wnode) keypairs(g *wgNode) (prev, cur, next *Keypair) {
	p := w.dev.LookupPeer(g.pub())
	if p == nil {
		return nil, nil, nil
	}
	p.keypairs.RLock()
	defer p.keypairs.RUnlock()
	return p.keypairs.previous, p.keypairs.current, p.keypairs.next
}

// wgNode is a wireguard-go device on a channel TUN and a real UDP bind.
type wgNode struct {
	dev  *wgdevice.Device
	tun  *wgtuntest.ChannelTUN
	key  noise.PrivateKey
	addr netip.Addr
	ip6  netip.Addr
}

func newWG(t *testing.T, i byte) *wgNode {
	t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	g := &wgNode{
		tun:  wgtuntest.NewChannelTUN(),
		key:  k,
		addr: netip.AddrFrom4([4]byte{100, 64, 0, i}),
		ip6:  netip.MustParseAddr("fd7a:115c:a1e0::" + strconv.Itoa(int(i))),
	}
	logger := &wgdevice.Logger{Verbosef: wgdevice.DiscardLogf, Errorf: wgdevice.DiscardLogf}
	if os.Getenv("WARREN_TEST_LOG") != "" {
		logger = wgdevice.NewLogger(wgdevice.LogLevelVerbose, "(wireguard-go) ")
	}
	g.dev = wgdevice.NewDevice(g.tun.TUN(), wgconn.NewDefaultBind(), logger)
	t.Cleanup(g.dev.Close)
	g.ipcSet(t, fmt.Sprintf("private_key=%s\nlisten_port=0\n", k.Hex()))
	if err := g.dev.Up(); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "wireguard-go up", func() bool { return g.port(t) != 0 })
	return g
}

func (g *wgNode) pub() noise.PublicKey { return g.key.PublicKey() }

func (g *wgNode) ipcSet(t *testing.T, conf string) {
	t.Helper()
	if err := g.dev.IpcSet(conf); err != nil {
		t.Fatalf("wireguard-go IpcSet(%q): %v", conf, err)
	}
}

// ipcGet returns wireguard-go's device lines and, per peer (hex public
// key), its lines; repeated keys (allowed_ip) are joined with commas.
func (g *wgNode) ipcGet(t *testing.T) (dev map[string]string, peers map[string]map[string]string) {
	t.Helper()
	s, err := g.dev.IpcGet()
	if err != nil {
		t.Fatalf("wireguard-go IpcGet: %v", err)
	}
	dev, peers = map[string]string{}, map[string]map[string]string{}
	cur := dev
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if k == "public_key" {
			cur = map[string]string{}
			peers[v] = cur
		}
		if old, dup := cur[k]; dup {
			v = old + "," + v
		}
		cur[k] = v
	}
	return dev, peers
}

func (g *wgNode) port(t *testing.T) uint16 {
	t.Helper()
	dev, _ := g.ipcGet(t)
	p, _ := strconv.Atoi(dev["listen_port"])
	return uint16(p)
}

func (g *wgNode) endpoint(t *testing.T) string {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), g.port(t)).String()
}

// peerInfo is wireguard-go's view of peer pk.
func (g *wgNode) peerInfo(t *testing.T, pk noise.PublicKey) map[string]string {
	t.Helper()
	_, peers := g.ipcGet(t)
	return peers[pk.Hex()]
}

func interopPSK(t *testing.T) noise.PresharedKey {
	var k noise.PresharedKey
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return k
}

// wgAddPeer makes our node w a peer of wireguard-go g, with w's loopback
// endpoint if withEndpoint (else g can only answer).
func wgAddPeer(t *testing.T, g *wgNode, w *wnode, psk *noise.PresharedKey, withEndpoint bool) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\n", w.pub().Hex())
	if psk != nil {
		fmt.Fprintf(&b, "preshared_key=%s\n", psk.Hex())
	}
	if withEndpoint {
		fmt.Fprintf(&b, "endpoint=%s\n", w.endpoint())
	}
	fmt.Fprintf(&b, "allowed_ip=%s\nallowed_ip=%s\n", netip.PrefixFrom(w.addr, 32), netip.PrefixFrom(w.ip6, 128))
	g.ipcSet(t, b.String())
}

// warrenAddPeer makes wireguard-go g a peer of our node w.
func warrenAddPeer(t *testing.T, w *wnode, g *wgNode, psk *noise.PresharedKey, withEndpoint bool) {
	t.Helper()
	pc := uapi.PeerConfig{
		PublicKey:    g.pub(),
		PresharedKey: psk,
		AllowedIPs:   []netip.Prefix{netip.PrefixFrom(g.addr, 32), netip.PrefixFrom(g.ip6, 128)},
	}
	if withEndpoint {
		pc.Endpoint = g.endpoint(t)
	}
	if err := w.dev.Apply(&uapi.Config{Peers: []uapi.PeerConfig{pc}}); err != nil {
		t.Fatal(err)
	}
}

// interopPair builds one of our devices and one wireguard-go device that
// know each other; each has the other's endpoint only if told so.
func interopPair(t *testing.T, clock Clock, warrenKnowsWG, wgKnowsWarren bool, pskW, pskG *noise.PresharedKey) (*wnode, *wgNode) {
	t.Helper()
	w, g := newWarren(t, clock, 1), newWG(t, 2)
	warrenAddPeer(t, w, g, pskW, warrenKnowsWG)
	wgAddPeer(t, g, w, pskG, wgKnowsWarren)
	return w, g
}

var interopSeq atomic.Uint64

// interopUDP builds a fresh, uniquely numbered UDP packet between two tunnel
// addresses (IPv6 if v6).
func interopUDP(src4, src6, dst4, dst6 netip.Addr, v6 bool, what string) []byte {
	src, dst := src4, dst4
	if v6 {
		src, dst = src6, dst6
	}
	payload := fmt.Sprintf("interop %s #%d", what, interopSeq.Add(1))
	return tuntest.UDPPacket(netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 5000), []byte(payload))
}

func (w *wnode) pktTo(g *wgNode, v6 bool) []byte {
	return interopUDP(w.addr, w.ip6, g.addr, g.ip6, v6, "warren->wireguard-go")
}

func (g *wgNode) pktTo(w *wnode, v6 bool) []byte {
	return interopUDP(g.addr, g.ip6, w.addr, w.ip6, v6, "wireguard-go->warren")
}

// interopExpect waits for the next packet on ch and checks it is want, byte
// for byte.
func interopExpect(t *testing.T, ch <-chan []byte, want []byte, timeout time.Duration, what string, dump func()) {
	t.Helper()
	select {
	case got := <-ch:
		if !bytes.Equal(got, want) {
			dump()
			t.Fatalf("%s: delivered packet differs\n got % x\nwant % x", what, got, want)
		}
	case <-time.After(timeout):
		dump()
		t.Fatalf("%s: not delivered within %v", what, timeout)
	}
}

// interopNoPacket checks that nothing arrives on ch for d.
func interopNoPacket(t *testing.T, ch <-chan []byte, d time.Duration, what string) {
	t.Helper()
	select {
	case p := <-ch:
		t.Fatalf("%s: unexpected packet delivered: % x", what, p[:min(len(p), 48)])
	case <-time.After(d):
	}
}

func (w *wnode) dump(t *testing.T, g *wgNode) func() {
	return func() {
		t.Logf("warren stats: %s cookiesSent=%d rx=%v", statsString(&w.dev.Stats), w.dev.Stats.CookieRepliesSent.Load(), w.rxCounts())
		if s, err := g.dev.IpcGet(); err == nil {
			t.Logf("wireguard-go state:\n%s", s)
		}
	}
}

func (w *wnode) rxCounts() [5]uint64 {
	var c [5]uint64
	for i := range c {
		c[i] = w.rx.rx[i].Load()
	}
	return c
}

// sendToWG injects pkt on our host side and checks that wireguard-go's host
// side receives exactly it.
func sendToWG(t *testing.T, w *wnode, g *wgNode, pkt []byte, timeout time.Duration) {
	t.Helper()
	select {
	case w.tun.Inbound <- pkt:
	case <-time.After(timeout):
		t.Fatal("warren TUN not reading")
	}
	interopExpect(t, g.tun.Inbound, pkt, timeout, "warren -> wireguard-go", w.dump(t, g))
}

// sendToWarren injects pkt on wireguard-go's host side and checks that our
// host side receives exactly it.
func sendToWarren(t *testing.T, g *wgNode, w *wnode, pkt []byte, timeout time.Duration) {
	t.Helper()
	select {
	case g.tun.Outbound <- pkt:
	case <-time.After(timeout):
		t.Fatal("wireguard-go TUN not reading")
	}
	interopExpect(t, w.tun.Outbound, pkt, timeout, "wireguard-go -> warren", w.dump(t, g))
}

// interopExchange sends UDP over IPv4 and IPv6 and an ICMP echo (built by
// wireguard-go's tuntest.Ping) each way, checking every delivery.
func interopExchange(t *testing.T, w *wnode, g *wgNode) {
	t.Helper()
	for _, v6 := range []bool{false, true} {
		sendToWG(t, w, g, w.pktTo(g, v6), interopTimeout)
		sendToWarren(t, g, w, g.pktTo(w, v6), interopTimeout)
	}
	sendToWG(t, w, g, wgtuntest.Ping(g.addr, w.addr), interopTimeout)
	sendToWarren(t, g, w, wgtuntest.Ping(w.addr, g.addr), interopTimeout)
}

// interopGoroutines returns the stacks of all goroutines by goroutine id.
func interopGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	m := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		if f := strings.Fields(g); len(f) > 1 && f[0] == "goroutine" {
			m[f[1]] = g
		}
	}
	return m
}

// interopNewGoroutines returns the stacks of goroutines absent from before
// that contain substr ("" for any).
func interopNewGoroutines(before map[string]string, substr string) []string {
	var out []string
	for id, s := range interopGoroutines() {
		if _, ok := before[id]; !ok && strings.Contains(s, substr) {
			out = append(out, s)
		}
	}
	return out
}

// interopSettleGoroutines waits (up to 2 s) until the goroutine count is stable,
// so that a baseline does not include goroutines still exiting.
func interopSettleGoroutines() {
	deadline := time.Now().Add(2 * time.Second)
	last, stable := runtime.NumGoroutine(), 0
	for stable < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
	}
}

// flooder sends handshake initiations with a valid MAC1 (and garbage
// content) to wireguard-go, the way real handshake load arrives: enough of
// them fill its handshake queue past its under-load threshold (1/8 of the
// queue), after which it answers MAC1-valid messages lacking a valid MAC2
// with cookie replies, for one second after the queue was last that long.
// It counts the cookie replies it receives, proof that wireguard-go was
// under load. A probe, sent from its own socket so that its reply cannot be
// lost among the flood's, checks the state without changing it.
type flooder struct {
	flood, probe *udpCounter
	dst          *net.UDPAddr
	tries        int // bursts sent by overload
}

// udpCounter is a socket sending one MAC1-valid initiation and counting the
// cookie replies to it.
type udpCounter struct {
	c       *net.UDPConn
	pkt     []byte
	cookies atomic.Uint64
	done    chan struct{}
}

func newUDPCounter(t *testing.T, target noise.PublicKey) *udpCounter {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, wire.InitiationSize)
	if _, err := rand.Read(pkt); err != nil {
		t.Fatal(err)
	}
	copy(pkt, []byte{wire.TypeInitiation, 0, 0, 0})
	var gen noise.CookieGenerator
	gen.Init(target)
	gen.AddMACs(pkt, time.Now())
	u := &udpCounter{c: c, pkt: pkt, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		buf := make([]byte, 2048)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			// The reply's receiver is the sender index of our message.
			if n == wire.CookieReplySize && buf[0] == wire.TypeCookieReply && bytes.Equal(buf[4:8], pkt[4:8]) {
				u.cookies.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-u.done
	})
	return u
}

func newFlooder(t *testing.T, target noise.PublicKey, port uint16) *flooder {
	return &flooder{
		flood: newUDPCounter(t, target),
		probe: newUDPCounter(t, target),
		dst:   &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)},
	}
}

func (u *udpCounter) send(dst *net.UDPAddr, n int) {
	for i := 0; i < n; i++ {
		u.c.WriteToUDP(u.pkt, dst) //nolint:errcheck // loss is fine
	}
}

// sendProbe sends one MAC1-valid initiation, which cannot fill the queue by
// itself: a cookie reply to it shows wireguard-go under load.
func (f *flooder) sendProbe() { f.probe.send(f.dst, 1) }

// overload floods until wireguard-go answers with a cookie reply, i.e. is
// under load; it reports false if that never happens.
func (f *flooder) overload() bool {
	for try := 0; try < 5; try++ {
		f.tries++
		was := f.flood.cookies.Load()
		// Well below the handshake queue's capacity (1024), so that a
		// message sent right after the burst is queued, not dropped.
		f.flood.send(f.dst, 500)
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if f.flood.cookies.Load() > was {
				return true
			}
			time.Sleep(time.Millisecond)
		}
	}
	return false
}

// kpString describes a session briefly.
func kpString(kp *Keypair) string {
	if kp == nil {
		return "<none>"
	}
	return fmt.Sprintf("{%p initiator=%v created=%s local=%#x remote=%#x}", kp, kp.initiator,
		kp.created.Format("15:04:05.000"), kp.localIndex, kp.remoteIndex)
}
