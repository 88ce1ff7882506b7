// Command idp is the demo's identity provider: a local OpenID Connect
// provider (github.com/oauth2-proxy/mockoidc: discovery, JWKS, the
// authorization code flow with PKCE, RSA-signed ID tokens) in front of
// which it puts a one-field sign-in page, so that `make demo` can join a
// node by signing in as a person would. It has no passwords: whoever
// submits an email address is signed in as it (verified). It exists for
// the demo lab only (built as bin/demo-idp by `make demo`, never linked
// into warren; TestNotLinkedIntoWarren) and must never listen anywhere
// but inside a lab.
//
// Usage: demo-idp --listen ADDR:PORT --client-id ID --client-secret-file FILE
//
// It prints its issuer URL (http://ADDR:PORT/oidc) on stdout once it
// listens, and logs each sign-in on stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"log"
	"net"
	"net/http"
	"net/mail"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/warrenmesh/warren/internal/httpguard"
)

func main() {
	listen := flag.String("listen", "", "address to listen on, ADDR:PORT (inside the lab only)")
	clientID := flag.String("client-id", "warren-demo", "the relying party's client ID")
	secretFile := flag.String("client-secret-file", "", "file holding the relying party's client secret (one line)")
	flag.Parse()
	if *listen == "" || *secretFile == "" {
		fmt.Fprintln(os.Stderr, "demo-idp: --listen and --client-secret-file are required")
		os.Exit(2)
	}
	b, err := os.ReadFile(*secretFile)
	secret := strings.TrimSpace(string(b))
	if err != nil || secret == "" {
		fmt.Fprintf(os.Stderr, "demo-idp: client secret file %s: %v\n", *secretFile, errOr(err, "empty"))
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-idp:", err)
		os.Exit(1)
	}
	p, err := newProvider(ln, *clientID, secret, log.New(os.Stderr, "demo-idp: ", 0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-idp:", err)
		os.Exit(1)
	}
	fmt.Println(p.m.Issuer())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		p.m.Server.Close()
	}()
	if err := p.m.Server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "demo-idp:", err)
		os.Exit(1)
	}
}

func errOr(err error, s string) any {
	if err != nil {
		return err
	}
	return s
}

// provider is a mockoidc provider whose authorization endpoint first asks
// who signs in.
type provider struct {
	m   *mockoidc.MockOIDC
	log *log.Logger
	// mu makes queueing the person and the authorization that takes them
	// off mockoidc's queue one step, so that concurrent sign-ins cannot
	// swap people.
	mu sync.Mutex
}

// newProvider returns a provider for the relying party clientID/secret
// whose HTTP server (not started: Serve it on ln) knows ln's address, from
// which mockoidc derives the issuer.
func newProvider(ln net.Listener, clientID, secret string, logger *log.Logger) (*provider, error) {
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		return nil, err
	}
	m.ClientID, m.ClientSecret = clientID, secret
	m.CodeChallengeMethodsSupported = []string{"S256"}
	p := &provider{m: m, log: logger}
	mux := http.NewServeMux()
	mux.HandleFunc(mockoidc.AuthorizationEndpoint, p.authorize)
	mux.HandleFunc(mockoidc.TokenEndpoint, m.Token)
	mux.HandleFunc(mockoidc.UserinfoEndpoint, m.Userinfo)
	mux.HandleFunc(mockoidc.JWKSEndpoint, m.JWKS)
	mux.HandleFunc(mockoidc.DiscoveryEndpoint, m.Discovery)
	// Setting Server ourselves (mockoidc exports it for this) rather than
	// m.Start gives the listener Warren's Host check and timeouts.
	m.Server = &http.Server{Addr: ln.Addr().String(), Handler: httpguard.Wrap(mux, httpguard.Policy{})}
	httpguard.PublicTimeouts.Apply(m.Server)
	return p, nil
}

var signInPage = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · demo identity provider</title></head>
<body><main><h1>Demo identity provider</h1>
<p>Sign in to {{.}}. (A lab provider: no password; whoever you say you are, you are.)</p>
{{/* No action: the form posts back to this URL, query included. */ -}}
<form method="post"><label>Email <input type="email" name="email" autofocus></label>
<button type="submit">Sign in</button></form></main></body></html>
`))

// authorize is the authorization endpoint: GET shows the sign-in page,
// POST with an email signs that person in and answers as mockoidc does
// (a redirect back to the relying party with the code and the state).
func (p *provider) authorize(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.Method {
	case http.MethodGet:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action 'self'")
		signInPage.Execute(w, r.URL.Query().Get("client_id"))
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		a, err := mail.ParseAddress(r.PostForm.Get("email"))
		if err != nil || a.Name != "" || !strings.Contains(a.Address, "@") {
			http.Error(w, "want an email address", http.StatusBadRequest)
			return
		}
		email := strings.ToLower(a.Address)
		local, _, _ := strings.Cut(email, "@")
		p.mu.Lock()
		defer p.mu.Unlock()
		p.m.QueueUser(&mockoidc.MockUser{Subject: "demo-" + email, Email: email, EmailVerified: true, PreferredUsername: local})
		rec := &statusWriter{ResponseWriter: w}
		p.m.Authorize(rec, r)
		// An authorization mockoidc refused (wrong client, no PKCE...)
		// leaves the person queued: take them off for the next one.
		p.m.UserQueue.Lock()
		p.m.UserQueue.Queue = nil
		p.m.UserQueue.Unlock()
		if rec.code == http.StatusFound {
			p.log.Printf("signed in %s for client %s", email, r.Form.Get("client_id"))
		} else {
			p.log.Printf("refused the authorization request for %s (%d)", email, rec.code)
		}
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// statusWriter remembers the status of the answer it writes.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}
