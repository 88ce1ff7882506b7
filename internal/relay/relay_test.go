package relay

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"warren/internal/control/controlbase"
	"warren/internal/noise"
	"warren/internal/testutil/wait"
)

func TestRelayBothWays(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed})
	ca, cha := r.client(a, ClientOptions{})
	cb, chb := r.client(b, ClientOptions{})
	for i := range 10 {
		msg := fmt.Sprintf("a->b %d", i)
		if err := ca.Send(b.PublicKey(), []byte(msg)); err != nil {
			t.Fatal(err)
		}
		expectPacket(t, chb, a.PublicKey(), msg)
		msg = fmt.Sprintf("b->a %d", i)
		if err := cb.Send(a.PublicKey(), []byte(msg)); err != nil {
			t.Fatal(err)
		}
		expectPacket(t, cha, b.PublicKey(), msg)
	}
	// The largest packet goes through whole; a larger one is refused
	// before it leaves.
	big := bytes.Repeat([]byte{0xa5}, MaxPacketSize)
	if err := ca.Send(b.PublicKey(), big); err != nil {
		t.Fatal(err)
	}
	expectPacket(t, chb, a.PublicKey(), string(big))
	if err := ca.Send(b.PublicKey(), append(big, 0)); err == nil {
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

func TestPeerGone(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed})
	var gone atomic.Int64
	ca, _ := r.client(a, ClientOptions{PeerGone: func(k noise.PublicKey) {
		if k == b.PublicKey() {
			gone.Add(1)
		}
	}})
	for range 20 {
		ca.Send(b.PublicKey(), []byte("anyone?"))
	}
	wait.Until(t, "peer gone notice", func() bool { return gone.Load() > 0 })
	// The first notice may arrive before the relay has read the other 19
	// packets: wait for all of them to be counted, then give a second
	// notice (which must not come) time to arrive.
	wait.Until(t, "20 packets dropped", func() bool { return r.srv.Stats().DropsNoPeer == 20 })
	time.Sleep(100 * time.Millisecond)
	if g := gone.Load(); g != 1 {
		t.Fatalf("%d notices for 20 packets within a second, want 1", g)
	}
	if d := r.srv.Stats().DropsNoPeer; d != 20 {
		t.Fatalf("DropsNoPeer %d", d)
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
	_, err := Dial(ctx, r.url, rk.PublicKey(), genKey(t), DialOptions{})
	if !errors.Is(err, ErrNotVouched) || !errors.Is(err, controlbase.ErrRefused) {
		t.Fatalf("unvouched: %v", err)
	}
	if st := r.srv.Stats(); st.Refused != 1 || st.Accepted != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A wrong relay key fails the handshake, before vouching.
	_, err = Dial(ctx, r.url, genKey(t).PublicKey(), a, DialOptions{})
	if err == nil || errors.Is(err, ErrNotVouched) {
		t.Fatalf("wrong relay key: %v", err)
	}
	// A session of another protocol can never complete: the control
	// protocol's prologue on the relay's path and token fails the
	// handshake; the relay's token on the control path is refused.
	for _, p := range []controlbase.Protocol{
		{Path: Path, UpgradeToken: RelayProtocol.UpgradeToken, Name: controlbase.ProtocolName},
		controlbase.Control,
	} {
		_, err := controlbase.DialWith(ctx, controlbase.DialOptions{Protocol: p}, r.url, rk.PublicKey(), a)
		if !errors.Is(err, controlbase.ErrRefused) {
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
	c := r.dial(a)
	// A frame one byte over the limit: header only, the relay must not
	// wait for (or buffer) the body.
	if _, err := c.c.Write(appendHeader(nil, frameSend, maxPayload+1)); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := recvPacket(t, c, 5*time.Second)
		if err != nil {
			if isTimeout(err) {
				t.Fatal("relay did not close the session")
			}
			break
		}
		if m.Type != MsgPong {
			t.Fatalf("unexpected %+v", m)
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
	ca, _ := r.client(a, ClientOptions{})
	r.dial(slow) // never reads
	cb, _ := r.client(b, ClientOptions{})
	_, chd := r.client(d, ClientOptions{})
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
			if ca.Send(slow.PublicKey(), pkt) != nil {
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
		if err := cb.Send(d.PublicKey(), []byte(msg)); err != nil {
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

func TestRateLimitDrops(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed, Rate: 10 << 10, Burst: MaxPacketSize})
	if info := r.dial(genKeyAllowed(t, &ks)).Info(); info.Rate != 10<<10 || info.Burst != MaxPacketSize || info.KeepAlive != DefaultKeepAlive {
		t.Fatalf("info %+v", info)
	}
	ca, _ := r.client(a, ClientOptions{})
	_, chb := r.client(b, ClientOptions{})
	pkt := make([]byte, 8<<10)
	for range 20 {
		if err := ca.Send(b.PublicKey(), pkt); err != nil {
			t.Fatal(err)
		}
	}
	// The 64 KiB burst lets 8 packets through (a few more if the bucket
	// refills meanwhile), the rest are dropped and counted.
	wait.Until(t, "all accounted", func() bool { st := r.srv.Stats(); return st.PacketsOut+st.DropsRateLimit == 20 })
	// PacketsOut counts a packet when the relay queues it for writing, before
	// it reaches b: wait for b to have every packet counted.
	wait.Until(t, "b received what the relay sent", func() bool { return len(chb) >= int(r.srv.Stats().PacketsOut) })
	st := r.srv.Stats()
	if st.PacketsOut < 8 || st.PacketsOut > 10 || len(chb) != int(st.PacketsOut) {
		t.Fatalf("stats %+v, %d received", st, len(chb))
	}
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
	ca, _ := r.client(a, ClientOptions{OnState: func(up bool) {
		if !up {
			downs.Add(1)
		}
	}})
	_, chb := r.client(b, ClientOptions{})
	ca.Send(b.PublicKey(), []byte("before"))
	expectPacket(t, chb, a.PublicKey(), "before")

	r.stop()
	wait.Until(t, "client noticing", func() bool { return downs.Load() == 1 && !ca.Connected() })
	if err := ca.Send(b.PublicKey(), []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("send while down: %v", err)
	}
	r2 := startRelay(t, r.addr, rk, Options{Allowed: ks.allowed})
	wait.Until(t, "both back", func() bool { return r2.srv.Stats().Clients == 2 })
	if err := ca.WaitConnected(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := ca.Send(b.PublicKey(), []byte("after")); err != nil {
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
	if err != nil || m.Type != MsgClosing || m.Reason != ClosingReplaced {
		t.Fatalf("old session: %+v %v", m, err)
	}
	ca := r.dial(a)
	if err := ca.Send(b.PublicKey(), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	m, err = recvPacket(t, cur, 5*time.Second)
	if err != nil || m.Type != MsgPacket || string(m.Data) != "hi" || m.Peer != a.PublicKey() {
		t.Fatalf("new session: %+v %v", m, err)
	}
	if st := r.srv.Stats(); st.Replaced != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnvouchedWhileConnected(t *testing.T) {
	var ks keySet
	a := genKey(t)
	ks.add(a)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed, KeepAlive: time.Second})
	c := r.dial(a)
	ks.remove(a)
	for {
		m, err := recvPacket(t, c, 5*time.Second)
		if err != nil {
			t.Fatalf("no closing notice: %v", err)
		}
		if m.Type == MsgClosing {
			if m.Reason != ClosingNotVouched {
				t.Fatalf("reason %d", m.Reason)
			}
			break
		}
	}
	if st := r.srv.Stats(); st.ClosedNotVouched != 1 {
		t.Fatalf("stats %+v", st)
	}
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
	f.Add(append(appendHeader(nil, frameSend, KeyLen+3), make([]byte, KeyLen+3)...))
	f.Add(appendHeader(nil, frameSend, maxPayload+1))
	f.Add(append(appendHeader(nil, framePing, 8), 1, 2, 3, 4, 5, 6, 7, 8))
	f.Add([]byte{frameRecv, 0, 0})
	buf := make([]byte, maxPayload)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			typ, p, err := readFrame(r, &buf)
			if err != nil {
				return
			}
			if len(p) > maxPayload {
				t.Fatalf("payload %d", len(p))
			}
			// Re-encoding gives back the bytes read.
			enc := append(appendHeader(nil, typ, len(p)), p...)
			consumed := len(b) - r.Len()
			if !bytes.HasSuffix(b[:consumed], enc) {
				t.Fatalf("re-encoded %x", enc)
			}
		}
	})
}
