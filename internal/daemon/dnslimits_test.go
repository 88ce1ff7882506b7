package daemon

import (
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/netmap"
)

// TestDNSRecordBoundsAgree: every record the server accepts (netmap's
// validation, up to its bounds) must be accepted by the node's resolver
// too. A node refuses a whole DNS configuration with one bad record, so
// one record the two disagreed on would freeze every node's MagicDNS.
func TestDNSRecordBoundsAgree(t *testing.T) {
	recs := []netmap.DNSRecord{
		{Name: "long.warren.internal", Type: "TXT", TTL: netmap.MaxRecordTTL, Value: strings.Repeat("x", netmap.MaxTXTLen)},
		{Name: "ttl.warren.internal", Type: "A", TTL: netmap.MaxRecordTTL, Value: "192.0.2.1"},
		{Name: "node.warren.internal", Type: "AAAA", TTL: 1, Value: "node:self"},
	}
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			t.Fatalf("server side refuses %s %s: %v", r.Name, r.Type, err)
		}
	}
	nm := &netmap.NetworkMap{Domain: "warren.internal"}
	nm.Self.Name = "self"
	nm.DNS.Records = recs
	cfg := toDNSConfig(nm, nil)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the node refuses what the server accepted: %v", err)
	}
}
