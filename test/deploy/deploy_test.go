// Package deploy tests Warren as operators install it: the Debian package
// (built with packaging/build-deb.sh, installed with dpkg -i, its files
// and systemd units checked, removed again) and the node daemon's
// sd_notify readiness and watchdog in a network namespace. Both need root
// and skip without it unless WARREN_REQUIRE_NETNS=1.
package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/warrenmesh/warren/internal/nettest"
)

// warrenBin is the binary TestMain builds (as root only).
var warrenBin string

const testVersion = "1.2.3-deploytest"

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 && os.Getenv(nettest.RequireEnv) != "1" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "warren-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	warrenBin = filepath.Join(dir, "warren")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X github.com/warrenmesh/warren/internal/cli.Version="+testVersion, "-o", warrenBin, "github.com/warrenmesh/warren/cmd/warren")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// needRoot skips (or, with WARREN_REQUIRE_NETNS=1, fails) without root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(nettest.RequireEnv) == "1" {
		t.Fatalf("this test needs root (and %s=1)", nettest.RequireEnv)
	}
	t.Skip("this test needs root")
}
