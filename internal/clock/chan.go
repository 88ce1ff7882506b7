package clock

import (
	"sync"
	"time"
)

// ChanTimer is a Timer whose firing is a value on C, for a goroutine that
// waits for it in a select (like time.Timer's channel). Reset and Stop
// drop a firing not yet received, and a firing of an earlier arming that
// races with Reset or Stop (the real clock runs it in its own goroutine) is
// dropped too, so a receive on C means the latest arming came due.
type ChanTimer struct {
	clk Clock
	t   Timer
	c   chan struct{}
	// C receives once each time the timer fires.
	C <-chan struct{}

	mu   sync.Mutex
	when time.Time // deadline of the latest arming
}

// never is a deadline no firing reaches.
var never = time.Unix(1<<62, 0)

// NewChanTimer returns a stopped ChanTimer of c (Real when nil).
func NewChanTimer(c Clock) *ChanTimer {
	ch := make(chan struct{}, 1)
	ct := &ChanTimer{clk: Or(c), c: ch, C: ch}
	ct.t = ct.clk.NewTimer(ct.fire)
	return ct
}

func (t *ChanTimer) fire() {
	t.mu.Lock()
	early := t.clk.Now().Before(t.when) // an earlier arming's firing
	t.mu.Unlock()
	if early {
		return
	}
	select {
	case t.c <- struct{}{}:
	default:
	}
}

// Reset arms the timer to fire after d, dropping a firing not yet received.
func (t *ChanTimer) Reset(d time.Duration) {
	t.t.Stop()
	t.mu.Lock()
	t.when = t.clk.Now().Add(d)
	t.mu.Unlock()
	t.drain()
	t.t.Reset(d)
}

// Stop disarms the timer, dropping a firing not yet received; it reports
// whether the timer was armed.
func (t *ChanTimer) Stop() bool {
	t.mu.Lock()
	t.when = never // a firing racing with Stop is dropped
	t.mu.Unlock()
	was := t.t.Stop()
	t.drain()
	return was
}

func (t *ChanTimer) drain() {
	select {
	case <-t.c:
	default:
	}
}
