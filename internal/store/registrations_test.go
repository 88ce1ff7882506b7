package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRegistrations: a registration completed by a user makes a node
// (once); a re-login of the same key by the same user keeps the node's
// name and addresses; another user cannot take it; an expired
// registration is refused; approval mode keeps the node unapproved until
// ApproveNode.
func TestRegistrations(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	eachBackend(t, Options{Now: clock}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		alice := must[*User](t)(s.SignIn(ctx, "https://idp", "sub-a", "alice@example.com", SignInOptions{Create: true, Name: "alice@example.com"}))
		bob := must[*User](t)(s.SignIn(ctx, "https://idp", "sub-b", "bob@example.com", SignInOptions{Create: true, Name: "bob@example.com"}))
		key := nodeKeyOf("laptop")
		r := must[*Registration](t)(s.CreateRegistration(ctx, key, "laptop", 15*time.Minute))
		if len(r.RegID) != 24 {
			t.Fatalf("registration ID %q", r.RegID)
		}
		exp := now.Add(180 * 24 * time.Hour)
		n := must[*Node](t)(s.CompleteRegistration(ctx, r.RegID, alice.ID, exp, true))
		if n.UserID != alice.ID || n.Name != "laptop" || !n.Approved || !n.Interactive || !n.Expiry.Equal(exp) || n.AuthKeyID != 0 {
			t.Fatalf("node %+v", n)
		}
		if _, err := s.CompleteRegistration(ctx, r.RegID, alice.ID, exp, true); !errors.Is(err, ErrConflict) {
			t.Fatalf("second completion: %v", err)
		}
		got := must[*Registration](t)(s.GetRegistration(ctx, r.RegID))
		if got.NodeID != n.ID || got.UserID != alice.ID || got.NodeKey != key {
			t.Fatalf("registration %+v", got)
		}

		// Re-login after expiry: same node, new expiry.
		if err := s.SetNodeExpiry(ctx, n.ID, now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		r2 := must[*Registration](t)(s.CreateRegistration(ctx, key, "other-name", 15*time.Minute))
		n2 := must[*Node](t)(s.CompleteRegistration(ctx, r2.RegID, alice.ID, exp.Add(time.Hour), true))
		if n2.ID != n.ID || n2.Name != n.Name || n2.IPv4 != n.IPv4 || n2.IPv6 != n.IPv6 || !n2.Expiry.Equal(exp.Add(time.Hour)) {
			t.Fatalf("re-login %+v, was %+v", n2, n)
		}
		// Bob cannot take it.
		r3 := must[*Registration](t)(s.CreateRegistration(ctx, key, "laptop", 15*time.Minute))
		if _, err := s.CompleteRegistration(ctx, r3.RegID, bob.ID, exp, true); !errors.Is(err, ErrNodeKeyInUse) {
			t.Fatalf("other user's completion: %v", err)
		}
		// Expired registration.
		r4 := must[*Registration](t)(s.CreateRegistration(ctx, nodeKeyOf("phone"), "phone", time.Minute))
		now = now.Add(2 * time.Minute)
		if _, err := s.CompleteRegistration(ctx, r4.RegID, bob.ID, exp, true); !errors.Is(err, ErrRegistrationExpired) {
			t.Fatalf("expired registration: %v", err)
		}
		if _, err := s.CompleteRegistration(ctx, "nope", bob.ID, exp, true); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown registration: %v", err)
		}
		// Approval mode.
		r5 := must[*Registration](t)(s.CreateRegistration(ctx, nodeKeyOf("tablet"), "tablet", time.Minute))
		n5 := must[*Node](t)(s.CompleteRegistration(ctx, r5.RegID, bob.ID, time.Time{}, false))
		if n5.Approved || !must[*Node](t)(s.GetNode(ctx, n5.ID)).Interactive {
			t.Fatalf("approval-mode node %+v", n5)
		}
		if must[*Node](t)(s.GetNode(ctx, n5.ID)).Approved {
			t.Fatal("stored approved before ApproveNode")
		}
		if err := s.ApproveNode(ctx, n5.ID); err != nil {
			t.Fatal(err)
		}
		if !must[*Node](t)(s.GetNode(ctx, n5.ID)).Approved {
			t.Fatal("not approved after ApproveNode")
		}
	})
}

// TestAuditAndSessions: the audit log lists since a time, oldest first,
// the newest limit; a web session is found by its token until it expires
// or is deleted.
func TestAuditAndSessions(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	eachBackend(t, Options{Now: func() time.Time { return now }}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		for i, a := range []string{"one", "two", "three"} {
			if err := s.RecordAudit(ctx, AuditEntry{At: now.Add(time.Duration(i) * time.Hour), Actor: "x", Action: a, OK: true}); err != nil {
				t.Fatal(err)
			}
		}
		es := must[[]*AuditEntry](t)(s.ListAudit(ctx, now.Add(time.Hour), 0))
		if len(es) != 2 || es[0].Action != "two" || es[1].Action != "three" {
			t.Fatalf("since: %+v", es)
		}
		es = must[[]*AuditEntry](t)(s.ListAudit(ctx, time.Time{}, 1))
		if len(es) != 1 || es[0].Action != "three" {
			t.Fatalf("limit: %+v", es)
		}
		// Retention: what is older than the cut goes, nothing else.
		if n := must[int64](t)(s.PruneAudit(ctx, now.Add(90*time.Minute))); n != 2 {
			t.Fatalf("pruned %d, want one and two", n)
		}
		if n := must[int64](t)(s.PruneAudit(ctx, now.Add(2*time.Hour))); n != 0 {
			t.Fatalf("pruned %d at the newest entry's own time, want 0", n)
		}
		es = must[[]*AuditEntry](t)(s.ListAudit(ctx, time.Time{}, 0))
		if len(es) != 1 || es[0].Action != "three" {
			t.Fatalf("after pruning: %+v", es)
		}
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		tok, _, err := s.CreateWebSession(ctx, u.ID, "a@example.com", true, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ws := must[*WebSession](t)(s.WebSessionByToken(ctx, tok))
		if ws.UserID != u.ID || !ws.Admin {
			t.Fatalf("session %+v", ws)
		}
		if _, err := s.WebSessionByToken(ctx, tok+"x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("wrong token: %v", err)
		}
		now = now.Add(2 * time.Hour)
		if _, err := s.WebSessionByToken(ctx, tok); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired session: %v", err)
		}
		if err := s.DeleteExpiredWebSessions(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteWebSession(ctx, tok); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired session not removed: %v", err)
		}
	})
}
