package clock_test

import (
	"slices"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
)

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestFakeFiresInTimeOrderAtTheirDeadlines(t *testing.T) {
	c := clock.NewFake(start)
	var got []string
	var at []time.Duration
	mk := func(name string) clock.Timer {
		return c.NewTimer(func() { got = append(got, name); at = append(at, c.Now().Sub(start)) })
	}
	a, b, z := mk("a"), mk("b"), mk("z")
	a.Reset(3 * time.Second)
	b.Reset(time.Second)
	z.Reset(10 * time.Second)
	if next, ok := c.Next(); !ok || next.Sub(start) != time.Second {
		t.Fatalf("Next = %v, %v; want the 1s timer", next.Sub(start), ok)
	}
	c.Advance(500 * time.Millisecond)
	if c.Fired() != 0 || len(got) != 0 {
		t.Fatalf("fired %v (Fired %d) before any deadline", got, c.Fired())
	}
	c.Advance(4500 * time.Millisecond)
	if c.Fired() != 2 {
		t.Fatalf("Fired = %d after two timers came due", c.Fired())
	}
	if !slices.Equal(got, []string{"b", "a"}) || !slices.Equal(at, []time.Duration{time.Second, 3 * time.Second}) {
		t.Fatalf("fired %v at %v, want [b a] at [1s 3s]", got, at)
	}
	if now := c.Now().Sub(start); now != 5*time.Second {
		t.Fatalf("now = %v after advancing 5s", now)
	}
	if !z.Stop() || z.Stop() {
		t.Fatal("Stop of an armed timer must report true once")
	}
	if _, ok := c.Next(); ok {
		t.Fatal("Next reports a timer with none armed")
	}
	c.Advance(time.Hour)
	if len(got) != 2 || c.Fired() != 2 {
		t.Fatalf("a stopped timer fired: %v", got)
	}
}

// A timer re-arming itself from its function (a ticker) fires once per
// period within one Advance.
func TestFakeTimerRearmingItselfTicks(t *testing.T) {
	c := clock.NewFake(start)
	var ticks []time.Duration
	var tm clock.Timer
	tm = c.NewTimer(func() {
		ticks = append(ticks, c.Now().Sub(start))
		tm.Reset(250 * time.Millisecond)
	})
	tm.Reset(250 * time.Millisecond)
	c.Advance(time.Second)
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond, time.Second}
	if !slices.Equal(ticks, want) {
		t.Fatalf("ticks at %v, want %v", ticks, want)
	}
	if d, ok := tm.(*clock.FakeTimer).Deadline(); !ok || d.Sub(start) != 1250*time.Millisecond {
		t.Fatalf("next deadline %v armed=%v, want 1.25s", d.Sub(start), ok)
	}
}

func TestFakeStepCallsBetweenEachStep(t *testing.T) {
	c := clock.NewFake(start)
	var seen []time.Duration
	c.Step(time.Second, 400*time.Millisecond, func() { seen = append(seen, c.Now().Sub(start)) })
	want := []time.Duration{400 * time.Millisecond, 800 * time.Millisecond, time.Second}
	if !slices.Equal(seen, want) {
		t.Fatalf("steps at %v, want %v", seen, want)
	}
}

func TestRealTimerFires(t *testing.T) {
	done := make(chan struct{})
	tm := clock.Real.NewTimer(func() { close(done) })
	tm.Reset(time.Millisecond)
	<-done // a hang here fails by the test timeout: no window to tune
	if clock.Or(nil) != clock.Real {
		t.Fatal("Or(nil) is not the real clock")
	}
}
