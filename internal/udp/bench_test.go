package udp

import (
	"fmt"
	"testing"

	"github.com/warrenmesh/warren/internal/conn"
)

// loop is a sender and a receiver transport on loopback with one batch of
// datagrams to move between them.
type loop struct {
	a, b *Transport
	to   conn.Endpoint
	recv conn.ReceiveFunc
	out  [][]byte
	in   *batch
}

// The receive buffers are as large as the engine's, so that coalesced
// messages are received in place.
func newLoop(tb testing.TB, host string, fn, size int, offload bool) *loop {
	a, _, _ := openMode(tb, offload)
	b, fns, port := openMode(tb, offload)
	if offload {
		needOffload(tb, a)
	}
	to, err := a.ParseEndpoint(fmt.Sprintf(host, port))
	if err != nil {
		tb.Fatal(err)
	}
	l := &loop{a: a, b: b, to: to, recv: fns[fn], in: newBatch(BatchSize, 65535)}
	l.out = make([][]byte, BatchSize)
	for i := range l.out {
		l.out[i] = make([]byte, size)
	}
	return l
}

// roundTrip sends one batch and receives all of it.
func (l *loop) roundTrip() error {
	if err := l.a.Send(l.out, l.to); err != nil {
		return err
	}
	for got := 0; got < len(l.out); {
		n, err := l.recv(l.in.bufs, l.in.sizes, l.in.eps)
		if err != nil {
			return err
		}
		got += n
	}
	return nil
}

// TestSteadyStateAllocations checks that sending and receiving a batch
// allocates nothing once the peer's endpoint exists, with and without the
// offloads.
func TestSteadyStateAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops sync.Pool entries and allocates")
	}
	for _, offload := range []bool{true, false} {
		for _, host := range []string{"127.0.0.1:%d", "[::1]:%d"} {
			fn := 0
			if host[0] == '[' {
				fn = 1
			}
			l := newLoop(t, host, fn, 1280, offload)
			var err error
			allocs := testing.AllocsPerRun(50, func() {
				if e := l.roundTrip(); e != nil {
					err = e
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if allocs != 0 {
				t.Errorf("%s offload %v: %.1f allocations per batch of %d, want 0", host, offload, allocs, BatchSize)
			}
			if offload && (l.a.Stats.GSOMessages.Load() == 0 || l.b.Stats.GROMessages.Load() == 0) {
				t.Errorf("%s: offloads unused", host)
			}
		}
	}
}

// BenchmarkLoopback moves batches of 128 datagrams of 1280 or 1452 bytes
// over IPv4 loopback, with the offloads and without; an op is one batch
// sent and received.
func BenchmarkLoopback(b *testing.B) {
	for _, offload := range []bool{true, false} {
		for _, size := range []int{1280, 1452} {
			name := fmt.Sprintf("plain/%d", size)
			if offload {
				name = fmt.Sprintf("offload/%d", size)
			}
			b.Run(name, func(b *testing.B) {
				l := newLoop(b, "127.0.0.1:%d", 0, size, offload)
				b.ReportAllocs()
				b.SetBytes(int64(BatchSize * size))
				for b.Loop() {
					if err := l.roundTrip(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*BatchSize), "ns/datagram")
				b.ReportMetric(float64(l.a.Stats.SentDatagrams.Load())/float64(l.a.Stats.SentMessages.Load()), "datagrams/sent-msg")
				b.ReportMetric(float64(l.b.Stats.RecvDatagrams.Load())/float64(l.b.Stats.RecvMessages.Load()), "datagrams/recv-msg")
			})
		}
	}
}
