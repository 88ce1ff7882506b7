package noiseconn

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"

	"github.com/warrenmesh/warren/internal/noise"
)

// keyClient fetches server keys: one request per join, so it keeps no
// idle connection (and no goroutine) behind; several nodes in one process
// (package node) leave nothing in the default transport.
var keyClient = &http.Client{Transport: func() http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	return tr
}()}

// FetchKey asks the server at serverURL for its static public key (GET
// KeyPath). The answer is not authenticated: a node uses it only on first
// join (trust on first use) and pins it afterwards, or the operator passes
// the key explicitly.
func FetchKey(ctx context.Context, serverURL string) (noise.PublicKey, error) {
	u := strings.TrimRight(serverURL, "/") + KeyPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return noise.PublicKey{}, fmt.Errorf("fetch server key: %w", err)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return noise.PublicKey{}, fmt.Errorf("fetch server key: server URL %q: scheme must be http or https", serverURL)
	}
	resp, err := keyClient.Do(req)
	if err != nil {
		return noise.PublicKey{}, fmt.Errorf("fetch server key: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusMisdirectedRequest {
		// The server does not answer to this name (DNS rebinding
		// protection): its one line says how to add it.
		line, _, _ := strings.Cut(string(readAtMost(resp.Body, 512)), "\n")
		printable := func(r rune) rune {
			if unicode.IsPrint(r) {
				return r
			}
			return '?'
		}
		return noise.PublicKey{}, fmt.Errorf("fetch server key from %s: HTTP %s: %s", u, resp.Status, strings.Map(printable, line))
	}
	if resp.StatusCode != http.StatusOK {
		return noise.PublicKey{}, fmt.Errorf("fetch server key from %s: HTTP %s (is this a warren server?)", u, resp.Status)
	}
	var ki KeyInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&ki); err != nil {
		return noise.PublicKey{}, fmt.Errorf("fetch server key from %s: %w (is this a warren server?)", u, err)
	}
	if ki.Version != ProtocolVersion {
		return noise.PublicKey{}, fmt.Errorf("%w: server speaks %d, this node %d", ErrVersionMismatch, ki.Version, ProtocolVersion)
	}
	k, err := noise.ParsePublicKey(ki.PublicKey)
	if err != nil || k.IsZero() || k.IsLowOrder() {
		return noise.PublicKey{}, fmt.Errorf("fetch server key from %s: invalid key %q", u, ki.PublicKey)
	}
	return k, nil
}

// readAtMost reads up to n bytes of r.
func readAtMost(r io.Reader, n int64) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, n))
	return b
}
