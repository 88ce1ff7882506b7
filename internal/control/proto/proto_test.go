package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

func TestRoundTrip(t *testing.T) {
	msgs := []*Message{
		{RegisterRequest: &RegisterRequest{AuthKey: "k", Hostname: "h", Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1")}}},
		{RegisterResponse: &RegisterResponse{Error: "no", Code: CodeAuthKeyUsed}},
		{MapRequest: &MapRequest{}},
		{MapResponse: &MapResponse{KeepAlive: true}},
		{MapResponse: &MapResponse{Delta: &netmap.Delta{From: 1, To: 2}}},
		{EndpointUpdate: &EndpointUpdate{}},
		{Error: &Error{Code: CodeBadRequest, Message: "bad"}},
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := Write(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range msgs {
		m, err := Read(&buf, MaxClientMessage)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.bodies() != 1 || m.V != Version {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	if _, err := Read(&buf, MaxClientMessage); err != io.EOF {
		t.Fatalf("at end: %v", err)
	}
}

func frame(body string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(b, body...)
}

func TestRefusals(t *testing.T) {
	if err := Write(io.Discard, &Message{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("no body: %v", err)
	}
	if err := Write(io.Discard, &Message{MapRequest: &MapRequest{}, EndpointUpdate: &EndpointUpdate{}}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("two bodies: %v", err)
	}
	huge := binary.BigEndian.AppendUint32(nil, MaxServerMessage+1)
	if _, err := Read(bytes.NewReader(huge), MaxServerMessage); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	for body, want := range map[string]error{
		`{"v":2,"mapRequest":{}}`:            ErrVersion,
		`{"mapRequest":{}}`:                  ErrVersion,
		`{"v":1}`:                            ErrMalformed,
		`{"v":1,"mapRequest":{},"error":{}}`: ErrMalformed,
		`not json`:                           ErrMalformed,
		`{"v":1,"mapResponse":{}}`:           ErrMalformed,
		`{"v":1,"mapResponse":{"keepAlive":true,"delta":{"from":1,"to":2}}}`:                                                 ErrMalformed,
		`{"v":1,"mapResponse":{"delta":{"from":1,"to":2,"peersChanged":[{"ID":3,"LastSeen":"9999-12-31T23:59:59-23:59"}]}}}`: ErrMalformed,
		`{"v":1,"mapRequest":{"endpoints":["nope"]}}`:                                                                        ErrMalformed,
	} {
		if _, err := Read(bytes.NewReader(frame(body)), MaxServerMessage); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", body, err, want)
		}
	}
	if _, err := Read(bytes.NewReader(frame(`{"v":1}`)[:6]), MaxServerMessage); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	if err := CheckEndpoints([]netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:0")}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("port 0: %v", err)
	}
	if err := CheckEndpoints(make([]netip.AddrPort, MaxEndpoints+1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("too many: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add(frame(`{"v":1,"mapRequest":{"endpoints":["192.0.2.1:5"]}}`))
	f.Add(frame(`{"v":1,"mapResponse":{"delta":{"from":1,"to":2}}}`))
	f.Add(frame(`{"v":1,"endpointUpdate":{"endpoints":[]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Read(bytes.NewReader(b), MaxServerMessage)
		if err != nil {
			return
		}
		if m.bodies() != 1 {
			t.Fatalf("accepted %d bodies", m.bodies())
		}
		if _, err := Encode(m); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func TestRotationProof(t *testing.T) {
	gen := func() noise.PrivateKey {
		k, err := noise.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	server, oldK, newK, other := gen(), gen(), gen(), gen()
	proof, err := RotationProof(newK, pubkey.Server{PublicKey: server.PublicKey()}, pubkey.Node{PublicKey: oldK.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRotationProof(server, pubkey.Node{PublicKey: oldK.PublicKey()}, pubkey.Node{PublicKey: newK.PublicKey()}, proof); err != nil {
		t.Fatalf("valid proof refused: %v", err)
	}
	// Bound to the old key, the new key and the server.
	if VerifyRotationProof(server, pubkey.Node{PublicKey: other.PublicKey()}, pubkey.Node{PublicKey: newK.PublicKey()}, proof) == nil {
		t.Error("proof accepted for another old key")
	}
	if VerifyRotationProof(server, pubkey.Node{PublicKey: oldK.PublicKey()}, pubkey.Node{PublicKey: other.PublicKey()}, proof) == nil {
		t.Error("proof accepted for a key the sender does not hold")
	}
	if VerifyRotationProof(other, pubkey.Node{PublicKey: oldK.PublicKey()}, pubkey.Node{PublicKey: newK.PublicKey()}, proof) == nil {
		t.Error("proof accepted by another server")
	}
	bad := append([]byte(nil), proof...)
	bad[0] ^= 1
	if VerifyRotationProof(server, pubkey.Node{PublicKey: oldK.PublicKey()}, pubkey.Node{PublicKey: newK.PublicKey()}, bad) == nil {
		t.Error("flipped proof accepted")
	}
	// Framing: a request with a short proof does not decode.
	b, err := Encode(&Message{RotateKeyRequest: &RotateKeyRequest{NewKey: pubkey.Node{PublicKey: newK.PublicKey()}, Proof: proof[:5]}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(b[4:]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short proof: %v", err)
	}
}

func TestCheckWireGuardReports(t *testing.T) {
	ok := []WireGuardReport{{ID: 1, Online: true, LastHandshake: time.Unix(1700000000, 0), RxBytes: 10}, {ID: 2}}
	if err := CheckWireGuardReports(ok); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]WireGuardReport{
		"id 0":     {{ID: 0}},
		"repeated": {{ID: 3}, {ID: 3}},
		"year":     {{ID: 1, LastHandshake: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		"bytes":    {{ID: 1, RxBytes: 1 << 63}},
		"too many": make([]WireGuardReport, MaxWireGuardReports+1),
	} {
		if err := CheckWireGuardReports(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
