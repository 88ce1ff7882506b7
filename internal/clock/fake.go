package clock

import (
	"sort"
	"sync"
	"time"
)

// Fake is a virtual Clock: its time moves only in Advance (or Set), which
// fires the timers coming due in time order, each synchronously in the
// caller's goroutine, with Now reading the timer's deadline while it runs.
// A timer's function may reset timers (its own included); those firing
// before the end of the advance fire in the same call.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*FakeTimer
	fired  uint64 // timer functions run by Advance
}

// FakeTimer is a timer of a Fake clock.
type FakeTimer struct {
	c     *Fake
	f     func()
	when  time.Time
	armed bool
}

// NewFake returns a virtual clock reading start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now is the virtual time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a stopped timer calling f.
func (c *Fake) NewTimer(f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &FakeTimer{c: c, f: f}
	c.timers = append(c.timers, t)
	return t
}

// Reset arms the timer to fire d after the clock's time.
func (t *FakeTimer) Reset(d time.Duration) {
	t.c.mu.Lock()
	t.when = t.c.now.Add(d)
	t.armed = true
	t.c.mu.Unlock()
}

// Stop disarms the timer.
func (t *FakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.armed = false
	return was
}

// Deadline reports when the timer fires next, and whether it is armed.
func (t *FakeTimer) Deadline() (time.Time, bool) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.when, t.armed
}

// Next reports the earliest deadline of the armed timers, and whether
// any is armed: a test waits for code under test to arm its timer (in
// another goroutine), then advances to it.
func (c *Fake) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	ok := false
	for _, t := range c.timers {
		if t.armed && (!ok || t.when.Before(next)) {
			next, ok = t.when, true
		}
	}
	return next, ok
}

// Fired is how many timer functions Advance has run so far. Since timers
// fire synchronously in Advance, an Advance that leaves Fired unchanged
// has started nothing: a test asserting that nothing happens within a
// span of virtual time checks Fired instead of sleeping to see whether
// something shows up.
func (c *Fake) Fired() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fired
}

// Advance moves time forward by d, firing timers as they come due.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var due []*FakeTimer
		for _, t := range c.timers {
			if t.armed && !t.when.After(end) {
				due = append(due, t)
			}
		}
		if len(due) == 0 {
			if end.After(c.now) {
				c.now = end
			}
			c.mu.Unlock()
			return
		}
		sort.SliceStable(due, func(i, j int) bool { return due[i].when.Before(due[j].when) })
		t := due[0]
		if t.when.After(c.now) {
			c.now = t.when
		}
		t.armed = false
		c.fired++
		c.mu.Unlock()
		t.f()
	}
}

// Step advances the clock by step at a time until total has passed,
// calling between (when not nil) after each step: where goroutines must
// act on what a step's timers did (packets to deliver), between waits for
// them, so that virtual time stands still meanwhile.
func (c *Fake) Step(total, step time.Duration, between func()) {
	for done := time.Duration(0); done < total; done += step {
		c.Advance(min(step, total-done))
		if between != nil {
			between()
		}
	}
}
