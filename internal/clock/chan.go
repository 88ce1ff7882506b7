package clock

import "time"

// ChanTimer is a Timer whose firing is a value on C, for a goroutine that
// waits for it in a select (like time.Timer's channel). Reset and Stop
// drop a firing not yet received, so a receive on C always means the
// latest arming came due.
type ChanTimer struct {
	t Timer
	c chan struct{}
	// C receives once each time the timer fires.
	C <-chan struct{}
}

// NewChanTimer returns a stopped ChanTimer of c (Real when nil).
func NewChanTimer(c Clock) *ChanTimer {
	ch := make(chan struct{}, 1)
	t := Or(c).NewTimer(func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	return &ChanTimer{t: t, c: ch, C: ch}
}

// Reset arms the timer to fire after d, dropping a firing not yet received.
func (t *ChanTimer) Reset(d time.Duration) {
	t.t.Stop()
	t.drain()
	t.t.Reset(d)
}

// Stop disarms the timer, dropping a firing not yet received; it reports
// whether the timer was armed.
func (t *ChanTimer) Stop() bool {
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
