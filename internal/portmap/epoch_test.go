package portmap

import (
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
)

// The epoch rules of RFC 6886 §3.6 (NAT-PMP) and RFC 6887 §8.5 (PCP): each
// case is a first reply at epoch 1000, then one after elapsed client time
// with the given epoch.
func TestEpochRules(t *testing.T) {
	for _, tc := range []struct {
		proto   Protocol
		elapsed time.Duration
		epoch   uint32
		ok      bool
	}{
		{NATPMP, 100 * time.Second, 1100, true},
		{NATPMP, 100 * time.Second, 1086, true},  // 7/8 of 100 s, less 2: 85.5
		{NATPMP, 100 * time.Second, 1080, false}, // the gateway lost time: restarted
		{NATPMP, 100 * time.Second, 5, false},    // restarted
		{NATPMP, 100 * time.Second, 9000, true},  // NAT-PMP takes a jump ahead
		{PCP, 100 * time.Second, 1100, true},
		{PCP, 100 * time.Second, 1095, true},  // within 1/16 + 2 s
		{PCP, 100 * time.Second, 1090, false}, // server slower than 1/16 + 2 s
		{PCP, 100 * time.Second, 1110, false}, // server faster than 1/16 + 2 s
		{PCP, 0, 999, true},                   // back by one second at most
		{PCP, 0, 998, false},
		{PCP, 100 * time.Second, 7, false}, // restarted
	} {
		clk := clock.NewFake(t0)
		c := New(Options{Port: 1, Clock: clk})
		if !c.checkEpoch(tc.proto, 1000) {
			t.Fatal("the first epoch refused")
		}
		clk.Advance(tc.elapsed)
		if got := c.checkEpoch(tc.proto, tc.epoch); got != tc.ok {
			t.Errorf("%s: epoch 1000, then %d after %v: ok=%v, want %v", tc.proto, tc.epoch, tc.elapsed, got, tc.ok)
		}
		if !tc.ok && !c.checkEpoch(tc.proto, tc.epoch) {
			t.Errorf("%s: after a refusal the next epoch must start a new baseline", tc.proto)
		}
	}
}
