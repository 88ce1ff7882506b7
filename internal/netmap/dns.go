package netmap

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/warrenmesh/warren/internal/dnsname"
)

// DNSRecord is one custom record the server pushes to every node, answered
// by the node's own resolver.
type DNSRecord struct {
	// Name is a fully qualified name without the trailing dot, in lower
	// case; its first label may be "*" (a wildcard) and labels may contain
	// '_' (as in _sip._tcp.example.com).
	Name string `json:"name"`
	// Type is one of RecordTypes.
	Type string `json:"type"`
	// TTL in seconds, 1 to MaxRecordTTL.
	TTL uint32 `json:"ttl"`
	// Value, by type:
	//   A, AAAA: an address of that family, or "node:NAME" to follow a
	//            node's tunnel address of that family
	//   CNAME:   a target name
	//   TXT:     the text (at most MaxTXTLen bytes; split into strings of 255)
	//   SRV:     "PRIORITY WEIGHT PORT TARGET"
	//   MX:      "PREFERENCE HOST"
	Value string `json:"value"`
}

// DNSRoute sends queries for Domain and its subdomains to Resolvers (split
// DNS).
type DNSRoute struct {
	Domain    string           `json:"domain"`
	Resolvers []netip.AddrPort `json:"resolvers"`
}

// RecordTypes lists the custom record types, in display order.
var RecordTypes = []string{"A", "AAAA", "CNAME", "TXT", "SRV", "MX"}

// Bounds on custom DNS data.
const (
	MaxRecordTTL   = 7 * 24 * 3600
	DefaultTTL     = 300
	MaxTXTLen      = 4000
	NodeRefPrefix  = "node:"
	maxRouteResolv = 8
)

// Equal reports whether two records are the same.
func (r DNSRecord) Equal(o DNSRecord) bool { return r == o }

// isTarget accepts a target host name (CNAME, SRV, MX): a record name
// without wildcard, or "." for "no service".
func isTarget(s string) bool {
	return s == "." || dnsname.IsDomain(s)
}

// Validate checks one record and returns an error naming the problem.
func (r DNSRecord) Validate() error {
	if !dnsname.IsRecordName(r.Name) {
		return fmt.Errorf("record name %q is not a lower-case DNS name with at least two labels (a leading \"*.\" is allowed)", r.Name)
	}
	if !slices.Contains(RecordTypes, r.Type) {
		return fmt.Errorf("record type %q is not one of %s", r.Type, strings.Join(RecordTypes, ", "))
	}
	if r.TTL < 1 || r.TTL > MaxRecordTTL {
		return fmt.Errorf("TTL %d is out of range 1..%d", r.TTL, MaxRecordTTL)
	}
	v := r.Value
	switch r.Type {
	case "A", "AAAA":
		if name, ok := strings.CutPrefix(v, NodeRefPrefix); ok {
			if !dnsname.IsLabel(name) {
				return fmt.Errorf("%s value %q: node name %q is not a DNS label", r.Type, v, name)
			}
			return nil
		}
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" || (r.Type == "A") != a.Is4() {
			return fmt.Errorf("%s value %q is not an IPv%s address or node:NAME", r.Type, v, map[bool]string{true: "4", false: "6"}[r.Type == "A"])
		}
	case "CNAME":
		if !isTarget(v) || v == "." {
			return fmt.Errorf("CNAME target %q is not a DNS name", v)
		}
		if v == r.Name {
			return fmt.Errorf("CNAME %q points at itself", r.Name)
		}
	case "TXT":
		if len(v) == 0 || len(v) > MaxTXTLen {
			return fmt.Errorf("TXT value must be 1 to %d bytes", MaxTXTLen)
		}
	case "SRV":
		f := strings.Fields(v)
		if len(f) != 4 || !isUint16(f[0]) || !isUint16(f[1]) || !isUint16(f[2]) || !isTarget(f[3]) {
			return fmt.Errorf("SRV value %q is not \"PRIORITY WEIGHT PORT TARGET\"", v)
		}
	case "MX":
		f := strings.Fields(v)
		if len(f) != 2 || !isUint16(f[0]) || !isTarget(f[1]) {
			return fmt.Errorf("MX value %q is not \"PREFERENCE HOST\"", v)
		}
	}
	return nil
}

func isUint16(s string) bool {
	_, err := strconv.ParseUint(s, 10, 16)
	return err == nil
}

// validateDNS checks a DNS configuration.
func (c DNSConfig) validate() error {
	for _, a := range c.Nameservers {
		if !a.IsValid() {
			return fmt.Errorf("%w: invalid nameserver address", ErrInvalid)
		}
	}
	for _, d := range c.SearchDomains {
		if !dnsname.IsName(d) {
			return fmt.Errorf("%w: search domain %q is not a DNS name", ErrInvalid, d)
		}
	}
	for _, r := range c.Records {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	for _, z := range c.Zones {
		if !dnsname.IsDomain(z) {
			return fmt.Errorf("%w: zone %q is not a DNS name", ErrInvalid, z)
		}
	}
	for _, rt := range c.Routes {
		if err := rt.Validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return nil
}

// Validate checks a split-DNS route.
func (rt DNSRoute) Validate() error {
	if !dnsname.IsDomain(rt.Domain) {
		return fmt.Errorf("split-DNS domain %q is not a DNS name", rt.Domain)
	}
	if len(rt.Resolvers) == 0 || len(rt.Resolvers) > maxRouteResolv {
		return fmt.Errorf("split-DNS domain %s needs 1 to %d resolvers", rt.Domain, maxRouteResolv)
	}
	for _, r := range rt.Resolvers {
		if !r.IsValid() || r.Port() == 0 {
			return fmt.Errorf("split-DNS resolver %s for %s is not ADDRESS:PORT", r, rt.Domain)
		}
	}
	return nil
}
