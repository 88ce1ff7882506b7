package store

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestChangeLog: every write to what maps are made of appends its change,
// in the writing transaction (a refused write appends nothing); a pruned
// log says so; GetNodes reads the nodes that exist among those asked for.
func TestChangeLog(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		start, err := s.LastChange(ctx)
		if err != nil {
			t.Fatal(err)
		}
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		key, _ := must2(t)(s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true}))
		a := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("a"), "a", RegisterOptions{}))
		b := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("b"), "b", RegisterOptions{}))
		steps := []struct {
			name string
			do   func() error
			want []Change // Seq ignored
		}{
			{"online", func() error { return s.SetOnline(ctx, a.ID, true, time.Now()) }, []Change{{Kind: ChangeNode, Ref: a.ID}}},
			{"endpoints", func() error { return s.UpdateEndpoints(ctx, b.ID, []string{"192.0.2.1:1"}) }, []Change{{Kind: ChangeNode, Ref: b.ID}}},
			{"rename user", func() error { return s.RenameUser(ctx, u.ID, "alicia") }, []Change{{Kind: ChangeUser, Ref: u.ID}}},
			{"dns zone", func() error { _, err := s.AddDNSZone(ctx, "corp.example"); return err }, []Change{{Kind: ChangeDNS}}},
			{"policy", func() error { _, err := s.SetPolicy(ctx, `{}`); return err }, []Change{{Kind: ChangePolicy}}},
			{"refused rename", func() error { s.RenameNode(ctx, a.ID, "b"); return nil }, nil},
			{"delete", func() error { return s.DeleteNode(ctx, b.ID) }, []Change{{Kind: ChangeNode, Ref: b.ID}}},
		}
		got, _, err := s.Changes(ctx, start, 100)
		if err != nil || len(got) != 2 || got[0].Ref != a.ID || got[1].Ref != b.ID || got[0].Kind != ChangeNode {
			t.Fatalf("registrations: changes %+v, %v", got, err)
		}
		seq := got[1].Seq
		for _, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			got, pruned, err := s.Changes(ctx, seq, 100)
			if err != nil || pruned != 0 {
				t.Fatalf("%s: changes: %v (pruned %d)", st.name, err, pruned)
			}
			var kinds []Change
			for _, c := range got {
				if c.Seq <= seq {
					t.Fatalf("%s: change %d not after %d", st.name, c.Seq, seq)
				}
				seq = c.Seq
				kinds = append(kinds, Change{Kind: c.Kind, Ref: c.Ref})
			}
			if !slices.Equal(kinds, st.want) {
				t.Fatalf("%s: changes %+v, want %+v", st.name, kinds, st.want)
			}
		}
		if last, err := s.LastChange(ctx); err != nil || last != seq {
			t.Fatalf("LastChange = %d, %v; want %d", last, err, seq)
		}

		nodes, err := s.GetNodes(ctx, []int64{a.ID, b.ID, a.ID + b.ID + 100})
		if err != nil || len(nodes) != 1 || nodes[0].ID != a.ID || !nodes[0].Online {
			t.Fatalf("GetNodes = %+v, %v; want a (online) alone", nodes, err)
		}

		if err := s.PruneChanges(ctx, seq-1); err != nil {
			t.Fatal(err)
		}
		got, pruned, err := s.Changes(ctx, start, 100)
		if err != nil || pruned != seq-1 || len(got) != 1 || got[0].Seq != seq {
			t.Fatalf("after pruning: %+v, pruned %d, %v", got, pruned, err)
		}
		if err := s.PruneChanges(ctx, 1); err != nil { // the mark never moves back
			t.Fatal(err)
		}
		if last, err := s.LastChange(ctx); err != nil || last != seq {
			t.Fatalf("LastChange after pruning = %d, %v; want %d", last, err, seq)
		}
		if err := s.PruneChanges(ctx, seq); err != nil {
			t.Fatal(err)
		}
		if last, err := s.LastChange(ctx); err != nil || last != seq {
			t.Fatalf("LastChange of an empty log = %d, %v; want the pruned mark %d", last, err, seq)
		}
		if err := s.SetOnline(ctx, a.ID, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		if got, _, err := s.Changes(ctx, seq, 100); err != nil || len(got) != 1 || got[0].Seq <= seq {
			t.Fatalf("a change after pruning everything: %+v, %v", got, err)
		}
	})
}

func must2(t *testing.T) func(string, *PreAuthKey, error) (string, *PreAuthKey) {
	return func(k string, p *PreAuthKey, err error) (string, *PreAuthKey) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return k, p
	}
}
