// Package wait is the one helper tests use to wait for a condition instead
// of sleeping a fixed time: Poll checks the condition, at first every few
// microseconds and backing off to every 10 ms, until it holds or a timeout
// passes; For fails the test naming what it awaited. The timeout is a
// safety net against a hang, not a measurement: a test must not depend on
// how long the condition takes.
package wait

import (
	"testing"
	"time"
)

// Long is the timeout of Until: long enough that only a hang reaches it,
// even on a loaded machine.
const Long = 30 * time.Second

// maxInterval is the longest pause between two checks.
const maxInterval = 10 * time.Millisecond

// Poll calls cond until it returns true or timeout passes, and reports
// whether it did. It checks at once, then backs off from 50 µs to 10 ms.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	pause := 50 * time.Microsecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, maxInterval)
	}
}

// For polls cond for up to timeout and fails the test, naming what was
// awaited, if it never holds.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("no %s after %v", what, timeout)
	}
}

// Until is For with the Long timeout.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	For(t, Long, what, cond)
}
