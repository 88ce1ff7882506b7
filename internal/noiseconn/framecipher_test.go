package noiseconn

import (
	"bytes"
	"io"
	"testing"

	flynn "github.com/flynn/noise"
)

// The frame cipher must produce exactly what flynn/noise's cipher does
// for the same key and nonce — the handshake vector only covers nonce 0,
// so a nonce laid out wrongly (endianness, offset) shows here.
func TestFrameCipherMatchesFlynn(t *testing.T) {
	key := [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	ref := flynn.UnsafeNewCipherState(cipherSuite, key, 0).Cipher()
	fc := newFrameCipher(flynn.UnsafeNewCipherState(cipherSuite, key, 0))
	pt := []byte("frame body for the nonce layout check")
	for _, n := range []uint64{0, 1, 255, 256, 1 << 32, 1<<56 + 3, lastNonce - 1} {
		want := ref.Encrypt(nil, n, nil, pt)
		got := fc.seal(nil, n, pt)
		if !bytes.Equal(got, want) {
			t.Fatalf("nonce %d: sealed %x, flynn/noise %x", n, got, want)
		}
		back, err := fc.open(nil, n, want)
		if err != nil || !bytes.Equal(back, pt) {
			t.Fatalf("nonce %d: open %q %v", n, back, err)
		}
		if _, err := fc.open(nil, n+1, want); err == nil {
			t.Fatalf("nonce %d: opened under nonce %d", n, n+1)
		}
	}
}

// A frame written or read allocates nothing: relayed traffic crosses
// these connections frame by frame.
func TestFramesAllocateNothing(t *testing.T) {
	c, s := tcpPair(t)
	var wire bytes.Buffer
	c.nc = &captureConn{w: &wire}
	small := make([]byte, 1200)
	if a := testing.AllocsPerRun(100, func() {
		if _, err := c.Write(small); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("Write of one frame: %v allocs", a)
	}
	large := make([]byte, 3*MaxPlaintext+7)
	if a := testing.AllocsPerRun(20, func() {
		if _, err := c.Write(large); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("batched Write: %v allocs", a)
	}

	s.r = bytes.NewReader(wire.Bytes())
	buf := make([]byte, MaxPlaintext)
	read := func() {
		if _, err := io.ReadFull(s, buf[:len(small)]); err != nil {
			t.Fatal(err)
		}
	}
	read() // the frame buffer is allocated on first use
	if a := testing.AllocsPerRun(50, read); a != 0 {
		t.Errorf("Read of one frame: %v allocs", a)
	}
}
