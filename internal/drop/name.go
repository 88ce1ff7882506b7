package drop

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen bounds a file name in bytes. It leaves room under the usual
// 255-byte limit of file systems for the inbox's hidden companions
// (".NAME.partial.info").
const MaxNameLen = 200

// reserved are the Windows device names; a file named so (with any
// extension) cannot be created or opened there, so it is refused on every
// platform to keep transfers portable.
var reserved = map[string]bool{"CON": true, "PRN": true, "AUX": true, "NUL": true, "CONIN$": true, "CONOUT$": true}

func init() {
	for i := '0'; i <= '9'; i++ {
		reserved["COM"+string(i)] = true
		reserved["LPT"+string(i)] = true
	}
	for _, s := range []string{"¹", "²", "³"} {
		reserved["COM"+s] = true
		reserved["LPT"+s] = true
	}
}

// badRune reports a rune that has no place in a file name: path
// separators, characters Windows forbids, control characters, and
// invisible formatting characters (bidi overrides and isolates, zero-width
// joiners, byte order marks...), which can make a name read as another.
func badRune(r rune) string {
	switch {
	case r == '/' || r == '\\':
		return "a path separator"
	case r == utf8.RuneError:
		return "invalid UTF-8"
	case unicode.IsControl(r):
		return fmt.Sprintf("the control character %U", r)
	case unicode.Is(unicode.Bidi_Control, r):
		return fmt.Sprintf("the bidirectional formatting character %U", r)
	case unicode.Is(unicode.Cf, r), unicode.Is(unicode.Zl, r), unicode.Is(unicode.Zp, r),
		unicode.Is(unicode.Co, r), unicode.Is(unicode.Cs, r), r == 0xFFFD:
		return fmt.Sprintf("the invisible or private character %U", r)
	case strings.ContainsRune(`<>:"|?*`, r):
		return fmt.Sprintf("the character %q", r)
	}
	return ""
}

// isDevice reports a Windows device name, with or without extension.
func isDevice(name string) bool {
	stem, _, _ := strings.Cut(name, ".")
	return reserved[strings.ToUpper(strings.TrimRight(stem, " "))]
}

// ValidName reports why name cannot be stored as a received file, or nil.
// A valid name is what CleanName returns: the receiver accepts exactly
// those, so a hostile sender cannot place or disguise a file.
func ValidName(name string) error {
	if name == "" {
		return errors.New("empty file name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("file name longer than %d bytes", MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return errors.New("file name is not valid UTF-8")
	}
	if name == "." || name == ".." {
		return fmt.Errorf("file name %q names a directory", name)
	}
	for _, r := range name {
		if why := badRune(r); why != "" {
			return fmt.Errorf("file name contains %s", why)
		}
	}
	if strings.HasPrefix(name, ".") {
		return errors.New("file name starts with a dot (hidden files are not accepted)")
	}
	if strings.TrimFunc(name, dotOrSpace) != name {
		return errors.New("file name starts or ends with a space, or ends with a dot")
	}
	if isDevice(name) {
		return fmt.Errorf("file name %q is a device name", name)
	}
	return nil
}

// CleanName turns a file's base name into a valid one (see ValidName):
// separators and unwanted characters become '_', leading dots and spaces
// and trailing dots and spaces go, a device name gets a '_' in front, and
// a long name is cut (keeping a short extension). It fails only when
// nothing usable is left.
func CleanName(name string) (string, error) {
	var b strings.Builder
	for i, r := range name {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(name[i:]); size == 1 {
				b.WriteByte('_')
				continue
			}
		}
		if badRune(r) != "" {
			b.WriteByte('_')
			continue
		}
		b.WriteRune(r)
	}
	s := strings.TrimFunc(b.String(), dotOrSpace)
	if s == "" {
		return "", fmt.Errorf("file name %q has nothing usable in it", name)
	}
	if isDevice(s) {
		s = "_" + s
	}
	if len(s) > MaxNameLen {
		s = truncate(s)
	}
	if err := ValidName(s); err != nil {
		return "", fmt.Errorf("file name %q: %v", name, err)
	}
	return s, nil
}

func dotOrSpace(r rune) bool { return r == '.' || unicode.IsSpace(r) }

// truncate cuts s to MaxNameLen bytes at a rune boundary, keeping an
// extension of up to 16 bytes.
func truncate(s string) string {
	ext := ""
	if i := strings.LastIndexByte(s, '.'); i > 0 && len(s)-i <= 16 {
		ext = s[i:]
	}
	stem := s[:len(s)-len(ext)]
	limit := MaxNameLen - len(ext)
	for len(stem) > limit {
		_, size := utf8.DecodeLastRuneInString(stem)
		stem = stem[:len(stem)-size]
	}
	if ext == "" {
		stem = strings.TrimRightFunc(stem, dotOrSpace)
	}
	return stem + ext
}
