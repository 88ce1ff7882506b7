package device

// Interop tests against the real wireguard-go (golang.zx2c4.com/wireguard),
// run in-process over loopback UDP. Helpers are in interop_helpers_test.go.
// Set WARREN_TEST_LOG=1 to see both implementations' logs.

import (
	"bytes"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/wire"
)

// Warren initiates: its initiation is accepted by wireguard-go, which learns
// our endpoint from it; data flows both ways, IPv4 and IPv6, unchanged.
func TestInteropWarrenInitiates(t *testing.T) {
	w, g := interopPair(t, nil, true, false, nil, nil)
	interopExchange(t, w, g)

	if n := w.tr.sent[wire.TypeInitiation].Load(); n != 1 {
		t.Errorf("warren sent %d initiations, want 1", n)
	}
	if n := w.tr.sent[wire.TypeResponse].Load(); n != 0 {
		t.Errorf("warren sent %d responses, want 0", n)
	}
	if n := w.rx.rx[wire.TypeResponse].Load(); n != 1 {
		t.Errorf("warren received %d responses, want 1", n)
	}
	if _, cur, _ := w.keypairs(g); cur == nil || !cur.initiator {
		t.Errorf("current session %s, want one where warren is initiator", kpString(cur))
	}
	if n := w.dev.Stats.HandshakesDone.Load(); n != 1 {
		t.Errorf("HandshakesDone = %d, want 1", n)
	}
	interopCheckHealthy(t, w, g)
	// wireguard-go learned where we are from our initiation.
	if ep := g.peerInfo(t, w.pub())["endpoint"]; ep != w.endpoint() {
		t.Errorf("wireguard-go has endpoint %q for us, want %q", ep, w.endpoint())
	}
}

// wireguard-go initiates: we answer, learn its endpoint from the
// initiation and promote the session when it sends on it.
func TestInteropWireGuardGoInitiates(t *testing.T) {
	w, g := interopPair(t, nil, false, true, nil, nil)
	for _, v6 := range []bool{false, true} {
		sendToWarren(t, g, w, g.pktTo(w, v6), interopTimeout)
		sendToWG(t, w, g, w.pktTo(g, v6), interopTimeout)
	}
	interopExchange(t, w, g)

	if n := w.tr.sent[wire.TypeInitiation].Load(); n != 0 {
		t.Errorf("warren sent %d initiations, want 0", n)
	}
	if n := w.tr.sent[wire.TypeResponse].Load(); n != 1 {
		t.Errorf("warren sent %d responses, want 1", n)
	}
	if _, cur, next := w.keypairs(g); cur == nil || cur.initiator || next != nil {
		t.Errorf("sessions cur=%s next=%s, want a confirmed responder session", kpString(cur), kpString(next))
	}
	st, _ := w.dev.PeerStats(g.pub())
	if st.Endpoint != g.endpoint(t) {
		t.Errorf("warren has endpoint %q for wireguard-go, want %q", st.Endpoint, g.endpoint(t))
	}
	interopCheckHealthy(t, w, g)
}

// interopCheckHealthy: both sides count traffic and a handshake, and we
// dropped nothing.
func interopCheckHealthy(t *testing.T, w *wnode, g *wgNode) {
	t.Helper()
	st, _ := w.dev.PeerStats(g.pub())
	if st.RxBytes == 0 || st.TxBytes == 0 || st.LastHandshake.IsZero() {
		t.Errorf("warren peer stats %+v", st)
	}
	info := g.peerInfo(t, w.pub())
	if info["rx_bytes"] == "0" || info["tx_bytes"] == "0" || info["last_handshake_time_sec"] == "0" {
		t.Errorf("wireguard-go peer state %v", info)
	}
	if n := w.dev.Stats.Dropped(); n != 0 {
		t.Errorf("warren dropped %d packets: %s", n, statsString(&w.dev.Stats))
	}
}

// Rekey after RekeyAfterTime, Warren initiating, with our clock faked:
// the send path starts a new handshake on a 120 s old session, wireguard-go
// accepts it, and both sides move to the new session.
func TestInteropRekeyWarrenInitiator(t *testing.T) {
	clk := newFakeClock()
	w, g := interopPair(t, clk, true, false, nil, nil)
	interopExchange(t, w, g)
	_, kp1, _ := w.keypairs(g)
	if kp1 == nil || !kp1.initiator || !kp1.created.Equal(clk.Now()) {
		t.Fatalf("first session %s", kpString(kp1))
	}
	// End on a received packet, so that no "data sent, nothing heard"
	// timer is pending; and let more than wireguard-go's 20 ms initiation
	// rate limit pass (in real time: wireguard-go's clock is not ours).
	time.Sleep(50 * time.Millisecond)
	sendToWarren(t, g, w, g.pktTo(w, false), interopTimeout)

	clk.Advance(RekeyAfterTime + time.Second)
	if n := w.dev.Stats.HandshakesDone.Load(); n != 1 {
		t.Fatalf("a handshake happened while the clock advanced: HandshakesDone = %d", n)
	}
	// Sending on the old session starts the rekey; the packet itself
	// still goes on the old session, which wireguard-go accepts.
	sendToWG(t, w, g, w.pktTo(g, false), interopTimeout)
	wait.For(t, interopTimeout, "rekey handshake", func() bool { return w.dev.Stats.HandshakesDone.Load() == 2 })
	// HandshakesDone counts the session when it is derived, just before it
	// is installed as current.
	wait.For(t, interopTimeout, "new session installed", func() bool { _, cur, _ := w.keypairs(g); return cur != kp1 })
	prev, kp2, _ := w.keypairs(g)
	if kp2 == nil || kp2 == kp1 || !kp2.initiator {
		t.Fatalf("session after rekey %s (old %s)", kpString(kp2), kpString(kp1))
	}
	if !kp2.created.Equal(clk.Now()) || kp2.created.Sub(kp1.created) < RekeyAfterTime {
		t.Fatalf("new session created at %v, old at %v, clock at %v", kp2.created, kp1.created, clk.Now())
	}
	if prev != kp1 {
		t.Errorf("previous session %s, want the old one %s", kpString(prev), kpString(kp1))
	}
	if n := w.tr.sent[wire.TypeInitiation].Load(); n != 2 {
		t.Errorf("warren sent %d initiations, want 2", n)
	}

	// Data flows both ways on the new session.
	for _, v6 := range []bool{false, true} {
		sendToWG(t, w, g, w.pktTo(g, v6), interopTimeout)
		if idx := w.lastDataTx.Load(); idx != kp2.remoteIndex {
			t.Fatalf("data sent with receiver index %#x, new session's is %#x", idx, kp2.remoteIndex)
		}
		sendToWarren(t, g, w, g.pktTo(w, v6), interopTimeout)
		if idx := w.rx.lastDataRx.Load(); idx != kp2.localIndex {
			t.Fatalf("data received with receiver index %#x, new session's is %#x", idx, kp2.localIndex)
		}
	}
	interopCheckHealthy(t, w, g)
}

// wireguard-go initiates a new handshake while a session (that we
// initiated) exists: its peer for us is removed and re-added, so it has no
// session and initiates on the next packet. We accept it, switch roles and
// promote the new session when wireguard-go sends on it.
func TestInteropRekeyWireGuardGoInitiator(t *testing.T) {
	w, g := interopPair(t, nil, true, false, nil, nil)
	interopExchange(t, w, g)
	_, kp1, _ := w.keypairs(g)
	if kp1 == nil || !kp1.initiator {
		t.Fatalf("first session %s", kpString(kp1))
	}

	g.ipcSet(t, "public_key="+w.pub().Hex()+"\nremove=true\n")
	if g.peerInfo(t, w.pub()) != nil {
		t.Fatal("wireguard-go did not remove the peer")
	}
	wgAddPeer(t, g, w, nil, true)
	time.Sleep(50 * time.Millisecond) // > our 20 ms initiation rate limit

	sendToWarren(t, g, w, g.pktTo(w, false), interopTimeout)
	if n := w.dev.Stats.HandshakesDone.Load(); n != 2 {
		t.Fatalf("HandshakesDone = %d, want 2", n)
	}
	prev, kp2, next := w.keypairs(g)
	if kp2 == nil || kp2 == kp1 || kp2.initiator || next != nil {
		t.Fatalf("sessions after wireguard-go's handshake: cur=%s next=%s", kpString(kp2), kpString(next))
	}
	if prev != kp1 {
		t.Errorf("previous session %s, want the old one %s", kpString(prev), kpString(kp1))
	}
	if idx := w.rx.lastDataRx.Load(); idx != kp2.localIndex {
		t.Fatalf("data received with receiver index %#x, new session's is %#x", idx, kp2.localIndex)
	}
	// wireguard-go forgot the old session: our reply must use the new one.
	sendToWG(t, w, g, w.pktTo(g, false), interopTimeout)
	if idx := w.lastDataTx.Load(); idx != kp2.remoteIndex {
		t.Fatalf("data sent with receiver index %#x, new session's is %#x", idx, kp2.remoteIndex)
	}
	interopExchange(t, w, g)
	if n := w.tr.sent[wire.TypeResponse].Load(); n != 1 {
		t.Errorf("warren sent %d responses, want 1", n)
	}
	interopCheckHealthy(t, w, g)
}

// Roaming: wireguard-go moves to a new listen port; once it sends data from
// there, we send to the new port.
func TestInteropRoaming(t *testing.T) {
	w, g := interopPair(t, nil, true, false, nil, nil)
	interopExchange(t, w, g)
	oldEP := g.endpoint(t)
	if st, _ := w.dev.PeerStats(g.pub()); st.Endpoint != oldEP {
		t.Fatalf("endpoint %q, want %q", st.Endpoint, oldEP)
	}
	newEP := oldEP
	for i := 0; i < 5 && newEP == oldEP; i++ {
		g.ipcSet(t, "listen_port=0\n")
		newEP = g.endpoint(t)
	}
	if newEP == oldEP || g.port(t) == 0 {
		t.Fatalf("wireguard-go did not move off %s", oldEP)
	}
	if st, _ := w.dev.PeerStats(g.pub()); st.Endpoint != oldEP {
		t.Fatalf("endpoint changed to %q before wireguard-go sent anything", st.Endpoint)
	}

	sendToWarren(t, g, w, g.pktTo(w, false), interopTimeout)
	if st, _ := w.dev.PeerStats(g.pub()); st.Endpoint != newEP {
		t.Fatalf("warren's endpoint for wireguard-go is %q, want the new %q", st.Endpoint, newEP)
	}
	// The old port is closed: only a reply to the new one arrives.
	sendToWG(t, w, g, w.pktTo(g, false), interopTimeout)
	sendToWG(t, w, g, w.pktTo(g, true), interopTimeout)
	sendToWarren(t, g, w, g.pktTo(w, true), interopTimeout)
	if n := w.dev.Stats.HandshakesDone.Load(); n != 1 {
		t.Errorf("HandshakesDone = %d, want 1 (roaming needs no handshake)", n)
	}
	interopCheckHealthy(t, w, g)
}

// Under load, we answer wireguard-go's initiation with a cookie reply;
// wireguard-go retries after its REKEY_TIMEOUT with a MAC2 made from that
// cookie, which we accept.
func TestInteropCookieWarrenUnderLoad(t *testing.T) {
	w, g := interopPair(t, nil, false, true, nil, nil)
	w.dev.underLoadUntil.Store(math.MaxInt64)
	if !w.dev.isUnderLoad() {
		t.Fatal("device not under load")
	}
	start := time.Now()
	pkt := g.pktTo(w, false)
	g.tun.Outbound <- pkt

	wait.For(t, 2*time.Second, "cookie reply", func() bool {
		return w.dev.Stats.CookieRepliesSent.Load() >= 1 && w.dev.Stats.DropNeedCookie.Load() >= 1
	})
	if n := w.dev.Stats.HandshakesDone.Load(); n != 0 {
		t.Fatalf("HandshakesDone = %d before the cookie retry", n)
	}
	if n := w.tr.sent[wire.TypeCookieReply].Load(); n < 1 {
		t.Fatalf("no cookie reply on the wire (%d)", n)
	}
	// wireguard-go's retransmission: RekeyTimeout plus up to 334 ms jitter.
	interopExpect(t, w.tun.Outbound, pkt, RekeyTimeout+3*time.Second, "wireguard-go -> warren after cookie", w.dump(t, g))
	elapsed := time.Since(start)
	t.Logf("handshake completed after %v", elapsed.Round(time.Millisecond))
	if elapsed < RekeyTimeout-100*time.Millisecond {
		t.Errorf("handshake completed after %v, before wireguard-go could have retried", elapsed)
	}
	if !w.dev.isUnderLoad() {
		t.Fatal("device no longer under load: the retry was not checked for MAC2")
	}
	s := &w.dev.Stats
	if s.HandshakesDone.Load() != 1 || s.DropRateLimited.Load() != 0 || s.DropMAC1.Load() != 0 {
		t.Errorf("stats after cookie retry: %s ratelimited=%d", statsString(s), s.DropRateLimited.Load())
	}
	// Every initiation without a valid MAC2 got a cookie; the one with it
	// made the session.
	if got, need := w.rx.rx[wire.TypeInitiation].Load(), s.DropNeedCookie.Load()+1; got != need {
		t.Errorf("received %d initiations, %d cookies sent: want exactly one accepted", got, s.DropNeedCookie.Load())
	}
	if s.CookieRepliesSent.Load() != s.DropNeedCookie.Load() {
		t.Errorf("CookieRepliesSent %d != DropNeedCookie %d", s.CookieRepliesSent.Load(), s.DropNeedCookie.Load())
	}
	sendToWG(t, w, g, w.pktTo(g, false), interopTimeout)
	sendToWarren(t, g, w, g.pktTo(w, true), interopTimeout)
}

// The reverse: wireguard-go under load answers our initiation with a cookie
// reply, we consume it, and our retry carries a MAC2 wireguard-go accepts.
//
// wireguard-go's under-load state is internal (unexported), so it is
// reached the way real load reaches it: a burst of MAC1-valid initiations
// fills its handshake queue past 1/8 of its size, after which it stays
// under load for one second. A flood socket receiving cookie replies proves
// the state. Our clock is faked so that our retransmission (normally after
// RekeyTimeout) happens at once, inside that second.
func TestInteropCookieWireGuardGoUnderLoad(t *testing.T) {
	clk := newFakeClock()
	w, g := interopPair(t, clk, true, false, nil, nil)
	f := newFlooder(t, g.pub(), g.port(t))
	if !f.overload() {
		t.Skip("could not put wireguard-go under load by flooding it")
	}
	pkt := w.pktTo(g, false)
	w.tun.Inbound <- pkt
	wait.For(t, 2*time.Second, "cookie reply or response from wireguard-go", func() bool {
		return w.rx.rx[wire.TypeCookieReply].Load() >= 1 || w.rx.rx[wire.TypeResponse].Load() >= 1
	})
	if n := w.rx.rx[wire.TypeResponse].Load(); n != 0 {
		// Possible only if this machine stalled for over a second.
		t.Skipf("inconclusive: wireguard-go left its under-load state before our initiation arrived (%d responses)", n)
	}
	// The count above is the transport's, before the engine sees the
	// reply: the retry below carries MAC2 only once the engine took it.
	wait.For(t, 2*time.Second, "the cookie reply handled", func() bool {
		return w.dev.Stats.CookieRepliesTaken.Load()+w.dev.Stats.DropCookieReply.Load() >= 1
	})
	if n := w.dev.Stats.DropCookieReply.Load(); n != 0 {
		t.Fatalf("we rejected %d cookie replies from wireguard-go", n)
	}

	// Keep wireguard-go under load, then let our retransmission timer fire.
	if !f.overload() {
		t.Skip("could not keep wireguard-go under load")
	}
	clk.Advance(RekeyTimeout + RekeyTimeoutJitterMax + time.Millisecond)
	// Right behind our retry (sent synchronously by the timer), a probe:
	// a cookie reply to it shows that wireguard-go was still under load
	// when it processed our retry, hence that it accepted our MAC2.
	f.sendProbe()
	interopExpect(t, g.tun.Inbound, pkt, interopTimeout, "warren -> wireguard-go after cookie", w.dump(t, g))
	probed := false
	for end := time.Now().Add(time.Second); !probed && time.Now().Before(end); time.Sleep(time.Millisecond) {
		probed = f.probe.cookies.Load() == 1
	}
	if !probed {
		// Our retry was accepted, but maybe only because wireguard-go was
		// no longer under load (machine stalled for over a second).
		t.Skip("inconclusive: wireguard-go was not under load any more after our retry")
	}
	t.Logf("%d flood bursts, %d cookie replies to the flood", f.tries, f.flood.cookies.Load())

	if n := w.dev.Stats.HandshakesDone.Load(); n != 1 {
		t.Errorf("HandshakesDone = %d, want 1", n)
	}
	mac2s := w.initiationMAC2s()
	if len(mac2s) != 2 {
		t.Fatalf("warren sent %d initiations, want 2", len(mac2s))
	}
	zero := make([]byte, wire.MacSize)
	if !bytes.Equal(mac2s[0], zero) || bytes.Equal(mac2s[1], zero) {
		t.Errorf("initiation MAC2s % x, % x: want none, then one from the cookie", mac2s[0], mac2s[1])
	}
	if n := w.dev.Stats.DropCookieReply.Load(); n != 0 {
		t.Errorf("DropCookieReply = %d", n)
	}
	sendToWarren(t, g, w, g.pktTo(w, false), interopTimeout)
}

// Preshared keys: equal ones make sessions whichever side initiates.
func TestInteropPresharedKey(t *testing.T) {
	for _, warrenFirst := range []bool{true, false} {
		name := "wireguard-go initiates"
		if warrenFirst {
			name = "warren initiates"
		}
		t.Run(name, func(t *testing.T) {
			psk := interopPSK(t)
			w, g := interopPair(t, nil, warrenFirst, !warrenFirst, &psk, &psk)
			if warrenFirst {
				sendToWG(t, w, g, w.pktTo(g, false), interopTimeout)
			} else {
				sendToWarren(t, g, w, g.pktTo(w, false), interopTimeout)
			}
			interopExchange(t, w, g)
			if got := g.peerInfo(t, w.pub())["preshared_key"]; got != psk.Hex() {
				t.Fatalf("wireguard-go preshared_key %s", got)
			}
			interopCheckHealthy(t, w, g)
		})
	}
}

// Mismatched preshared keys: the response fails to authenticate on the
// initiator's side, so no session is confirmed and nothing is delivered,
// whichever side initiates. (Each direction needs fresh devices: after
// answering an initiation, wireguard-go does not initiate for RekeyTimeout.)
func TestInteropPresharedKeyMismatch(t *testing.T) {
	t.Run("warren initiates", func(t *testing.T) {
		pskW, pskG := interopPSK(t), interopPSK(t)
		w, g := interopPair(t, nil, true, false, &pskW, &pskG)
		w.tun.Inbound <- w.pktTo(g, false)
		// wireguard-go accepts the initiation (the PSK is not involved
		// yet) and answers; its response does not authenticate here.
		wait.For(t, interopTimeout, "response rejected", func() bool { return w.dev.Stats.DropHandshake.Load() >= 1 })
		if n := w.rx.rx[wire.TypeResponse].Load(); n != 1 {
			t.Fatalf("received %d responses, want 1", n)
		}
		interopNoPacket(t, g.tun.Inbound, 300*time.Millisecond, "mismatched PSK, warren -> wireguard-go")
		if n := w.dev.Stats.HandshakesDone.Load(); n != 0 {
			t.Fatalf("HandshakesDone = %d with mismatched PSKs", n)
		}
		if _, cur, next := w.keypairs(g); cur != nil || next != nil {
			t.Fatalf("sessions with mismatched PSKs: cur=%s next=%s", kpString(cur), kpString(next))
		}
		if n := w.tr.sent[wire.TypeTransport].Load(); n != 0 {
			t.Fatalf("warren sent %d transport messages without a session", n)
		}
	})
	t.Run("wireguard-go initiates", func(t *testing.T) {
		pskW, pskG := interopPSK(t), interopPSK(t)
		w, g := interopPair(t, nil, false, true, &pskW, &pskG)
		g.tun.Outbound <- g.pktTo(w, false)
		wait.For(t, interopTimeout, "our response", func() bool { return w.tr.sent[wire.TypeResponse].Load() == 1 })
		interopNoPacket(t, w.tun.Outbound, 300*time.Millisecond, "mismatched PSK, wireguard-go -> warren")
		// Our side derived a responder session, but it is never confirmed:
		// wireguard-go rejected the response and sends nothing on it.
		if _, cur, _ := w.keypairs(g); cur != nil {
			t.Fatalf("a session was confirmed with mismatched PSKs: %s", kpString(cur))
		}
		if n := w.rx.rx[wire.TypeTransport].Load(); n != 0 {
			t.Fatalf("received %d transport messages", n)
		}
		if info := g.peerInfo(t, w.pub()); info["last_handshake_time_sec"] != "0" {
			t.Fatalf("wireguard-go completed a handshake: %v", info)
		}
	})
}

// Closing both devices stops every goroutine each started.
func TestInteropCloseLeavesNoGoroutines(t *testing.T) {
	interopSettleGoroutines()
	base := runtime.NumGoroutine()
	before := interopGoroutines()

	w, g := interopPair(t, nil, true, true, nil, nil)
	interopExchange(t, w, g)

	g.dev.Close()
	deadline := time.Now().Add(10 * time.Second)
	left := interopNewGoroutines(before, "golang.zx2c4.com/wireguard")
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		left = interopNewGoroutines(before, "golang.zx2c4.com/wireguard")
	}
	if len(left) > 0 {
		t.Fatalf("%d wireguard-go goroutines left after its Close:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	w.dev.Close()
	deadline = time.Now().Add(10 * time.Second)
	left = interopNewGoroutines(before, "")
	for (len(left) > 0 || runtime.NumGoroutine() > base) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		left = interopNewGoroutines(before, "")
	}
	if len(left) > 0 || runtime.NumGoroutine() > base {
		t.Fatalf("%d goroutines (base %d); new ones left:\n%s", runtime.NumGoroutine(), base, strings.Join(left, "\n\n"))
	}
}
