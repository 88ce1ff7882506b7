package client

import (
	"fmt"
	"testing"

	"github.com/warrenmesh/warren/internal/control/proto"
)

// TestUnavailableIsNoRefusal: a map stream the server ended because it
// cannot reach its database is retried quietly (info), like the network
// going away; a refusal (the node is unknown, say) is a warning.
func TestUnavailableIsNoRefusal(t *testing.T) {
	for _, c := range []struct {
		code    string
		refusal bool
	}{
		{proto.CodeUnavailable, false},
		{proto.CodeInternal, false},
		{proto.CodeNotRegistered, true},
		{proto.CodeDiscoKeyInUse, true},
	} {
		if got := refusal(fmt.Errorf("map: %w", &proto.Error{Code: c.code})); got != c.refusal {
			t.Errorf("%s: refusal %v, want %v", c.code, got, c.refusal)
		}
	}
}
