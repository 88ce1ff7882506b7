package cli

import (
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/netmap"
)

// TestReplicaRelays: a server alone offers its relay map as built; a
// replica registers its embedded relay (the first region) instead of
// offering it itself, and refuses relay map regions in the replicas'
// range of IDs.
func TestReplicaRelays(t *testing.T) {
	emb := netmap.RelayRegion{ID: embeddedRegionID, Code: "home", URL: "https://ctl1.example.com"}
	other := netmap.RelayRegion{ID: 7, Code: "fra", URL: "https://fra.example.com"}
	got, own, err := replicaRelays("", true, []netmap.RelayRegion{emb, other})
	if err != nil || own != nil || len(got) != 2 || got[0] != emb {
		t.Fatalf("alone: %v %v %v", got, own, err)
	}
	got, own, err = replicaRelays("r1", true, []netmap.RelayRegion{emb, other})
	if err != nil || own == nil || *own != emb || len(got) != 1 || got[0] != other {
		t.Fatalf("replica with a relay: %v %v %v", got, own, err)
	}
	got, own, err = replicaRelays("r1", false, []netmap.RelayRegion{other})
	if err != nil || own != nil || len(got) != 1 {
		t.Fatalf("replica without a relay: %v %v %v", got, own, err)
	}
	high := netmap.RelayRegion{ID: 1001, Code: "x", URL: "https://x.example.com"}
	if _, _, err = replicaRelays("r1", false, []netmap.RelayRegion{high}); err == nil || !strings.Contains(err.Error(), "region ID 1001") {
		t.Fatalf("a relay map region in the replicas' range: %v", err)
	}
	if _, _, err = replicaRelays("", false, []netmap.RelayRegion{high}); err != nil {
		t.Fatalf("alone, any ID: %v", err)
	}
}
