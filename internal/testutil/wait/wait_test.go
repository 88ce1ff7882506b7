package wait_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

func TestPollWaitsForAConditionAnotherGoroutineMakesTrue(t *testing.T) {
	var flag atomic.Bool
	go func() {
		time.Sleep(30 * time.Millisecond)
		flag.Store(true)
	}()
	if !wait.Poll(wait.Long, flag.Load) {
		t.Fatal("condition set by another goroutine never seen")
	}
}

func TestPollGivesUpAfterTheTimeout(t *testing.T) {
	calls := 0
	if wait.Poll(10*time.Millisecond, func() bool { calls++; return false }) {
		t.Fatal("a condition that never holds was reported as holding")
	}
	if calls < 2 {
		t.Fatalf("cond checked %d times: Poll must keep checking until the timeout", calls)
	}
}

// For fails the test (through Fatalf) when the condition never holds.
func TestForFailsNamingWhatItAwaited(t *testing.T) {
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine it is called in
		defer close(done)
		wait.For(rec, time.Millisecond, "pony", func() bool { return false })
	}()
	<-done
	if rec.msg != "no pony after 1ms" {
		t.Fatalf("failure message %q", rec.msg)
	}
}

type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
