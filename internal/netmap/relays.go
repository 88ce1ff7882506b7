package netmap

import (
	"fmt"
	"net/url"
	"slices"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// RelayRegion is one packet relay the server offers its nodes (package
// relay): where it is, the key it proves, and its STUN responder.
type RelayRegion struct {
	ID   int          `json:"id"`             // unique, positive
	Code string       `json:"code"`           // short name, e.g. "fra"
	URL  string       `json:"url"`            // http(s)://HOST[:PORT]
	Key  pubkey.Relay `json:"key"`            // the relay's static key
	STUN string       `json:"stun,omitempty"` // HOST:PORT of its STUN responder
}

func relaysEqual(a, b []RelayRegion) bool { return slices.Equal(a, b) }

func validateRelays(rs []RelayRegion) error {
	seen := map[int]bool{}
	for _, r := range rs {
		if r.ID <= 0 || seen[r.ID] {
			return fmt.Errorf("%w: relay region ID %d is not positive or not unique", ErrInvalid, r.ID)
		}
		seen[r.ID] = true
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: relay region %d: URL %q is not http(s)://HOST", ErrInvalid, r.ID, r.URL)
		}
		if r.Key.IsZero() || r.Key.IsLowOrder() {
			return fmt.Errorf("%w: relay region %d: invalid key", ErrInvalid, r.ID)
		}
	}
	return nil
}
