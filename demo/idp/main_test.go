package main

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/oidcauth"
	"github.com/warrenmesh/warren/internal/control/oidctest"
	"github.com/warrenmesh/warren/internal/store"
)

// TestSignInThroughDemoIdP: the server's real sign-in (package oidcauth:
// discovery, PKCE, the ID token's signature, issuer, audience and nonce
// checked) against the demo's provider, with a scripted browser that
// fills in its sign-in page as the demo does; a refused authorization
// leaves nobody queued for the next sign-in.
func TestSignInThroughDemoIdP(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "warren.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p, _ := startProvider(t)

	front := oidctest.NewFront(t)
	front.Mount(t, &oidctest.IdP{M: p.m}, st, nil)

	// signIn starts a sign-in in a new browser, checks it reaches the
	// provider's page and submits form there; it returns the browser and
	// the answer to the submission.
	signIn := func(form url.Values, mangle func(*url.URL)) (*oidctest.Browser, *http.Response) {
		t.Helper()
		b := front.Browser(t)
		code, page, body := b.Get(t, front.Srv.URL+oidcauth.StartURL("/"))
		if code != 200 || page.Path != "/oidc/authorize" || !strings.Contains(body, `<form method="post">`) {
			t.Fatalf("sign-in page: %d %s %q", code, page, body)
		}
		if mangle != nil {
			mangle(page)
		}
		resp, err := b.Client.PostForm(page.String(), form)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return b, resp
	}
	session := func(b *oidctest.Browser) *oidcauth.Session {
		t.Helper()
		u, _ := url.Parse(front.Srv.URL + "/")
		r := httptest.NewRequest("GET", u.String(), nil)
		for _, c := range b.Client.Jar.Cookies(u) {
			r.AddCookie(c)
		}
		s, err := front.Auth.Authenticate(r)
		if err != nil {
			t.Fatalf("no session: %v", err)
		}
		return s
	}

	b, resp := signIn(url.Values{"email": {"Dana@Example.com"}}, nil)
	if resp.Request.URL.Host != strings.TrimPrefix(front.Srv.URL, "https://") || resp.Request.URL.Path != "/" {
		t.Fatalf("after sign-in: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	if s := session(b); s.Email != "dana@example.com" || s.User.Name != "dana@example.com" {
		t.Fatalf("session %+v user %+v", s, s.User)
	}
	ids, err := st.ListIdentities(context.Background(), 0)
	if err != nil || len(ids) != 1 || ids[0].Issuer != p.m.Issuer() || ids[0].Subject != "demo-dana@example.com" {
		t.Fatalf("identities %+v %v", ids, err)
	}

	if _, resp := signIn(url.Values{"email": {"not an address"}}, nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad email: %d", resp.StatusCode)
	}
	// A wrong client ID is refused by mockoidc after the person was
	// queued; the next sign-in must still be the next person's.
	wrongClient := func(u *url.URL) {
		q := u.Query()
		q.Set("client_id", "someone-else")
		u.RawQuery = q.Encode()
	}
	if _, resp := signIn(url.Values{"email": {"mallory@example.com"}}, wrongClient); resp.StatusCode == http.StatusOK && resp.Request.URL.Path == "/" {
		t.Fatalf("wrong client ID signed in")
	}
	b, _ = signIn(url.Values{"email": {"erin@example.com"}}, nil)
	if s := session(b); s.Email != "erin@example.com" {
		t.Fatalf("after a refused authorization the next sign-in is %s", s.Email)
	}
}

// TestNotLinkedIntoWarren: the demo's provider (and mockoidc) never end up
// in the product binary.
func TestNotLinkedIntoWarren(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/warrenmesh/warren/cmd/warren").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, f := range []string{"github.com/oauth2-proxy/mockoidc", "github.com/warrenmesh/warren/internal/control/oidctest",
			"github.com/warrenmesh/warren/demo/idp"} {
			if dep == f {
				t.Errorf("cmd/warren depends on %s", dep)
			}
		}
	}
}

// startProvider serves a demo provider on a loopback port until the test
// ends.
func startProvider(t *testing.T) (*provider, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := newProvider(ln, "warren-demo", "s3cret", log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	go p.m.Server.Serve(ln)
	t.Cleanup(func() { p.m.Server.Close() })
	return p, ln
}
