package drop

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCleanName(t *testing.T) {
	long := strings.Repeat("é", 150) + ".tar.gz" // 307 bytes
	cases := []struct {
		in, want string // want "" = refused
	}{
		{"report.pdf", "report.pdf"},
		{"Ünïcødé 文件.txt", "Ünïcødé 文件.txt"},
		{"a b", "a b"},
		{"../../etc/passwd", "_.._etc_passwd"},
		{"a/b", "a_b"},
		{`a\b`, "a_b"},
		{"/", "_"},
		{".", ""},
		{"..", ""},
		{"...", ""},
		{"", ""},
		{"   ", ""},
		{".bashrc", "bashrc"},
		{" x ", "x"},
		{"x.", "x"},
		{"CON", "_CON"},
		{"con.txt", "_con.txt"},
		{"LPT1", "_LPT1"},
		{"com9.tar.gz", "_com9.tar.gz"},
		{"NUL", "_NUL"},
		{"CONSOLE", "CONSOLE"},
		{"a\x00b", "a_b"},
		{"a\nb", "a_b"},
		{"a\x7fb", "a_b"},
		{"a\u0085b", "a_b"},                   // C1 control
		{"evil\u202Etxt.exe", "evil_txt.exe"}, // RTL override
		{"x\u2066y\u2069", "x_y_"},            // isolates
		{"zero\u200Bwidth", "zero_width"},
		{"bom\uFEFF", "bom_"},
		{"priv\uE000", "priv_"},
		{"bad\xffutf8", "bad_utf8"},
		{"a:b*c?d\"e<f>g|h", "a_b_c_d_e_f_g_h"},
		{"\u202E", "_"},
		{long, strings.Repeat("é", 98) + ".gz"},
	}
	for _, c := range cases {
		got, err := CleanName(c.in)
		if c.want == "" {
			if err == nil {
				t.Errorf("CleanName(%q) = %q, want refusal", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		if err := ValidName(got); err != nil {
			t.Errorf("CleanName(%q) = %q, not valid: %v", c.in, got, err)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, bad := range []string{
		"", ".", "..", "../../etc/passwd", "a/b", `a\b`, "/etc/passwd", ".hidden", ".x.partial",
		"CON", "con", "Aux.txt", "LPT9.x", "a\x00b", "a\tb", "evil\u202Etxt.exe", "x\u200Fy",
		"trailing.", "trailing ", " leading", "bad\xff", strings.Repeat("a", MaxNameLen+1), "a:b",
	} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("ValidName(%q): multi-line error %q", bad, err)
		}
	}
	for _, good := range []string{"a", "report.pdf", "a b.txt", "_CON", "x (1).txt", strings.Repeat("a", MaxNameLen), "文件"} {
		if err := ValidName(good); err != nil {
			t.Errorf("ValidName(%q): %v", good, err)
		}
	}
}

func TestNumbered(t *testing.T) {
	for _, c := range []struct {
		in   string
		i    int
		want string
	}{{"a.txt", 1, "a (1).txt"}, {"noext", 2, "noext (2)"}, {"x.tar.gz", 3, "x.tar (3).gz"}} {
		if got := Numbered(c.in, c.i); got != c.want {
			t.Errorf("Numbered(%q, %d) = %q, want %q", c.in, c.i, got, c.want)
		}
	}
	long := strings.Repeat("é", MaxNameLen/2) + ".txt"
	long, _ = CleanName(long)
	if got := Numbered(long, 12); len(got) > MaxNameLen || ValidName(got) != nil {
		t.Errorf("Numbered(long) = %q (%d bytes)", got, len(got))
	}
}

// FuzzCleanName: CleanName's output is always valid and a fixed point,
// and every valid name is left as it is.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"a", "../../etc/passwd", "CON", "a\x00b", "x\u202Ey", ".", " . ", "\xff", "con .txt", "a\u00a0."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s) == nil {
			if c, err := CleanName(s); err != nil || c != s {
				t.Fatalf("valid %q cleaned to %q, %v", s, c, err)
			}
		}
		c, err := CleanName(s)
		if err != nil {
			return
		}
		if err := ValidName(c); err != nil {
			t.Fatalf("CleanName(%q) = %q: %v", s, c, err)
		}
		if c2, err := CleanName(c); err != nil || c2 != c {
			t.Fatalf("CleanName not idempotent on %q: %q, %v", c, c2, err)
		}
		if !utf8.ValidString(c) || strings.ContainsAny(c, "/\\\x00") || len(c) > MaxNameLen {
			t.Fatalf("CleanName(%q) = %q", s, c)
		}
	})
}

// FuzzParseHeader: whatever a sender puts in the size and hash, the parser
// either refuses it or returns a header that passes the checks.
func FuzzParseHeader(f *testing.F) {
	f.Add("a.txt", "10", strings.Repeat("ab", 32))
	f.Add("../x", "-1", "zz")
	f.Add("a", "99999999999999999999", strings.Repeat("AB", 32))
	f.Fuzz(func(t *testing.T, name, size, sum string) {
		h, err := ParseHeader(name, size, sum)
		if err != nil {
			return
		}
		if h.Size < 0 || len(h.SHA256) != 64 || ValidName(h.Name) != nil {
			t.Fatalf("accepted %+v", h)
		}
	})
}
