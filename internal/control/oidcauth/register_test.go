package oidcauth_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/controltest"
	"github.com/warrenmesh/warren/internal/control/oidcauth"
	"github.com/warrenmesh/warren/internal/control/oidctest"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// regRig is the real control server with interactive registration, its
// sign-in on an HTTPS front, and a local IdP.
type regRig struct {
	cs  *controltest.Server
	idp *oidctest.IdP
	web *httptest.Server
}

func newRegRig(t *testing.T, in server.Interactive) *regRig {
	t.Helper()
	r := &regRig{idp: oidctest.Start(t)}
	mux := http.NewServeMux()
	r.web = httptest.NewUnstartedServer(mux)
	r.web.StartTLS()
	t.Cleanup(r.web.Close)
	in.LoginURL = func(id string) string { return r.web.URL + oidcauth.RegisterURL(id) }
	r.cs = controltest.New(t, server.Options{Interactive: &in})
	r.cs.Start()
	auth, err := oidcauth.New(context.Background(), r.cs.Store, oidcauth.Config{Issuer: r.idp.Issuer(), ClientID: r.idp.ClientID(),
		ClientSecret: r.idp.ClientSecret(), RedirectURL: r.web.URL + oidcauth.CallbackPath, AllowedDomains: []string{"example.com"},
		CreateUsers: true, OnRegister: r.cs.Server().CompleteRegistration})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle(oidcauth.Prefix, auth.Handler())
	return r
}

func (r *regRig) client(t *testing.T, k noise.PrivateKey) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{ServerURL: r.cs.URL(), ServerKey: pubkey.Server{PublicKey: r.cs.Key.PublicKey()}, NodeKey: k})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (r *regRig) browser(t *testing.T) *oidctest.Browser {
	return oidctest.NewBrowser(t, r.web.Client().Transport.(*http.Transport).TLSClientConfig.Clone())
}

// loginRequired starts an interactive registration and returns its error.
func loginRequired(t *testing.T, c *client.Client, force bool) *client.RegisterError {
	t.Helper()
	_, err := c.RegisterInteractive(context.Background(), "laptop", nil, force, "")
	var re *client.RegisterError
	if !errors.As(err, &re) || re.Code != proto.CodeLoginRequired || re.RegistrationID == "" ||
		!strings.Contains(re.AuthURL, "/oidc/start?reg="+re.RegistrationID) || strings.Contains(re.AuthURL, "wses_") {
		t.Fatalf("interactive start: %v (%+v)", err, re)
	}
	return re
}

// TestInteractiveRegistration: a node asking without an auth key gets a
// sign-in URL and waits; a person signs in there (scripted) and the node,
// still waiting, gets its node: the person's user's, with the key expiry.
// A re-login (force-reauth) after expiry keeps name and addresses. Audit
// entries show the sign-ins and registrations.
func TestInteractiveRegistration(t *testing.T) {
	r := newRegRig(t, server.Interactive{KeyExpiry: 180 * 24 * time.Hour})
	k, _ := noise.GeneratePrivateKey()
	c := r.client(t, k)
	re := loginRequired(t, c, false)

	// The node waits on its registration ID while the person signs in.
	type result struct {
		n   *proto.RegisterResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for {
			n, err := c.RegisterInteractive(ctx, "laptop", nil, false, re.RegistrationID)
			var again *client.RegisterError
			if errors.As(err, &again) && again.Code == proto.CodeLoginRequired {
				continue // held the whole while, not signed in yet
			}
			if err != nil {
				done <- result{nil, err}
				return
			}
			done <- result{&proto.RegisterResponse{Node: n}, nil}
			return
		}
	}()
	r.idp.Queue(oidctest.Person{Subject: "sub-erin", Email: "erin@example.com", EmailVerified: true})
	code, body := r.browser(t).AddMachine(t, re.AuthURL, "add")
	if code != 200 || !strings.Contains(body, "The machine laptop joined the network; it belongs to erin@example.com.") {
		t.Fatalf("sign-in page: %d %q", code, body)
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("waiting node: %v", res.err)
	}
	if res.n.Node.Name != "laptop" || res.n.Node.User != "erin@example.com" {
		t.Fatalf("node %+v", res.n.Node)
	}
	n := r.cs.Node(k.PublicKey())
	u, _ := r.cs.Store.GetUserByName(context.Background(), "erin@example.com")
	if u == nil || n.UserID != u.ID || !n.Interactive || !n.Approved || n.Expiry.Sub(time.Now()) < 179*24*time.Hour {
		t.Fatalf("stored node %+v", n)
	}
	// The registration link is one-time.
	r.idp.Queue(oidctest.Person{Subject: "sub-erin", Email: "erin@example.com", EmailVerified: true})
	if code, body := r.browser(t).AddMachine(t, re.AuthURL, "add"); code != http.StatusBadRequest || !strings.Contains(body, "already used") {
		t.Fatalf("reused link: %d %q", code, body)
	}

	// Expiry, then a re-login: same name and addresses, new expiry.
	r.cs.SetExpiry(k.PublicKey(), time.Now().Add(-time.Minute))
	re2 := loginRequired(t, c, true)
	r.idp.Queue(oidctest.Person{Subject: "sub-erin", Email: "erin@example.com", EmailVerified: true})
	if code, body := r.browser(t).AddMachine(t, re2.AuthURL, "add"); code != 200 || !strings.Contains(body, "joined the network") {
		t.Fatalf("re-login page: %d %q", code, body)
	}
	n2, err := c.RegisterInteractive(context.Background(), "laptop", nil, false, re2.RegistrationID)
	if err != nil {
		t.Fatal(err)
	}
	after := r.cs.Node(k.PublicKey())
	if after.ID != n.ID || after.Name != n.Name || after.IPv4 != n.IPv4 || after.IPv6 != n.IPv6 || !after.Expiry.After(time.Now()) ||
		n2.Name != n.Name {
		t.Fatalf("after re-login %+v, before %+v", after, n)
	}

	// Another person cannot take the node by re-logging it in.
	re3 := loginRequired(t, c, true)
	r.idp.Queue(oidctest.Person{Subject: "sub-frank", Email: "frank@example.com", EmailVerified: true})
	if code, body := r.browser(t).AddMachine(t, re3.AuthURL, "add"); code != http.StatusBadRequest || !strings.Contains(body, "belongs to another user") {
		t.Fatalf("other user's re-login: %d %q", code, body)
	}
	if got := r.cs.Node(k.PublicKey()); got.UserID != u.ID {
		t.Fatalf("node moved to user %d", got.UserID)
	}

	es, err := r.cs.Store.ListAudit(context.Background(), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var regs, refused int
	for _, e := range es {
		if e.Action == "node.register" && e.OK && e.Actor == "user:erin@example.com" && strings.Contains(e.Detail, "interactive, key expires") {
			regs++
		}
		if e.Action == "node.register" && !e.OK {
			refused++
		}
	}
	if regs != 2 || refused != 2 {
		t.Fatalf("audit: %d registrations, %d refused; want 2, 2: %+v", regs, refused, es)
	}
}

// TestInteractiveApproval: in approval mode the node signed in for is in
// no map and its registration says so until an admin approves it.
func TestInteractiveApproval(t *testing.T) {
	r := newRegRig(t, server.Interactive{Approval: true})
	k, _ := noise.GeneratePrivateKey()
	c := r.client(t, k)
	re := loginRequired(t, c, false)
	r.idp.Queue(oidctest.Person{Subject: "sub-gina", Email: "gina@example.com", EmailVerified: true})
	if code, body := r.browser(t).AddMachine(t, re.AuthURL, "add"); code != 200 || !strings.Contains(body, "is registered to gina@example.com and waits for an admin") {
		t.Fatalf("sign-in page: %d %q", code, body)
	}
	_, err := c.RegisterInteractive(context.Background(), "laptop", nil, false, re.RegistrationID)
	var ae *client.RegisterError
	if !errors.As(err, &ae) || ae.Code != proto.CodeApprovalRequired {
		t.Fatalf("before approval: %v", err)
	}
	n := r.cs.Node(k.PublicKey())
	if n.Approved || !n.Expiry.IsZero() {
		t.Fatalf("stored %+v", n)
	}
	if err := r.cs.Store.ApproveNode(context.Background(), n.ID); err != nil {
		t.Fatal(err)
	}
	got, err := c.RegisterInteractive(context.Background(), "laptop", nil, false, re.RegistrationID)
	if err != nil || got.Name != "laptop" {
		t.Fatalf("after approval: %v %+v", err, got)
	}
}

// TestInteractiveUnavailable: a server without sign-in says to use an
// auth key.
func TestInteractiveUnavailable(t *testing.T) {
	cs := controltest.Start(t, server.Options{})
	k, _ := noise.GeneratePrivateKey()
	c, err := client.New(client.Config{ServerURL: cs.URL(), ServerKey: pubkey.Server{PublicKey: cs.Key.PublicKey()}, NodeKey: k})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.RegisterInteractive(context.Background(), "x", nil, false, "")
	var re *client.RegisterError
	if !errors.As(err, &re) || re.Code != proto.CodeLoginUnavailable || !strings.Contains(re.Message, "--auth-key") {
		t.Fatalf("%v", err)
	}
}

// TestRegistrationNeedsConfirmation: signing in at a machine link does not
// add the machine by itself: the page names the machine and asks; cancel
// adds nothing; a confirmation from another origin or with a forged token
// is refused.
func TestRegistrationNeedsConfirmation(t *testing.T) {
	r := newRegRig(t, server.Interactive{})
	k, _ := noise.GeneratePrivateKey()
	c := r.client(t, k)
	person := oidctest.Person{Subject: "sub-lou", Email: "lou@example.com", EmailVerified: true}

	re := loginRequired(t, c, false)
	r.idp.Queue(person)
	code, _, body := r.browser(t).Get(t, re.AuthURL)
	if code != 200 || !strings.Contains(body, "Add the machine &#34;laptop&#34; to the network as lou@example.com?") {
		t.Fatalf("confirmation page: %d %q", code, body)
	}
	if n, _ := r.cs.Store.GetNodeByKey(context.Background(), pubkey.Node{PublicKey: k.PublicKey()}); n != nil {
		t.Fatal("node added before the confirmation")
	}

	r.idp.Queue(person)
	if code, body := r.browser(t).AddMachine(t, re.AuthURL, "cancel"); code != 200 || !strings.Contains(body, "You canceled") {
		t.Fatalf("cancel: %d %q", code, body)
	}
	// Forged token and another origin.
	for _, tc := range []struct{ origin, csrf, want string }{
		{"", "forged", "not yours"},
		{"https://evil.example", "", "another site"},
	} {
		r.idp.Queue(person)
		b := r.browser(t)
		_, final, page := b.Get(t, re.AuthURL)
		csrf := tc.csrf
		if csrf == "" {
			i := strings.Index(page, `name="csrf" value="`)
			csrf = page[i+len(`name="csrf" value="`):]
			csrf = csrf[:strings.IndexByte(csrf, '"')]
		}
		req, _ := http.NewRequest("POST", final.Scheme+"://"+final.Host+oidcauth.RegisterPath, strings.NewReader("answer=add&csrf="+csrf))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := b.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := new(strings.Builder)
		io.Copy(buf, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || !strings.Contains(buf.String(), tc.want) {
			t.Errorf("%+v: %d %q", tc, resp.StatusCode, buf.String())
		}
	}
	if n, _ := r.cs.Store.GetNodeByKey(context.Background(), pubkey.Node{PublicKey: k.PublicKey()}); n != nil {
		t.Fatalf("node added: %+v", n)
	}
}
