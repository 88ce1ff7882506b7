package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/tagname"
)

type aliasKind int

const (
	aAny aliasKind = iota
	aUser
	aGroup
	aTag
	aPrefix
	aSelf     // autogroup:self, dst only
	aInternet // autogroup:internet, dst only: what exit nodes forward
)

type alias struct {
	kind   aliasKind
	name   string       // user, group or tag
	prefix netip.Prefix // aPrefix
}

type dstEntry struct {
	alias
	ports []filter.PortRange
}

// rule is an ACL with its aliases resolved.
type rule struct {
	src    []alias
	dst    []dstEntry
	protos []int
}

// userName returns the user an alias with an "@" names.
func userName(s string) (string, bool) {
	if !strings.Contains(s, "@") {
		return "", false
	}
	name := strings.TrimSuffix(s, "@")
	return name, name != ""
}

func ptr(parts ...any) string {
	var b strings.Builder
	for _, p := range parts {
		s := fmt.Sprint(p)
		s = strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
		b.WriteString("/" + s)
	}
	return b.String()
}

// parseAlias resolves one alias; where says where it may appear.
func (p *Policy) parseAlias(s string, dst, test bool) (alias, error) {
	switch {
	case s == "*" && !test:
		return alias{kind: aAny}, nil
	case strings.HasPrefix(s, "group:") && !test:
		if _, ok := p.Groups[s]; !ok {
			return alias{}, fmt.Errorf("group %q is not defined in groups", s)
		}
		return alias{kind: aGroup, name: s}, nil
	case strings.HasPrefix(s, "tag:"):
		if _, ok := p.TagOwners[s]; !ok {
			return alias{}, fmt.Errorf("tag %q is not defined in tagOwners", s)
		}
		return alias{kind: aTag, name: s}, nil
	case s == "autogroup:self" && dst && !test:
		return alias{kind: aSelf}, nil
	case s == "autogroup:internet" && dst:
		return alias{kind: aInternet}, nil
	case strings.HasPrefix(s, "autogroup:"):
		return alias{}, fmt.Errorf("%q is not supported here (only autogroup:self and autogroup:internet, as destinations)", s)
	}
	if u, ok := userName(s); ok {
		return alias{kind: aUser, name: u}, nil
	}
	if h, ok := p.Hosts[s]; ok {
		pf, _ := parsePrefix(h)
		return alias{kind: aPrefix, prefix: pf}, nil
	}
	if pf, ok := parsePrefix(s); ok {
		return alias{kind: aPrefix, prefix: pf}, nil
	}
	if test && (s == "*" || strings.HasPrefix(s, "group:") || s == "autogroup:self") {
		return alias{}, fmt.Errorf("%q cannot be used in a test: name one user, tag, host or address", s)
	}
	return alias{}, fmt.Errorf("unknown alias %q (users are written with an @, like alice@; hosts must be defined in hosts)", s)
}

func parsePrefix(s string) (netip.Prefix, bool) {
	if pf, err := netip.ParsePrefix(s); err == nil {
		return pf.Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// splitDst splits "ALIAS:PORTS" (IPv6 may be bracketed).
func splitDst(s string) (host, ports string, ok bool) {
	if strings.HasPrefix(s, "[") {
		h, rest, ok := strings.Cut(s[1:], "]:")
		return h, rest, ok
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func parsePorts(s string) ([]filter.PortRange, error) {
	var out []filter.PortRange
	for _, part := range strings.Split(s, ",") {
		pr, err := filter.ParsePortRange(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		out = append(out, pr)
	}
	return mergePorts(out), nil
}

// mergePorts sorts ranges and merges overlapping or adjacent ones.
func mergePorts(in []filter.PortRange) []filter.PortRange {
	slices.SortFunc(in, func(a, b filter.PortRange) int { return int(a.First) - int(b.First) })
	var out []filter.PortRange
	for _, r := range in {
		if n := len(out); n > 0 && int(r.First) <= int(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

func parseProto(s string) ([]int, error) {
	switch strings.ToLower(s) {
	case "":
		return []int{filter.ProtoTCP, filter.ProtoUDP, filter.ProtoICMP, filter.ProtoICMPv6}, nil
	case "tcp":
		return []int{filter.ProtoTCP}, nil
	case "udp":
		return []int{filter.ProtoUDP}, nil
	case "icmp":
		return []int{filter.ProtoICMP, filter.ProtoICMPv6}, nil
	}
	return nil, fmt.Errorf("unknown proto %q (tcp, udp or icmp)", s)
}

// validate checks every definition and reference and resolves the acls.
func (p *Policy) validate() error {
	for _, g := range sortedKeys(p.Groups) {
		if !strings.HasPrefix(g, "group:") || len(g) == len("group:") {
			return p.errPath(ptr("groups", g), "group names start with group: (%q)", g)
		}
		for i, m := range p.Groups[g] {
			if _, ok := userName(m); !ok {
				return p.errPath(ptr("groups", g, i), "group members are users, written with an @ (like alice@): %q", m)
			}
		}
	}
	for _, t := range sortedKeys(p.TagOwners) {
		if err := tagname.Check(t); err != nil {
			return p.errPath(ptr("tagOwners", t), "%v", err)
		}
		for i, o := range p.TagOwners[t] {
			if strings.HasPrefix(o, "group:") {
				if _, ok := p.Groups[o]; !ok {
					return p.errPath(ptr("tagOwners", t, i), "group %q is not defined in groups", o)
				}
			} else if _, ok := userName(o); !ok {
				return p.errPath(ptr("tagOwners", t, i), "tag owners are users (alice@) or groups: %q", o)
			}
		}
	}
	for _, h := range sortedKeys(p.Hosts) {
		if h == "" || h == "*" || strings.ContainsAny(h, ":@/[] ,") {
			return p.errPath(ptr("hosts", h), "invalid host name %q", h)
		}
		if _, ok := parsePrefix(p.Hosts[h]); !ok {
			return p.errPath(ptr("hosts", h), "host %q: %q is not an IP address or prefix", h, p.Hosts[h])
		}
	}
	for i, a := range p.ACLs {
		if a.Action != "accept" {
			return p.errPath(ptr("acls", i, "action"), "action must be \"accept\" (found %q)", a.Action)
		}
		var r rule
		var err error
		if r.protos, err = parseProto(a.Proto); err != nil {
			return p.errPath(ptr("acls", i, "proto"), "%v", err)
		}
		if len(a.Src) == 0 {
			return p.errPath(ptr("acls", i), "rule has no src")
		}
		if len(a.Dst) == 0 {
			return p.errPath(ptr("acls", i), "rule has no dst")
		}
		for j, s := range a.Src {
			al, err := p.parseAlias(s, false, false)
			if err != nil {
				return p.errPath(ptr("acls", i, "src", j), "%v", err)
			}
			r.src = append(r.src, al)
		}
		for j, d := range a.Dst {
			host, ports, ok := splitDst(d)
			if !ok {
				return p.errPath(ptr("acls", i, "dst", j), "destination %q must be ALIAS:PORTS (like tag:db:5432 or *:*)", d)
			}
			al, err := p.parseAlias(host, true, false)
			if err != nil {
				return p.errPath(ptr("acls", i, "dst", j), "%v", err)
			}
			e := dstEntry{alias: al}
			if e.ports, err = parsePorts(ports); err != nil {
				return p.errPath(ptr("acls", i, "dst", j), "destination %q: %v", d, err)
			}
			if strings.EqualFold(a.Proto, "icmp") && ports != "*" {
				return p.errPath(ptr("acls", i, "dst", j), "ports do not apply to icmp: write %s:*", host)
			}
			r.dst = append(r.dst, e)
		}
		p.rules = append(p.rules, r)
	}
	for i, t := range p.Tests {
		if _, err := p.parseAlias(t.Src, false, true); err != nil {
			return p.errPath(ptr("tests", i, "src"), "%v", err)
		}
		if _, err := parseProto(t.Proto); err != nil {
			return p.errPath(ptr("tests", i, "proto"), "%v", err)
		}
		if len(t.Accept)+len(t.Deny) == 0 {
			return p.errPath(ptr("tests", i), "test has neither accept nor deny")
		}
		for _, kl := range []struct {
			kind string
			list []string
		}{{"accept", t.Accept}, {"deny", t.Deny}} {
			kind := kl.kind
			for j, d := range kl.list {
				if _, _, err := p.testDst(d, t.Proto); err != nil {
					return p.errPath(ptr("tests", i, kind, j), "%v", err)
				}
			}
		}
	}
	return nil
}

// testDst parses a test destination ALIAS:PORT.
func (p *Policy) testDst(d, proto string) (alias, uint16, error) {
	host, port, ok := splitDst(d)
	if !ok {
		return alias{}, 0, fmt.Errorf("test destination %q must be ALIAS:PORT (like tag:db:5432)", d)
	}
	al, err := p.parseAlias(host, true, true)
	if err != nil {
		return alias{}, 0, err
	}
	if strings.EqualFold(proto, "icmp") {
		return al, 0, nil
	}
	pr, err := filter.ParsePortRange(port)
	if err != nil || pr.First != pr.Last {
		return alias{}, 0, fmt.Errorf("test destination %q must name one port", d)
	}
	return al, pr.First, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TagOwnedBy reports whether user (a Warren user name) may put tag on a
// node: the tag is in tagOwners and lists the user or one of its groups.
func (p *Policy) TagOwnedBy(tag, user string) bool {
	for _, o := range p.TagOwners[tag] {
		if u, ok := userName(o); ok && u == user {
			return true
		}
		if slices.ContainsFunc(p.Groups[o], func(m string) bool { u, _ := userName(m); return u == user }) {
			return true
		}
	}
	return false
}
