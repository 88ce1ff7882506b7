package udp

import (
	"fmt"
	"testing"

	"warren/internal/conn"
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

func newLoop(tb testing.TB, host string, fn, size int) *loop {
	a, _, _ := open(tb)
	b, fns, port := open(tb)
	to, err := a.ParseEndpoint(fmt.Sprintf(host, port))
	if err != nil {
		tb.Fatal(err)
	}
	l := &loop{a: a, b: b, to: to, recv: fns[fn], in: newBatch(BatchSize, size+100)}
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
// allocates nothing once the peer's endpoint exists.
func TestSteadyStateAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops sync.Pool entries and allocates")
	}
	for _, host := range []string{"127.0.0.1:%d", "[::1]:%d"} {
		fn := 0
		if host[0] == '[' {
			fn = 1
		}
		l := newLoop(t, host, fn, 1280)
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
			t.Errorf("%s: %.1f allocations per batch of %d, want 0", host, allocs, BatchSize)
		}
	}
}

// BenchmarkLoopback moves batches of 128 datagrams of 1280 bytes over IPv4
// loopback; an op is one batch sent and received.
func BenchmarkLoopback(b *testing.B) {
	l := newLoop(b, "127.0.0.1:%d", 0, 1280)
	b.ReportAllocs()
	b.SetBytes(int64(BatchSize * 1280))
	for b.Loop() {
		if err := l.roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*BatchSize), "ns/datagram")
}
