package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A kind is the type of a key's value: how it is parsed from a flag, an
// environment variable or a scalar of the file, and its canonical text
// (what the layers store; parsing it again gives the same value).
type kind interface {
	typeName() string            // the flag's argument name in --help
	parse(s string) (any, error) // the error says what was wanted, without the key
	format(v any) string
}

type stringKind struct{ check func(string) error }

func (stringKind) typeName() string { return "string" }
func (k stringKind) parse(s string) (any, error) {
	if k.check != nil && s != "" {
		if err := k.check(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}
func (stringKind) format(v any) string { return v.(string) }

type boolKind struct{}

func (boolKind) typeName() string { return "bool" }
func (boolKind) parse(s string) (any, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not true or false", s)
	}
	return b, nil
}
func (boolKind) format(v any) string { return strconv.FormatBool(v.(bool)) }

// intKind is a non-negative integer.
type intKind struct{}

func (intKind) typeName() string { return "int" }
func (intKind) parse(s string) (any, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%q is not a whole number >= 0", s)
	}
	return n, nil
}
func (intKind) format(v any) string { return strconv.FormatInt(v.(int64), 10) }

// byteSizeKind is a non-negative byte count: digits with an optional
// suffix K, M or G (KiB, MiB, GiB; a trailing "iB" or "B" is accepted).
type byteSizeKind struct{}

func (byteSizeKind) typeName() string            { return "bytes" }
func (byteSizeKind) parse(s string) (any, error) { return ParseByteSize(s) }
func (byteSizeKind) format(v any) string         { return strconv.FormatInt(v.(int64), 10) }

// ParseByteSize reads a byte count as byteSizeKind does ("" is 0).
func ParseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num := strings.TrimRight(strings.TrimSuffix(strings.TrimSuffix(s, "B"), "i"), "KMGkmg")
	unit := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(s, "B"), "i")[len(num):])
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || len(unit) > 1 {
		return 0, fmt.Errorf("%q is not a byte count (e.g. 50M: digits, optionally K, M or G for KiB, MiB, GiB)", s)
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30}[unit]
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << shift, nil
}

// durationKind is a Go duration (90s, 5m, 1h30m) or a number of days
// (30d); zero only where min is zero.
type durationKind struct{ min time.Duration }

func (durationKind) typeName() string { return "duration" }
func (k durationKind) parse(s string) (any, error) {
	var d time.Duration
	var err error
	if n, ok := strings.CutSuffix(s, "d"); ok && n != "" && !strings.ContainsAny(n, "hmsuµn.") {
		var days int64
		days, err = strconv.ParseInt(n, 10, 32)
		d = time.Duration(days) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil {
		return nil, fmt.Errorf("%q is not a duration (examples: 500ms, 90s, 5m, 12h, 30d)", s)
	}
	if d < k.min || d < 0 {
		return nil, fmt.Errorf("duration %q is below the minimum %v", s, k.min)
	}
	return d, nil
}
func (durationKind) format(v any) string { return v.(time.Duration).String() }

// prefixKind is an IPv4 or IPv6 prefix; "" is the zero Prefix (the
// program's own default).
type prefixKind struct{ v6 bool }

func (prefixKind) typeName() string { return "prefix" }
func (k prefixKind) parse(s string) (any, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	fam := "IPv4"
	if k.v6 {
		fam = "IPv6"
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Is4() == k.v6 || p.Addr().Is4In6() {
		return nil, fmt.Errorf("%q is not an %s prefix (ADDRESS/BITS)", s, fam)
	}
	if p != p.Masked() {
		return nil, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}
func (prefixKind) format(v any) string {
	if p := v.(netip.Prefix); p.IsValid() {
		return p.String()
	}
	return ""
}

// urlKind is an http(s) URL with a host, or "".
type urlKind struct{}

func (urlKind) typeName() string { return "url" }
func (urlKind) parse(s string) (any, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
		return nil, fmt.Errorf("%q is not an http(s)://HOST[:PORT] URL", s)
	}
	return s, nil
}
func (urlKind) format(v any) string { return v.(string) }

// hostsKind is a list of host names: in the file a YAML list or a string,
// as a flag or environment variable comma- or space-separated.
type hostsKind struct{}

func (hostsKind) typeName() string { return "names" }
func (hostsKind) parse(s string) (any, error) {
	l := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	for _, h := range l {
		if strings.ContainsAny(h, "/@[]") || strings.Trim(h, ".-:0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_") != "" {
			return nil, fmt.Errorf("%q is not a host name", h)
		}
	}
	return l, nil
}
func (hostsKind) format(v any) string { return strings.Join(v.([]string), ",") }

// wordsKind is a list of words (emails, domains, group names, scopes): in
// the file a YAML list or a string, as a flag or environment variable
// comma- or space-separated.
type wordsKind struct{}

func (wordsKind) typeName() string { return "list" }
func (wordsKind) parse(s string) (any, error) {
	l := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	for _, w := range l {
		if strings.ContainsFunc(w, func(r rune) bool { return r < 0x21 || r == 0x7f || r == '"' }) {
			return nil, fmt.Errorf("%q is not a plain word", w)
		}
	}
	return l, nil
}
func (wordsKind) format(v any) string { return strings.Join(v.([]string), ",") }

// enumKind is one of a fixed set of words.
type enumKind struct{ choices []string }

func (k enumKind) typeName() string { return strings.Join(k.choices, "|") }
func (k enumKind) parse(s string) (any, error) {
	if !slices.Contains(k.choices, strings.ToLower(s)) {
		return nil, fmt.Errorf("%q is not one of %s", s, strings.Join(k.choices, ", "))
	}
	return strings.ToLower(s), nil
}
func (enumKind) format(v any) string { return v.(string) }

// checkPrefix returns a check that a string starts with one of prefixes
// (credentials: wrly_..., wapi_...).
func checkPrefix(what string, prefixes ...string) func(string) error {
	return func(s string) error {
		for _, p := range prefixes {
			if strings.HasPrefix(s, p) {
				return nil
			}
		}
		return errors.New("does not look like " + what)
	}
}

// checkListen checks a TCP or UDP listen address, HOST:PORT (HOST may be
// empty: all addresses); bare allows a bare PORT too (metrics_listen).
func checkListen(bare bool) func(string) error {
	return func(s string) error {
		host, port, err := net.SplitHostPort(s)
		if err != nil && bare {
			host, port, err = "", s, nil
		}
		n, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil || strings.ContainsAny(host, "/ ") || (bare && n == 0 && host == "") {
			if bare {
				return fmt.Errorf("%q is not a PORT or HOST:PORT address", s)
			}
			return fmt.Errorf("%q is not a HOST:PORT address (e.g. \":8080\" or \"127.0.0.1:8080\")", s)
		}
		return nil
	}
}
