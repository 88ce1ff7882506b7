package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestAuditLogPruned: the audit log keeps AuditKeep and no longer; the
// duty holder prunes at its first pass and then once an hour of the
// server's clock; AuditKeep 0 keeps everything.
func TestAuditLogPruned(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	setup := func(keep time.Duration) (*env, *clock.Fake, func() []string) {
		fc := clock.NewFake(time.Now())
		e := newEnv(t, server.Options{Clock: fc, AuditKeep: keep})
		now := fc.Now()
		for _, r := range []struct {
			action string
			age    time.Duration
		}{{"two days old", 48 * time.Hour}, {"nearly a day old", 24*time.Hour - 10*time.Minute}, {"an hour old", time.Hour}} {
			if err := e.st.RecordAudit(ctx, store.AuditEntry{At: now.Add(-r.age), Actor: "test", Action: r.action, OK: true}); err != nil {
				t.Fatal(err)
			}
		}
		e.start()
		e.srv.Notify() // the first pass (else at the first poll)
		return e, fc, func() []string {
			es, err := e.st.ListAudit(ctx, time.Time{}, 0)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, a := range es {
				out = append(out, a.Action)
			}
			return out
		}
	}
	// twoPasses returns once a pass that started after it was called has
	// finished (the worker's passes run one after another).
	twoPasses := func(e *env, fc *clock.Fake, advance time.Duration) {
		t.Helper()
		reads := storeReads(e.srv)
		fc.Advance(advance)
		e.srv.Notify()
		wait.For(t, pushWait, "a pass", func() bool { return storeReads(e.srv) > reads })
		e.srv.Notify()
		wait.For(t, pushWait, "the next pass", func() bool { return storeReads(e.srv) > reads+1 })
	}

	e, fc, actions := setup(24 * time.Hour)
	wait.For(t, pushWait, "the first pass pruning", func() bool {
		return slices.Equal(actions(), []string{"nearly a day old", "an hour old"})
	})
	wait.For(t, pushWait, "the pruning logged", func() bool { return e.logged("pruned the audit log") }) // after the delete
	// Half an hour on, "nearly a day old" is past AuditKeep, but the last
	// pruning was less than an hour ago.
	twoPasses(e, fc, 30*time.Minute)
	if got := actions(); !slices.Equal(got, []string{"nearly a day old", "an hour old"}) {
		t.Fatalf("pruned within the hour: %q", got)
	}
	twoPasses(e, fc, 31*time.Minute)
	if got := actions(); !slices.Equal(got, []string{"an hour old"}) {
		t.Fatalf("an hour after the last pruning: %q", got)
	}

	e, fc, actions = setup(0)
	twoPasses(e, fc, 2*time.Hour)
	if got := actions(); len(got) != 3 {
		t.Fatalf("AuditKeep 0 pruned: %q", got)
	}
}
