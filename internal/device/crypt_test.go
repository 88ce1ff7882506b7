package device

import (
	"bytes"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/wire"
)

// newCryptPair returns two keypairs that are each other's mirror.
func newCryptPair() (send, recv *Keypair) {
	k1, k2 := [32]byte{1, 2, 3}, [32]byte{4, 5, 6}
	send = newKeypair(nil, k1, k2, true, 1, 2, time.Now())
	k1, k2 = [32]byte{1, 2, 3}, [32]byte{4, 5, 6}
	recv = newKeypair(nil, k2, k1, false, 2, 1, time.Now())
	return send, recv
}

func fillBatch(b *batch, kp *Keypair, n, size int, start uint64) {
	for i := 0; i < n; i++ {
		e := getElem()
		e.pkt = e.buf[MessageTransportStart : MessageTransportStart+size]
		for j := range e.pkt {
			e.pkt[j] = byte(i + j)
		}
		e.keypair, e.counter = kp, start+uint64(i)
		b.elems = append(b.elems, e)
	}
}

func TestSealOpenBatch(t *testing.T) {
	send, recv := newCryptPair()
	var b batch
	fillBatch(&b, send, 5, 1000, 7)
	want := make([][]byte, 5)
	for i, e := range b.elems {
		want[i] = append([]byte(nil), e.pkt...)
	}
	sealBatch(&b, 1420, new([12]byte))
	for i, e := range b.elems {
		h, _, err := wire.ParseTransport(e.pkt)
		if err != nil || h.Counter != uint64(7+i) || h.Receiver != 2 || len(e.pkt) != 16+1008+16 {
			t.Fatalf("sealed %d: %+v len %d %v", i, h, len(e.pkt), err)
		}
		e.keypair = recv
	}
	b.elems[3].pkt[40] ^= 1 // tamper with one
	openBatch(&b, new([12]byte))
	for i, e := range b.elems {
		if i == 3 {
			if !e.drop {
				t.Fatal("tampered packet opened")
			}
			continue
		}
		if e.drop || !bytes.Equal(e.pkt[:1000], want[i]) || len(e.pkt) != 1008 {
			t.Fatalf("packet %d: drop=%v len %d", i, e.drop, len(e.pkt))
		}
	}
}

func benchmarkCrypt(b *testing.B, size int, open bool) {
	send, recv := newCryptPair()
	const n = 64
	var bt batch
	fillBatch(&bt, send, n, size, 0)
	orig := make([]int, n)
	for i, e := range bt.elems {
		orig[i] = len(e.pkt)
	}
	sealed := make([][]byte, n)
	nonce := new([12]byte)
	if open {
		sealBatch(&bt, 1420, nonce)
		for i, e := range bt.elems {
			sealed[i] = append([]byte(nil), e.pkt...)
			e.keypair = recv
		}
	}
	b.SetBytes(int64(n * size))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i, e := range bt.elems {
			if open {
				e.pkt = e.buf[:len(sealed[i])]
				copy(e.pkt, sealed[i])
			} else {
				e.pkt = e.buf[MessageTransportStart : MessageTransportStart+orig[i]]
			}
		}
		if open {
			openBatch(&bt, nonce)
		} else {
			sealBatch(&bt, 1420, nonce)
		}
	}
}

// Per batch of 64 packets of 1400 bytes; allocs/op must stay 0.
func BenchmarkSealBatch(b *testing.B) { benchmarkCrypt(b, 1400, false) }
func BenchmarkOpenBatch(b *testing.B) { benchmarkCrypt(b, 1400, true) }

func TestCryptNoAllocs(t *testing.T) {
	send, _ := newCryptPair()
	var bt batch
	fillBatch(&bt, send, 16, 1400, 0)
	nonce := new([12]byte)
	allocs := testing.AllocsPerRun(100, func() {
		for _, e := range bt.elems {
			e.pkt = e.buf[MessageTransportStart : MessageTransportStart+1400]
		}
		sealBatch(&bt, 1420, nonce)
	})
	if allocs != 0 {
		t.Fatalf("sealBatch allocates %.1f times per batch", allocs)
	}
}
