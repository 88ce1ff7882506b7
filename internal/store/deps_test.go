package store

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStoreImportsNoProtocolPackages checks that the store keeps its own
// plain types: it does not import the control protocol's network map or
// the access policy (conversions live in control/server and
// control/admin), so neither can pull the database into a node.
func TestStoreImportsNoProtocolPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, "github.com/warrenmesh/warren/internal/store").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for imp := range strings.FieldsSeq(string(out)) {
		switch imp {
		case "github.com/warrenmesh/warren/internal/netmap", "github.com/warrenmesh/warren/internal/policy":
			t.Errorf("github.com/warrenmesh/warren/internal/store imports %s", imp)
		}
	}
}
