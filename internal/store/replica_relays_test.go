package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/store/storetest"
)

// TestReplicaRelays: a replica's relay is registered once (a repeated
// registration logs no change), keeps its region when registered again by
// a restarted replica, and leaves with its replica, cleanly or by lapse.
func TestReplicaRelays(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Unix(1800000000, 0)
			s, err := store.Open(ctx, b.DSN(t), store.Options{Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, r := range []string{"ra", "rb"} {
				if err := s.Heartbeat(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			a := store.ReplicaRelay{URL: "http://198.18.1.2:8080", STUN: "198.18.1.2:3478", Key: "k"}
			if err := s.RegisterRelay(ctx, "ra", a); err != nil {
				t.Fatal(err)
			}
			last, _ := s.LastChange(ctx)
			if err := s.RegisterRelay(ctx, "ra", a); err != nil {
				t.Fatal(err)
			}
			if again, _ := s.LastChange(ctx); again != last {
				t.Fatalf("registering the same relay again logged %d changes", again-last)
			}
			if err := s.RegisterRelay(ctx, "rb", store.ReplicaRelay{URL: "http://198.18.2.2:8080", Key: "k"}); err != nil {
				t.Fatal(err)
			}
			rs, err := s.ReplicaRelays(ctx)
			if err != nil || len(rs) != 2 || rs[0].URL != a.URL || rs[0].Replica != "ra" || rs[0].STUN != a.STUN ||
				rs[1].Replica != "rb" || rs[0].Region <= store.ReplicaRelayRegionBase || rs[1].Region <= rs[0].Region {
				t.Fatalf("relays %+v, %v", rs, err)
			}
			region := rs[0].Region
			// ra restarted under another name: same relay, same region.
			if err := s.Heartbeat(ctx, "ra2"); err != nil {
				t.Fatal(err)
			}
			if err := s.RegisterRelay(ctx, "ra2", a); err != nil {
				t.Fatal(err)
			}
			if again, _ := s.LastChange(ctx); again == last {
				t.Fatal("a relay moving to another replica logged no change")
			}
			if rs, _ = s.ReplicaRelays(ctx); len(rs) != 2 || rs[0].Region != region || rs[0].Replica != "ra2" {
				t.Fatalf("after the restart: %+v", rs)
			}
			// rb leaves cleanly; ra2's heartbeat lapses.
			if err := s.LeaveReplicas(ctx, "rb"); err != nil {
				t.Fatal(err)
			}
			if rs, _ = s.ReplicaRelays(ctx); len(rs) != 1 || rs[0].Replica != "ra2" {
				t.Fatalf("after rb left: %+v", rs)
			}
			if _, err := s.MarkLapsedOffline(ctx, time.Hour); err != nil {
				t.Fatal(err)
			}
			if rs, _ = s.ReplicaRelays(ctx); len(rs) != 1 {
				t.Fatalf("a live replica's relay was removed: %+v", rs)
			}
			now = now.Add(2 * time.Hour)
			if _, err := s.MarkLapsedOffline(ctx, time.Hour); err != nil {
				t.Fatal(err)
			}
			if rs, _ = s.ReplicaRelays(ctx); len(rs) != 0 {
				t.Fatalf("a lapsed replica's relay stayed: %+v", rs)
			}
		})
	}
}
