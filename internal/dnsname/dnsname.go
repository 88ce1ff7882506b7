// Package dnsname owns the syntax of DNS names in Warren: a node's name
// (one lower-case label, which MagicDNS serves under the tailnet domain),
// the names of custom records, zones and split-DNS domains, and how a
// hostname becomes a node name. The control protocol (netmap), the store,
// the admin API and the node's resolver (dns) all check names here, so a
// name one accepts the others accept too. It depends on nothing but the
// standard library.
//
// A label is 1 to 63 bytes of letters, digits and '-', not starting or
// ending with '-'; record names may also use '_' (service labels such as
// _sip._tcp). A name is at most 253 bytes of labels joined by dots.
package dnsname

import (
	"errors"
	"fmt"
	"strings"
)

// Bounds of RFC 1035.
const (
	MaxLabelLen = 63
	MaxNameLen  = 253
)

// checkLabel reports why l is not a label. Upper-case letters pass only
// with upper, '_' only with underscore.
func checkLabel(l string, upper, underscore bool) error {
	if l == "" || len(l) > MaxLabelLen {
		return errors.New("empty or over-long label")
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		case c >= 'A' && c <= 'Z' && upper:
		case c == '_' && underscore:
		default:
			what := "lower-case letters, digits and '-'"
			switch {
			case upper && underscore:
				what = "letters, digits, '-' and '_'"
			case underscore:
				what = "lower-case letters, digits, '-' and '_'"
			case upper:
				what = "letters, digits and '-'"
			}
			return fmt.Errorf("label %q has a character other than %s", l, what)
		}
	}
	return nil
}

// IsLabel reports whether s is a node name: one lower-case label of
// [a-z0-9-], not starting or ending with '-'.
func IsLabel(s string) bool { return checkLabel(s, false, false) == nil }

// IsName reports whether s is a lower-case name of node-name labels, at
// most 253 bytes, without a trailing dot (a tailnet domain or a search
// domain).
func IsName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !IsLabel(l) {
			return false
		}
	}
	return true
}

// IsRecordName reports whether s may name a custom record: a lower-case
// name of at least two labels that may contain '_', at most 253 bytes,
// the first label optionally "*" (a wildcard).
func IsRecordName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for i, l := range labels {
		if i == 0 && l == "*" {
			continue
		}
		if checkLabel(l, false, true) != nil {
			return false
		}
	}
	return true
}

// IsDomain reports whether s may name a zone or a split-DNS domain: a
// record name without a wildcard.
func IsDomain(s string) bool { return IsRecordName(s) && !strings.HasPrefix(s, "*.") }

// Normalize gives a name as typed by a person the form Warren stores and
// compares: surrounding space and one trailing dot removed, lower case. It
// does not check the name.
func Normalize(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// Check reports why s is not a DNS name as written in the node's own
// configuration: labels of letters (either case), digits, '-' and '_', at
// most 253 bytes, with an optional trailing dot. The error names the
// label at fault.
func Check(s string) error {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("name of %d bytes is too long", len(s))
	}
	for l := range strings.SplitSeq(s, ".") {
		if err := checkLabel(l, true, true); err != nil {
			return fmt.Errorf("%q: %v", s, err)
		}
	}
	return nil
}

// CheckOwner is Check allowing a leading "*" label (a wildcard owner).
func CheckOwner(s string) error {
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		s = rest
	}
	return Check(s)
}

// FromHostname turns a hostname into a node name: lower case, runs of
// anything but [a-z0-9] become one '-', no leading or trailing '-', at most
// 63 bytes; "node" if nothing is left. Its result always passes IsLabel.
func FromHostname(hostname string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(hostname) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(c)
		} else {
			dash = true
		}
	}
	l := b.String()
	if len(l) > MaxLabelLen {
		l = l[:MaxLabelLen]
	}
	l = strings.TrimRight(l, "-")
	if l == "" {
		return "node"
	}
	return l
}

// IsCanonicalNodeName reports whether s is a node name as the server
// derives them (FromHostname(s) == s): IsLabel without runs of '-'.
func IsCanonicalNodeName(s string) bool { return s != "" && FromHostname(s) == s }
