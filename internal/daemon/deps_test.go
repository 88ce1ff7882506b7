package daemon

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNodeDoesNotLinkServerStore checks the direction of dependencies:
// the node's code (this package and everything it imports) must not link
// the coordination server's store or a SQL driver. A node needs the
// control and relay clients, never the server's database. (database/sql
// itself may appear: the Prometheus client's collectors import it; it is
// the drivers and the store that must not.)
func TestNodeDoesNotLinkServerStore(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/warrenmesh/warren/internal/daemon").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/warrenmesh/warren/internal/store",
		"github.com/warrenmesh/warren/internal/control/server",
		"github.com/warrenmesh/warren/internal/relay/relayserver",
		"modernc.org/sqlite",
		"github.com/jackc/pgx",
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("github.com/warrenmesh/warren/internal/daemon depends on %s", dep)
			}
		}
	}
}
