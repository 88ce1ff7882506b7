package relay_test

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestClientBackoffOnFakeClock: a client whose relay keeps failing (a real
// listener that closes every connection) waits a jittered, doubling delay
// between attempts, capped at MaxBackoff: within [b/2, b] for b = 1, 2, 4,
// 4 minutes. On a fake clock, each wait is read off the armed timer, the
// next attempt comes only when the clock reaches it, and the test takes
// milliseconds instead of the ten minutes it models.
func TestClientBackoffOnFakeClock(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var attempts atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			c.Close()
		}
	}()
	rk, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	nk, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	fc := clock.NewFake(time.Now())
	c := relay.NewClient("http://"+l.Addr().String(), pubkey.Relay{PublicKey: rk.PublicKey()}, nk,
		relay.ClientOptions{MinBackoff: time.Minute, MaxBackoff: 4 * time.Minute, Clock: fc})
	defer c.Close()
	for i, b := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 4 * time.Minute} {
		var next time.Time
		wait.Until(t, "a failed attempt and the backoff timer armed", func() bool {
			var ok bool
			next, ok = fc.Next()
			return ok && attempts.Load() == int64(i+1)
		})
		d := next.Sub(fc.Now())
		if d < b/2 || d > b {
			t.Fatalf("wait %d is %v, want within [%v, %v]", i+1, d, b/2, b)
		}
		fc.Advance(d - time.Millisecond)
		if n, ok := fc.Next(); !ok || !n.Equal(next) || attempts.Load() != int64(i+1) {
			t.Fatalf("attempt %d came before its backoff passed", i+2)
		}
		fc.Advance(time.Millisecond)
	}
	wait.Until(t, "the fifth attempt", func() bool { return attempts.Load() == 5 })
}
