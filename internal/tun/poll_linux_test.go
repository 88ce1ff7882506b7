package tun

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"warren/internal/nettest"
)

// sendUDP sends count one-byte datagrams 0, 1, ... from ns to dst (routed
// into the TUN).
func sendUDP(t *testing.T, ns *nettest.NS, dst netip.AddrPort, first, count int) {
	t.Helper()
	if err := ns.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := first; i < first+count; i++ {
			if _, err := c.Write([]byte{'p', byte(i)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// ours returns the numbers of the datagrams to dst among the n packets
// read (the kernel's own IPv6 chatter is skipped).
func ours(bufs [][]byte, sizes []int, n int, dst netip.AddrPort) []int {
	var got []int
	for i := range n {
		_, d, payload, err := parseUDP(bufs[i][offset : offset+sizes[i]])
		if err == nil && d == dst && len(payload) == 2 && payload[0] == 'p' {
			got = append(got, int(payload[1]))
		}
	}
	return got
}

func TestPoller(t *testing.T) { bothModes(t, testPoller) }

// testPoller checks TryRead and WaitRead on a real queue: TryRead never
// waits, WaitRead waits for a packet without taking it, and a Read waiting
// meanwhile neither shuts TryRead out nor makes a packet be read twice or
// lost.
func testPoller(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtp")
	dev := configure(t, ns, "wgp0")
	p, ok := dev.(Poller)
	if !ok {
		t.Fatal("the Linux TUN device is not a Poller")
	}
	dst := netip.AddrPortFrom(peerAddr4, 9)
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, offset+65535)
	}
	sizes := make([]int, len(bufs))

	// Nothing of ours is queued: TryRead returns at once, with none of it.
	start := time.Now()
	n, err := p.TryRead(bufs, sizes, offset)
	if err != nil {
		t.Fatalf("TryRead on an idle queue: %v", err)
	}
	if got := ours(bufs, sizes, n, dst); len(got) > 0 || time.Since(start) > time.Second {
		t.Fatalf("TryRead on an idle queue: %v after %v", got, time.Since(start))
	}

	// WaitRead waits for a packet and leaves it queued.
	waited := make(chan error, 1)
	// (Kernel chatter may wake it first; the TryReads below wait for ours.)
	go func() { waited <- p.WaitRead() }()
	sendUDP(t, ns, dst, 0, 3)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("WaitRead: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRead did not return with packets queued")
	}
	var got []int
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 3 && time.Now().Before(deadline) {
		n, err := p.TryRead(bufs, sizes, offset)
		if err != nil {
			t.Fatalf("TryRead: %v", err)
		}
		got = append(got, ours(bufs, sizes, n, dst)...)
	}
	if len(got) != 3 || got[0] != 0 || got[1] != 1 || got[2] != 2 {
		t.Fatalf("TryRead after WaitRead got datagrams %v, want [0 1 2]", got)
	}

	// A Read and TryRead polling at once share the queue: every datagram
	// is read exactly once, and TryRead is not kept out while the Read
	// waits (it finds some of them).
	const total = 200
	var mu sync.Mutex
	seen := make(map[int]int)
	fromTry := 0
	record := func(nums []int, try bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, x := range nums {
			seen[x]++
			if try {
				fromTry++
			}
		}
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	readerDone := make(chan error, 1)
	go func() {
		rb := make([][]byte, 4)
		for i := range rb {
			rb[i] = make([]byte, offset+65535)
		}
		rs := make([]int, len(rb))
		for {
			n, err := dev.Read(rb, rs, offset)
			if err != nil {
				readerDone <- err
				return
			}
			record(ours(rb, rs, n, dst), false)
		}
	}()
	time.Sleep(20 * time.Millisecond) // the Read is waiting
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		for i := 0; i < total; i += 10 {
			sendUDP(t, ns, dst, i, 10)
			time.Sleep(time.Millisecond)
		}
	}()
	deadline = time.Now().Add(10 * time.Second)
	for count() < total && time.Now().Before(deadline) {
		n, err := p.TryRead(bufs, sizes, offset)
		if err != nil {
			t.Fatalf("TryRead: %v", err)
		}
		record(ours(bufs, sizes, n, dst), true)
	}
	<-sendDone
	time.Sleep(50 * time.Millisecond) // anything late would show as a duplicate
	dev.Close()
	if err := <-readerDone; err == nil {
		t.Fatal("Read after Close returned no error")
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range total {
		if seen[i] != 1 {
			t.Fatalf("datagram %d read %d times (%d of %d distinct seen)", i, seen[i], len(seen), total)
		}
	}
	if fromTry == 0 {
		t.Error("TryRead read none of the datagrams while a Read was waiting")
	}
	t.Logf("%d of %d datagrams read by TryRead, the rest by the waiting Read", fromTry, total)

	// Once closed, WaitRead fails rather than wait.
	if err := p.WaitRead(); err == nil {
		t.Fatal("WaitRead after Close returned no error")
	}
}
