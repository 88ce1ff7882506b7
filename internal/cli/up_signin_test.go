package cli

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/oidctest"
	"github.com/warrenmesh/warren/internal/daemon"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestUpBySignInCLI: `warren up --qr` without an auth key, against
// `warren server` with sign-in and a userspace daemon (both in process),
// prints the sign-in URL and a QR code, waits, and finishes once a person
// signs in (scripted); `warren status` then shows the node as the person's.
func TestUpBySignInCLI(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	idp := oidctest.Start(t)
	dir := filepath.Join(t.TempDir(), "data")
	secret := filepath.Join(t.TempDir(), "oidc-secret")
	if err := os.WriteFile(secret, []byte(idp.ClientSecret()), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	public := "http://" + addr
	startServer(t, dir, "--listen", addr, "--public-url", public, "--oidc-issuer", idp.Issuer(), "--oidc-client-id", idp.ClientID(),
		"--oidc-client-secret-file", secret, "--oidc-allowed-users", "lena@example.org")

	ddir := t.TempDir()
	sock := filepath.Join(ddir, "warren.sock")
	d, err := daemon.New(daemon.Config{Userspace: true, StateDir: filepath.Join(ddir, "state"), Socket: sock, NoPortMap: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- d.Run(ctx, func() { close(ready) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("daemon: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon: %v", err)
	}

	var out, errb lockedBuffer
	upDone := make(chan int, 1)
	go func() {
		upDone <- run([]string{"up", "--socket", sock, "--server", public, "--hostname", "kiosk", "--qr"}, &out, &errb)
	}()
	urlRE := regexp.MustCompile(`sign in at:\n\n\t(http://\S+/oidc/start\?reg=[a-z2-7]+)\n`)
	var authURL string
	wait.For(t, 30*time.Second, "up prints the sign-in URL", func() bool {
		if m := urlRE.FindStringSubmatch(out.String()); m != nil {
			authURL = m[1]
			return true
		}
		return false
	})
	if !strings.Contains(out.String(), "█") {
		t.Errorf("--qr: no QR code in\n%s", out.String())
	}
	idp.Queue(oidctest.Person{Subject: "sub-lena", Email: "lena@example.org", EmailVerified: true})
	if code, body := oidctest.NewBrowser(t, nil).AddMachine(t, authURL, "add"); code != 200 || !strings.Contains(body, "kiosk joined the network") {
		t.Fatalf("sign-in: %d %q", code, body)
	}
	select {
	case code := <-upDone:
		if code != 0 || !strings.Contains(out.String(), "Signed in.") || !strings.Contains(out.String(), "warren is up: kiosk.") {
			t.Fatalf("up: exit %d\nstdout %s\nstderr %s", code, out.String(), errb.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("up did not finish after the sign-in:\n%s\n%s", out.String(), errb.String())
	}
	st := ok(t, "status", "--socket", sock)
	if !strings.Contains(st, "kiosk") || !strings.Contains(st, "lena@example.org") {
		t.Fatalf("status:\n%s", st)
	}
}
