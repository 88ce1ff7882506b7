package console_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The browser driver is a test dependency only: the binary links neither
// chromedp nor its protocol types.
func TestBinaryDoesNotLinkBrowserDriver(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/warrenmesh/warren/cmd/warren").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	linked := false
	for dep := range strings.FieldsSeq(string(out)) {
		if strings.HasPrefix(dep, "github.com/chromedp/") {
			t.Errorf("the warren binary links %s", dep)
		}
		linked = linked || dep == "github.com/warrenmesh/warren/internal/console"
	}
	if !linked {
		t.Error("the warren binary does not link the console")
	}
}
