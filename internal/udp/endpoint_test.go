package udp

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestParseEndpoint(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	loZone := "%" + strconv.Itoa(lo.Index)
	tr := New()
	for _, tc := range []struct{ in, want string }{
		{"198.18.0.1:51820", "198.18.0.1:51820"},
		{"[fd00::1]:51820", "[fd00::1]:51820"},
		{"[FD00:0:0::1]:1", "[fd00::1]:1"},
		{"[::ffff:198.18.0.1]:51820", "198.18.0.1:51820"},
		{"0.0.0.0:0", "0.0.0.0:0"},
		{"255.255.255.255:65535", "255.255.255.255:65535"},
		{"[fe80::1%7]:51820", "[fe80::1%7]:51820"},
		{"[fe80::1%lo]:51820", "[fe80::1" + loZone + "]:51820"},
		{"[fe80::1%0]:51820", "[fe80::1]:51820"},
	} {
		ep, err := tr.ParseEndpoint(tc.in)
		if err != nil {
			t.Errorf("ParseEndpoint(%q): %v", tc.in, err)
			continue
		}
		if ep.String() != tc.want {
			t.Errorf("ParseEndpoint(%q) = %q, want %q", tc.in, ep.String(), tc.want)
		}
		again, _ := tr.ParseEndpoint(tc.want)
		if again != ep {
			t.Errorf("ParseEndpoint(%q) and (%q) are different pointers", tc.in, tc.want)
		}
	}
	for _, in := range []string{
		"", "198.18.0.1", "198.18.0.1:", ":51820", "198.18.0.1:65536", "198.18.0.1:-1",
		"198.18.0.1:port", "example.com:51820", "localhost:51820", "fd00::1:51820",
		"[fd00::1]", "[fd00::1]:", "fd00::1", "[198.18.0.1]:51820", " 198.18.0.1:51820",
		"198.18.0.1:51820 ", "198.18.0.1%lo:51820", "[fe80::1%no-such-if0]:51820", "1.2.3:4",
	} {
		if ep, err := tr.ParseEndpoint(in); err == nil {
			t.Errorf("ParseEndpoint(%q) = %v, want an error", in, ep)
		} else if !strings.HasPrefix(err.Error(), "udp: endpoint") {
			t.Errorf("ParseEndpoint(%q): unclear error %q", in, err)
		}
	}
}

func TestEndpointSockaddr(t *testing.T) {
	tr := New()
	ep, _ := tr.ParseEndpoint("198.18.0.1:51820")
	e := ep.(*Endpoint)
	name, n := e.sockaddr()
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(name))
	if n != unix.SizeofSockaddrInet4 || sa.Family != unix.AF_INET || sa.Addr != [4]byte{198, 18, 0, 1} ||
		[2]byte(unsafe.Slice((*byte)(unsafe.Pointer(&sa.Port)), 2)) != [2]byte{0xca, 0x6c} {
		t.Fatalf("IPv4 sockaddr %+v", sa)
	}
	ep, _ = tr.ParseEndpoint("[fe80::1%3]:1")
	e = ep.(*Endpoint)
	name, n = e.sockaddr()
	sa6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(name))
	if n != unix.SizeofSockaddrInet6 || sa6.Family != unix.AF_INET6 || sa6.Scope_id != 3 ||
		sa6.Addr != netip.MustParseAddr("fe80::1").As16() {
		t.Fatalf("IPv6 sockaddr %+v", sa6)
	}
	// Decoding what the kernel would return gives the same address back.
	for _, s := range []string{"198.18.0.1:51820", "[fe80::1%3]:1", "[fd00::2]:65535"} {
		e := tr.endpoints.get(netip.MustParseAddrPort(s))
		var raw unix.RawSockaddrInet6
		name, n := e.sockaddr()
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&raw)), unsafe.Sizeof(raw)), unsafe.Slice(name, n))
		ap, ok := addrPortFromSockaddr(&raw)
		if !ok || ap.String() != s {
			t.Fatalf("round trip of %s gave %v", s, ap)
		}
	}
	// A mapped source (from a dual-stack peer) is unmapped.
	raw := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: netip.MustParseAddr("::ffff:198.18.0.9").As16()}
	putPort(&raw.Port, 7)
	if ap, _ := addrPortFromSockaddr(&raw); ap.String() != "198.18.0.9:7" {
		t.Fatalf("mapped source decoded as %v", ap)
	}
}

func TestEndpointTableBounded(t *testing.T) {
	var tab endpointTable
	first := tab.get(netip.MustParseAddrPort("198.18.0.1:1"))
	if tab.get(netip.MustParseAddrPort("198.18.0.1:1")) != first {
		t.Fatal("same address, different pointers")
	}
	gen := tab.gen.Load()
	for i := 2; i <= maxEndpoints; i++ {
		tab.get(netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), uint16(i)))
	}
	if len(tab.m) != maxEndpoints || tab.gen.Load() != gen {
		t.Fatalf("%d entries, generation %d->%d", len(tab.m), gen, tab.gen.Load())
	}
	tab.get(netip.MustParseAddrPort("198.18.0.2:1"))
	if len(tab.m) != 1 || tab.gen.Load() == gen {
		t.Fatalf("full table not replaced: %d entries", len(tab.m))
	}
	// The old pointer is still a valid endpoint, just no longer canonical.
	if first.String() != "198.18.0.1:1" || tab.get(first.Addr()) == first {
		t.Fatal("old endpoint broken or still canonical after the reset")
	}
	var c endpointCache
	ap := netip.MustParseAddrPort("198.18.0.3:3")
	e := c.get(&tab, ap)
	if c.get(&tab, ap) != e || tab.get(ap) != e {
		t.Fatal("cache disagrees with the table")
	}
}
