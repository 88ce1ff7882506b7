// Package policy is Warren's access policy: a HuJSON file (JSON with
// comments and trailing commas) in the shape known from Tailscale and
// headscale, which the coordination server stores, checks and compiles
// into each node's packet filter (package filter).
//
//	{
//	  "groups":    {"group:eng": ["alice@", "bob@"]},
//	  "tagOwners": {"tag:db": ["group:eng"]},
//	  "hosts":     {"office": "192.168.10.0/24"},
//	  "acls": [
//	    // action accept is the only one; src → dst:ports, proto optional
//	    {"action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432"], "proto": "tcp"},
//	  ],
//	  "tests": [
//	    {"src": "alice@", "accept": ["tag:db:5432"], "deny": ["tag:db:22"]},
//	  ],
//	}
//
// Aliases, in src and dst (and in tests):
//
//   - "*": every node (as a source: any address);
//   - users are written with an "@": "alice@" is the Warren user alice, and
//     a name that itself holds an "@" ("alice@example.com") is written as
//     is. A bare word is never a user, so it cannot be confused with a host;
//   - "group:NAME" (defined in groups; members are users);
//   - "tag:NAME" (defined in tagOwners): the nodes carrying the tag;
//   - "autogroup:self" in dst: the source user's own untagged nodes;
//   - a host name defined in hosts, an IP address or a CIDR prefix.
//
// A node that carries tags is owned by its tags: it matches its tags and
// "*" but not its user, nor the groups of its user.
//
// A dst entry is ALIAS:PORTS, PORTS being "*", a port, a range "N-M" or a
// comma-separated list of those; IPv6 addresses may be bracketed
// ("[fd00::1]:22"). proto is "tcp", "udp" or "icmp" (ICMP for IPv4 and
// IPv6; ports do not apply to it); without proto a rule allows TCP, UDP and
// ICMP. No policy allows everything; once there is a policy, whatever no
// rule accepts is denied.
//
// Tests are checked on the policy alone, before it is accepted: src is a
// user, tag, host or address; each accept and deny entry is ALIAS:PORT
// with one port, and proto (default tcp) is the protocol tried. Node
// addresses are not known to the tests, so an address only matches rules
// naming it (or a prefix or host holding it) and "*".
//
// Errors name the line and column in the original text.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tailscale/hujson"
)

// Policy is a parsed and validated policy file.
type Policy struct {
	Groups    map[string][]string `json:"groups,omitempty"`
	TagOwners map[string][]string `json:"tagOwners,omitempty"`
	Hosts     map[string]string   `json:"hosts,omitempty"`
	ACLs      []ACL               `json:"acls,omitempty"`
	Tests     []Test              `json:"tests,omitempty"`
	// PeerRelays say who may use which peer relays (peerrelay.go).
	PeerRelays []PeerRelayRule `json:"peerRelays,omitempty"`

	rules      []rule      // compiled acls
	relayRules []relayRule // compiled peerRelays
	src        []byte      // the original text (for positions)
	ast        hujson.Value
}

// ACL is one rule: packets from src to dst are accepted.
type ACL struct {
	Action string   `json:"action"`
	Src    []string `json:"src"`
	Proto  string   `json:"proto,omitempty"`
	Dst    []string `json:"dst"`
}

// Test is an expected outcome checked before the policy is accepted.
type Test struct {
	Src    string   `json:"src"`
	Proto  string   `json:"proto,omitempty"`
	Accept []string `json:"accept,omitempty"`
	Deny   []string `json:"deny,omitempty"`
}

// MaxSize bounds a policy file.
const MaxSize = 1 << 20

// Error is a problem at a place in the policy text.
type Error struct {
	Line, Column int // 1-based; 0 if unknown
	Msg          string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.Msg
	}
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Msg)
}

func lineColumn(b []byte, n int) (line, column int) {
	n = min(max(n, 0), len(b))
	line = 1 + bytes.Count(b[:n], []byte("\n"))
	column = 1 + n - (bytes.LastIndexByte(b[:n], '\n') + 1)
	return line, column
}

func (p *Policy) errAt(offset int, format string, args ...any) *Error {
	l, c := lineColumn(p.src, offset)
	return &Error{Line: l, Column: c, Msg: fmt.Sprintf(format, args...)}
}

// errPath is an error at a JSON pointer ("/acls/0/dst/1"); a pointer that
// does not resolve is reported without a position.
func (p *Policy) errPath(ptr string, format string, args ...any) *Error {
	if v := p.ast.Find(ptr); v != nil {
		return p.errAt(v.StartOffset, format, args...)
	}
	return &Error{Msg: fmt.Sprintf(format, args...)}
}

// Parse reads and validates a policy (its tests are not run: see Check).
func Parse(text []byte) (*Policy, error) {
	if len(text) > MaxSize {
		return nil, &Error{Msg: fmt.Sprintf("policy is larger than %d bytes", MaxSize)}
	}
	text = bytes.Clone(text) // Standardize below rewrites comments in place
	p := &Policy{src: bytes.Clone(text)}
	ast, err := hujson.Parse(text)
	if err != nil {
		var line, col int
		msg := err.Error()
		if _, serr := fmt.Sscanf(msg, "hujson: line %d, column %d:", &line, &col); serr == nil {
			_, msg, _ = strings.Cut(msg, ": ")
			_, msg, _ = strings.Cut(msg, ": ")
		}
		return nil, &Error{Line: line, Column: col, Msg: msg}
	}
	p.ast = ast.Clone()
	if err := p.checkShape(&ast); err != nil {
		return nil, err
	}
	ast.Standardize() // offsets are kept: comments become spaces
	dec := json.NewDecoder(bytes.NewReader(ast.Pack()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return nil, p.errAt(valueEndingAt(&p.ast, int(te.Offset)), "%s: expected %s, found %s", fieldName(te.Field), te.Type, te.Value)
		case errors.As(err, &se):
			return nil, p.errAt(int(se.Offset), "%v", se)
		}
		return nil, &Error{Msg: err.Error()}
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	if err := p.validatePeerRelays(); err != nil {
		return nil, err
	}
	return p, nil
}

func fieldName(f string) string {
	if f == "" {
		return "value"
	}
	return strconv.Quote(f)
}

// Check parses, validates and runs the tests: a policy is accepted only if
// Check succeeds.
func Check(text []byte) (*Policy, error) {
	p, err := Parse(text)
	if err != nil {
		return nil, err
	}
	if err := p.RunTests(); err != nil {
		return nil, err
	}
	return p, nil
}

var knownKeys = map[string][]string{
	"":           {"groups", "tagOwners", "hosts", "acls", "tests", "peerRelays"},
	"peerRelays": {"relay", "users"},
	"acls":       {"action", "src", "proto", "dst"},
	"tests":      {"src", "proto", "accept", "deny"},
}

// checkShape refuses unknown and duplicate object keys, with their
// position: the top level and the entries of acls and tests.
func (p *Policy) checkShape(v *hujson.Value) error {
	top, ok := v.Value.(*hujson.Object)
	if !ok {
		return p.errAt(v.StartOffset, "a policy is a JSON object")
	}
	if err := p.checkKeys(top, ""); err != nil {
		return err
	}
	for _, m := range top.Members {
		name := m.Name.Value.(hujson.Literal).String()
		if name != "acls" && name != "tests" && name != "peerRelays" {
			if _, isObj := m.Value.Value.(*hujson.Object); !isObj && name != "" {
				return p.errAt(m.Value.StartOffset, "%q must be an object", name)
			}
			if err := p.checkKeys(m.Value.Value.(*hujson.Object), name+"."); err != nil {
				return err
			}
			continue
		}
		arr, isArr := m.Value.Value.(*hujson.Array)
		if !isArr {
			return p.errAt(m.Value.StartOffset, "%q must be a list", name)
		}
		for _, e := range arr.Elements {
			obj, isObj := e.Value.(*hujson.Object)
			if !isObj {
				return p.errAt(e.StartOffset, "each entry of %q must be an object", name)
			}
			if err := p.checkKeys(obj, name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *Policy) checkKeys(obj *hujson.Object, where string) error {
	known, restricted := knownKeys[where]
	seen := map[string]bool{}
	for _, m := range obj.Members {
		lit, _ := m.Name.Value.(hujson.Literal)
		name := lit.String()
		if seen[name] {
			return p.errAt(m.Name.StartOffset, "duplicate key %q", name)
		}
		seen[name] = true
		if !restricted {
			continue
		}
		ok := false
		for _, k := range known {
			ok = ok || k == name
		}
		if !ok {
			if where == "" {
				return p.errAt(m.Name.StartOffset, "unknown field %q (known: %s)", name, strings.Join(known, ", "))
			}
			return p.errAt(m.Name.StartOffset, "unknown field %q in %s (known: %s)", name, where, strings.Join(known, ", "))
		}
	}
	return nil
}

// valueEndingAt returns the start of the value that ends at offset end
// (where encoding/json reports a type error), or end if there is none.
func valueEndingAt(v *hujson.Value, end int) int {
	if v.EndOffset == end {
		return v.StartOffset
	}
	switch c := v.Value.(type) {
	case *hujson.Object:
		for i := range c.Members {
			if s := valueEndingAt(&c.Members[i].Value, end); s != end {
				return s
			}
		}
	case *hujson.Array:
		for i := range c.Elements {
			if s := valueEndingAt(&c.Elements[i], end); s != end {
				return s
			}
		}
	}
	return end
}
