package udp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/nettest"
)

// open opens a fresh transport on an ephemeral port, closed at the end.
func open(t testing.TB) (*Transport, []conn.ReceiveFunc, uint16) {
	t.Helper()
	tr := New()
	fns, port, err := tr.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, fns, port
}

// batch is a reusable set of receive buffers.
type batch struct {
	bufs  [][]byte
	sizes []int
	eps   []conn.Endpoint
}

func newBatch(n, size int) *batch {
	b := &batch{bufs: make([][]byte, n), sizes: make([]int, n), eps: make([]conn.Endpoint, n)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, size)
	}
	return b
}

type datagram struct {
	data []byte
	from conn.Endpoint
}

// collect calls fn until want datagrams arrived; it fails after 5 seconds.
func collect(t testing.TB, tr *Transport, fn conn.ReceiveFunc, want int) []datagram {
	t.Helper()
	got, err := collectErr(tr, fn, want)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// collectErr is collect for any goroutine. After 5 seconds it closes tr to
// end the blocked receive.
func collectErr(tr *Transport, fn conn.ReceiveFunc, want int) ([]datagram, error) {
	type result struct {
		got []datagram
		err error
	}
	done := make(chan result, 1)
	go func() {
		b := newBatch(BatchSize, 2048)
		var got []datagram
		for len(got) < want {
			n, err := fn(b.bufs, b.sizes, b.eps)
			if err != nil {
				done <- result{got, err}
				return
			}
			for i := 0; i < n; i++ {
				got = append(got, datagram{bytes.Clone(b.bufs[i][:b.sizes[i]]), b.eps[i]})
			}
		}
		done <- result{got, nil}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return r.got, fmt.Errorf("receive after %d datagrams: %w", len(r.got), r.err)
		}
		return r.got, nil
	case <-time.After(5 * time.Second):
		tr.Close()
		r := <-done
		return r.got, fmt.Errorf("received %d of %d datagrams within 5s", len(r.got), want)
	}
}

func payloads(n int, tag string) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		// Distinct contents and sizes.
		bufs[i] = []byte(fmt.Sprintf("%s datagram %03d %s", tag, i, bytes.Repeat([]byte{'x'}, i)))
	}
	return bufs
}

func TestLoopbackBatch(t *testing.T) {
	for _, tc := range []struct {
		name, host string
		fn         int // index of the receive function of that family
	}{{"ipv4", "127.0.0.1", 0}, {"ipv6", "::1", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			a, _, aPort := open(t)
			b, bFns, bPort := open(t)
			if len(bFns) != 2 {
				t.Fatalf("%d receive functions, want 2", len(bFns))
			}
			to, err := a.ParseEndpoint(net.JoinHostPort(tc.host, fmt.Sprint(bPort)))
			if err != nil {
				t.Fatal(err)
			}
			sent := payloads(64, tc.name)
			if err := a.Send(sent, to); err != nil {
				t.Fatal(err)
			}
			got := collect(t, b, bFns[tc.fn], len(sent))
			from, err := b.ParseEndpoint(net.JoinHostPort(tc.host, fmt.Sprint(aPort)))
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range got {
				if !bytes.Equal(d.data, sent[i]) {
					t.Fatalf("datagram %d = %q, want %q", i, d.data, sent[i])
				}
				if d.from != from {
					t.Fatalf("datagram %d from %v (%p), want the canonical %v (%p)", i, d.from, d.from, from, from)
				}
			}
			if want := netip.AddrPortFrom(netip.MustParseAddr(tc.host), aPort); from.Addr() != want {
				t.Fatalf("source %v, want %v", from.Addr(), want)
			}
		})
	}
}

func TestSendMoreThanBatchSize(t *testing.T) {
	a, _, _ := open(t)
	b, bFns, bPort := open(t)
	to, _ := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", bPort))
	sent := payloads(3*BatchSize+5, "big")
	if err := a.Send(sent, to); err != nil {
		t.Fatal(err)
	}
	got := collect(t, b, bFns[0], len(sent))
	for i := range got {
		if !bytes.Equal(got[i].data, sent[i]) {
			t.Fatalf("datagram %d = %q", i, got[i].data)
		}
	}
}

func TestConcurrentSenders(t *testing.T) {
	a, _, _ := open(t)
	b, bFns, bPort := open(t)
	to4, _ := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", bPort))
	to6, _ := a.ParseEndpoint(fmt.Sprintf("[::1]:%d", bPort))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := to4
			if g%2 == 1 {
				to = to6
			}
			for i := 0; i < 5; i++ {
				if err := a.Send(payloads(10, fmt.Sprint(g)), to); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var got4, got6 []datagram
	var err4, err6 error
	var rwg sync.WaitGroup
	rwg.Add(2)
	go func() { defer rwg.Done(); got4, err4 = collectErr(b, bFns[0], 200) }()
	go func() { defer rwg.Done(); got6, err6 = collectErr(b, bFns[1], 200) }()
	wg.Wait()
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := errors.Join(err4, err6); err != nil {
		t.Fatal(err)
	}
	if len(got4) != 200 || len(got6) != 200 {
		t.Fatalf("got %d IPv4 and %d IPv6 datagrams", len(got4), len(got6))
	}
}

func TestPortZeroSameForBothFamilies(t *testing.T) {
	a, _, aPort := open(t)
	b, bFns, bPort := open(t)
	if aPort == 0 || bPort == 0 {
		t.Fatal("port 0 reported")
	}
	for i, host := range []string{"127.0.0.1", "::1"} {
		to, _ := a.ParseEndpoint(net.JoinHostPort(host, fmt.Sprint(bPort)))
		if err := a.Send([][]byte{[]byte(host)}, to); err != nil {
			t.Fatal(err)
		}
		if got := collect(t, b, bFns[i], 1); string(got[0].data) != host {
			t.Fatalf("got %q", got[0].data)
		}
	}
	// An explicit port binds both families to it.
	port := bPort
	b.Close()
	c := New()
	defer c.Close()
	fns, got, err := c.Open(port)
	if err != nil {
		t.Fatal(err)
	}
	if got != port || len(fns) != 2 {
		t.Fatalf("Open(%d) = %d functions, port %d", port, len(fns), got)
	}
	// ... and a port in use is an error, not a silent other port.
	d := New()
	if _, _, err := d.Open(port); !errors.Is(err, unix.EADDRINUSE) {
		d.Close()
		t.Fatalf("Open of a port in use: %v", err)
	}
}

func TestPortZeroRetriesWhenIPv6PortTaken(t *testing.T) {
	var v6Calls int
	listenHook = func(t *Transport, network string, port uint16) (*socket, error) {
		if network == "udp6" {
			v6Calls++
			if v6Calls <= 2 {
				return nil, fmt.Errorf("simulated: %w", unix.EADDRINUSE)
			}
		}
		return t.listen(network, port)
	}
	defer func() { listenHook = (*Transport).listen }()
	_, fns, port := open(t)
	if len(fns) != 2 || port == 0 || v6Calls != 3 {
		t.Fatalf("%d functions, port %d, %d IPv6 binds", len(fns), port, v6Calls)
	}
}

func TestOneFamilyUnavailable(t *testing.T) {
	for _, missing := range []string{"udp6", "udp4"} {
		t.Run(missing, func(t *testing.T) {
			listenHook = func(t *Transport, network string, port uint16) (*socket, error) {
				if network == missing {
					return nil, fmt.Errorf("simulated: %w", unix.EAFNOSUPPORT)
				}
				return t.listen(network, port)
			}
			defer func() { listenHook = (*Transport).listen }()
			a, fns, port := open(t)
			if len(fns) != 1 || port == 0 {
				t.Fatalf("%d functions, port %d", len(fns), port)
			}
			host, other := "127.0.0.1", "::1"
			if missing == "udp4" {
				host, other = other, host
			}
			to, _ := a.ParseEndpoint(net.JoinHostPort(host, fmt.Sprint(port)))
			if err := a.Send([][]byte{[]byte("self")}, to); err != nil {
				t.Fatal(err)
			}
			if got := collect(t, a, fns[0], 1); string(got[0].data) != "self" {
				t.Fatalf("got %q", got[0].data)
			}
			bad, _ := a.ParseEndpoint(net.JoinHostPort(other, fmt.Sprint(port)))
			if err := a.Send([][]byte{[]byte("x")}, bad); err == nil || errors.Is(err, net.ErrClosed) {
				t.Fatalf("send to the missing family: %v", err)
			}
		})
	}
}

func TestCloseUnblocksReceiveAndReopen(t *testing.T) {
	tr, fns, _ := open(t)
	errc := make(chan error, len(fns))
	for _, fn := range fns {
		go func() {
			b := newBatch(4, 1500)
			_, err := fn(b.bufs, b.sizes, b.eps)
			errc <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	for range fns {
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("receive after Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not unblock a receive")
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ep, _ := tr.ParseEndpoint("127.0.0.1:9")
	if err := tr.Send([][]byte{{1}}, ep); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}

	fns2, port, err := tr.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.Open(0); err == nil {
		t.Fatal("Open of an open transport succeeded")
	}
	if again, _ := tr.ParseEndpoint("127.0.0.1:9"); again != ep {
		t.Fatal("endpoint identity changed across reopen")
	}
	to, _ := tr.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", port))
	if err := tr.Send([][]byte{[]byte("again")}, to); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, tr, fns2[0], 1); string(got[0].data) != "again" || got[0].from != to {
		t.Fatalf("after reopen got %q from %v", got[0].data, got[0].from)
	}
	// The functions of the first Open stay closed.
	b := newBatch(1, 100)
	if _, err := fns[0](b.bufs, b.sizes, b.eps); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("old receive function after reopen: %v", err)
	}
}

func getMark(t *testing.T, s *socket) int {
	t.Helper()
	var mark int
	var err error
	if cerr := s.rc.Control(func(fd uintptr) {
		mark, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	}); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return mark
}

func TestSetMark(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv(nettest.RequireEnv) == "1" {
			t.Fatal("SO_MARK needs root")
		}
		t.Skip("SO_MARK needs root")
	}
	tr, _, _ := open(t)
	if err := tr.SetMark(0x51820); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*socket{tr.v4, tr.v6} {
		if m := getMark(t, s); m != 0x51820 {
			t.Fatalf("SO_MARK = %#x", m)
		}
	}
	// The mark survives a reopen.
	tr.Close()
	if _, _, err := tr.Open(0); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*socket{tr.v4, tr.v6} {
		if m := getMark(t, s); m != 0x51820 {
			t.Fatalf("SO_MARK after reopen = %#x", m)
		}
	}
	if err := tr.SetMark(0); err != nil {
		t.Fatal(err)
	}
	if m := getMark(t, tr.v4); m != 0 {
		t.Fatalf("SO_MARK after clearing = %#x", m)
	}
}

func TestSocketBuffers(t *testing.T) {
	tr, _, _ := open(t)
	var rcv, snd int
	tr.v4.rc.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	// The kernel reports double what was set. Without root the plain
	// options are capped by net.core.[rw]mem_max.
	if os.Geteuid() == 0 && (rcv < socketBuffer || snd < socketBuffer) {
		t.Fatalf("SO_RCVBUF %d, SO_SNDBUF %d; want at least %d", rcv, snd, socketBuffer)
	}
	var v6only int
	tr.v6.rc.Control(func(fd uintptr) {
		v6only, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	})
	if v6only != 1 {
		t.Fatal("IPv6 socket is not IPV6_V6ONLY")
	}
}

// TestBetweenNamespaces runs the transport over a veth pair between two
// network namespaces, each transport opened inside its namespace.
func TestBetweenNamespaces(t *testing.T) {
	a := nettest.NewNS(t, "wua")
	b := nettest.NewNS(t, "wub")
	nettest.Veth(t, a, "ua", []string{"198.18.1.1/24", "fd00:1::1/64"}, b, "ub", []string{"198.18.1.2/24", "fd00:1::2/64"})
	var ta, tb *Transport
	var bFns []conn.ReceiveFunc
	var aPort, bPort uint16
	if err := a.Do(func() (err error) {
		ta = New()
		_, aPort, err = ta.Open(0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	if err := b.Do(func() (err error) {
		tb = New()
		bFns, bPort, err = tb.Open(51820)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if bPort != 51820 {
		t.Fatalf("port %d", bPort)
	}
	for i, tc := range []struct{ to, from string }{
		{"198.18.1.2:51820", fmt.Sprintf("198.18.1.1:%d", aPort)},
		{"[fd00:1::2]:51820", fmt.Sprintf("[fd00:1::1]:%d", aPort)},
	} {
		to, err := ta.ParseEndpoint(tc.to)
		if err != nil {
			t.Fatal(err)
		}
		sent := payloads(64, tc.to)
		if err := ta.Send(sent, to); err != nil {
			t.Fatal(err)
		}
		got := collect(t, tb, bFns[i], len(sent))
		from, _ := tb.ParseEndpoint(tc.from)
		for j := range got {
			if !bytes.Equal(got[j].data, sent[j]) || got[j].from != from {
				t.Fatalf("datagram %d: %q from %v, want %q from %v", j, got[j].data, got[j].from, sent[j], from)
			}
		}
		// Datagrams of the largest size the veth's MTU of 1500 carries
		// whole, which the offloads move in runs.
		size := 1500 - 28
		if i == 1 {
			size = 1500 - 48
		}
		sent = sized(concat(repeat(100, size), []int{size / 2})...)
		gso, gro := ta.Stats.GSOMessages.Load(), tb.Stats.GROMessages.Load()
		if err := ta.Send(sent, to); err != nil {
			t.Fatal(err)
		}
		check(t, collectSized(t, tb, bFns[i], len(sent), BatchSize, 65535), sent, from)
		gso, gro = ta.Stats.GSOMessages.Load()-gso, tb.Stats.GROMessages.Load()-gro
		t.Logf("%s: %d datagrams of %d bytes in %d GSO messages, received in %d GRO messages", tc.to, len(sent), size, gso, gro)
		if offA, _ := ta.Offloads(); offA && gso == 0 {
			t.Errorf("%s: GSO unused", tc.to)
		}
	}
}
