package noiseconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
)

// tcpPair returns two ends of a control connection over loopback TCP,
// handshaken in memory.
func tcpPair(t testing.TB) (client, server *Conn) {
	t.Helper()
	ck, sk := genKey(t), genKey(t)
	spub := sk.PublicKey()
	ihs, err := newHandshake(true, ProtocolVersion, ck, spub[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	rhs, err := newHandshake(false, ProtocolVersion, sk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m1, _, _, err := ihs.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := rhs.ReadMessage(nil, m1); err != nil {
		t.Fatal(err)
	}
	m2, srx, stx, err := rhs.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, ctx, crx, err := ihs.ReadMessage(nil, m2)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	cn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sn := <-acc
	client = newConn(cn, nil, spub, ctx, crx)
	server = newConn(sn, nil, ck.PublicKey(), stx, srx)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestWriteSplitsFrames(t *testing.T) {
	var w bytes.Buffer
	c, _ := tcpPair(t)
	c.nc = &captureConn{w: &w}
	msg := make([]byte, 2*MaxPlaintext+1)
	if n, err := c.Write(msg); err != nil || n != len(msg) {
		t.Fatal(n, err)
	}
	var sizes []int
	b := w.Bytes()
	for len(b) > 0 {
		n := int(binary.BigEndian.Uint16(b))
		sizes = append(sizes, n)
		b = b[2+n:]
	}
	if len(sizes) != 3 || sizes[0] != MaxCiphertext || sizes[1] != MaxCiphertext || sizes[2] != 1+tagSize {
		t.Fatalf("frame sizes %v", sizes)
	}
}

func TestNonceExhaustion(t *testing.T) {
	c, s := tcpPair(t)
	c.wn, s.rn = lastNonce-1, lastNonce-1
	if _, err := c.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "last" {
		t.Fatalf("%q %v", buf, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrNonceExhausted) {
		t.Fatalf("write at 2^64-1: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrNonceExhausted) {
		t.Fatalf("not sticky: %v", err)
	}

	c2, s2 := tcpPair(t)
	s2.rn = lastNonce
	c2.Write([]byte("x"))
	if _, err := s2.Read(buf); !errors.Is(err, ErrNonceExhausted) {
		t.Fatalf("read at 2^64-1: %v", err)
	}
}

func TestReadDeadlineIsResumable(t *testing.T) {
	c, s := tcpPair(t)
	// Capture one frame's bytes, then send it in two halves around a
	// read timeout.
	var w bytes.Buffer
	real := c.nc
	c.nc = &captureConn{w: &w}
	c.Write([]byte("across a timeout"))
	c.nc = real
	frame := w.Bytes()
	buf := make([]byte, 64)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := s.Read(buf); err == nil {
		t.Fatal("read with no data returned")
	}
	real.Write(frame[:5])
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := s.Read(buf); err == nil {
		t.Fatal("read of half a frame returned")
	}
	real.Write(frame[5:])
	s.SetReadDeadline(time.Time{})
	n, err := s.Read(buf)
	if err != nil || string(buf[:n]) != "across a timeout" {
		t.Fatalf("%q %v", buf[:n], err)
	}
}

func TestEOF(t *testing.T) {
	c, s := tcpPair(t)
	c.Write([]byte("bye"))
	c.Close()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "bye" {
		t.Fatalf("%q %v", got, err)
	}
}

func TestReadFrameBounds(t *testing.T) {
	var f frameReader
	huge := bytes.NewReader([]byte{0xff, 0xff})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const runs = 100
	for range runs {
		huge.Seek(0, io.SeekStart)
		if _, err := f.next(huge); !errors.Is(err, ErrFrameSize) {
			t.Fatal(err)
		}
		f.r, f.w = 0, 0
	}
	runtime.ReadMemStats(&after)
	// Only the error value is allocated, never a buffer for the claim.
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 512 {
		t.Fatalf("%d bytes allocated per huge claimed length", per)
	}
	for _, tc := range []struct {
		in   []byte
		want error
	}{
		{nil, io.EOF},
		{[]byte{0}, io.ErrUnexpectedEOF},
		{[]byte{0, 15}, ErrFrameSize},
		{[]byte{0x10, 0x11}, ErrFrameSize},
		{[]byte{0, 16, 1}, io.ErrUnexpectedEOF},
	} {
		f = frameReader{}
		if _, err := f.next(bytes.NewReader(tc.in)); !errors.Is(err, tc.want) {
			t.Errorf("%x: %v, want %v", tc.in, err, tc.want)
		}
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader and to a Conn:
// neither may panic, return a frame beyond MaxCiphertext, or accept a frame
// that was not produced with the session key.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 1, 2, 3})
	f.Add(append([]byte{0x10, 0x10}, make([]byte, MaxCiphertext)...))
	key := noise.NewPrivateKey([32]byte{1})
	spub := key.PublicKey()
	ihs, _ := newHandshake(true, ProtocolVersion, key, spub[:], nil)
	rhs, _ := newHandshake(false, ProtocolVersion, key, nil, nil)
	m1, _, _, _ := ihs.WriteMessage(nil, nil)
	rhs.ReadMessage(nil, m1)
	_, rx, tx, _ := rhs.WriteMessage(nil, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		var fr frameReader
		r := bytes.NewReader(data)
		for {
			ct, err := fr.next(r)
			if err != nil {
				break
			}
			if len(ct) < tagSize || len(ct) > MaxCiphertext {
				t.Fatalf("frame of %d bytes", len(ct))
			}
		}
		rxc, txc := *rx, *tx // fresh copies for each input
		c := newConn(&captureConn{w: io.Discard, r: bytes.NewReader(data)}, nil, spub, &txc, &rxc)
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				t.Fatalf("forged frame accepted: %x", buf[:n])
			}
			if err != nil {
				break
			}
		}
	})
}

// discardConn is a net.Conn whose writes go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (discardConn) Close() error                { return nil }

// BenchmarkWriteLarge writes a 1 MiB message (a large network map) in
// batched frames. The batch buffer comes from a shared pool (a session
// keeps none between writes): 0 allocs/op.
func BenchmarkWriteLarge(b *testing.B) {
	c, _ := tcpPair(b)
	c.nc = discardConn{}
	msg := make([]byte, 1<<20)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
}
