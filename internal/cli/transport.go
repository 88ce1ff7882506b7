package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// checkKeyTransport refuses to send a bearer key (admin API key, relay key)
// to u over plain http unless the host is loopback (localhost, 127.0.0.0/8,
// ::1) or insecure is set: anyone on the path would read the key. Names
// are not resolved: only "localhost" itself counts as loopback.
func checkKeyTransport(u *url.URL, flag string, insecure bool) error {
	if u.Scheme != "http" || insecure || isLoopbackHost(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("%s %s: plain http to a host that is not loopback would send the key in clear; use https://, or pass --insecure", flag, u.Redacted())
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// noRedirects keeps a bearer key from following a redirect (to plain http,
// or to another host): the admin API never redirects.
func noRedirects(req *http.Request, via []*http.Request) error {
	return errors.New("the server redirected to " + req.URL.Redacted() + "; not following it with the key")
}
