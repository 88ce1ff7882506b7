package device

import (
	"errors"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/tun"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
)

// benchTUN is a tun.Device for benchmarks that allocates nothing: each Read
// waits for a token and hands out a batch of copies of one packet; Write
// only counts.
type benchTUN struct {
	pkt     []byte
	batch   int
	tokens  chan struct{}
	written atomic.Uint64
	events  chan tun.Event
	closed  chan struct{}
	once    sync.Once
}

var errBenchClosed = errors.New("benchTUN: closed")

func newBenchTUN(pkt []byte, batch int) *benchTUN {
	t := &benchTUN{pkt: pkt, batch: batch, tokens: make(chan struct{}), events: make(chan tun.Event, 1), closed: make(chan struct{})}
	t.events <- tun.EventUp
	return t
}

func (t *benchTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-t.closed:
		return 0, errBenchClosed
	case <-t.tokens:
	}
	n := min(t.batch, len(bufs))
	for i := 0; i < n; i++ {
		sizes[i] = copy(bufs[i][offset:], t.pkt)
	}
	return n, nil
}

func (t *benchTUN) Write(bufs [][]byte, offset int) (int, error) {
	t.written.Add(uint64(len(bufs)))
	return len(bufs), nil
}

func (t *benchTUN) BatchSize() int           { return t.batch }
func (t *benchTUN) MTU() (int, error)        { return 1420, nil }
func (t *benchTUN) Name() (string, error)    { return "bench", nil }
func (t *benchTUN) Events() <-chan tun.Event { return t.events }
func (t *benchTUN) Close() error {
	t.once.Do(func() { close(t.closed); close(t.events) })
	return nil
}

// benchmarkDatapath moves batches of 64 packets of 1400 bytes from one
// device's TUN to another's over real UDP sockets on loopback, one batch per
// op, in lock step (the next batch is read once the last one arrived), so
// that allocs/op is what the whole path allocates per 64 packets.
func benchmarkDatapath(b *testing.B, inline bool) {
	const batch = 64
	addrA, addrB := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	pkt := tuntest.UDPPacket(netip.AddrPortFrom(addrA, 4000), netip.AddrPortFrom(addrB, 5000), make([]byte, 1400-28))
	type end struct {
		tun *benchTUN
		dev *Device
		key noise.PrivateKey
	}
	var ends [2]end
	for i := range ends {
		k, err := noise.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		td := newBenchTUN(pkt, batch)
		dev := New(td, udp.New(), Options{RunToCompletion: inline})
		b.Cleanup(dev.Close)
		port := uint16(0)
		if err := dev.Apply(&uapi.Config{PrivateKey: &k, ListenPort: &port}); err != nil {
			b.Fatal(err)
		}
		for dev.Port() == 0 {
			time.Sleep(time.Millisecond)
		}
		ends[i] = end{td, dev, k}
	}
	for i, addr := range []netip.Addr{addrB, addrA} {
		peer := ends[1-i]
		ep := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), peer.dev.Port()).String()
		pc := uapi.PeerConfig{PublicKey: peer.key.PublicKey(), Endpoint: ep, AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, 32)}}
		if err := ends[i].dev.Apply(&uapi.Config{Peers: []uapi.PeerConfig{pc}}); err != nil {
			b.Fatal(err)
		}
	}
	a, z := ends[0].tun, ends[1].tun
	// One batch to set up the session (it may be staged until then).
	a.tokens <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for z.written.Load() < batch {
		if time.Now().After(deadline) {
			b.Fatalf("no session after 5 s (%d packets arrived)", z.written.Load())
		}
		time.Sleep(time.Millisecond)
	}
	b.SetBytes(int64(batch * len(pkt)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := z.written.Load() + batch
		a.tokens <- struct{}{}
		deadline := time.Now().Add(5 * time.Second)
		for spins := 0; z.written.Load() < want; spins++ {
			if spins%1024 == 0 && time.Now().After(deadline) {
				b.Fatalf("batch %d: %d of %d packets arrived", i, z.written.Load()-(want-batch), batch)
			}
			runtime.Gosched()
		}
	}
}

// The whole datapath, TUN to TUN through UDP on loopback; allocs/op (per
// 64 packets) must stay 0.
func BenchmarkDatapathInline(b *testing.B)   { benchmarkDatapath(b, true) }
func BenchmarkDatapathPipeline(b *testing.B) { benchmarkDatapath(b, false) }
