package stun

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 5769 sample messages (sections 2.1-2.3). Their MESSAGE-INTEGRITY
// uses this password; checking it proves the vectors are transcribed right.
const rfc5769Password = "VOkJxbRl1RmTxUk/WvJxBt"

var (
	rfc5769Request = `
	00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
	80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
	00 24 00 04 6e 00 01 ff
	80 29 00 08 93 2f f9 b1 51 26 3b 36
	00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
	00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
	80 28 00 04 e5 7a 3b cf`
	rfc5769IPv4Response = `
	01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
	80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
	00 20 00 08 00 01 a1 47 e1 12 a6 43
	00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
	80 28 00 04 c0 7d 4c 96`
	rfc5769IPv6Response = `
	01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
	80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
	00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
	00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
	80 28 00 04 c8 fb 0b 4c`
)

// checkIntegrity verifies the MESSAGE-INTEGRITY attribute at its offset
// (RFC 5389 15.4: HMAC-SHA1 over the message up to the attribute, with the
// length field counting up to its end).
func checkIntegrity(t *testing.T, msg []byte) {
	t.Helper()
	off := bytes.Index(msg, []byte{0x00, 0x08, 0x00, 0x14})
	if off < HeaderLen {
		t.Fatal("no MESSAGE-INTEGRITY")
	}
	pre := bytes.Clone(msg[:off])
	binary.BigEndian.PutUint16(pre[2:], uint16(off+24-HeaderLen))
	mac := hmac.New(sha1.New, []byte(rfc5769Password))
	mac.Write(pre)
	if !hmac.Equal(mac.Sum(nil), msg[off+4:off+24]) {
		t.Fatal("MESSAGE-INTEGRITY does not verify: vector mistyped")
	}
}

func TestRFC5769(t *testing.T) {
	tx := TxID(unhex(t, "b7e7a701 bc34d686 fa87dfae"))
	for _, tc := range []struct {
		name, msg string
		typ       uint16
		mapped    netip.AddrPort
	}{
		{"request", rfc5769Request, typeBindingRequest, netip.AddrPort{}},
		{"ipv4 response", rfc5769IPv4Response, typeBindingSuccess, netip.MustParseAddrPort("192.0.2.1:32853")},
		{"ipv6 response", rfc5769IPv6Response, typeBindingSuccess, netip.MustParseAddrPort("[2001:db8:1234:5678:11:2233:4455:6677]:32853")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := unhex(t, tc.msg)
			checkIntegrity(t, b)
			if !Is(b) {
				t.Fatal("Is = false")
			}
			m, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.Type != tc.typ || m.TxID != tx || m.Mapped != tc.mapped || !m.HasFingerprint {
				t.Fatalf("parsed %+v", m)
			}
			// A flipped bit anywhere before FINGERPRINT breaks it.
			bad := bytes.Clone(b)
			bad[len(bad)-12] ^= 1
			if _, err := Parse(bad); err != ErrMalformed {
				t.Fatalf("corrupted: %v", err)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	tx := NewTxID()
	req := AppendRequest(nil, tx)
	m, err := Parse(req)
	if err != nil || !m.IsBindingRequest() || m.TxID != tx || !m.HasFingerprint {
		t.Fatalf("request: %+v %v", m, err)
	}
	for _, a := range []string{"198.51.100.7:41641", "[2001:db8::1]:1", "[::ffff:10.0.0.1]:65535"} {
		ap := netip.MustParseAddrPort(a)
		resp := AppendResponse(nil, tx, ap)
		m, err := Parse(resp)
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if err != nil || !m.IsBindingSuccess() || m.TxID != tx || m.Mapped != want || !m.HasFingerprint {
			t.Fatalf("%s: %+v %v", a, m, err)
		}
	}
}

func TestNotSTUN(t *testing.T) {
	// A WireGuard handshake initiation (type 1, three zero bytes) and
	// short or odd-length inputs are not STUN.
	wg := make([]byte, 148)
	wg[0] = 1
	for _, b := range [][]byte{nil, {0}, wg, make([]byte, 19), append(AppendRequest(nil, TxID{}), 0)} {
		if Is(b) {
			t.Fatalf("Is(%x) = true", b)
		}
		if _, err := Parse(b); err != ErrNotSTUN {
			t.Fatalf("Parse(%x): %v", b, err)
		}
	}
	// Truncated attribute.
	b := AppendRequest(nil, TxID{})
	b = append(b[:HeaderLen], 0x80, 0x22, 0x00, 0x40)
	binary.BigEndian.PutUint16(b[2:], 4)
	if _, err := Parse(b); err != ErrMalformed {
		t.Fatalf("truncated: %v", err)
	}
}

func listenUDP(t *testing.T, addr string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Skipf("no %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func TestRequestAgainstServer(t *testing.T) {
	for _, fam := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(fam, func(t *testing.T) {
			srvConn := listenUDP(t, fam)
			s := &Server{}
			done := make(chan error, 1)
			go func() { done <- s.Serve(srvConn) }()
			pc := listenUDP(t, fam)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := Request(ctx, pc, srvConn.LocalAddr())
			if err != nil {
				t.Fatal(err)
			}
			if want := pc.LocalAddr().(*net.UDPAddr).AddrPort(); got != want {
				t.Fatalf("mapped %v, want %v", got, want)
			}
			// Garbage is ignored, and the server keeps answering.
			pc.WriteTo([]byte("not stun"), srvConn.LocalAddr())
			if _, err := Request(ctx, pc, srvConn.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			// The socket is usable afterwards: no deadline left behind.
			srvConn.Close()
			if err := <-done; err != nil {
				t.Fatalf("Serve: %v", err)
			}
			// Counted only once Serve has returned: the client may read
			// an answer before Serve counts it. Request may retransmit, so
			// at least two requests, the garbage ignored, and every request
			// answered but for at most one: a retransmission Serve read
			// just before the Close above, whose answer then failed.
			if r, a := s.Requests.Load(), s.Answered.Load(); a < 2 || a > r || r-a > 1 || s.Ignored.Load() != 1 {
				t.Fatalf("requests %d, answered %d, ignored %d", r, a, s.Ignored.Load())
			}
		})
	}
}

func TestRequestTimeout(t *testing.T) {
	silent := listenUDP(t, "127.0.0.1:0")
	pc := listenUDP(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Request(ctx, pc, silent.LocalAddr()); err == nil {
		t.Fatal("no error")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	// Retransmitted: the silent server got more than one request.
	silent.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n := 0
	for {
		if _, _, err := silent.ReadFrom(buf); err != nil {
			break
		}
		n++
	}
	if n < 2 {
		t.Fatalf("%d requests sent", n)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{rfc5769Request, rfc5769IPv4Response, rfc5769IPv6Response} {
		f.Add(unhex(f, s))
	}
	f.Add(AppendResponse(nil, TxID{1}, netip.MustParseAddrPort("[2001:db8::1]:9")))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to something that parses the same.
		if m.IsBindingSuccess() && m.Mapped.IsValid() {
			m2, err := Parse(AppendResponse(nil, m.TxID, m.Mapped))
			if err != nil || m2.Mapped.Addr().Unmap() != m.Mapped.Addr().Unmap() || m2.Mapped.Port() != m.Mapped.Port() {
				t.Fatalf("re-encoded %+v: %+v %v", m, m2, err)
			}
		}
	})
}
