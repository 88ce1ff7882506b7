package wire

import (
	"bytes"
	"testing"
)

func TestTypeChecksSizes(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		typ  byte
		err  error
	}{
		{"empty", nil, 0, ErrShort},
		{"three bytes", []byte{1, 0, 0}, 0, ErrShort},
		{"initiation", mk(TypeInitiation, InitiationSize), TypeInitiation, nil},
		{"initiation 147", mk(TypeInitiation, InitiationSize-1), 0, ErrSize},
		{"initiation 149", mk(TypeInitiation, InitiationSize+1), 0, ErrSize},
		{"response", mk(TypeResponse, ResponseSize), TypeResponse, nil},
		{"response 91", mk(TypeResponse, ResponseSize-1), 0, ErrSize},
		{"cookie", mk(TypeCookieReply, CookieReplySize), TypeCookieReply, nil},
		{"cookie 65", mk(TypeCookieReply, CookieReplySize+1), 0, ErrSize},
		{"keepalive", mk(TypeTransport, MinTransportSize), TypeTransport, nil},
		{"transport 31", mk(TypeTransport, MinTransportSize-1), 0, ErrSize},
		{"transport huge", mk(TypeTransport, MaxTransportSize+1), 0, ErrSize},
		{"type 0", mk(0, 100), 0, ErrUnknownType},
		{"type 5", mk(5, 100), 0, ErrUnknownType},
		{"reserved set", func() []byte { b := mk(TypeTransport, 64); b[2] = 1; return b }(), 0, ErrReserved},
	} {
		typ, err := Type(tc.b)
		if typ != tc.typ || err != tc.err {
			t.Errorf("%s: got %d %v, want %d %v", tc.name, typ, err, tc.typ, tc.err)
		}
	}
}

func mk(typ byte, n int) []byte {
	b := make([]byte, n)
	if n > 0 {
		b[0] = typ
	}
	return b
}

func TestRoundTrips(t *testing.T) {
	var in Initiation
	in.Sender = 0xdeadbeef
	for i := range in.Ephemeral {
		in.Ephemeral[i] = byte(i)
	}
	in.Static[47], in.Timestamp[27], in.Mac1[0], in.Mac2[15] = 1, 2, 3, 4
	var buf [InitiationSize]byte
	raw := in.Marshal(buf[:])
	if raw[0] != 1 || raw[4] != 0xef || raw[7] != 0xde {
		t.Fatalf("header % x", raw[:8])
	}
	var out Initiation
	if err := out.Unmarshal(raw); err != nil || out != in {
		t.Fatalf("initiation round trip: %v", err)
	}
	if err := out.Unmarshal(raw[:147]); err != ErrShort {
		t.Fatalf("short: %v", err)
	}

	r := Response{Sender: 1, Receiver: 2}
	r.Ephemeral[31], r.Empty[0], r.Mac1[1], r.Mac2[2] = 9, 8, 7, 6
	var rb [ResponseSize]byte
	var r2 Response
	if err := r2.Unmarshal(r.Marshal(rb[:])); err != nil || r2 != r {
		t.Fatalf("response round trip: %v", err)
	}

	c := CookieReply{Receiver: 5}
	c.Nonce[23], c.Cookie[31] = 1, 2
	var cb [CookieReplySize]byte
	var c2 CookieReply
	if err := c2.Unmarshal(c.Marshal(cb[:])); err != nil || c2 != c {
		t.Fatalf("cookie round trip: %v", err)
	}
	if err := c2.Unmarshal(rb[:CookieReplySize]); err != ErrType {
		t.Fatalf("wrong type: %v", err)
	}

	tb := make([]byte, 48)
	PutTransportHeader(tb, TransportHeader{Receiver: 3, Counter: 1 << 40})
	h, sealed, err := ParseTransport(tb)
	if err != nil || h.Receiver != 3 || h.Counter != 1<<40 || len(sealed) != 32 {
		t.Fatalf("transport: %+v %d %v", h, len(sealed), err)
	}
}

func TestPaddedLen(t *testing.T) {
	for _, tc := range []struct{ n, mtu, want int }{
		{0, 1420, 0}, {1, 1420, 16}, {16, 1420, 16}, {17, 1420, 32},
		{1419, 1420, 1420}, {1420, 1420, 1420}, {1415, 1420, 1420}, {1500, 1420, 1500}, {100, 0, 112},
	} {
		if got := PaddedLen(tc.n, tc.mtu); got != tc.want {
			t.Errorf("PaddedLen(%d,%d)=%d want %d", tc.n, tc.mtu, got, tc.want)
		}
	}
}

// FuzzParse feeds arbitrary datagrams to every parser: none may panic, and
// whatever parses must marshal back to the same bytes.
func FuzzParse(f *testing.F) {
	f.Add(mk(TypeInitiation, InitiationSize))
	f.Add(mk(TypeResponse, ResponseSize))
	f.Add(mk(TypeCookieReply, CookieReplySize))
	f.Add(mk(TypeTransport, MinTransportSize))
	f.Add([]byte{4, 0, 0, 0, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, err := Type(b)
		if err != nil {
			return
		}
		switch typ {
		case TypeInitiation:
			var m Initiation
			if err := m.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			var out [InitiationSize]byte
			if !bytes.Equal(m.Marshal(out[:]), b) {
				t.Fatal("initiation round trip")
			}
		case TypeResponse:
			var m Response
			if err := m.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			var out [ResponseSize]byte
			if !bytes.Equal(m.Marshal(out[:]), b) {
				t.Fatal("response round trip")
			}
		case TypeCookieReply:
			var m CookieReply
			if err := m.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			var out [CookieReplySize]byte
			if !bytes.Equal(m.Marshal(out[:]), b) {
				t.Fatal("cookie round trip")
			}
		case TypeTransport:
			h, sealed, err := ParseTransport(b)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]byte, len(b))
			PutTransportHeader(out, h)
			copy(out[TransportDataOffset:], sealed)
			if !bytes.Equal(out, b) {
				t.Fatal("transport round trip")
			}
		}
	})
}

func BenchmarkParseTransport(b *testing.B) {
	pkt := mk(TypeTransport, 1452)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Type(pkt); err != nil {
			b.Fatal(err)
		}
		ParseTransport(pkt)
	}
}
