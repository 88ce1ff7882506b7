package device

import (
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
)

// Two initiations from one peer, handled by two handshake workers (one per
// CPU): the responder must keep as its next session the one derived from
// the initiation it accepted last, since only that one's response can
// complete the initiator's handshake (the initiator keeps just its latest
// attempt). The second initiation here overtakes the first right after the
// first released the handshake lock. When the session was derived under
// the lock but installed after it, the first worker installed its older
// session last, deleting the newer one's index: the initiator's data then
// met "no session" until its next handshake, 15 s later
// (TestZeroKeyMaterial failed so under load).
func TestOvertakingInitiationKeepsNewestSession(t *testing.T) {
	clock, a, b := newTimedPair(t)
	pb := peerOf(b, a)
	ep, err := b.dev.net.transport.ParseEndpoint(a.endpoint())
	if err != nil {
		t.Fatal(err)
	}
	var gen noise.CookieGenerator
	gen.Init(b.pub())
	now := clock.Now()
	first := craftInitiation(t, a.key, b.pub(), now, &gen, now)
	second := craftInitiation(t, a.key, b.pub(), now.Add(time.Second), &gen, now)

	overtaken := false
	testHookInitiationUnlocked = func() {
		if overtaken {
			return
		}
		overtaken = true
		b.dev.handleInitiation(second, ep, now.Add(time.Second))
	}
	defer func() { testHookInitiationUnlocked = nil }()
	b.dev.handleInitiation(first, ep, now)

	if got := b.dev.Stats.HandshakesDone.Load(); got != 2 {
		t.Fatalf("b completed %d handshakes, want 2", got)
	}
	_, _, next := keypairsOf(pb)
	if next == nil || !next.created.Equal(now.Add(time.Second)) {
		t.Fatal("next session is not the one derived from the second initiation")
	}
	if e, ok := b.dev.index.lookup(next.localIndex); !ok || e.keypair != next {
		t.Fatal("the newest session's index is not bound to it")
	}
}
