package device

import "time"

// Clock is the engine's source of time. Tests drive a fake clock to check the
// protocol's timers (rekey at 120 s, reject at 180 s, zeroing at 540 s)
// without waiting.
type Clock interface {
	Now() time.Time
	// AfterFunc returns a stopped timer that calls f in its own goroutine
	// (or, for a fake clock, synchronously) when it fires after Reset.
	NewTimer(f func()) Timer
}

// Timer is a resettable one-shot timer.
type Timer interface {
	Reset(d time.Duration)
	Stop() bool
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
