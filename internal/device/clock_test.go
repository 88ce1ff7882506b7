package device

import (
	"time"

	"github.com/warrenmesh/warren/internal/clock"
)

// The timer tests drive the engine with package clock's virtual clock.
type (
	fakeClock = clock.Fake
	fakeTimer = clock.FakeTimer
)

func newFakeClock() *fakeClock { return clock.NewFake(time.Now()) }

// realClock is the system clock, for tests that need real timers.
var realClock = clock.Real
