package relayserver

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// oldDefaultRate is the per-session rate the relay used to apply unless
// told otherwise (10 MiB/s after a 1 MiB burst), which capped every
// relayed connection of a self-hosted mesh.
const oldDefaultRate, oldDefaultBurst = 10 << 20, 1 << 20

// TestDefaultHasNoRateLimit: a relay with default options limits no
// session's rate. On a fake clock that never advances, one session moves
// more bytes to another than the old default limiter allowed in a whole
// second (its burst plus one second at its rate), none dropped for rate,
// and the relay announces no limit. The transfer goes in windows that fit
// the receiver's queue, each awaited, so queue drops cannot happen.
func TestDefaultHasNoRateLimit(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	fc := clock.NewFake(time.Now())
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed, Clock: fc})
	ca, cb := r.dial(a), r.dial(b)
	if info := ca.Info(); info.Rate != 0 {
		t.Fatalf("default relay announces a rate of %d bytes/s; want 0 (none)", info.Rate)
	}
	var got atomic.Int64
	go func() {
		for {
			m, err := cb.Recv()
			if err != nil {
				return
			}
			if m.Type == relay.MsgPacket {
				got.Add(int64(len(m.Data)))
			}
		}
	}()
	const pktSize, window = 32 << 10, 32 // 1 MiB per window, half the queue's bytes
	want := int64(oldDefaultBurst+oldDefaultRate) + 1<<20
	pkt := make([]byte, pktSize)
	var sent int64
	for sent < want {
		for range window {
			if err := ca.Send(pubkey.Node{PublicKey: b.PublicKey()}, pkt); err != nil {
				t.Fatal(err)
			}
		}
		sent += window * pktSize
		wait.Until(t, "the window accounted for", func() bool {
			st := r.srv.Stats()
			return st.PacketsOut+st.DropsRateLimit+st.DropsQueueFull == sent/pktSize
		})
		if st := r.srv.Stats(); st.DropsRateLimit != 0 || st.DropsQueueFull != 0 {
			t.Fatalf("after %d bytes in zero (fake) time: %d rate drops, %d queue drops; want none", sent, st.DropsRateLimit, st.DropsQueueFull)
		}
		wait.Until(t, "b received the window", func() bool { return got.Load() == sent })
	}
	if got.Load() <= oldDefaultBurst+oldDefaultRate {
		t.Fatalf("received %d bytes; want more than the old limiter's %d in one second", got.Load(), oldDefaultBurst+oldDefaultRate)
	}
}

// TestSendBatch: a client's batch reaches each destination whole and in
// order, across destinations, through a real relay.
func TestSendBatch(t *testing.T) {
	var ks keySet
	a, b, c := genKey(t), genKey(t), genKey(t)
	ks.add(a, b, c)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed})
	ca, _ := r.client(a, relay.ClientOptions{})
	_, chb := r.client(b, relay.ClientOptions{})
	_, chc := r.client(c, relay.ClientOptions{})
	var dsts []pubkey.Node
	var pkts [][]byte
	for i := range 100 {
		to := nodeOf(b)
		if i%3 == 0 {
			to = nodeOf(c)
		}
		dsts = append(dsts, to)
		pkts = append(pkts, []byte(fmt.Sprintf("packet %d %s", i, bytes.Repeat([]byte{'x'}, 1300))))
	}
	if err := ca.SendBatch(dsts, pkts); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		ch := chb
		if i%3 == 0 {
			ch = chc
		}
		expectPacket(t, ch, a.PublicKey(), string(pkts[i]))
	}
	if err := ca.SendBatch([]pubkey.Node{nodeOf(b)}, [][]byte{make([]byte, relay.MaxPacketSize+1)}); err == nil {
		t.Fatal("oversized packet in a batch accepted")
	}
}
