package relay

import (
	"bytes"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/noise"
)

func genKey(t testing.TB) noise.PrivateKey {
	t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestMapValidate(t *testing.T) {
	k := genKey(t).PublicKey().String()
	good := Map{Regions: []Region{{ID: 1, Code: "fra", URL: "https://relay.example:8443", PublicKey: k, STUN: "relay.example:3478"}}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []Map{
		{Regions: []Region{{ID: 0, URL: "https://x", PublicKey: k}}},
		{Regions: []Region{{ID: 1, URL: "https://x", PublicKey: k}, {ID: 1, URL: "https://y", PublicKey: k}}},
		{Regions: []Region{{ID: 1, URL: "ftp://x", PublicKey: k}}},
		{Regions: []Region{{ID: 1, URL: "https://x", PublicKey: "nope"}}},
	} {
		if err := m.Validate(); err == nil || !strings.HasPrefix(err.Error(), "relay map: ") {
			t.Fatalf("%+v: %v", m, err)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(append(AppendFrameHeader(nil, FrameSend, KeyLen+3), make([]byte, KeyLen+3)...))
	f.Add(AppendFrameHeader(nil, FrameSend, MaxFramePayload+1))
	f.Add(append(AppendFrameHeader(nil, FramePing, 8), 1, 2, 3, 4, 5, 6, 7, 8))
	f.Add([]byte{FrameRecv, 0, 0})
	buf := make([]byte, MaxFramePayload)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			typ, p, err := ReadFrame(r, &buf)
			if err != nil {
				return
			}
			if len(p) > MaxFramePayload {
				t.Fatalf("payload %d", len(p))
			}
			// Re-encoding gives back the bytes read.
			enc := append(AppendFrameHeader(nil, typ, len(p)), p...)
			consumed := len(b) - r.Len()
			if !bytes.HasSuffix(b[:consumed], enc) {
				t.Fatalf("re-encoded %x", enc)
			}
		}
	})
}
