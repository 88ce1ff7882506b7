package udp

import (
	"encoding/binary"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSendTTL: a datagram sent with SendTTL arrives with that time to live
// (IPv4) or hop limit (IPv6), read by a receiver asking the kernel for it
// (IP_RECVTTL, IPV6_RECVHOPLIMIT) on loopback, where nothing decrements
// it; a batch sent right after on the same socket has the default again.
func TestSendTTL(t *testing.T) {
	tr, _, _ := open(t)
	for _, tc := range []struct {
		network, addr string
		level, opt    int
	}{
		{"udp4", "127.0.0.1:0", unix.IPPROTO_IP, unix.IP_RECVTTL},
		{"udp6", "[::1]:0", unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT},
	} {
		t.Run(tc.network, func(t *testing.T) {
			pc, err := net.ListenPacket(tc.network, tc.addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", tc.network, err)
			}
			defer pc.Close()
			rc, _ := pc.(*net.UDPConn).SyscallConn()
			var serr error
			rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), tc.level, tc.opt, 1) })
			if serr != nil {
				t.Fatal(serr)
			}
			ep, err := tr.ParseEndpoint(pc.LocalAddr().(*net.UDPAddr).AddrPort().String())
			if err != nil {
				t.Fatal(err)
			}
			if err := tr.SendTTL([]byte("opener"), ep, 2); err != nil {
				t.Fatal(err)
			}
			if got := recvTTL(t, pc.(*net.UDPConn)); got != 2 {
				t.Fatalf("time to live %d, want 2", got)
			}
			if err := tr.Send([][]byte{[]byte("data")}, ep); err != nil {
				t.Fatal(err)
			}
			if got := recvTTL(t, pc.(*net.UDPConn)); got == 2 || got < 32 {
				t.Fatalf("a batch after it: time to live %d, want the default", got)
			}
		})
	}
	if err := tr.SendTTL([]byte("x"), mustEP(t, tr, "127.0.0.1:9"), 0); err == nil {
		t.Fatal("a time to live of 0 was accepted")
	}
}

func mustEP(t *testing.T, tr *Transport, s string) *Endpoint {
	t.Helper()
	ep, err := tr.ParseEndpoint(s)
	if err != nil {
		t.Fatal(err)
	}
	return ep.(*Endpoint)
}

// recvTTL reads one datagram and returns the time to live of its control
// message.
func recvTTL(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf, oob := make([]byte, 64), make([]byte, 128)
	_, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL) ||
			(m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT) {
			return int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	t.Fatalf("no time to live in %d control messages", len(msgs))
	return 0
}
