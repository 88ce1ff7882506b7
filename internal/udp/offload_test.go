package udp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/conn"
)

// openMode opens a transport with the offloads on or off.
func openMode(t testing.TB, offload bool) (*Transport, []conn.ReceiveFunc, uint16) {
	t.Helper()
	v := "1"
	if offload {
		v = "0"
	}
	t.Setenv(EnvNoOffload, v)
	tr, fns, port := open(t)
	gso, gro := tr.Offloads()
	if !offload && (gso || gro) {
		t.Fatalf("%s=1 but offloads gso %v gro %v", EnvNoOffload, gso, gro)
	}
	return tr, fns, port
}

// needOffload skips (or fails) when the kernel offers no UDP offloads.
func needOffload(t testing.TB, tr *Transport) {
	t.Helper()
	if gso, gro := tr.Offloads(); !gso || !gro {
		t.Skipf("kernel offers UDP_SEGMENT %v, UDP_GRO %v", gso, gro)
	}
}

// sized returns datagrams of the given sizes, each filled with a pattern of
// its index so that a misplaced or cut datagram shows.
func sized(sizes ...int) [][]byte {
	bufs := make([][]byte, len(sizes))
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(i*7 + j)
		}
		if n >= 4 {
			binary.BigEndian.PutUint32(b, uint32(i))
		}
		bufs[i] = b
	}
	return bufs
}

func repeat(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

func concat(parts ...[]int) []int {
	var s []int
	for _, p := range parts {
		s = append(s, p...)
	}
	return s
}

// collectSized is collect with receive buffers of bufSize bytes and batches
// of batchN.
func collectSized(t testing.TB, tr *Transport, fn conn.ReceiveFunc, want, batchN, bufSize int) []datagram {
	t.Helper()
	got, err := collectSizedErr(tr, fn, want, batchN, bufSize)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// collectSizedErr is collectSized for any goroutine.
func collectSizedErr(tr *Transport, fn conn.ReceiveFunc, want, batchN, bufSize int) ([]datagram, error) {
	done := make(chan error, 1)
	var got []datagram
	go func() {
		b := newBatch(batchN, bufSize)
		for len(got) < want {
			n, err := fn(b.bufs, b.sizes, b.eps)
			if err != nil {
				done <- err
				return
			}
			if n <= 0 || n > batchN {
				done <- fmt.Errorf("receive returned %d", n)
				return
			}
			for i := 0; i < n; i++ {
				got = append(got, datagram{bytes.Clone(b.bufs[i][:b.sizes[i]]), b.eps[i]})
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			return got, fmt.Errorf("after %d of %d datagrams: %w", len(got), want, err)
		}
	case <-time.After(5 * time.Second):
		tr.Close()
		<-done
		return got, fmt.Errorf("received %d of %d datagrams within 5s", len(got), want)
	}
	return got, nil
}

// expectNothingMore fails if fn receives anything within a short while.
func expectNothingMore(t *testing.T, tr *Transport, fn conn.ReceiveFunc) {
	t.Helper()
	done := make(chan int, 1)
	go func() {
		b := newBatch(BatchSize, 65535)
		n, _ := fn(b.bufs, b.sizes, b.eps)
		done <- n
	}()
	select {
	case n := <-done:
		t.Fatalf("%d unexpected datagrams", n)
	case <-time.After(50 * time.Millisecond):
		tr.Close() // ends the receive
		<-done
	}
}

func check(t *testing.T, got []datagram, sent [][]byte, from conn.Endpoint) {
	t.Helper()
	if len(got) != len(sent) {
		t.Fatalf("got %d datagrams, want %d", len(got), len(sent))
	}
	for i := range sent {
		if !bytes.Equal(got[i].data, sent[i]) {
			t.Fatalf("datagram %d: %d bytes %.8x..., want %d bytes %.8x...", i, len(got[i].data), got[i].data, len(sent[i]), sent[i])
		}
		if got[i].from != from {
			t.Fatalf("datagram %d from %v, want the canonical %v", i, got[i].from, from)
		}
	}
}

// batches of datagram sizes that the engine or the kernel make interesting.
var offloadBatches = []struct {
	name  string
	sizes []int
}{
	{"100x1452+short", concat(repeat(100, 1452), []int{700})},
	{"mixed", concat(repeat(5, 1000), repeat(3, 200), []int{1500}, repeat(10, 1452), []int{1451, 1452, 1452},
		[]int{0, 32, 32}, repeat(40, 148), []int{148, 149, 1}, repeat(2, 65507))},
	{"128x100", repeat(128, 100)},      // over the old kernel limit of 64 segments
	{"300x1200", repeat(300, 1200)},    // several chunks
	{"60x1452", repeat(60, 1452)},      // more than one message's worth (45)
	{"distinct", []int{1, 2, 3, 4, 5}}, // nothing to coalesce
}

func TestOffloadLoopback(t *testing.T) {
	for _, fam := range []struct {
		name, host string
		fn         int
	}{{"ipv4", "127.0.0.1", 0}, {"ipv6", "::1", 1}} {
		for _, mode := range []struct {
			name       string
			send, recv bool
		}{{"both", true, true}, {"off", false, false}, {"gso-only", true, false}, {"gro-only", false, true}} {
			for _, bufSize := range []int{65535, 2048} {
				t.Run(fmt.Sprintf("%s/%s/buf%d", fam.name, mode.name, bufSize), func(t *testing.T) {
					a, _, aPort := openMode(t, mode.send)
					b, fns, bPort := openMode(t, mode.recv)
					if mode.send || mode.recv {
						needOffload(t, a)
					}
					to, _ := a.ParseEndpoint(net.JoinHostPort(fam.host, fmt.Sprint(bPort)))
					from, _ := b.ParseEndpoint(net.JoinHostPort(fam.host, fmt.Sprint(aPort)))
					for _, bt := range offloadBatches {
						if bufSize < 65535 && bt.name == "mixed" {
							continue // holds datagrams larger than the buffers
						}
						sent := sized(bt.sizes...)
						sentMsgs := a.Stats.SentMessages.Load()
						gsoMsgs := a.Stats.GSOMessages.Load()
						groMsgs := b.Stats.GROMessages.Load()
						recvMsgs := b.Stats.RecvMessages.Load()
						if err := a.Send(sent, to); err != nil {
							t.Fatalf("%s: %v", bt.name, err)
						}
						got := collectSized(t, b, fns[fam.fn], len(sent), BatchSize, bufSize)
						check(t, got, sent, from)
						sentMsgs = a.Stats.SentMessages.Load() - sentMsgs
						gsoMsgs = a.Stats.GSOMessages.Load() - gsoMsgs
						groMsgs = b.Stats.GROMessages.Load() - groMsgs
						recvMsgs = b.Stats.RecvMessages.Load() - recvMsgs
						t.Logf("%s: %d datagrams sent in %d messages (%d GSO), received in %d messages (%d GRO)",
							bt.name, len(sent), sentMsgs, gsoMsgs, recvMsgs, groMsgs)
						coalescable := bt.name != "distinct"
						switch {
						case mode.send && coalescable && (gsoMsgs == 0 || sentMsgs >= uint64(len(sent))):
							t.Fatalf("%s: GSO not used: %d messages, %d with GSO", bt.name, sentMsgs, gsoMsgs)
						case !mode.send && (gsoMsgs != 0 || sentMsgs != uint64(len(sent))):
							t.Fatalf("%s: GSO off but %d messages, %d with GSO", bt.name, sentMsgs, gsoMsgs)
						case mode.send && mode.recv && coalescable && (groMsgs == 0 || recvMsgs >= uint64(len(sent))):
							t.Fatalf("%s: GRO did not coalesce: %d messages, %d split", bt.name, recvMsgs, groMsgs)
						case !(mode.send && mode.recv) && (groMsgs != 0 || recvMsgs != uint64(len(sent))):
							t.Fatalf("%s: %d messages received, %d split; want one per datagram", bt.name, recvMsgs, groMsgs)
						}
					}
					expectNothingMore(t, b, fns[fam.fn])
				})
			}
		}
	}
}

// TestGROMoreThanBufs receives coalesced messages with fewer buffers than
// they hold: the rest waits for the next calls, in order.
func TestGROMoreThanBufs(t *testing.T) {
	for _, bufSize := range []int{65535, 2048} {
		t.Run(fmt.Sprint(bufSize), func(t *testing.T) {
			a, _, aPort := openMode(t, true)
			b, fns, bPort := openMode(t, true)
			needOffload(t, a)
			to, _ := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", bPort))
			from, _ := b.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", aPort))
			// 40 datagrams in one message, then three plain ones, then 100
			// in three messages.
			sent := sized(concat(repeat(40, 1000), []int{10, 20, 30}, repeat(99, 1452), []int{3})...)
			if err := a.Send(sent[:40], to); err != nil {
				t.Fatal(err)
			}
			if err := a.Send(sent[40:43], to); err != nil {
				t.Fatal(err)
			}
			if err := a.Send(sent[43:], to); err != nil {
				t.Fatal(err)
			}
			bt := newBatch(8, bufSize)
			var got []datagram
			for calls := 0; len(got) < len(sent); calls++ {
				if calls > len(sent) {
					t.Fatalf("%d calls for %d datagrams", calls, len(got))
				}
				n, err := fns[0](bt.bufs, bt.sizes, bt.eps)
				if err != nil {
					t.Fatal(err)
				}
				if n < 1 || n > 8 {
					t.Fatalf("receive returned %d", n)
				}
				for i := 0; i < n; i++ {
					got = append(got, datagram{bytes.Clone(bt.bufs[i][:bt.sizes[i]]), bt.eps[i]})
				}
			}
			check(t, got, sent, from)
			if b.Stats.GROMessages.Load() < 3 {
				t.Fatalf("only %d messages coalesced", b.Stats.GROMessages.Load())
			}
			expectNothingMore(t, b, fns[0])
		})
	}
}

// TestGROSpill has one read bring more datagrams than the batch holds: the
// first read of a receive function plans for one datagram per message.
func TestGROSpill(t *testing.T) {
	a, _, aPort := openMode(t, true)
	b, fns, bPort := openMode(t, true)
	needOffload(t, a)
	to, _ := a.ParseEndpoint(fmt.Sprintf("[::1]:%d", bPort))
	from, _ := b.ParseEndpoint(fmt.Sprintf("[::1]:%d", aPort))
	// Two sends: three messages of 45 and one of 5, then 200 more.
	sent := sized(concat(repeat(140, 1452), repeat(200, 1000))...)
	if err := a.Send(sent[:140], to); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(sent[140:], to); err != nil {
		t.Fatal(err)
	}
	bt := newBatch(BatchSize, 65535)
	var got []datagram
	for len(got) < len(sent) {
		n, err := fns[1](bt.bufs, bt.sizes, bt.eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			got = append(got, datagram{bytes.Clone(bt.bufs[i][:bt.sizes[i]]), bt.eps[i]})
		}
		if len(got) == n && n != BatchSize {
			t.Fatalf("first receive returned %d, want a full batch", n)
		}
	}
	check(t, got, sent, from)
	expectNothingMore(t, b, fns[1])
}

// TestGSOFallback simulates routes that refuse segmentation offload.
func TestGSOFallback(t *testing.T) {
	t.Run("EIO", func(t *testing.T) {
		a, _, aPort := openMode(t, true)
		b, fns, bPort := openMode(t, true)
		needOffload(t, a)
		var faults int
		a.sendFault = func(size, segs int) syscall.Errno {
			faults++
			return unix.EIO
		}
		to, _ := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", bPort))
		from, _ := b.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", aPort))
		// A plain datagram goes out before the first run fails: it must
		// not be sent twice.
		sent := sized(concat([]int{100}, repeat(50, 1452), []int{3, 3, 3})...)
		if err := a.Send(sent, to); err != nil {
			t.Fatal(err)
		}
		check(t, collectSized(t, b, fns[0], len(sent), BatchSize, 65535), sent, from)
		if faults != 1 || a.Stats.GSODisabled.Load() != 1 || a.v4.gsoSegs.Load() != 0 {
			t.Fatalf("%d faults, %d disabled, IPv4 segments %d", faults, a.Stats.GSODisabled.Load(), a.v4.gsoSegs.Load())
		}
		if a.Stats.GSOMessages.Load() != 0 || a.Stats.SentMessages.Load() != uint64(len(sent)) {
			t.Fatalf("%d messages, %d with GSO", a.Stats.SentMessages.Load(), a.Stats.GSOMessages.Load())
		}
		// Later sends go without GSO; the IPv6 socket keeps it.
		if err := a.Send(sent, to); err != nil {
			t.Fatal(err)
		}
		check(t, collectSized(t, b, fns[0], len(sent), BatchSize, 65535), sent, from)
		if faults != 1 || a.Stats.GSOMessages.Load() != 0 || a.v6.gsoSegs.Load() == 0 {
			t.Fatalf("after fallback: %d faults, %d GSO messages, IPv6 segments %d", faults, a.Stats.GSOMessages.Load(), a.v6.gsoSegs.Load())
		}
		expectNothingMore(t, b, fns[0])
	})
	t.Run("EINVAL-segments", func(t *testing.T) {
		// A kernel with UDP_MAX_SEGMENTS 64 refuses 128 segments.
		a, _, aPort := openMode(t, true)
		b, fns, bPort := openMode(t, true)
		needOffload(t, a)
		a.v4.gsoSegs.Store(gsoSegmentsNew)
		a.sendFault = func(size, segs int) syscall.Errno {
			if segs > gsoSegmentsOld {
				return unix.EINVAL
			}
			return 0
		}
		to, _ := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", bPort))
		from, _ := b.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", aPort))
		sent := sized(repeat(128, 100)...)
		if err := a.Send(sent, to); err != nil {
			t.Fatal(err)
		}
		check(t, collectSized(t, b, fns[0], len(sent), BatchSize, 65535), sent, from)
		if a.v4.gsoSegs.Load() != gsoSegmentsOld || a.Stats.GSODisabled.Load() != 0 || a.Stats.GSOMessages.Load() != 2 {
			t.Fatalf("segments %d, %d disabled, %d GSO messages", a.v4.gsoSegs.Load(), a.Stats.GSODisabled.Load(), a.Stats.GSOMessages.Load())
		}
	})
	t.Run("other-errors", func(t *testing.T) {
		// An error unrelated to GSO is returned, and GSO stays on.
		a, _, _ := openMode(t, true)
		needOffload(t, a)
		a.sendFault = func(size, segs int) syscall.Errno { return unix.EPERM }
		to, _ := a.ParseEndpoint("127.0.0.1:9")
		if err := a.Send(sized(repeat(4, 100)...), to); err == nil {
			t.Fatal("no error")
		}
		if a.v4.gsoSegs.Load() == 0 {
			t.Fatal("GSO switched off")
		}
	})
}

func TestOffloadEnv(t *testing.T) {
	tr, _, _ := openMode(t, false)
	if gso, gro := tr.Offloads(); gso || gro {
		t.Fatalf("offloads %v %v", gso, gro)
	}
	for _, s := range []*socket{tr.v4, tr.v6} {
		var err error
		var v int
		s.rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO) })
		if err == nil && v != 0 {
			t.Fatal("UDP_GRO on")
		}
	}
	tr2, _, _ := openMode(t, true)
	needOffload(t, tr2)
	if got := tr2.v4.gsoSegs.Load(); got != kernelGSOSegments() {
		t.Fatalf("segment limit %d", got)
	}
}

func TestParseRelease(t *testing.T) {
	for _, tc := range []struct {
		in           string
		major, minor int
	}{{"6.18.44-fc-v657", 6, 18}, {"6.9", 6, 9}, {"5.4.0-150-generic", 5, 4}, {"6.8.0+", 6, 8}, {"", 0, 0}, {"x", 0, 0}} {
		if a, b := parseRelease(tc.in); a != tc.major || b != tc.minor {
			t.Errorf("parseRelease(%q) = %d, %d", tc.in, a, b)
		}
	}
}

func TestGROSize(t *testing.T) {
	b := make([]byte, groCmsgSpace)
	put := func(b []byte, level, typ int32, data []byte) int {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.SetLen(unix.CmsgLen(len(data)))
		h.Level, h.Type = level, typ
		copy(b[unix.CmsgLen(0):], data)
		return unix.CmsgSpace(len(data))
	}
	le := binary.NativeEndian.AppendUint32(nil, 1452)
	n := put(b, unix.IPPROTO_UDP, unix.UDP_GRO, le)
	if got := groSize(b[:n]); got != 1452 {
		t.Fatalf("groSize = %d", got)
	}
	// After another control message.
	n = put(b, unix.SOL_SOCKET, unix.SO_TIMESTAMP, make([]byte, 16))
	n += put(b[n:], unix.IPPROTO_UDP, unix.UDP_GRO, le)
	if got := groSize(b[:n]); got != 1452 {
		t.Fatalf("groSize after another = %d", got)
	}
	for _, bad := range [][]byte{nil, b[:8], make([]byte, 24)} {
		if got := groSize(bad); got != 0 {
			t.Fatalf("groSize(%x) = %d", bad, got)
		}
	}
	put(b, unix.IPPROTO_UDP, unix.UDP_GRO, le)
	binary.NativeEndian.PutUint64(b, 1000) // longer than the buffer
	if got := groSize(b); got != 0 {
		t.Fatalf("groSize of an overlong message = %d", got)
	}
	if n := putGSOProbe(); n != 1452 {
		t.Fatalf("UDP_SEGMENT control message carries %d", n)
	}
}

// putGSOProbe writes a UDP_SEGMENT control message and reads it back the
// way the kernel does.
func putGSOProbe() int {
	b := make([]byte, gsoCmsgSpace)
	putGSOCmsg(b, 1452)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	if int(h.Len) != unix.CmsgLen(2) || h.Level != unix.IPPROTO_UDP || h.Type != unix.UDP_SEGMENT {
		return -1
	}
	return int(binary.NativeEndian.Uint16(b[unix.CmsgLen(0):]))
}

// TestOffloadConcurrentSenders has goroutines send runs of equal-sized
// datagrams to both families at once; every datagram arrives once.
func TestOffloadConcurrentSenders(t *testing.T) {
	a, _, _ := openMode(t, true)
	b, fns, bPort := openMode(t, true)
	needOffload(t, a)
	to4, _ := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", bPort))
	to6, _ := a.ParseEndpoint(fmt.Sprintf("[::1]:%d", bPort))
	const senders, sends, per = 4, 5, 50
	errs := make(chan error, senders)
	for g := 0; g < senders; g++ {
		go func() {
			to := []conn.Endpoint{to4, to6}[g%2]
			for i := 0; i < sends; i++ {
				bufs := sized(repeat(per, 1000+g)...)
				for _, b := range bufs {
					b[4] = byte(g)
				}
				if err := a.Send(bufs, to); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	want := senders / 2 * sends * per
	type result struct {
		ds  []datagram
		err error
	}
	got := make(chan result, 2)
	for _, fn := range fns {
		go func() {
			ds, err := collectSizedErr(b, fn, want, BatchSize, 65535)
			got <- result{ds, err}
		}()
	}
	for g := 0; g < senders; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for range fns {
		r := <-got
		if r.err != nil {
			t.Fatal(r.err)
		}
		ds := r.ds
		// Per sender, the datagrams arrive in order.
		next := map[byte]uint32{}
		for _, d := range ds {
			g := d.data[4]
			if len(d.data) != 1000+int(g) {
				t.Fatalf("datagram of %d bytes from sender %d", len(d.data), g)
			}
			if i := binary.BigEndian.Uint32(d.data); i != next[g]%per {
				t.Fatalf("sender %d: datagram %d, want %d", g, i, next[g]%per)
			}
			next[g]++
		}
	}
	if a.Stats.GSOMessages.Load() == 0 || b.Stats.GROMessages.Load() == 0 {
		t.Fatal("offloads unused")
	}
}
