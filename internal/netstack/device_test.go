package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// offset is the room the engine leaves in front of each packet.
const offset = 16

// pipe joins a's device to b's as the engine would, minus the crypto:
// batches read from one are written to the other, in the engine's buffer
// shape (BatchSize buffers of 64 KiB with a header offset).
func pipe(t testing.TB, a, b *Device) *pipeStats {
	ps := &pipeStats{}
	var wg sync.WaitGroup
	run := func(from, to *Device) {
		defer wg.Done()
		bufs := make([][]byte, from.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 65535)
		}
		sizes := make([]int, len(bufs))
		out := make([][]byte, len(bufs))
		for {
			n, err := from.Read(bufs, sizes, offset)
			if err != nil {
				return
			}
			for i := 0; i < n; i++ {
				out[i] = bufs[i][:offset+sizes[i]]
				ps.note(sizes[i])
			}
			if _, err := to.Write(out[:n], offset); err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go run(a, b)
	go run(b, a)
	t.Cleanup(func() { a.Close(); b.Close(); wg.Wait() })
	return ps
}

// pipeStats is what crossed a pipe.
type pipeStats struct {
	packets, largest atomic.Int64
}

func (p *pipeStats) note(size int) {
	p.packets.Add(1)
	for {
		m := p.largest.Load()
		if int64(size) <= m || p.largest.CompareAndSwap(m, int64(size)) {
			return
		}
	}
}

func newPair(t testing.TB) (*Stack, *Stack, netip.Addr, *pipeStats) {
	a, err := New(1420)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(1420)
	if err != nil {
		t.Fatal(err)
	}
	aa, ba := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	if err := a.SetAddresses([]netip.Prefix{netip.PrefixFrom(aa, 32), netip.MustParsePrefix("fd7a::1/128")}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetAddresses([]netip.Prefix{netip.PrefixFrom(ba, 32), netip.MustParsePrefix("fd7a::2/128")}); err != nil {
		t.Fatal(err)
	}
	ps := pipe(t, a.Device(), b.Device())
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b, ba, ps
}

// transfer sends size random bytes from a to b's listener on dst and
// checks they arrive intact.
func transfer(t *testing.T, a, b *Stack, dst netip.AddrPort, size int) {
	ln, err := b.ListenTCP(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want := make([]byte, size)
	rand.Read(want)
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		got <- s
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := a.DialTCP(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(c, bytes.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if <-got != sha256.Sum256(want) {
		t.Fatalf("%d bytes to %s arrived changed", size, dst)
	}
}

// TestTCPTransferSuperPackets: a TCP transfer between two netstacks joined
// by the engine's packet shape arrives intact both over IPv4 and IPv6, and
// the sender's stack handed over super-packets that the device cut into
// MTU-sized packets (GSO), none larger than the MTU.
func TestTCPTransferSuperPackets(t *testing.T) {
	a, b, ba, ps := newPair(t)
	transfer(t, a, b, netip.AddrPortFrom(ba, 8080), 8<<20)
	transfer(t, a, b, netip.MustParseAddrPort("[fd7a::2]:8081"), 4<<20)
	st := a.Device().Stats()
	if st.OutSuper.Load() == 0 {
		t.Fatalf("no super-packet was split: %d packets out", st.OutPackets.Load())
	}
	if d := st.OutDropped.Load(); d != 0 {
		t.Fatalf("%d packets dropped on the way out", d)
	}
	// b's IP layer saw fewer packets than the engine wrote: the
	// segments of the flow were merged.
	if in, rx := b.Device().Stats().InPackets.Load(), b.RxPackets(); rx >= in || b.Device().Stats().InMerged.Load() == 0 {
		t.Fatalf("no merging on delivery: %d packets written, %d received by the stack, %d merged", in, rx, b.Device().Stats().InMerged.Load())
	}
	if m := ps.largest.Load(); m > 1420 {
		t.Fatalf("the engine was handed a packet of %d bytes, more than the MTU", m)
	}
	t.Logf("a: %d packets out, %d super-packets split; b: %d packets in, %d after merging", st.OutPackets.Load(), st.OutSuper.Load(), b.Device().Stats().InPackets.Load(), b.RxPackets())
}

// TestMalformedDroppedAndCounted: packets from the engine that are not
// one whole IP packet are dropped and counted, and the stack keeps
// working.
func TestMalformedDroppedAndCounted(t *testing.T) {
	a, b, ba, _ := newPair(t)
	v4 := make([]byte, 40)
	v4[0] = 0x45
	v4[3] = 60 // total length 60, only 40 bytes
	v6 := make([]byte, 48)
	v6[0] = 0x60
	v6[5] = 100 // payload length 100, only 8 bytes
	shortIHL := make([]byte, 20)
	shortIHL[0], shortIHL[3] = 0x44, 20 // IHL 4
	bad := [][]byte{
		make([]byte, offset),                        // empty
		append(make([]byte, offset), 0x50, 1, 2, 3), // version 5
		append(make([]byte, offset), v4...),
		append(make([]byte, offset), v6...),
		append(make([]byte, offset), shortIHL...),
		make([]byte, offset-1), // shorter than the offset
	}
	dev := b.Device()
	if n, err := dev.Write(bad, offset); err != nil || n != len(bad) {
		t.Fatalf("Write = %d, %v; want all %d consumed", n, err, len(bad))
	}
	if got := dev.Stats().InMalformed.Load(); got != uint64(len(bad)) {
		t.Fatalf("InMalformed = %d, want %d", got, len(bad))
	}
	transfer(t, a, b, netip.AddrPortFrom(ba, 80), 1<<20)
}

// BenchmarkDeviceTransfer: a TCP stream through two stacks and the
// engine-shaped pipe, 64 KiB per op; packets/op is how many packets
// crossed the pipe per op, so allocs/op / packets/op is the allocations
// per packet of the whole path (gonet, netstack's TCP and the device).
func BenchmarkDeviceTransfer(b *testing.B) {
	a, s, ba, ps := newPair(b)
	ln, err := s.ListenTCP(netip.AddrPortFrom(ba, 5001))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := a.DialTCP(context.Background(), netip.AddrPortFrom(ba, 5001))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 64<<10)
	for range 64 { // warm the pools
		c.Write(chunk)
	}
	p0 := ps.packets.Load()
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(ps.packets.Load()-p0)/float64(b.N), "packets/op")
}

// TestPing: an echo request from one stack is answered by the other,
// over IPv4 and IPv6.
func TestPing(t *testing.T) {
	a, _, ba, _ := newPair(t)
	for i, dst := range []netip.Addr{ba, netip.MustParseAddr("fd7a::2")} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rtt, err := a.Ping(ctx, dst, uint16(i+1))
		cancel()
		if err != nil || rtt <= 0 {
			t.Fatalf("ping %s: %v %v", dst, rtt, err)
		}
	}
}

// TestPollKeepsOrder: the engine reads the device the way device.readTUN
// and its receive routines do (TryRead under the engine's lock, WaitRead
// outside it when nothing was queued, and TryRead in passing from another
// goroutine); the packets come out in the order netstack queued them.
func TestPollKeepsOrder(t *testing.T) {
	d := NewDevice(1420)
	defer d.Close()
	const total = 20000
	var mu sync.Mutex // the engine's out lock
	var got []uint32
	take := func(bufs [][]byte, sizes []int) int {
		mu.Lock()
		defer mu.Unlock()
		n, _ := d.TryRead(bufs, sizes, offset)
		for i := 0; i < n; i++ {
			got = append(got, binary.BigEndian.Uint32(bufs[i][offset+40:]))
		}
		return n
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	reader := func(wait bool) {
		bufs := make([][]byte, 8)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		sizes := make([]int, len(bufs))
		for count() < total {
			if take(bufs, sizes) == 0 && wait {
				if d.WaitRead() != nil {
					return
				}
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); reader(true) }()
	go func() { defer wg.Done(); reader(false) }()
	for i := uint32(0); i < total; i++ {
		p := tcp4(4)
		binary.BigEndian.PutUint32(p[40:], i)
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		var l stack.PacketBufferList
		l.PushBack(pkt)
		d.Link().WritePackets(l)
		pkt.DecRef()
	}
	wait.For(t, time.Minute, "every packet read", func() bool { return count() == total })
	d.Close() // the waiting reader may wait for more
	wg.Wait()
	for i, v := range got {
		if v != uint32(i) {
			t.Fatalf("packet %d came out as the %dth", v, i)
		}
	}
}

// recorder is a netstack dispatcher keeping a copy of each packet
// delivered to it.
type recorder struct{ pkts [][]byte }

func (r *recorder) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	v := pkt.ToView()
	r.pkts = append(r.pkts, bytes.Clone(v.AsSlice()))
	v.Release()
}

func (r *recorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestWriteMergesAroundShortBuffers: in a batch where buffers too short
// to hold a packet come before a flow's segments, the short ones are
// dropped and counted and the segments are merged into one packet that
// carries their payloads in order.
func TestWriteMergesAroundShortBuffers(t *testing.T) {
	d := NewDevice(1420)
	defer d.Close()
	rec := &recorder{}
	d.Link().Attach(rec)
	batch := [][]byte{make([]byte, offset-1), make([]byte, offset)}
	var want []byte
	for i := range 10 {
		p := flowSegment(i, 1000)
		for j := 40; j < len(p); j++ {
			p[j] = byte(i*7 + j)
		}
		want = append(want, p[40:]...)
		batch = append(batch, append(make([]byte, offset), p...))
	}
	if n, err := d.Write(batch, offset); err != nil || n != len(batch) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if m, bad := d.Stats().InMerged.Load(), d.Stats().InMalformed.Load(); len(rec.pkts) != 1 || m != 1 || bad != 2 {
		t.Fatalf("%d packets delivered, %d merged, %d malformed; want 1, 1, 2", len(rec.pkts), m, bad)
	}
	got := rec.pkts[0]
	if int(binary.BigEndian.Uint16(got[2:])) != len(got) || !bytes.Equal(got[40:], want) {
		t.Fatalf("the merged packet (%d bytes) does not carry the segments' payloads in order", len(got))
	}
}

// TestWriteMergedAllocatesNothing: writing a batch whose segments merge
// (merging, copying into netstack's buffer, delivery to a stack with no
// such connection) allocates nothing once warm.
func TestWriteMergedAllocatesNothing(t *testing.T) {
	st, err := New(1420)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := st.Device()
	pkts := make([][]byte, 64)
	bufs := make([][]byte, len(pkts))
	for i := range pkts {
		pkts[i] = append(make([]byte, offset), flowSegment(i, 1380)...)
		bufs[i] = make([]byte, len(pkts[i]))
	}
	write := func() {
		for i, p := range pkts {
			copy(bufs[i], p) // Write changed the heads
		}
		if n, err := d.Write(bufs, offset); n != len(bufs) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	write() // scratch space grows, pools fill
	if d.Stats().InMerged.Load() == 0 {
		t.Fatal("nothing merged")
	}
	if raceEnabled {
		t.Skip("allocations are not counted under the race detector (sync.Pool drops items)")
	}
	if allocs := testing.AllocsPerRun(50, write); allocs != 0 {
		t.Fatalf("%v allocations per Write", allocs)
	}
}
