package tun

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/nettest"
)

const offset = 16 // room a caller leaves in front of each packet

// bothModes runs test in offload mode and in plain mode (forced by
// WARREN_TUN_NO_OFFLOAD=1).
func bothModes(t *testing.T, test func(t *testing.T)) {
	t.Run("offload", func(t *testing.T) {
		t.Setenv(EnvNoOffload, "0")
		test(t)
	})
	t.Run("plain", func(t *testing.T) {
		t.Setenv(EnvNoOffload, "1")
		test(t)
	})
}

// offloadWanted tells whether the running subtest of bothModes is the
// offload one.
func offloadWanted() bool { return os.Getenv(EnvNoOffload) != "1" }

func needTUN(t *testing.T) {
	t.Helper()
	nettest.NeedNetns(t)
	if _, err := os.Stat(tunClonePath); err != nil {
		if os.Getenv(nettest.RequireEnv) == "1" {
			t.Fatalf("no %s: %v", tunClonePath, err)
		}
		t.Skipf("no %s: %v", tunClonePath, err)
	}
}

// newTUN creates a TUN device inside ns; it is closed when the test ends.
func newTUN(t *testing.T, ns *nettest.NS, name string, mtu int) Device {
	t.Helper()
	var dev Device
	if err := ns.Do(func() (err error) {
		dev, err = Create(name, mtu)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}

func setUp(t *testing.T, ns *nettest.NS, name string, up bool) {
	t.Helper()
	if err := ns.Do(func() error { return SetUp(name, up) }); err != nil {
		t.Fatal(err)
	}
}

func devName(t *testing.T, dev Device) string {
	t.Helper()
	name, err := dev.Name()
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// readUDP reads from dev until a UDP packet to dst arrives (the kernel also
// sends its own IPv6 chatter into an up interface), or fails after 5s.
func readUDP(t *testing.T, dev Device, dst netip.AddrPort) (src netip.AddrPort, payload []byte) {
	t.Helper()
	type result struct {
		pkt []byte
		err error
	}
	found := make(chan result, 1)
	go func() {
		bufs := [][]byte{make([]byte, offset+65535)}
		sizes := []int{0}
		for {
			n, err := dev.Read(bufs, sizes, offset)
			if err != nil {
				found <- result{err: err}
				return
			}
			if n != 1 {
				found <- result{err: errors.New("Read returned no packet")}
				return
			}
			pkt := bufs[0][offset : offset+sizes[0]]
			if _, d, _, err := parseUDP(pkt); err == nil && d == dst {
				found <- result{pkt: bytes.Clone(pkt)}
				return
			}
		}
	}()
	select {
	case r := <-found:
		if r.err != nil {
			t.Fatal(r.err)
		}
		src, _, payload, err := parseUDP(r.pkt)
		if err != nil {
			t.Fatal(err)
		}
		return src, payload
	case <-time.After(5 * time.Second):
		dev.Close() // ends the reader
		t.Fatalf("no UDP packet to %v read from the TUN", dst)
	}
	panic("unreachable")
}

func TestCreateNameMTU(t *testing.T) { bothModes(t, testCreateNameMTU) }

func testCreateNameMTU(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtn")
	dev := newTUN(t, ns, "wgtest0", 1380)
	if got := devName(t, dev); got != "wgtest0" {
		t.Fatalf("Name() = %q", got)
	}
	if mtu, err := dev.MTU(); err != nil || mtu != 1380 {
		t.Fatalf("MTU() = %d, %v; want 1380", mtu, err)
	}
	out, err := ns.Output("ip", "-o", "link", "show", "dev", "wgtest0")
	if err != nil || !strings.Contains(out, "mtu 1380") {
		t.Fatalf("ip link show: %v\n%s", err, out)
	}
	if _, err := net.InterfaceByName("wgtest0"); err == nil {
		t.Fatal("TUN created inside a namespace is visible on the host")
	}
	wantBatch := 1
	if offloadWanted() {
		wantBatch = offloadBatchSize
	}
	if dev.BatchSize() != wantBatch {
		t.Fatalf("BatchSize() = %d, want %d", dev.BatchSize(), wantBatch)
	}
	if m := dev.(*linuxDevice).mode; m.vnetHdr != offloadWanted() || m.tso != offloadWanted() {
		t.Fatalf("mode %+v, offload wanted: %v", m, offloadWanted())
	}

	// A kernel-chosen name is reported as chosen.
	d2 := newTUN(t, ns, "wgt%d", 0)
	if got := devName(t, d2); got != "wgt0" {
		t.Fatalf("Name() of wgt%%d = %q", got)
	}
	if mtu, err := d2.MTU(); err != nil || mtu != 1500 {
		t.Fatalf("default MTU() = %d, %v", mtu, err)
	}

	// Renames are followed.
	ns.Run(t, "ip", "link", "set", "dev", "wgt0", "name", "wgrenamed")
	if got := devName(t, d2); got != "wgrenamed" {
		t.Fatalf("Name() after rename = %q", got)
	}

	// Closing removes the interface.
	if err := d2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Output("ip", "link", "show", "dev", "wgrenamed"); err == nil {
		t.Fatal("interface still there after Close")
	}
	if _, err := d2.MTU(); err == nil {
		t.Fatal("MTU() after Close returned no error")
	}
}

func TestCreateErrors(t *testing.T) { bothModes(t, testCreateErrors) }

func testCreateErrors(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wte")
	newTUN(t, ns, "wgdup", 0)
	err := ns.Do(func() error {
		d, err := Create("wgdup", 0)
		if err == nil {
			d.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("creating a second TUN of the same name succeeded")
	}
	if err := ns.Do(func() error {
		if d, err := Create("a-name-that-is-far-too-long", 0); err == nil {
			d.Close()
			return errors.New("long name accepted")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error {
		d, err := Create("wgbadmtu", 1<<20)
		if err == nil {
			d.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("MTU of 1 MiB accepted")
	}
	// The failed creation left no interface behind.
	if out, err := ns.Output("ip", "link", "show", "dev", "wgbadmtu"); err == nil {
		t.Fatalf("wgbadmtu left behind:\n%s", out)
	}
}

// configure creates an up TUN named name in ns with 100.64.0.1/24 and
// fd7a:115c:a1e0::1/64.
func configure(t *testing.T, ns *nettest.NS, name string) Device {
	t.Helper()
	dev := newTUN(t, ns, name, 1420)
	setUp(t, ns, name, true)
	nettest.AddAddr(t, ns, name, "100.64.0.1/24")
	nettest.AddAddr(t, ns, name, "fd7a:115c:a1e0::1/64")
	return dev
}

var (
	tunAddr4  = netip.MustParseAddr("100.64.0.1")
	peerAddr4 = netip.MustParseAddr("100.64.0.2")
	tunAddr6  = netip.MustParseAddr("fd7a:115c:a1e0::1")
	peerAddr6 = netip.MustParseAddr("fd7a:115c:a1e0::2")
)

func TestReadFromStack(t *testing.T) { bothModes(t, testReadFromStack) }

func testReadFromStack(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtr")
	dev := configure(t, ns, "wgr0")
	for _, tc := range []struct{ local, peer netip.Addr }{{tunAddr4, peerAddr4}, {tunAddr6, peerAddr6}} {
		dst := netip.AddrPortFrom(tc.peer, 9)
		payload := []byte("to the tun from " + tc.local.String())
		var local netip.AddrPort
		if err := ns.Do(func() error {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
			if err != nil {
				return err
			}
			defer c.Close()
			local = c.LocalAddr().(*net.UDPAddr).AddrPort()
			_, err = c.Write(payload)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		src, got := readUDP(t, dev, dst)
		if src.Addr().Unmap() != tc.local || src.Port() != local.Port() {
			t.Errorf("packet from %v, want %v port %d", src, tc.local, local.Port())
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("payload %q, want %q", got, payload)
		}
	}
}

func TestWriteToStack(t *testing.T) { bothModes(t, testWriteToStack) }

func testWriteToStack(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtw")
	dev := configure(t, ns, "wgw0")
	for _, tc := range []struct{ local, peer netip.Addr }{{tunAddr4, peerAddr4}, {tunAddr6, peerAddr6}} {
		var srv *net.UDPConn
		if err := ns.Do(func() (err error) {
			srv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.local, 0)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		dst := srv.LocalAddr().(*net.UDPAddr).AddrPort()
		src := netip.AddrPortFrom(tc.peer, 40000)

		// One batch: a good packet, one the kernel refuses (IP version 5),
		// another good one. The refused one is skipped.
		var bufs [][]byte
		for _, p := range [][]byte{
			udpPacket(src, dst, []byte("first")),
			{0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			udpPacket(src, dst, []byte("second")),
		} {
			bufs = append(bufs, append(make([]byte, offset), p...))
		}
		n, err := dev.Write(bufs, offset)
		if n != len(bufs) || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(bufs))
		}
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		for _, want := range []string{"first", "second"} {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("%v: %v", tc.local, err)
			}
			if string(buf[:n]) != want || from.Addr().Unmap() != src.Addr() || from.Port() != src.Port() {
				t.Fatalf("got %q from %v, want %q from %v", buf[:n], from, want, src)
			}
		}
	}
}

func TestCloseUnblocksRead(t *testing.T) { bothModes(t, testCloseUnblocksRead) }

func testCloseUnblocksRead(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtc")
	dev := newTUN(t, ns, "wgc0", 0)
	errc := make(chan error, 1)
	go func() {
		_, err := dev.Read([][]byte{make([]byte, 2000)}, []int{0}, 0)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := dev.Write([][]byte{udpPacket(netip.MustParseAddrPort("100.64.0.2:1"),
		netip.MustParseAddrPort("100.64.0.1:2"), nil)}, 0); err == nil {
		t.Fatal("Write after Close returned no error")
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func nextEvent(t *testing.T, dev Device) (Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-dev.Events():
		return ev, ok
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	panic("unreachable")
}

func expectEvent(t *testing.T, dev Device, want Event) {
	t.Helper()
	if ev, ok := nextEvent(t, dev); !ok || ev != want {
		t.Fatalf("event %v (open %v), want %v", ev, ok, want)
	}
}

func TestEvents(t *testing.T) { bothModes(t, testEvents) }

func testEvents(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtv")
	before := runtime.NumGoroutine()
	dev := newTUN(t, ns, "wgv0", 1400)

	setUp(t, ns, "wgv0", true)
	expectEvent(t, dev, EventUp)
	ns.Run(t, "ip", "link", "set", "dev", "wgv0", "mtu", "1280")
	expectEvent(t, dev, EventMTUUpdate)
	if mtu, err := dev.MTU(); err != nil || mtu != 1280 {
		t.Fatalf("MTU() = %d, %v", mtu, err)
	}
	// Changes of other interfaces are not reported.
	ns.Run(t, "ip", "link", "set", "lo", "down")
	ns.Run(t, "ip", "link", "set", "lo", "up")
	setUp(t, ns, "wgv0", false)
	expectEvent(t, dev, EventDown)

	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if ev, ok := nextEvent(t, dev); ok {
		t.Fatalf("event %v after Close; want the channel closed", ev)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before,
				buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openRawTUN opens a TUN queue the way a parent process handing it over
// would, without this package.
func openRawTUN(name string, flags uint16) (*os.File, error) {
	fd, err := unix.Open(tunClonePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "inherited-tun"), nil
}

func TestCreateFromFile(t *testing.T) { bothModes(t, testCreateFromFile) }

func testCreateFromFile(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtf")
	var dev Device
	if err := ns.Do(func() error {
		f, err := openRawTUN("wgf0", unix.IFF_TUN|unix.IFF_NO_PI)
		if err != nil {
			return err
		}
		if err := SetUp("wgf0", true); err != nil {
			f.Close()
			return err
		}
		dev, err = CreateFromFile(f, 1300)
		if err != nil {
			f.Close()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	// The passer shares the open file, and so its O_NONBLOCK: reads must
	// not be raw system calls, which would hold the P if it turned
	// blocking (queues of our own are read raw).
	if dev.(*linuxDevice).reader.raw {
		t.Error("a queue from CreateFromFile is read with raw system calls")
	}
	// The link was already up: that is the first event.
	expectEvent(t, dev, EventUp)
	if got := devName(t, dev); got != "wgf0" {
		t.Fatalf("Name() = %q", got)
	}
	if mtu, err := dev.MTU(); err != nil || mtu != 1300 {
		t.Fatalf("MTU() = %d, %v", mtu, err)
	}
	nettest.AddAddr(t, ns, "wgf0", "100.64.0.1/24")
	dst := netip.MustParseAddrPort("100.64.0.2:9")
	if err := ns.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("inherited"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, payload := readUDP(t, dev, dst); string(payload) != "inherited" {
		t.Fatalf("payload %q", payload)
	}

	// A TAP queue is refused, and left open.
	if err := ns.Do(func() error {
		f, err := openRawTUN("wgtap0", unix.IFF_TAP|unix.IFF_NO_PI)
		if err != nil {
			return err
		}
		defer f.Close()
		if d, err := CreateFromFile(f, 0); err == nil {
			d.Close()
			return errors.New("CreateFromFile accepted a TAP queue")
		}
		_, err = f.Stat()
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// A queue of another namespace is refused: ioctls by name would miss.
	{
		var f *os.File
		if err := ns.Do(func() (err error) {
			f, err = openRawTUN("wgother0", unix.IFF_TUN|unix.IFF_NO_PI)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		other := nettest.NewNS(t, "wto")
		if err := other.Do(func() error {
			if d, err := CreateFromFile(f, 0); err == nil {
				d.Close()
				return errors.New("CreateFromFile accepted a queue of another namespace")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// An inherited queue opened with IFF_VNET_HDR (its header size left at 12
// by the parent) is used with the header, its offloads on, or off with
// WARREN_TUN_NO_OFFLOAD=1.
func TestCreateFromFileVnetHdr(t *testing.T) { bothModes(t, testCreateFromFileVnetHdr) }

func testCreateFromFileVnetHdr(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtfv")
	var dev Device
	if err := ns.Do(func() error {
		f, err := openRawTUN("wgfv0", unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR)
		if err != nil {
			return err
		}
		if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.TUNSETVNETHDRSZ, 12); err != nil {
			f.Close()
			return err
		}
		dev, err = CreateFromFile(f, 1420)
		if err != nil {
			f.Close()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	m := dev.(*linuxDevice).mode
	if !m.vnetHdr || m.tso != offloadWanted() {
		t.Fatalf("mode %+v, offload wanted: %v", m, offloadWanted())
	}
	wantBatch := 1
	if offloadWanted() {
		wantBatch = offloadBatchSize
	}
	if dev.BatchSize() != wantBatch {
		t.Fatalf("BatchSize() = %d, want %d", dev.BatchSize(), wantBatch)
	}
	setUp(t, ns, "wgfv0", true)
	nettest.AddAddr(t, ns, "wgfv0", "100.64.0.1/24")

	// Reading: a UDP datagram from the stack.
	dst := netip.MustParseAddrPort("100.64.0.2:9")
	if err := ns.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("inherited vnet"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, payload := readUDP(t, dev, dst); string(payload) != "inherited vnet" {
		t.Fatalf("payload %q", payload)
	}

	// Writing: a UDP datagram to a socket of the stack.
	var srv *net.UDPConn
	if err := ns.Do(func() (err error) {
		srv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tunAddr4, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	pkt := udpPacket(netip.AddrPortFrom(peerAddr4, 40000), srv.LocalAddr().(*net.UDPAddr).AddrPort(), []byte("back"))
	if n, err := dev.Write([][]byte{append(make([]byte, offset), pkt...)}, offset); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	if n, _, err := srv.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "back" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}
