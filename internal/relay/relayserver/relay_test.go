package relayserver

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

func TestRelayBothWays(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed})
	ca, cha := r.client(a, relay.ClientOptions{})
	cb, chb := r.client(b, relay.ClientOptions{})
	for i := range 10 {
		msg := fmt.Sprintf("a->b %d", i)
		if err := ca.Send(nodeOf(b), []byte(msg)); err != nil {
			t.Fatal(err)
		}
		expectPacket(t, chb, a.PublicKey(), msg)
		msg = fmt.Sprintf("b->a %d", i)
		if err := cb.Send(nodeOf(a), []byte(msg)); err != nil {
			t.Fatal(err)
		}
		expectPacket(t, cha, b.PublicKey(), msg)
	}
	// The largest packet goes through whole; a larger one is refused
	// before it leaves.
	big := bytes.Repeat([]byte{0xa5}, relay.MaxPacketSize)
	if err := ca.Send(nodeOf(b), big); err != nil {
		t.Fatal(err)
	}
	expectPacket(t, chb, a.PublicKey(), string(big))
	if err := ca.Send(nodeOf(b), append(big, 0)); err == nil {
		t.Fatal("oversized packet sent")
	}
	if rtt, err := ca.Ping(ctxT(t, 5*time.Second)); err != nil || rtt <= 0 {
		t.Fatalf("ping: %v %v", rtt, err)
	}
	// The relay counts a packet out after its write returns, which can be
	// after the receiver has read it.
	wait.Until(t, "21 packets counted out", func() bool { return r.srv.Stats().PacketsOut >= 21 })
	st := r.srv.Stats()
	if st.Clients != 2 || st.Accepted != 2 || st.PacketsOut != 21 || st.PacketsIn != 21 || st.DropsNoPeer != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPeerGone: packets to a node not connected are dropped and counted,
// and the sender hears so at most once a second per destination. On a
// fake clock, so "within a second" is exact: 20 packets at one instant get
// one notice, a packet a second later another. A ping after the packets
// marks the end: the relay answers in order, so the notices for them all
// come before its pong, and the test needs no pause to see none follows.
func TestPeerGone(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	fc := clock.NewFake(time.Now())
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed, Clock: fc})
	c := r.dial(a)
	// notices sends n packets to b, then a ping, and counts the notices
	// about b before the pong.
	notices := func(n int) int {
		t.Helper()
		for range n {
			if err := c.Send(nodeOf(b), []byte("anyone?")); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Ping([8]byte{1}); err != nil {
			t.Fatal(err)
		}
		got := 0
		for {
			m, err := recvPacket(t, c, 5*time.Second)
			if err != nil {
				t.Fatalf("no pong: %v", err)
			}
			switch m.Type {
			case relay.MsgPeerGone:
				if m.Peer != nodeOf(b) {
					t.Fatalf("notice about %s, want %s", m.Peer, b.PublicKey())
				}
				got++
			case relay.MsgPong:
				return got
			}
		}
	}
	if g := notices(20); g != 1 {
		t.Fatalf("%d notices for 20 packets at one instant, want 1", g)
	}
	fc.Advance(time.Second - time.Millisecond)
	if g := notices(1); g != 0 {
		t.Fatalf("%d notices within the second, want 0", g)
	}
	fc.Advance(time.Millisecond)
	if g := notices(1); g != 1 {
		t.Fatalf("%d notices a second later, want 1", g)
	}
	if d := r.srv.Stats().DropsNoPeer; d != 22 {
		t.Fatalf("DropsNoPeer %d, want 22", d)
	}
}

func TestRefused(t *testing.T) {
	var ks keySet
	a := genKey(t)
	ks.add(a)
	rk := genKey(t)
	r := startRelay(t, "127.0.0.1:0", rk, Options{Allowed: ks.allowed})
	ctx := ctxT(t, 5*time.Second)
	// An unvouched key is refused at connect.
	_, err := relay.Dial(ctx, r.url, pubkey.Relay{PublicKey: rk.PublicKey()}, genKey(t), relay.DialOptions{})
	if !errors.Is(err, relay.ErrNotVouched) || !errors.Is(err, noiseconn.ErrRefused) {
		t.Fatalf("unvouched: %v", err)
	}
	if st := r.srv.Stats(); st.Refused != 1 || st.Accepted != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A wrong relay key fails the handshake, before vouching.
	_, err = relay.Dial(ctx, r.url, pubkey.Relay{PublicKey: genKey(t).PublicKey()}, a, relay.DialOptions{})
	if err == nil || errors.Is(err, relay.ErrNotVouched) {
		t.Fatalf("wrong relay key: %v", err)
	}
	// A session of another protocol can never complete: the control
	// protocol's prologue on the relay's path and token fails the
	// handshake; the relay's token on the control path is refused.
	for _, p := range []noiseconn.Protocol{
		{Path: relay.Path, UpgradeToken: relay.RelayProtocol.UpgradeToken, Name: noiseconn.ProtocolName},
		noiseconn.Control,
	} {
		_, err := noiseconn.DialWith(ctx, noiseconn.DialOptions{Protocol: p}, r.url, rk.PublicKey(), a)
		if !errors.Is(err, noiseconn.ErrRefused) {
			t.Fatalf("protocol %+v: %v", p, err)
		}
	}
	// The vouched key is accepted.
	r.dial(a)
}

func TestOversizedFrameClosesClient(t *testing.T) {
	var ks keySet
	a := genKey(t)
	ks.add(a)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed})
	// A raw session (the client in package relay never sends such a
	// frame): a frame one byte over the limit, header only; the relay
	// must not wait for (or buffer) the body.
	c, err := noiseconn.DialWith(ctxT(t, 5*time.Second), noiseconn.DialOptions{Protocol: relay.RelayProtocol}, r.url, r.key.PublicKey(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(relay.AppendFrameHeader(nil, relay.FrameSend, relay.MaxFramePayload+1)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, relay.InitialReadBuf)
	for {
		typ, _, err := relay.ReadFrame(c, &buf)
		if err != nil {
			if isTimeout(err) {
				t.Fatal("relay did not close the session")
			}
			break
		}
		if typ != relay.FrameInfo && typ != relay.FrameKeepAlive && typ != relay.FrameClosing {
			t.Fatalf("unexpected frame type %#x", typ)
		}
	}
	wait.Until(t, "stats", func() bool { st := r.srv.Stats(); return st.ClosedOversize == 1 && st.Clients == 0 })
}

func TestSlowReceiverDoesNotStallOthers(t *testing.T) {
	var ks keySet
	a, slow, b, d := genKey(t), genKey(t), genKey(t), genKey(t)
	ks.add(a, slow, b, d)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed, Rate: -1, QueuePackets: 8,
		WriteTimeout: 2 * time.Second})
	ca, _ := r.client(a, relay.ClientOptions{})
	r.dial(slow) // never reads
	cb, _ := r.client(b, relay.ClientOptions{})
	_, chd := r.client(d, relay.ClientOptions{})
	// Flood the slow receiver far past its queue and the socket buffers.
	stopFlood := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		pkt := make([]byte, 60<<10)
		for {
			select {
			case <-stopFlood:
				return
			default:
			}
			if ca.Send(nodeOf(slow), pkt) != nil {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	defer func() { close(stopFlood); <-flooded }()
	wait.Until(t, "queue-full drops", func() bool { return r.srv.Stats().DropsQueueFull > 100 })
	// Meanwhile another pair is served promptly.
	for i := range 20 {
		msg := fmt.Sprintf("b->d %d", i)
		start := time.Now()
		if err := cb.Send(nodeOf(d), []byte(msg)); err != nil {
			t.Fatal(err)
		}
		expectPacket(t, chd, b.PublicKey(), msg)
		if el := time.Since(start); el > time.Second {
			t.Fatalf("packet %d took %v", i, el)
		}
	}
	// The receiver that never reads is dropped after the write timeout.
	wait.Until(t, "write timeout", func() bool { return r.srv.Stats().ClosedWriteTimeout >= 1 })
}

// TestRateLimitDrops: a session sending faster than Rate gets Burst bytes
// through and the rest dropped and counted; the bucket refills at Rate.
// On a fake clock the bucket does not refill while the burst is sent, so
// the counts are exact: 8 of 20 packets of 8 KiB through a 64 KiB burst,
// and after one second at 10 KiB/s one more.
func TestRateLimitDrops(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	fc := clock.NewFake(time.Now())
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed, Rate: 10 << 10, Burst: relay.MaxPacketSize, Clock: fc})
	if info := r.dial(genKeyAllowed(t, &ks)).Info(); info.Rate != 10<<10 || info.Burst != relay.MaxPacketSize || info.KeepAlive != DefaultKeepAlive {
		t.Fatalf("info %+v", info)
	}
	ca, _ := r.client(a, relay.ClientOptions{})
	_, chb := r.client(b, relay.ClientOptions{})
	pkt := make([]byte, 8<<10)
	send := func(n int) {
		t.Helper()
		for range n {
			if err := ca.Send(nodeOf(b), pkt); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(sent, out int) {
		t.Helper()
		wait.Until(t, "all accounted", func() bool { st := r.srv.Stats(); return st.PacketsOut+st.DropsRateLimit == int64(sent) })
		// PacketsOut counts a packet when the relay queues it for writing,
		// before it reaches b: wait for b to have every packet counted.
		wait.Until(t, "b received what the relay sent", func() bool { return len(chb) >= int(r.srv.Stats().PacketsOut) })
		if st := r.srv.Stats(); st.PacketsOut != int64(out) || len(chb) != out {
			t.Fatalf("after %d packets: stats %+v, %d received; want %d through", sent, st, len(chb), out)
		}
	}
	send(20)
	check(20, 8)
	fc.Advance(time.Second) // 10 KiB: one 8 KiB packet, not two
	send(2)
	check(22, 9)
}

func genKeyAllowed(t *testing.T, ks *keySet) noise.PrivateKey {
	k := genKey(t)
	ks.add(k)
	return k
}

func TestReconnectAfterRelayRestart(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	rk := genKey(t)
	r := startRelay(t, "127.0.0.1:0", rk, Options{Allowed: ks.allowed})
	var downs atomic.Int64
	ca, _ := r.client(a, relay.ClientOptions{OnState: func(up bool) {
		if !up {
			downs.Add(1)
		}
	}})
	_, chb := r.client(b, relay.ClientOptions{})
	ca.Send(nodeOf(b), []byte("before"))
	expectPacket(t, chb, a.PublicKey(), "before")

	r.stop()
	wait.Until(t, "client noticing", func() bool { return downs.Load() == 1 && !ca.Connected() })
	if err := ca.Send(nodeOf(b), []byte("x")); !errors.Is(err, relay.ErrNotConnected) {
		t.Fatalf("send while down: %v", err)
	}
	r2 := startRelay(t, r.addr, rk, Options{Allowed: ks.allowed})
	wait.Until(t, "both back", func() bool { return r2.srv.Stats().Clients == 2 })
	if err := ca.WaitConnected(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := ca.Send(nodeOf(b), []byte("after")); err != nil {
		t.Fatal(err)
	}
	expectPacket(t, chb, a.PublicKey(), "after")
}

func TestNewestSessionWins(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed})
	old := r.dial(b)
	cur := r.dial(b)
	m, err := recvPacket(t, old, 5*time.Second)
	if err != nil || m.Type != relay.MsgClosing || m.Reason != relay.ClosingReplaced {
		t.Fatalf("old session: %+v %v", m, err)
	}
	ca := r.dial(a)
	if err := ca.Send(nodeOf(b), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	m, err = recvPacket(t, cur, 5*time.Second)
	if err != nil || m.Type != relay.MsgPacket || string(m.Data) != "hi" || m.Peer != nodeOf(a) {
		t.Fatalf("new session: %+v %v", m, err)
	}
	if st := r.srv.Stats(); st.Replaced != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestUnvouchedWhileConnected: a node no longer vouched for is closed at
// the next keepalive with the reason. On a fake clock: nothing happens
// before the keepalive comes due, and the default 30 s keepalive passes
// at once.
func TestUnvouchedWhileConnected(t *testing.T) {
	var ks keySet
	a := genKey(t)
	ks.add(a)
	fc := clock.NewFake(time.Now())
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed, Clock: fc})
	c := r.dial(a)
	ks.remove(a)
	var ka time.Time
	wait.Until(t, "the session's keepalive timer armed", func() bool { var ok bool; ka, ok = fc.Next(); return ok })
	if d := ka.Sub(fc.Now()); d != DefaultKeepAlive {
		t.Fatalf("keepalive in %v, want %v", d, DefaultKeepAlive)
	}
	fc.Advance(DefaultKeepAlive - time.Millisecond)
	if next, ok := fc.Next(); !ok || !next.Equal(ka) {
		t.Fatal("the keepalive fired before it came due")
	}
	fc.Advance(time.Millisecond)
	for {
		m, err := recvPacket(t, c, 5*time.Second)
		if err != nil {
			t.Fatalf("no closing notice: %v", err)
		}
		if m.Type == relay.MsgClosing {
			if m.Reason != relay.ClosingNotVouched {
				t.Fatalf("reason %d", m.Reason)
			}
			break
		}
	}
	if st := r.srv.Stats(); st.ClosedNotVouched != 1 {
		t.Fatalf("stats %+v", st)
	}
}
