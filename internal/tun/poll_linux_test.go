package tun

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/nettest"
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
	bufs, sizes := makeBufs(8)

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
		rb, rs := makeBufs(4)
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

// dialUSO returns a UDP socket of ns connected to dst whose sends are cut
// into datagrams of seg bytes (UDP_SEGMENT): one send is one USO
// super-packet on the TUN. It is closed when the test ends.
func dialUSO(t *testing.T, ns *nettest.NS, dst netip.AddrPort, seg int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, seg)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("UDP_SEGMENT: %v", serr)
	}
	return c
}

// TestWaitReadKept: a super-packet that a TryRead read but had no room for
// is kept for the next read, and WaitRead must not wait for the queue to
// announce it (it never will: the queue may be empty). With one P, a TUN
// reader parked there would leave the packet until the next TryRead.
func TestWaitReadKept(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtk")
	dev := newOffloadTUN(t, ns, "wgk0")
	if !dev.mode.uso {
		t.Skip("the kernel does not take USO")
	}
	dst := netip.AddrPortFrom(peerAddr4, 9)
	// Two sends of 10 datagrams each (UDP_SEGMENT): two super-packets.
	c := dialUSO(t, ns, dst, 100)
	for range 2 {
		if _, err := c.Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	bufs, sizes := makeBufs(15)
	// Room for the first super-packet's 10 segments, not the second's.
	// (Skip any IPv6 chatter of the kernel's ahead of them.)
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := dev.TryRead(bufs, sizes, offset)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(ours10(bufs, sizes, n, dst)); got > 0 {
			if got != 10 {
				t.Fatalf("TryRead returned %d of our datagrams, want the first super-packet's 10", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the datagrams did not come out of the TUN")
		}
	}
	if dev.held == 0 {
		t.Fatal("the second super-packet was not kept")
	}
	waited := make(chan error, 1)
	go func() { waited <- dev.WaitRead() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		dev.Close() // ends the wait
		t.Fatal("WaitRead waited although a packet was kept")
	}
	n, err := dev.TryRead(bufs, sizes, offset)
	if err != nil || len(ours10(bufs, sizes, n, dst)) != 10 {
		t.Fatalf("TryRead after WaitRead: %d packets (%v), want the kept super-packet's 10", n, err)
	}
}

// ours10 returns the packets among the n read that are UDP datagrams to dst.
func ours10(bufs [][]byte, sizes []int, n int, dst netip.AddrPort) [][]byte {
	var got [][]byte
	for i := range n {
		_, d, _, err := parseUDP(bufs[i][offset : offset+sizes[i]])
		if err == nil && d == dst {
			got = append(got, bufs[i])
		}
	}
	return got
}
