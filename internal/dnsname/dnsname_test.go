package dnsname

import (
	"fmt"
	"strings"
	"testing"
)

var long63 = strings.Repeat("a", 63)

func TestIsLabel(t *testing.T) {
	for s, want := range map[string]bool{
		"laptop": true, "a": true, "a-b": true, "a--b": true, "0x": true, long63: true,
		"": false, long63 + "a": false, "-a": false, "a-": false, "A": false, "a_b": false, "a.b": false, "ä": false,
	} {
		if got := IsLabel(s); got != want {
			t.Errorf("IsLabel(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestIsName(t *testing.T) {
	for s, want := range map[string]bool{
		"warren.internal": true, "a": true, "a.b.c": true,
		"": false, "a.": false, ".a": false, "a..b": false, "A.b": false, "_s.b": false,
		strings.Repeat("a.", 126) + "a": true, strings.Repeat("a.", 127) + "a": false,
	} {
		if got := IsName(s); got != want {
			t.Errorf("IsName(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestIsRecordNameAndDomain(t *testing.T) {
	for _, tc := range []struct {
		s              string
		record, domain bool
	}{
		{"www.example.com", true, true},
		{"_sip._tcp.example.com", true, true},
		{"*.example.com", true, false},
		{"example", false, false},     // one label
		{"a.*.example", false, false}, // "*" only first
		{"Www.example.com", false, false},
		{"www.example.com.", false, false},
		{"-a.example", false, false},
		{"", false, false},
	} {
		if got := IsRecordName(tc.s); got != tc.record {
			t.Errorf("IsRecordName(%q) = %v, want %v", tc.s, got, tc.record)
		}
		if got := IsDomain(tc.s); got != tc.domain {
			t.Errorf("IsDomain(%q) = %v, want %v", tc.s, got, tc.domain)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, s := range []string{"Example.COM", "example.com.", "_srv.x", "a", long63 + ".b"} {
		if err := Check(s); err != nil {
			t.Errorf("Check(%q) = %v", s, err)
		}
	}
	for s, want := range map[string]string{
		"":                              "empty name",
		".":                             "empty name",
		"a..b":                          "empty or over-long label",
		"-a.b":                          `label "-a" starts or ends with '-'`,
		"a b.c":                         `label "a b" has a character other than letters, digits, '-' and '_'`,
		long63 + "a.b":                  "empty or over-long label",
		strings.Repeat("a.", 127):       "", // 254 bytes with the dot, 253 without: fine
		strings.Repeat("a.", 127) + "a": "name of 255 bytes is too long",
		"*.a.b":                         `label "*" has a character`,
	} {
		err := Check(s)
		if want == "" {
			if err != nil {
				t.Errorf("Check(%q) = %v", s, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want %q", s, err, want)
		}
	}
	if err := CheckOwner("*.a.b"); err != nil {
		t.Errorf("CheckOwner(*.a.b) = %v", err)
	}
	if err := CheckOwner("a.*.b"); err == nil {
		t.Error("CheckOwner(a.*.b) accepted")
	}
}

func TestFromHostname(t *testing.T) {
	for in, want := range map[string]string{
		"My Laptop": "my-laptop", "--a__b--": "a-b", "": "node", "!!!": "node", "ÄBC.local": "bc-local",
		"x" + fmt.Sprintf("%070d", 0): "x" + fmt.Sprintf("%062d", 0),
		strings.Repeat("ab-", 30):     strings.TrimRight(strings.Repeat("ab-", 21), "-"),
	} {
		got := FromHostname(in)
		if got != want {
			t.Errorf("FromHostname(%q) = %q, want %q", in, got, want)
		}
		if !IsLabel(got) || !IsCanonicalNodeName(got) {
			t.Errorf("FromHostname(%q) = %q is not a canonical node name", in, got)
		}
	}
	for s, want := range map[string]bool{"laptop": true, "a-b": true, "a--b": false, "": false, "Laptop": false, "-a": false} {
		if got := IsCanonicalNodeName(s); got != want {
			t.Errorf("IsCanonicalNodeName(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		" Corp.Example.COM. ": "corp.example.com", "a.b": "a.b", ".": "", "a..": "a.", "": "",
	} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}
