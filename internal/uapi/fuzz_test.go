package uapi

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

// Seeds stay short: the fuzzer's minimiser is quadratic in input length, and
// overlong lines have their own unit tests.
var fuzzSeeds = []string{
	"\n",
	"private_key=" + hexKey(0x11) + "\nlisten_port=51820\nfwmark=4660\nreplace_peers=true\n" +
		"public_key=" + hexKey(0x22) + "\nupdate_only=true\npreshared_key=" + hexKey(0x33) + "\n" +
		"endpoint=[fd00::1]:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n" +
		"allowed_ip=10.0.0.0/24\nallowed_ip=fd7a::/64\nprotocol_version=1\n" +
		"public_key=" + hexKey(0x44) + "\nremove=true\n\n",
	"public_key=" + hexKey(1) + "\nallowed_ip=10.0.0.0/8\nallowed_ip=-10.0.0.0/8\nallowed_ip=-::/0\nallowed_ip=::/0\n\n",
	"public_key=" + hexKey(1) + "\nendpoint=[fe80::1%eth0]:1\nendpoint=[::ffff:1.2.3.4]:0\n\n",
	"public_key=" + hexKey(1) + "\nallowed_ip=10.0.0.0/8\nreplace_allowed_ips=true\nallowed_ip=-1.0.0.0/8\n\n",
	"private_key=" + hexKey(0) + "\nlisten_port=0\n\nget=1\n\n",
	"listen_port=65536\n\n",
	"public_key=" + hexKey(1) + "\nlisten_port=1\n\n",
	"foo\n\n",
	"listen_port=1\n",
}

// FuzzParseSet checks that ParseSet never panics, always stops exactly at
// the first blank line, fails only with *Error values, and that whatever it
// accepts survives a WriteSet/ParseSet round trip unchanged.
func FuzzParseSet(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), 16)
		c, err := ParseSet(r)
		rest, _ := io.ReadAll(r)

		end := -1
		if len(data) > 0 && data[0] == '\n' {
			end = 1
		} else if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
			end = i + 2
		}
		if end < 0 {
			if !errors.Is(err, ErrIncomplete) {
				t.Fatalf("no blank line, but error %v", err)
			}
			return
		}
		if errors.Is(err, ErrIncomplete) {
			t.Fatalf("complete request reported incomplete: %v", err)
		}
		if !bytes.Equal(rest, data[end:]) {
			t.Fatalf("stopped at the wrong place: left %q, want %q", rest, data[end:])
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || (e.Errno != EPROTO && e.Errno != EINVAL && e.Errno != ENOMEM) {
				t.Fatalf("error %#v", err)
			}
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}

		var b bytes.Buffer
		if err := WriteSet(&b, c); err != nil {
			t.Fatalf("WriteSet of a parsed config: %v", err)
		}
		enc := b.String()
		rr := bufio.NewReader(&b)
		if op, _ := rr.ReadString('\n'); op != "set=1\n" {
			t.Fatalf("operation line %q", op)
		}
		c2, err := ParseSet(rr)
		if err != nil {
			t.Fatalf("re-parsing %q: %v", enc, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v\nencoded as %q", c, c2, enc)
		}
		if b.Len() != 0 {
			t.Fatalf("%d bytes after the encoded request", b.Len())
		}
	})
}

// FuzzServe feeds arbitrary bytes to one connection's handler and checks
// that every request, even a truncated last one, gets exactly one reply
// ending in an errno line, and nothing else.
func FuzzServe(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte("set=1\n" + s))
	}
	f.Add([]byte("get=1\n\n"))
	f.Add([]byte("get=1\nx\n\n\n\nget=1\n\nhello\n\n"))
	f.Add([]byte("set=1\nlisten_port=1\n\nget=1\n\nset=1\nbad\n\nget=1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &server{dev: newTestDevice(), log: slog.New(slog.DiscardHandler)}
		var out bytes.Buffer
		s.handle(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), &out})

		// Requests are runs of non-blank lines; each gets one reply, except
		// one cut short within its operation line.
		requests, inRequest := 0, false
		lines := bytes.Split(data, []byte("\n"))
		for i, line := range lines {
			if len(line) == 0 {
				inRequest = false
			} else if !inRequest && i < len(lines)-1 {
				inRequest = true
				requests++
			}
		}
		replies := strings.SplitAfter(out.String(), "\n\n")
		if replies[len(replies)-1] != "" {
			t.Fatalf("output %q does not end with a blank line", out.String())
		}
		replies = replies[:len(replies)-1]
		if len(replies) != requests {
			t.Fatalf("%d requests, %d replies: %q", requests, len(replies), out.String())
		}
		for _, rep := range replies {
			lines := strings.Split(strings.TrimSuffix(rep, "\n\n"), "\n")
			if !strings.HasPrefix(lines[len(lines)-1], "errno=") {
				t.Fatalf("reply %q does not end with errno", rep)
			}
		}
	})
}
