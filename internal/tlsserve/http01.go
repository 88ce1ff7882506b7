package tlsserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/warrenmesh/warren/internal/httpguard"
)

// ServeHTTP01 serves HTTPHandler(nil) on l (the listener reached as port
// 80 of the names, tls_acme_http_listen) until ctx ends: ACME HTTP-01
// challenges, and a redirect to https for everything else. Like every
// public listener it checks the Host header (the certificate's names, IP
// literals, localhost and extraNames) and has the public timeouts. It
// returns when ctx ends (nil) or serving fails.
func (c *Certs) ServeHTTP01(ctx context.Context, l net.Listener, extraNames ...string) error {
	hs := &http.Server{
		Handler: httpguard.Wrap(c.HTTPHandler(nil), httpguard.Policy{Names: append(c.Names(), extraNames...), Logger: c.log,
			Hint: "; add the name with allowed_hosts"}),
	}
	httpguard.PublicTimeouts.Apply(hs)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
