package routeprefix

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		in   netip.Prefix
		want string // "" ok, else a substring of the error
	}{
		{netip.MustParsePrefix("192.168.1.0/24"), ""},
		{netip.MustParsePrefix("fd00::/64"), ""},
		{netip.MustParsePrefix("0.0.0.0/0"), ""},
		{netip.MustParsePrefix("192.168.1.1/24"), "host bits set (did you mean 192.168.1.0/24?)"},
		{netip.MustParsePrefix("::ffff:10.0.0.0/104"), "not a valid prefix"},
		{netip.Prefix{}, "not a valid prefix"},
	} {
		err := Check(tc.in)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Check(%s) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	if p, err := Parse("10.1.0.0/16"); err != nil || p != netip.MustParsePrefix("10.1.0.0/16") {
		t.Errorf("Parse(10.1.0.0/16) = %v, %v", p, err)
	}
	for _, s := range []string{"10.1.0.1/16", "10.1.0.0", "bogus", ""} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}

func TestNormalize(t *testing.T) {
	in := []netip.Prefix{netip.MustParsePrefix("::/0"), netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/16")}
	got, err := Normalize(in)
	want := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("::/0")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Normalize = %v, %v; want %v", got, err, want)
	}
	if got, err := Normalize(nil); got != nil || err != nil {
		t.Errorf("Normalize(nil) = %v, %v", got, err)
	}
	many := make([]netip.Prefix, Max+1)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
	}
	if _, err := Normalize(many); !errors.Is(err, ErrTooMany) {
		t.Errorf("Normalize(%d routes) = %v, want ErrTooMany", len(many), err)
	}
	if _, err := Normalize(many[:Max]); err != nil {
		t.Errorf("Normalize(%d routes) = %v", Max, err)
	}
}

func TestExit(t *testing.T) {
	ex := Exit()
	if len(ex) != 2 || ex[0].String() != "0.0.0.0/0" || ex[1].String() != "::/0" {
		t.Fatalf("Exit() = %v", ex)
	}
	ex[0] = netip.Prefix{} // a caller's slice is its own
	if Exit()[0] != ExitV4 {
		t.Fatal("Exit() shares its slice")
	}
	for _, p := range []string{"0.0.0.0/0", "::/0"} {
		if !IsExit(netip.MustParsePrefix(p)) {
			t.Errorf("IsExit(%s) = false", p)
		}
	}
	for _, p := range []string{"0.0.0.0/1", "::/1", "10.0.0.0/8"} {
		if IsExit(netip.MustParsePrefix(p)) {
			t.Errorf("IsExit(%s) = true", p)
		}
	}
	if IsExit(netip.Prefix{}) {
		t.Error("IsExit(invalid) = true")
	}
}
