package daemon

import "testing"

// TestCheckServerURL: one server URL or several replicas' URLs separated
// by commas; each must be http(s) with a host. The key is fetched from the
// first.
func TestCheckServerURL(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"http://ctl:8080", true},
		{"https://ctl1.example.com,https://ctl2.example.com:8443", true},
		{"https://ctl1.example.com,", false},
		{"https://ctl1.example.com,ctl2:8080", false},
		{"ftp://ctl", false},
		{"", false},
	} {
		if err := checkServerURL(tc.in); (err == nil) != tc.ok {
			t.Errorf("checkServerURL(%q) = %v, want ok %v", tc.in, err, tc.ok)
		}
	}
	if got := firstServerURL("https://a,https://b"); got != "https://a" {
		t.Errorf("firstServerURL = %q", got)
	}
}
