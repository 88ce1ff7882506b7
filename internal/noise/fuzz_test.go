package noise

import (
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/tai64n"
	"github.com/warrenmesh/warren/internal/wire"
)

// FuzzConsumeMessages feeds arbitrary bytes to the responder and initiator
// paths that process untrusted handshake messages: nothing may panic, and
// nothing unauthenticated may change a handshake's state.
func FuzzConsumeMessages(f *testing.F) {
	ka, _ := GeneratePrivateKey()
	kb, _ := GeneratePrivateKey()
	a, b := NewStatic(ka), NewStatic(kb)
	hb := Handshake{RemoteStatic: a.Public}
	hb.Precompute(b)
	ha := Handshake{RemoteStatic: b.Public}
	ha.Precompute(a)
	var init wire.Initiation
	if err := a.CreateInitiation(&ha, 5, tai64n.Now(), &init); err != nil {
		f.Fatal(err)
	}
	f.Add(init.Marshal(make([]byte, wire.InitiationSize)))
	f.Add(make([]byte, wire.ResponseSize))
	f.Add(make([]byte, wire.CookieReplySize))
	var checker CookieChecker
	checker.Init(b.Public)
	var gen CookieGenerator
	gen.Init(b.Public)
	f.Fuzz(func(t *testing.T, msg []byte) {
		now := time.Now()
		checker.CheckMAC1(msg)
		checker.CheckMAC2(msg, []byte{1, 2, 3, 4}, now)
		var m wire.Initiation
		if m.Unmarshal(msg) == nil {
			var ci ConsumedInitiation
			h := hb
			if b.BeginInitiation(&m, &ci) == nil {
				if ci.FinishInitiation(&h) == nil && msg[0] == wire.TypeInitiation && string(msg[8:40]) != string(init.Ephemeral[:]) {
					t.Fatal("forged initiation accepted")
				}
			}
		}
		var r wire.Response
		if r.Unmarshal(msg) == nil {
			h := ha
			if a.ConsumeResponse(&h, &r) == nil {
				t.Fatal("forged response accepted")
			}
		}
		var c wire.CookieReply
		if c.Unmarshal(msg) == nil && gen.ConsumeReply(&c, now) {
			t.Fatal("forged cookie reply accepted")
		}
	})
}
