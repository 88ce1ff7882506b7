package ratelimit

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a concurrency-safe manual clock.
type fakeClock struct {
	base time.Time
	off  atomic.Int64
}

func newFakeClock() *fakeClock {
	return &fakeClock{base: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) now() time.Time          { return c.base.Add(time.Duration(c.off.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.off.Add(int64(d)) }

func newTest(t *testing.T) (*Limiter, *fakeClock) {
	t.Helper()
	c := newFakeClock()
	l := New(c.now)
	t.Cleanup(l.Close)
	return l, c
}

// count calls Allow n times and returns how many were allowed.
func count(l *Limiter, ip netip.Addr, n int) int {
	k := 0
	for range n {
		if l.Allow(ip) {
			k++
		}
	}
	return k
}

var (
	srcA = netip.MustParseAddr("192.0.2.1")
	srcB = netip.MustParseAddr("192.0.2.2")
)

func TestBurst(t *testing.T) {
	l, _ := newTest(t)
	for i := range Burst {
		if !l.Allow(srcA) {
			t.Fatalf("packet %d of the burst refused", i+1)
		}
	}
	if got := count(l, srcA, 100); got != 0 {
		t.Fatalf("%d packets allowed after the burst with no time passing", got)
	}
}

func TestRefill(t *testing.T) {
	l, c := newTest(t)
	if got := count(l, srcA, 10); got != Burst {
		t.Fatalf("burst allowed %d, want %d", got, Burst)
	}
	c.advance(50 * time.Millisecond)
	if got := count(l, srcA, 10); got != 1 {
		t.Fatalf("after 50 ms allowed %d, want 1", got)
	}
	c.advance(49 * time.Millisecond)
	if l.Allow(srcA) {
		t.Fatal("allowed after only 49 ms")
	}
	c.advance(1 * time.Millisecond)
	if !l.Allow(srcA) {
		t.Fatal("refused after a full 50 ms")
	}
	// A long quiet spell refills to the burst, no more.
	c.advance(10 * time.Second)
	if got := count(l, srcA, 100); got != Burst {
		t.Fatalf("after 10 s allowed %d, want %d", got, Burst)
	}
	// A clock going backwards earns nothing and does not break the bucket.
	c.advance(-time.Second)
	if l.Allow(srcA) {
		t.Fatal("allowed after the clock went backwards")
	}
	c.advance(time.Second + 50*time.Millisecond)
	if got := count(l, srcA, 10); got != 1 {
		t.Fatalf("after the clock recovered allowed %d, want 1", got)
	}
}

// TestSustainedRate: one packet every 10 ms for 990 ms. The bucket starts
// with Burst packets and never overflows, so the allowed count is exactly
// floor((Burst*50ms + 990ms) / 50ms) = floor(5 + 19.8) = 24.
func TestSustainedRate(t *testing.T) {
	l, c := newTest(t)
	allowed := 0
	for i := 0; i < 100; i++ {
		if l.Allow(srcA) {
			allowed++
		}
		c.advance(10 * time.Millisecond)
	}
	if allowed != 24 {
		t.Fatalf("allowed %d packets in 990 ms at 100/s, want 24", allowed)
	}
}

func TestIndependentSources(t *testing.T) {
	l, _ := newTest(t)
	if got := count(l, srcA, 10); got != Burst {
		t.Fatalf("A allowed %d, want %d", got, Burst)
	}
	if got := count(l, srcB, 10); got != Burst {
		t.Fatalf("B allowed %d after A was exhausted, want %d", got, Burst)
	}
	if l.Allow(srcA) {
		t.Fatal("A allowed again")
	}
}

func TestGrouping(t *testing.T) {
	cases := []struct {
		name   string
		a, b   string
		shared bool
	}{
		{"same /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:eeee:dddd:9", true},
		{"same address", "2001:db8::1", "2001:db8::1", true},
		{"neighbouring /64", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"differ in bit 0", "2001:db8::1", "a001:db8::1", false},
		{"differ in bit 64 only", "2001:db8:1:2::1", "2001:db8:1:2:8000::1", true},
		{"zones ignored", "fe80::1%eth0", "fe80::2%eth1", true},
		{"IPv4 per address", "198.51.100.1", "198.51.100.2", false},
		{"IPv4-mapped equals IPv4", "::ffff:198.51.100.1", "198.51.100.1", true},
		{"IPv4-mapped not lumped into one /64", "::ffff:198.51.100.1", "::ffff:198.51.100.2", false},
		{"IPv4 vs IPv6 with same bits", "0.0.0.1", "::1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := newTest(t)
			a, b := netip.MustParseAddr(tc.a), netip.MustParseAddr(tc.b)
			if got := count(l, a, 10); got != Burst {
				t.Fatalf("%v allowed %d, want %d", a, got, Burst)
			}
			want := Burst
			if tc.shared {
				want = 0
			}
			if got := count(l, b, 10); got != want {
				t.Fatalf("%v allowed %d after %v was exhausted, want %d", b, got, a, want)
			}
		})
	}
}

func TestInvalidAddress(t *testing.T) {
	l, _ := newTest(t)
	if l.Allow(netip.Addr{}) {
		t.Fatal("zero Addr allowed")
	}
	if l.size() != 0 {
		t.Fatal("zero Addr created an entry")
	}
}

func TestTableFull(t *testing.T) {
	l, c := newTest(t)
	addr := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	for i := range MaxEntries {
		if !l.Allow(addr(i)) {
			t.Fatalf("source %d refused before the table was full", i)
		}
	}
	if n := l.size(); n != MaxEntries {
		t.Fatalf("table holds %d, want %d", n, MaxEntries)
	}
	newcomer := addr(MaxEntries)
	if l.Allow(newcomer) {
		t.Fatal("new source allowed with the table full")
	}
	if n := l.size(); n != MaxEntries {
		t.Fatalf("table grew to %d", n)
	}
	// Known sources keep their buckets.
	if got := count(l, addr(7), 10); got != Burst-1 {
		t.Fatalf("known source allowed %d, want %d", got, Burst-1)
	}
	// Once idle entries are collected there is room again.
	c.advance(2 * time.Second)
	l.Allow(addr(7)) // keep this one
	l.gc()
	if n := l.size(); n != 1 {
		t.Fatalf("after gc table holds %d, want 1", n)
	}
	if !l.Allow(newcomer) {
		t.Fatal("new source refused after gc")
	}
}

func TestGC(t *testing.T) {
	l, c := newTest(t)
	l.Allow(srcA)
	c.advance(600 * time.Millisecond)
	l.Allow(srcB)
	c.advance(400 * time.Millisecond)
	l.gc() // A idle exactly 1 s: kept (only more than 1 s is collected)
	if n := l.size(); n != 2 {
		t.Fatalf("after 1 s table holds %d, want 2", n)
	}
	c.advance(1 * time.Millisecond)
	l.gc() // A idle 1.001 s, B 0.401 s
	if n := l.size(); n != 1 {
		t.Fatalf("table holds %d, want 1 (B)", n)
	}
	// A refused packet still counts as use.
	count(l, srcB, 10)
	c.advance(900 * time.Millisecond)
	l.Allow(srcB)
	c.advance(900 * time.Millisecond)
	l.gc()
	if n := l.size(); n != 1 {
		t.Fatalf("active B collected: table holds %d", n)
	}
	// A collected source starts again with a full burst.
	if got := count(l, srcA, 10); got != Burst {
		t.Fatalf("collected source allowed %d, want %d", got, Burst)
	}
}

// TestGCGoroutine checks that the background collector really runs.
func TestGCGoroutine(t *testing.T) {
	l, c := newTest(t)
	l.Allow(srcA)
	l.Allow(srcB)
	c.advance(2 * time.Second)
	deadline := time.Now().Add(5 * gcInterval)
	for l.size() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("collector did not run: %d entries left", l.size())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCloseNoLeak(t *testing.T) {
	waitGoroutines := func(want int) int {
		var n int
		for i := 0; i < 500; i++ {
			if n = runtime.NumGoroutine(); n == want {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		return n
	}
	// Let goroutines of earlier tests' limiters finish exiting.
	before := runtime.NumGoroutine()
	for i := 0; i < 50; i++ {
		time.Sleep(10 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n == before {
			break
		}
		before = n
	}
	ls := make([]*Limiter, 10)
	for i := range ls {
		ls[i] = New(nil)
	}
	if n := waitGoroutines(before + len(ls)); n != before+len(ls) {
		t.Fatalf("%d goroutines with %d limiters, want %d", n, len(ls), before+len(ls))
	}
	for _, l := range ls {
		if !l.Allow(srcA) {
			t.Fatal("real-clock limiter refused a first packet")
		}
		l.Close()
		l.Close() // idempotent
		if l.Allow(srcB) {
			t.Fatal("allowed after Close")
		}
	}
	if n := waitGoroutines(before); n != before {
		t.Fatalf("%d goroutines after Close, want %d", n, before)
	}
}

// TestConcurrentAllow hammers one limiter from several goroutines with the
// clock stopped: each source must get exactly Burst packets in total, no
// matter how the calls interleave. Run with -race.
func TestConcurrentAllow(t *testing.T) {
	l, _ := newTest(t)
	const workers, calls = 8, 500
	sources := []netip.Addr{srcA, srcB, netip.MustParseAddr("2001:db8::1")}
	var allowed [3]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				s := (w + i) % len(sources)
				if l.Allow(sources[s]) {
					allowed[s].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for s := range sources {
		if got := allowed[s].Load(); got != Burst {
			t.Errorf("%v: %d allowed concurrently, want %d", sources[s], got, Burst)
		}
	}
}

// TestConcurrentChurn mixes Allow on many sources, a moving clock and
// collections, for the race detector, and checks a global bound: no source
// gets more than Burst + elapsed*rate packets.
func TestConcurrentChurn(t *testing.T) {
	l, c := newTest(t)
	const workers, calls, nsrc = 4, 2000, 50
	var total atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				ip := netip.AddrFrom4([4]byte{10, 0, 0, byte((w*7 + i) % nsrc)})
				if l.Allow(ip) {
					total.Add(1)
				}
				if i%100 == 0 {
					c.advance(30 * time.Millisecond)
				}
				if w == 0 && i%250 == 0 {
					l.gc()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Duration(c.off.Load())
	bound := int64(nsrc) * (Burst + int64(elapsed/(time.Second/PacketsPerSecond)) + 1)
	if got := total.Load(); got > bound || got < nsrc*Burst {
		t.Fatalf("allowed %d, want between %d and %d", got, nsrc*Burst, bound)
	}
}

func TestAllowNoAllocs(t *testing.T) {
	l, _ := newTest(t)
	v6 := netip.MustParseAddr("2001:db8::1")
	l.Allow(srcA)
	l.Allow(v6)
	allocs := testing.AllocsPerRun(1000, func() {
		l.Allow(srcA)
		l.Allow(v6)
	})
	if allocs != 0 {
		t.Fatalf("Allow on existing entries allocates %v times", allocs)
	}
}

func BenchmarkAllowExisting(b *testing.B) {
	for _, s := range []string{"192.0.2.1", "2001:db8::1"} {
		b.Run(s, func(b *testing.B) {
			l := New(nil)
			defer l.Close()
			ip := netip.MustParseAddr(s)
			l.Allow(ip)
			b.ReportAllocs()
			for b.Loop() {
				l.Allow(ip)
			}
		})
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	l := New(nil)
	defer l.Close()
	ips := make([]netip.Addr, 64)
	for i := range ips {
		ips[i] = netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i))
		l.Allow(ips[i])
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(ips[i%len(ips)])
			i++
		}
	})
}
