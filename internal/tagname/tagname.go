// Package tagname owns the syntax of a tag ("tag:NAME"), which makes a
// node owned by the tag instead of a user. The policy (tagOwners), the
// admin API and the store all check tags here. It depends on nothing but
// the standard library.
package tagname

import (
	"fmt"
	"strings"
)

// MaxLen bounds a tag, "tag:" included.
const MaxLen = 64

// Valid reports whether s is "tag:" followed by letters, digits and
// dashes, at most MaxLen bytes in all.
func Valid(s string) bool {
	name, ok := strings.CutPrefix(s, "tag:")
	if !ok || name == "" || len(s) > MaxLen {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Check is Valid with a one-line error naming the tag and the rule.
func Check(s string) error {
	if !Valid(s) {
		return fmt.Errorf("invalid tag %q (tag: then letters, digits and dashes)", s)
	}
	return nil
}
