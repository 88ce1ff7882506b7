package clock_test

import (
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
)

// A ChanTimer delivers its firing on C, and Reset drops one not yet
// received: after the reset only the new deadline fires.
func TestChanTimerDeliversOnCAndResetDropsStale(t *testing.T) {
	c := clock.NewFake(start)
	ct := clock.NewChanTimer(c)
	ct.Reset(time.Second)
	c.Advance(time.Second)
	select {
	case <-ct.C:
	default:
		t.Fatal("no firing on C after the deadline passed")
	}
	ct.Reset(time.Second)
	c.Advance(time.Second) // fires, not received
	ct.Reset(2 * time.Second)
	select {
	case <-ct.C:
		t.Fatal("a firing from before Reset was delivered")
	default:
	}
	c.Advance(time.Second)
	select {
	case <-ct.C:
		t.Fatal("fired before its new deadline")
	default:
	}
	c.Advance(time.Second)
	select {
	case <-ct.C:
	default:
		t.Fatal("no firing at the new deadline")
	}
	if ct.Stop() {
		t.Fatal("Stop of a fired timer reports it armed")
	}
}

// On the real clock too, Stop keeps a firing from reaching C and Reset
// re-arms it.
func TestChanTimerRealClock(t *testing.T) {
	ct := clock.NewChanTimer(nil)
	ct.Reset(time.Millisecond)
	<-ct.C
	ct.Reset(time.Hour)
	if !ct.Stop() {
		t.Fatal("Stop of an armed timer reports it stopped")
	}
	select {
	case <-ct.C:
		t.Fatal("a stopped timer delivered a firing")
	default:
	}
	ct.Reset(time.Millisecond)
	<-ct.C
}
