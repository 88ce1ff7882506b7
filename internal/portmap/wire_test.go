package portmap

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The vectors are the RFCs' packet formats filled in by hand, field by
// field (the RFCs give layouts, not hex dumps).
func TestNATPMPVectors(t *testing.T) {
	// RFC 6886 §3.2: public address request, version 0 opcode 0.
	if got := pmpAddrRequest(); !bytes.Equal(got, unhex(t, "0000")) {
		t.Errorf("address request % x", got)
	}
	// §3.3: map UDP (opcode 1), reserved, internal 41641 (a2a9),
	// suggested 41641, lifetime 7200 s (1c20, the RFC's recommendation).
	if got := pmpMapRequest(41641, 41641, 7200); !bytes.Equal(got, unhex(t, "00 01 0000 a2a9 a2a9 00001c20")) {
		t.Errorf("map request % x", got)
	}
	// §3.4: delete all: lifetime 0, suggested 0.
	if got := pmpMapRequest(41641, 0, 0); !bytes.Equal(got, unhex(t, "00 01 0000 a2a9 0000 00000000")) {
		t.Errorf("delete request % x", got)
	}
	// §3.2 response: version 0, opcode 128, result 0, epoch 1000,
	// address 11.19.7.1.
	a, err := parsePMPAddrReply(unhex(t, "00 80 0000 000003e8 0b130701"))
	if err != nil || a.Result != 0 || a.Epoch != 1000 || a.Addr != netip.MustParseAddr("11.19.7.1") {
		t.Errorf("address reply %+v %v", a, err)
	}
	// §3.3 response: opcode 129, epoch 1000, internal 41641, mapped
	// 50000 (c350), lifetime 7200.
	m, err := parsePMPMapReply(unhex(t, "00 81 0000 000003e8 a2a9 c350 00001c20"))
	if err != nil || m.Internal != 41641 || m.External != 50000 || m.LifetimeSec != 7200 || m.Epoch != 1000 {
		t.Errorf("map reply %+v %v", m, err)
	}
	// §3.5 result 2 (not authorized) needs no body.
	if m, err := parsePMPMapReply(unhex(t, "00 81 0002 000003e8")); err != nil || m.Result != 2 {
		t.Errorf("refusal %+v %v", m, err)
	}
	for name, b := range map[string]string{
		"short":          "00 81 0000 000003e8 a2a9",
		"version 1":      "01 81 0000 000003e8 a2a9 c350 00001c20",
		"request opcode": "00 01 0000 000003e8 a2a9 c350 00001c20",
		"addr as map":    "00 80 0000 000003e8 0b130701",
	} {
		if _, err := parsePMPMapReply(unhex(t, b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPCPVectors(t *testing.T) {
	client := netip.MustParseAddr("198.19.1.2")
	nonce := pcpNonce{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	// RFC 6887 §7.1 header: version 2, R=0 opcode MAP (1), reserved,
	// lifetime 7200, client IP as IPv4-mapped IPv6; §11.1 MAP: nonce,
	// protocol 17, reserved, internal 41641, suggested 41641, suggested
	// external address ::ffff:0.0.0.0 (any IPv4).
	want := unhex(t, "02 01 0000 00001c20 00000000000000000000ffff c6130102"+
		"0102030405060708090a0b0c 11 000000 a2a9 a2a9 00000000000000000000ffff 00000000")
	if got := pcpMapRequest(client, nonce, 41641, 41641, netip.Addr{}, 7200); !bytes.Equal(got, want) {
		t.Errorf("MAP request\n got % x\nwant % x", got, want)
	}
	// §14.1 ANNOUNCE: opcode 0, lifetime 0, header only.
	if got := pcpAnnounceRequest(client); !bytes.Equal(got, unhex(t, "02 00 0000 00000000 00000000000000000000ffff c6130102")) {
		t.Errorf("ANNOUNCE % x", got)
	}
	// §7.2 response header: version 2, R=1 opcode 1, reserved, result 0,
	// lifetime 7200, epoch 1000, 96 reserved bits; MAP payload with the
	// assigned port 50000 and address 11.19.7.1.
	reply := unhex(t, "02 81 00 00 00001c20 000003e8 000000000000000000000000"+
		"0102030405060708090a0b0c 11 000000 a2a9 c350 00000000000000000000ffff 0b130701")
	r, err := parsePCPReply(reply)
	if err != nil || r.Op != pcpOpMap || r.Result != 0 || r.LifetimeSec != 7200 || r.Epoch != 1000 ||
		r.Nonce != nonce || r.Protocol != 17 || r.Internal != 41641 || r.External != netip.MustParseAddrPort("11.19.7.1:50000") {
		t.Errorf("MAP reply %+v %v", r, err)
	}
	// §9: a NAT-PMP-only gateway answers version 2 with its own
	// "unsupported version" (version 0, result 1).
	if _, err := parsePCPReply(unhex(t, "00 81 0001 000003e8")); !errors.Is(err, errUnsupported) {
		t.Errorf("NAT-PMP unsupported version: %v", err)
	}
	for name, b := range map[string][]byte{
		"a request":     append([]byte{2, 1}, reply[2:]...),
		"version 3":     append([]byte{3}, reply[1:]...),
		"truncated MAP": reply[:40],
		"not 4-aligned": append(append([]byte(nil), reply...), 0),
	} {
		if _, err := parsePCPReply(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseProcRoute(t *testing.T) {
	const table = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth1	00000000	FE0113C6	0003	0	0	200	00000000	0	0	0
eth0	00000000	010113C6	0003	0	0	100	00000000	0	0	0
eth0	000113C6	00000000	0001	0	0	0	00FFFFFF	0	0	0
`
	gw, err := parseProcRoute(strings.NewReader(table))
	if err != nil || gw != netip.MustParseAddr("198.19.1.1") {
		t.Fatalf("gateway %v %v, want 198.19.1.1 (lowest metric)", gw, err)
	}
	noDefault := "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\nlo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\n"
	if _, err := parseProcRoute(strings.NewReader(noDefault)); !errors.Is(err, errNoGateway) {
		t.Errorf("no default route: %v", err)
	}
}

func FuzzParsePMPReplies(f *testing.F) {
	f.Add(unhex(f, "00 80 0000 000003e8 0b130701"))
	f.Add(unhex(f, "00 81 0000 000003e8 a2a9 c350 00001c20"))
	f.Add(unhex(f, "00 81 0002"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, err := parsePMPAddrReply(b); err == nil && a.Result == 0 && !a.Addr.Is4() {
			t.Fatalf("address reply without an IPv4 address: %+v", a)
		}
		if m, err := parsePMPMapReply(b); err == nil && m.Result == 0 && len(b) < pmpMapReplyLen {
			t.Fatalf("short map reply accepted: %+v", m)
		}
	})
}

func FuzzParsePCPReply(f *testing.F) {
	f.Add(unhex(f, "02 81 00 00 00001c20 000003e8 000000000000000000000000"+
		"0102030405060708090a0b0c 11 000000 a2a9 c350 00000000000000000000ffff 0b130701"))
	f.Add(unhex(f, "02 80 00 00 00000000 000003e8 000000000000000000000000"))
	f.Add(unhex(f, "00 81 0001 000003e8"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePCPReply(b)
		if err != nil {
			return
		}
		if len(b) < pcpHeaderLen || b[1]&pcpReplyBit == 0 {
			t.Fatalf("accepted a non-reply: % x", b)
		}
		if r.Op == pcpOpMap && len(b) < pcpHeaderLen+pcpMapLen {
			t.Fatalf("accepted a short MAP reply: % x", b)
		}
	})
}
