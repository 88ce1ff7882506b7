package tagname

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"tag:db": true, "tag:web-1": true, "tag:Web": true, "tag:" + strings.Repeat("a", MaxLen-4): true,
		"tag:": false, "db": false, "tag:a_b": false, "tag:a:b": false, "tag:" + strings.Repeat("a", MaxLen-3): false, "tag:é": false,
	} {
		if Valid(s) != want {
			t.Errorf("Valid(%q) = %v", s, !want)
		}
		if err := Check(s); (err == nil) != want || err != nil && !strings.Contains(err.Error(), `invalid tag "`+s+`"`) {
			t.Errorf("Check(%q) = %v", s, err)
		}
	}
}
