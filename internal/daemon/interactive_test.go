package daemon

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/controltest"
	"github.com/warrenmesh/warren/internal/control/oidcauth"
	"github.com/warrenmesh/warren/internal/control/oidctest"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestUpBySignIn: `up` without an auth key returns the sign-in URL and
// waits; after a scripted sign-in the node runs as the person's user.
// After its key expires, `up --force-reauth` signs in again and the node
// keeps its name and addresses.
func TestUpBySignIn(t *testing.T) {
	idp := oidctest.Start(t)
	front := oidctest.NewFront(t)
	cs := controltest.New(t, server.Options{Interactive: &server.Interactive{
		LoginURL: func(id string) string { return front.Srv.URL + oidcauth.RegisterURL(id) }, KeyExpiry: 180 * 24 * time.Hour}})
	cs.Start()
	front.Mount(t, idp, cs.Store, func(c *oidcauth.Config) { c.OnRegister = cs.Server().CompleteRegistration })
	td := startDaemon(t, cs)
	p := joinPeer(t, cs, "peer")

	st, err := td.d.Up(t.Context(), localapi.UpRequest{ServerURL: cs.URL(), Hostname: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if st.BackendState != localapi.StateNeedsLogin || !strings.HasPrefix(st.AuthURL, front.Srv.URL+"/oidc/start?reg=") {
		t.Fatalf("up without a key: state %s, URL %q", st.BackendState, st.AuthURL)
	}
	// The server key came over plain http: the answer that carries the
	// sign-in URL says so (the CLI warns before the person signs in).
	if st.ServerKeyFetched != "http" || st.ServerKey != cs.Key.PublicKey().String() || st.ServerURL != cs.URL() {
		t.Fatalf("up without a key: server key %q fetched over %q from %q; want %s over http from %s",
			st.ServerKey, st.ServerKeyFetched, st.ServerURL, cs.Key.PublicKey(), cs.URL())
	}
	if got := td.d.Status().AuthURL; got != st.AuthURL {
		t.Fatalf("status shows %q, up answered %q", got, st.AuthURL)
	}
	idp.Queue(oidctest.Person{Subject: "sub-hana", Email: "hana@example.com", EmailVerified: true})
	if code, body := front.Browser(t).AddMachine(t, st.AuthURL, "add"); code != http.StatusOK || !strings.Contains(body, "joined the network") {
		t.Fatalf("sign-in: %d %q", code, body)
	}
	td.waitState(localapi.StateRunning)
	td.waitPeer("up by sign-in", p.pub(), p.hosts()...)
	self := td.d.Status().Self
	if self.User != "hana@example.com" || self.Name != "laptop" || self.Expiry.IsZero() || td.d.Status().AuthURL != "" {
		t.Fatalf("self %+v", self)
	}
	before := cs.Node(td.key())

	// Expired: the stream is refused; a re-login brings it back as the
	// same node.
	cs.SetExpiry(td.key(), time.Now().Add(-time.Minute))
	st, err = td.d.Up(t.Context(), localapi.UpRequest{ForceReauth: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.AuthURL == "" {
		t.Fatalf("force-reauth: no sign-in URL (state %s)", st.BackendState)
	}
	idp.Queue(oidctest.Person{Subject: "sub-hana", Email: "hana@example.com", EmailVerified: true})
	if code, body := front.Browser(t).AddMachine(t, st.AuthURL, "add"); code != http.StatusOK || !strings.Contains(body, "joined the network") {
		t.Fatalf("re-login: %d %q", code, body)
	}
	wait.For(t, waitLong, "re-login done", func() bool {
		n := cs.Node(td.key())
		return td.d.Status().AuthURL == "" && n.Expiry.After(time.Now())
	})
	td.waitState(localapi.StateRunning)
	after := cs.Node(td.key())
	if after.ID != before.ID || after.Name != before.Name || after.IPv4 != before.IPv4 || after.IPv6 != before.IPv6 {
		t.Fatalf("re-login: before %+v after %+v", before, after)
	}
	td.waitPeer("after re-login", p.pub(), p.hosts()...)
	es, _ := cs.Store.ListAudit(context.Background(), time.Time{}, 0)
	n := 0
	for _, e := range es {
		if e.Action == "node.register" && e.OK {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d node.register audit entries, want 2", n)
	}
}
