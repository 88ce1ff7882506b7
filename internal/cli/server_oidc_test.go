package cli

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/oidcauth"
	"github.com/warrenmesh/warren/internal/control/oidctest"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestServerOIDC: `warren server` configured for sign-in (flags, the
// secret from a file) signs people in, refuses another domain, registers a
// node by sign-in, and `warren admin audit list` shows all of it.
func TestServerOIDC(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	idp := oidctest.Start(t)
	dir := filepath.Join(t.TempDir(), "data")
	secret := filepath.Join(t.TempDir(), "oidc-secret")
	if err := os.WriteFile(secret, []byte(idp.ClientSecret()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	public := "http://" + addr
	args := []string{"--listen", addr, "--public-url", public, "--oidc-issuer", idp.Issuer(), "--oidc-client-id", idp.ClientID(),
		"--oidc-client-secret-file", secret, "--oidc-allowed-domains", "example.com"}

	// The secret file must not be readable by others.
	sf := newServerFlags("server", true)
	if err := sf.fs.Parse(append([]string{"--data-dir", dir}, args...)); err != nil {
		t.Fatal(err)
	}
	c, err := sf.resolve()
	if err != nil {
		t.Fatal(err)
	}
	var errb lockedBuffer
	if code := serve(t.Context(), c, &errb); code != 1 || !strings.Contains(errb.String(), "is readable by group or others") {
		t.Fatalf("world-readable secret: exit %d, %s", code, errb.String())
	}
	os.Chmod(secret, 0o600)

	ts := startServer(t, dir, args...)
	key := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", dir))
	b := oidctest.NewBrowser(t, nil)
	idp.Queue(oidctest.Person{Subject: "sub-ivy", Email: "ivy@example.com", EmailVerified: true})
	if _, final, _ := b.Get(t, public+oidcauth.StartURL("/")); final.Path != "/" {
		t.Fatalf("sign-in ended at %s", final)
	}
	idp.Queue(oidctest.Person{Subject: "sub-jack", Email: "jack@example.net", EmailVerified: true})
	if code, _, body := oidctest.NewBrowser(t, nil).Get(t, public+oidcauth.StartURL("/")); code != http.StatusForbidden || !strings.Contains(body, "example.net is not allowed") {
		t.Fatalf("other domain: %d %q", code, body)
	}

	// A node joins by sign-in through the real server.
	sk, err := noise.ParsePublicKey(ts.pub)
	if err != nil {
		t.Fatal(err)
	}
	nk, _ := noise.GeneratePrivateKey()
	cl, err := client.New(client.Config{ServerURL: ts.url, ServerKey: pubkey.Server{PublicKey: sk}, NodeKey: nk})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.RegisterInteractive(context.Background(), "kiosk", nil, false, "")
	var re *client.RegisterError
	if !errors.As(err, &re) || re.Code != proto.CodeLoginRequired || !strings.HasPrefix(re.AuthURL, public+"/oidc/start?reg=") {
		t.Fatalf("interactive: %v", err)
	}
	idp.Queue(oidctest.Person{Subject: "sub-ivy", Email: "ivy@example.com", EmailVerified: true})
	if code, body := b.AddMachine(t, re.AuthURL, "add"); code != 200 || !strings.Contains(body, "kiosk joined the network; it belongs to ivy@example.com") {
		t.Fatalf("registration page: %d %q", code, body)
	}
	if n, err := cl.RegisterInteractive(context.Background(), "kiosk", nil, false, re.RegistrationID); err != nil || n.User != "ivy@example.com" {
		t.Fatalf("registered: %v %+v", err, n)
	}

	a := func(args ...string) string {
		t.Helper()
		return ok(t, append([]string{"admin", "--server", ts.url, "--api-key", key}, args...)...)
	}
	a("users", "create", "bob")
	out := a("audit", "list", "--since", "1h")
	for _, want := range [][3]string{{"user:ivy@example.com", "signin", "ok"}, {"oidc:jack@example.net", "signin", "refused"},
		{"user:ivy@example.com", "node.register", "ok"}, {"apikey:", "POST /api/v1/users", "ok"}, {"local:", "apikey.create", "ok"}} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 3 && strings.HasPrefix(f[1], want[0]) && strings.Contains(line, " "+want[1]+" ") && strings.Contains(line, " "+want[2]+" ") {
				found = true
			}
		}
		if !found {
			t.Errorf("audit list lacks %v:\n%s", want, out)
		}
	}
	if code, _, errb := cmd(t, "admin", "--server", ts.url, "--api-key", key, "audit", "list", "--since", "soon"); code != 2 || !strings.Contains(errb, "--since") {
		t.Errorf("bad --since: %d %q", code, errb)
	}
}
