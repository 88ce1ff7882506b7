package uapi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/noise"
)

// hexKey is a 64-digit hex key made of one repeated byte.
func hexKey(b byte) string { return strings.Repeat(fmt.Sprintf("%02x", b), noise.KeySize) }

func pubKey(b byte) noise.PublicKey {
	var k noise.PublicKey
	for i := range k {
		k[i] = b
	}
	return k
}

func ptr[T any](v T) *T { return &v }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, pfx(s))
	}
	return out
}

// parse runs ParseSet on body (the lines after "set=1") and also returns
// what it left unread.
func parse(t *testing.T, body string) (*Config, error, string) {
	t.Helper()
	r := bufio.NewReader(strings.NewReader(body))
	c, err := ParseSet(r)
	rest, _ := io.ReadAll(r)
	if err == nil && c == nil {
		t.Fatal("ParseSet returned neither a config nor an error")
	}
	if err != nil && c != nil {
		t.Fatal("ParseSet returned both a config and an error")
	}
	return c, err, string(rest)
}

func TestParseSetFullConfig(t *testing.T) {
	body := "private_key=" + hexKey(0x11) + "\n" +
		"listen_port=51820\n" +
		"fwmark=4660\n" +
		"replace_peers=true\n" +
		"public_key=" + hexKey(0x22) + "\n" +
		"update_only=true\n" +
		"preshared_key=" + hexKey(0x33) + "\n" +
		"endpoint=[fd00:0::1]:51820\n" +
		"persistent_keepalive_interval=25\n" +
		"replace_allowed_ips=true\n" +
		"allowed_ip=10.0.0.0/24\n" +
		"allowed_ip=fd7a::/64\n" +
		"protocol_version=1\n" +
		"public_key=" + hexKey(0x44) + "\n" +
		"endpoint=192.0.2.7:9\n" +
		"preshared_key=" + hexKey(0) + "\n" +
		"persistent_keepalive_interval=0\n" +
		"allowed_ip=10.1.2.3/16\n" +
		"allowed_ip=-192.168.0.0/16\n" +
		"allowed_ip=::/0\n" +
		"public_key=" + hexKey(0x55) + "\n" +
		"remove=true\n" +
		"\n" +
		"get=1\n\n"
	got, err, rest := parse(t, body)
	if err != nil {
		t.Fatal(err)
	}
	if rest != "get=1\n\n" {
		t.Errorf("unread rest = %q, want the next request", rest)
	}
	var priv noise.PrivateKey
	for i := range priv {
		priv[i] = 0x11
	}
	psk := noise.PresharedKey(pubKey(0x33))
	want := &Config{
		PrivateKey:   &priv,
		ListenPort:   ptr[uint16](51820),
		FwMark:       ptr[uint32](4660),
		ReplacePeers: true,
		Peers: []PeerConfig{{
			PublicKey:           pubKey(0x22),
			UpdateOnly:          true,
			PresharedKey:        &psk,
			Endpoint:            "[fd00::1]:51820",
			PersistentKeepalive: ptr[uint16](25),
			ReplaceAllowedIPs:   true,
			AllowedIPs:          pfxs("10.0.0.0/24", "fd7a::/64"),
		}, {
			PublicKey:           pubKey(0x44),
			Endpoint:            "192.0.2.7:9",
			PresharedKey:        &noise.PresharedKey{},
			PersistentKeepalive: ptr[uint16](0),
			AllowedIPs:          pfxs("10.1.0.0/16", "::/0"),
			RemoveAllowedIPs:    pfxs("192.168.0.0/16"),
		}, {
			PublicKey: pubKey(0x55),
			Remove:    true,
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseSetEmptyAndZeroValues(t *testing.T) {
	got, err, _ := parse(t, "\n")
	if err != nil || !reflect.DeepEqual(got, &Config{}) {
		t.Errorf("empty request: got %+v, %v", got, err)
	}
	got, err, _ = parse(t, "private_key="+hexKey(0)+"\nfwmark=0\nlisten_port=0\n\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.PrivateKey == nil || !got.PrivateKey.IsZero() {
		t.Errorf("all-zero private_key: got %v, want a zero key (removal)", got.PrivateKey)
	}
	if got.FwMark == nil || *got.FwMark != 0 || got.ListenPort == nil || *got.ListenPort != 0 {
		t.Errorf("zero fwmark/listen_port not recorded: %+v", got)
	}
	// Upper-case hex is hex too; the last of two lines wins.
	got, err, _ = parse(t, "listen_port=1\nlisten_port=65535\npublic_key="+strings.ToUpper(hexKey(0xab))+"\n\n")
	if err != nil {
		t.Fatal(err)
	}
	if *got.ListenPort != 65535 || got.Peers[0].PublicKey != pubKey(0xab) {
		t.Errorf("got %+v", got)
	}
}

func TestParseSetErrors(t *testing.T) {
	peer := "public_key=" + hexKey(0x22) + "\n"
	long := "endpoint=" + strings.Repeat("1", MaxLineLen) + "\n"
	cases := []struct {
		name  string
		body  string
		errno int64
	}{
		{"unknown device key", "foo=bar\n", EPROTO},
		{"no equals sign", "listen_port\n", EPROTO},
		{"empty key", "=1\n", EPROTO},
		{"unknown peer key", peer + "foo=bar\n", EPROTO},
		{"device key after peer", peer + "listen_port=1\n", EPROTO},
		{"private key after peer", peer + "private_key=" + hexKey(1) + "\n", EPROTO},
		{"replace_peers after peer", peer + "replace_peers=true\n", EPROTO},
		{"peer key before peer", "endpoint=192.0.2.1:1\n", EPROTO},
		{"allowed_ip before peer", "allowed_ip=10.0.0.0/8\n", EPROTO},
		{"overlong line", long, EPROTO},
		{"overlong line in peer", peer + long, EPROTO},
		{"key with trailing space", "listen_port =1\n", EPROTO},
		{"port too big", "listen_port=65536\n", EINVAL},
		{"port negative", "listen_port=-1\n", EINVAL},
		{"port plus sign", "listen_port=+1\n", EINVAL},
		{"port empty", "listen_port=\n", EINVAL},
		{"port not a number", "listen_port=0x10\n", EINVAL},
		{"port with space", "listen_port= 1\n", EINVAL},
		{"fwmark too big", "fwmark=4294967296\n", EINVAL},
		{"private key short", "private_key=" + hexKey(1)[:62] + "\n", EINVAL},
		{"private key not hex", "private_key=" + strings.Repeat("zz", 32) + "\n", EINVAL},
		{"replace_peers false", "replace_peers=false\n", EINVAL},
		{"replace_peers empty", "replace_peers=\n", EINVAL},
		{"public key not hex", "public_key=xyz\n", EINVAL},
		{"public key too long", "public_key=" + hexKey(1) + "00\n", EINVAL},
		{"remove not true", peer + "remove=1\n", EINVAL},
		{"update_only not true", peer + "update_only=yes\n", EINVAL},
		{"replace_allowed_ips not true", peer + "replace_allowed_ips=TRUE\n", EINVAL},
		{"psk not hex", peer + "preshared_key=nope\n", EINVAL},
		{"endpoint without port", peer + "endpoint=192.0.2.1\n", EINVAL},
		{"endpoint host name", peer + "endpoint=example.com:51820\n", EINVAL},
		{"endpoint bare ipv6", peer + "endpoint=fd00::1:51820\n", EINVAL},
		{"endpoint port too big", peer + "endpoint=192.0.2.1:65536\n", EINVAL},
		{"endpoint empty", peer + "endpoint=\n", EINVAL},
		{"keepalive too big", peer + "persistent_keepalive_interval=65536\n", EINVAL},
		{"allowed ip without bits", peer + "allowed_ip=10.0.0.1\n", EINVAL},
		{"allowed ip bits too big", peer + "allowed_ip=10.0.0.0/33\n", EINVAL},
		{"allowed ip double minus", peer + "allowed_ip=--10.0.0.0/8\n", EINVAL},
		{"allowed ip plus", peer + "allowed_ip=+10.0.0.0/8\n", EINVAL},
		{"allowed ip with zone", peer + "allowed_ip=fe80::1%eth0/128\n", EINVAL},
		{"protocol version 2", peer + "protocol_version=2\n", EINVAL},
		{"protocol version 0", peer + "protocol_version=0\n", EINVAL},
		{"first error wins", "listen_port=x\nfoo=bar\n", EINVAL},
		{"first error wins (EPROTO)", "foo=bar\nlisten_port=x\n", EPROTO},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A valid line after the bad one, and a next request after the
			// blank line: the parser must stop exactly at the blank line.
			c, err, rest := parse(t, tc.body+"fwmark=1\n\nNEXT\n")
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if e.Errno != tc.errno {
				t.Errorf("errno %d (%v), want %d", e.Errno, err, tc.errno)
			}
			if errors.Is(err, ErrIncomplete) {
				t.Errorf("complete request reported as incomplete: %v", err)
			}
			if rest != "NEXT\n" {
				t.Errorf("left %q unread, want %q", rest, "NEXT\n")
			}
		})
	}
}

func TestParseSetNoKeyMaterialInErrors(t *testing.T) {
	secret := strings.Repeat("ab", 31) + "zz"
	for _, body := range []string{"private_key=" + secret + "\n\n", "public_key=" + hexKey(1) + "\npreshared_key=" + secret + "\n\n"} {
		_, err, _ := parse(t, body)
		if err == nil || strings.Contains(err.Error(), "abab") {
			t.Errorf("error %v for a bad key echoes it", err)
		}
	}
}

func TestParseSetIncomplete(t *testing.T) {
	for _, body := range []string{"", "listen_port=1\n", "listen_port=1", "foo=bar\n", strings.Repeat("x", 3*MaxLineLen)} {
		_, err, _ := parse(t, body)
		var e *Error
		if !errors.As(err, &e) || e.Errno != EPROTO {
			t.Errorf("%.20q: error %v, want *Error with EPROTO", body, err)
		}
		if !errors.Is(err, ErrIncomplete) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%.20q: error %v does not wrap ErrIncomplete and io.ErrUnexpectedEOF", body, err)
		}
	}
}

func TestParseSetLineLimit(t *testing.T) {
	old := maxRequestLines
	maxRequestLines = 10
	defer func() { maxRequestLines = old }()
	ok := "public_key=" + hexKey(1) + "\n" + strings.Repeat("allowed_ip=10.0.0.0/8\n", 9) + "\n"
	if _, err, _ := parse(t, ok); err != nil {
		t.Fatalf("%d lines rejected: %v", maxRequestLines, err)
	}
	_, err, rest := parse(t, "public_key="+hexKey(1)+"\n"+strings.Repeat("allowed_ip=10.0.0.0/8\n", 10)+"\nNEXT")
	var e *Error
	if !errors.As(err, &e) || e.Errno != ENOMEM {
		t.Errorf("error %v, want ENOMEM", err)
	}
	if rest != "NEXT" {
		t.Errorf("left %q unread", rest)
	}
}

func TestParseSetMaxLineLength(t *testing.T) {
	// A line of exactly MaxLineLen bytes is read (and fails only on its
	// content); one byte more is "overlong". Small reader buffers must not
	// matter.
	exact := "endpoint=" + strings.Repeat("9", MaxLineLen-len("endpoint="))
	for _, size := range []int{16, 4096, 65536} {
		r := bufio.NewReaderSize(strings.NewReader("public_key="+hexKey(1)+"\n"+exact+"\n\n"), size)
		_, err := ParseSet(r)
		if !strings.Contains(fmt.Sprint(err), "endpoint") {
			t.Errorf("buffer %d: %d-byte line: error %v, want an endpoint error", size, MaxLineLen, err)
		}
		r = bufio.NewReaderSize(strings.NewReader("public_key="+hexKey(1)+"\n"+exact+"9\n\n"), size)
		_, err = ParseSet(r)
		if !strings.Contains(fmt.Sprint(err), "longer than") {
			t.Errorf("buffer %d: %d-byte line: error %v, want overlong", size, MaxLineLen+1, err)
		}
	}
}

func TestParseSetPeerFlags(t *testing.T) {
	body := "public_key=" + hexKey(1) + "\nremove=true\n" +
		"public_key=" + hexKey(2) + "\nupdate_only=true\nendpoint=[::ffff:192.0.2.1]:7\n" +
		"public_key=" + hexKey(1) + "\nallowed_ip=10.0.0.0/8\n\n"
	got, err, _ := parse(t, body)
	if err != nil {
		t.Fatal(err)
	}
	want := []PeerConfig{
		{PublicKey: pubKey(1), Remove: true},
		{PublicKey: pubKey(2), UpdateOnly: true, Endpoint: "[::ffff:192.0.2.1]:7"},
		{PublicKey: pubKey(1), AllowedIPs: pfxs("10.0.0.0/8")},
	}
	if !reflect.DeepEqual(got.Peers, want) {
		t.Errorf("got  %+v\nwant %+v", got.Peers, want)
	}
}

func TestParseSetAllowedIPEdits(t *testing.T) {
	cases := []struct {
		name          string
		lines         []string
		replace       bool
		add, removals []netip.Prefix
	}{
		{"adds keep order and duplicates", []string{"10.0.0.0/8", "::/0", "10.0.0.0/8"}, false, pfxs("10.0.0.0/8", "::/0", "10.0.0.0/8"), nil},
		{"host bits masked", []string{"10.9.8.7/8", "-fd00::1/16"}, false, pfxs("10.0.0.0/8"), pfxs("fd00::/16")},
		{"add then remove", []string{"10.0.0.0/8", "-10.0.0.0/8"}, false, nil, pfxs("10.0.0.0/8")},
		{"remove then add", []string{"-10.0.0.0/8", "10.0.0.0/8"}, false, pfxs("10.0.0.0/8"), nil},
		{"mixed net effect", []string{"a", "b", "-c", "a", "-b", "-c", "d"}, false, pfxs("1.0.0.0/8", "4.0.0.0/8"), pfxs("2.0.0.0/8", "3.0.0.0/8")},
		{"replace drops earlier adds", []string{"10.0.0.0/8", "replace", "192.168.0.0/16"}, true, pfxs("192.168.0.0/16"), nil},
		{"replace drops earlier removals", []string{"-10.0.0.0/8", "replace"}, true, nil, nil},
		{"removal after replace", []string{"replace", "10.0.0.0/8", "-10.0.0.0/8"}, true, nil, pfxs("10.0.0.0/8")},
	}
	letters := map[string]string{"a": "1.0.0.0/8", "b": "2.0.0.0/8", "c": "3.0.0.0/8", "d": "4.0.0.0/8"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := "public_key=" + hexKey(1) + "\n"
			for _, l := range tc.lines {
				if l == "replace" {
					body += "replace_allowed_ips=true\n"
					continue
				}
				minus := strings.HasPrefix(l, "-")
				l = strings.TrimPrefix(l, "-")
				if p, ok := letters[l]; ok {
					l = p
				}
				if minus {
					l = "-" + l
				}
				body += "allowed_ip=" + l + "\n"
			}
			// A second peer checks that the bookkeeping does not leak.
			body += "public_key=" + hexKey(2) + "\nallowed_ip=172.16.0.0/12\n\n"
			got, err, _ := parse(t, body)
			if err != nil {
				t.Fatal(err)
			}
			p := got.Peers[0]
			if p.ReplaceAllowedIPs != tc.replace || !reflect.DeepEqual(p.AllowedIPs, tc.add) || !reflect.DeepEqual(p.RemoveAllowedIPs, tc.removals) {
				t.Errorf("got replace=%v add=%v remove=%v\nwant replace=%v add=%v remove=%v",
					p.ReplaceAllowedIPs, p.AllowedIPs, p.RemoveAllowedIPs, tc.replace, tc.add, tc.removals)
			}
			q := got.Peers[1]
			if q.ReplaceAllowedIPs || !reflect.DeepEqual(q.AllowedIPs, pfxs("172.16.0.0/12")) || q.RemoveAllowedIPs != nil {
				t.Errorf("second peer got %+v", q)
			}
		})
	}
}

func TestParseSetManyAllowedIPs(t *testing.T) {
	const n = 100_000
	var b strings.Builder
	b.WriteString("public_key=" + hexKey(1) + "\nreplace_allowed_ips=true\n")
	for i := range n {
		fmt.Fprintf(&b, "allowed_ip=10.%d.%d.%d/32\n", i>>16, i>>8&0xff, i&0xff)
	}
	b.WriteString("public_key=" + hexKey(2) + "\n")
	for i := range n {
		fmt.Fprintf(&b, "allowed_ip=fd00::%x:%x/128\n", i>>16, i&0xffff)
	}
	b.WriteString("allowed_ip=-fd00::/128\n\n")
	got, err, _ := parse(t, b.String())
	if err != nil {
		t.Fatal(err)
	}
	p, q := got.Peers[0], got.Peers[1]
	if len(p.AllowedIPs) != n || p.RemoveAllowedIPs != nil {
		t.Errorf("peer 1: got %d allowed IPs and %d removals, want %d and 0", len(p.AllowedIPs), len(p.RemoveAllowedIPs), n)
	}
	if p.AllowedIPs[0] != pfx("10.0.0.0/32") || p.AllowedIPs[n-1] != pfx("10.1.134.159/32") {
		t.Errorf("peer 1: order lost: first %v last %v", p.AllowedIPs[0], p.AllowedIPs[n-1])
	}
	// The removal cancels the first addition.
	if len(q.AllowedIPs) != n-1 || !reflect.DeepEqual(q.RemoveAllowedIPs, pfxs("fd00::/128")) {
		t.Errorf("peer 2: got %d allowed IPs and removals %v", len(q.AllowedIPs), q.RemoveAllowedIPs)
	}
	if q.AllowedIPs[0] != pfx("fd00::1/128") {
		t.Errorf("peer 2: first allowed IP %v", q.AllowedIPs[0])
	}
}
