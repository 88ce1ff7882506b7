// Package oidctest gives tests a local OpenID Connect provider
// (github.com/oauth2-proxy/mockoidc: discovery, JWKS, authorization code
// flow with PKCE, signed ID tokens) and a scripted browser that signs a
// queued person in by following the redirects, keeping cookies as a browser
// does.
package oidctest

import (
	"crypto/tls"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/oauth2-proxy/mockoidc"
)

// IdP is a running test identity provider.
type IdP struct {
	M *mockoidc.MockOIDC
}

// Start runs an IdP on 127.0.0.1 until the test ends.
func Start(t testing.TB) *IdP {
	t.Helper()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatalf("mockoidc: %v", err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return &IdP{M: m}
}

// Issuer, ClientID and ClientSecret configure the relying party.
func (p *IdP) Issuer() string       { return p.M.Issuer() }
func (p *IdP) ClientID() string     { return p.M.ClientID }
func (p *IdP) ClientSecret() string { return p.M.ClientSecret }

// Person is who signs in next.
type Person struct {
	Subject       string
	Email         string
	EmailVerified bool
	Groups        []string
}

// Queue makes the next authorization sign in as who.
func (p *IdP) Queue(who Person) {
	p.M.QueueUser(&mockoidc.MockUser{Subject: who.Subject, Email: who.Email, EmailVerified: who.EmailVerified,
		PreferredUsername: who.Subject, Groups: who.Groups})
}

// Browser is a scripted browser: a cookie jar and an HTTP client that
// trusts the given TLS root configuration (nil: system roots).
type Browser struct {
	Client *http.Client
}

// NewBrowser returns a browser; tlsConf is the test server's client TLS
// configuration (e.g. httptest.Server.Client().Transport's).
func NewBrowser(t testing.TB, tlsConf *tls.Config) *Browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	return &Browser{Client: &http.Client{Jar: jar, Transport: tr}}
}

// Get follows u (and its redirects) and returns the final status, URL and
// body.
func (b *Browser) Get(t testing.TB, u string) (int, *url.URL, string) {
	t.Helper()
	resp, err := b.Client.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Request.URL, string(body)
}

// CallbackURL follows u through the provider and stops before the
// provider's redirect back to the relying party, returning that callback
// URL (with code and state) unvisited.
func (b *Browser) CallbackURL(t testing.TB, u, callbackPath string) *url.URL {
	t.Helper()
	c := *b.Client
	var cb *url.URL
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Path == callbackPath {
			cb = req.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	resp.Body.Close()
	if cb == nil {
		t.Fatalf("GET %s: no redirect to %s (status %d)", u, callbackPath, resp.StatusCode)
	}
	return cb
}

var (
	formAction = regexp.MustCompile(`<form method="post" action="([^"]+)">`)
	formCSRF   = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

// AddMachine opens a machine's sign-in URL (the IdP signs in whoever is
// queued) and, when the server asks to confirm adding the machine,
// answers answer ("add" or "cancel") as the person would, from the
// server's own page. It returns the last page's status and body.
func (b *Browser) AddMachine(t testing.TB, authURL, answer string) (int, string) {
	t.Helper()
	code, final, body := b.Get(t, authURL)
	m, c := formAction.FindStringSubmatch(body), formCSRF.FindStringSubmatch(body)
	if m == nil || c == nil {
		return code, body
	}
	target := final.ResolveReference(&url.URL{Path: html.UnescapeString(m[1])})
	req, err := http.NewRequest("POST", target.String(), strings.NewReader(url.Values{"csrf": {html.UnescapeString(c[1])}, "answer": {answer}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", final.Scheme+"://"+final.Host)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := b.Client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", target, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(out)
}
