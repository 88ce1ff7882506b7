package cli

import (
	"context"
	"net"
	"net/http"
	"time"
)

// serveUntil serves hs on l (HTTPS with the certificates of hs.TLSConfig
// when it is set) until ctx ends, then shuts it down gracefully within
// grace. It returns the error that stopped serving early, or nil after a
// shutdown.
func serveUntil(ctx context.Context, hs *http.Server, l net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		if hs.TLSConfig != nil {
			errc <- hs.ServeTLS(l, "", "")
		} else {
			errc <- hs.Serve(l)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	hs.Shutdown(sctx) // stops accepting; hijacked sessions are closed by their owners
	return nil
}
