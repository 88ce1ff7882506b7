package cli

import (
	"strconv"
	"strings"
	"unicode"
)

// printable returns s as is when every rune of it is printable (letters,
// marks, numbers, punctuation, symbols, ASCII space), else quoted with Go
// escapes: a name that comes from a node or the server (a host name, a
// user name) can then neither move the cursor, clear the screen, set the
// terminal title, reorder text (bidi overrides) nor forge lines or columns
// of the CLI's output (newlines, tabs).
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}
