// Package clock owns the source of time of the data plane and the path
// layer: a Clock that tells the time and makes resettable one-shot timers,
// the real one (Real), and a virtual one (Fake) for tests, whose time
// moves only when the test advances it and whose timers then fire in time
// order, synchronously. Code that takes a Clock instead of calling
// time.Now and time.AfterFunc can have its timeouts, heartbeats and
// retries tested in microseconds, without wall-clock windows.
package clock

import "time"

// Clock is a source of time.
type Clock interface {
	Now() time.Time
	// NewTimer returns a stopped timer that calls f when it fires after
	// Reset: the real clock in its own goroutine, a Fake synchronously in
	// Advance.
	NewTimer(f func()) Timer
}

// Timer is a resettable one-shot timer.
type Timer interface {
	// Reset arms the timer to fire after d (re-arming it if armed).
	Reset(d time.Duration)
	// Stop disarms the timer; it reports whether it was armed.
	Stop() bool
}

// Real is the system clock.
var Real Clock = realClock{}

// Or returns c, or Real when c is nil.
func Or(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(f func()) Timer {
	t := time.AfterFunc(time.Hour, f)
	t.Stop()
	return realTimer{t}
}

type realTimer struct{ t *time.Timer }

func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop() bool            { return r.t.Stop() }
