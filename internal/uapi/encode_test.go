package uapi

import (
	"bufio"
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
)

func TestWriteState(t *testing.T) {
	var priv noise.PrivateKey
	priv[0] = 0x01
	s := State{
		PrivateKey: priv,
		ListenPort: 51820,
		FwMark:     0x1234,
		Peers: []PeerState{{
			PublicKey:           pubKey(0x22),
			PresharedKey:        noise.PresharedKey(pubKey(0x33)),
			Endpoint:            "[fd00::1]:51820",
			LastHandshake:       time.Unix(1700000000, 123456789),
			RxBytes:             1000,
			TxBytes:             2000,
			PersistentKeepalive: 25,
			AllowedIPs:          pfxs("10.0.0.0/24", "fd7a::/64"),
			ProtocolVersion:     1,
		}, {
			PublicKey: pubKey(0x44),
			Endpoint:  "not\nan endpoint", // must not reach the wire
		}, {
			PublicKey:     pubKey(0x55),
			Endpoint:      "192.0.2.1:1",
			LastHandshake: time.Unix(-5, 0), // before 1970: reported as never
		}},
	}
	var b bytes.Buffer
	if err := WriteState(&b, s); err != nil {
		t.Fatal(err)
	}
	want := "private_key=01" + strings.Repeat("00", 31) + "\n" +
		"listen_port=51820\n" +
		"fwmark=4660\n" +
		"public_key=" + hexKey(0x22) + "\n" +
		"preshared_key=" + hexKey(0x33) + "\n" +
		"protocol_version=1\n" +
		"endpoint=[fd00::1]:51820\n" +
		"last_handshake_time_sec=1700000000\n" +
		"last_handshake_time_nsec=123456789\n" +
		"tx_bytes=2000\n" +
		"rx_bytes=1000\n" +
		"persistent_keepalive_interval=25\n" +
		"allowed_ip=10.0.0.0/24\n" +
		"allowed_ip=fd7a::/64\n" +
		"public_key=" + hexKey(0x44) + "\n" +
		"preshared_key=" + hexKey(0) + "\n" +
		"protocol_version=1\n" +
		"last_handshake_time_sec=0\n" +
		"last_handshake_time_nsec=0\n" +
		"tx_bytes=0\n" +
		"rx_bytes=0\n" +
		"persistent_keepalive_interval=0\n" +
		"public_key=" + hexKey(0x55) + "\n" +
		"preshared_key=" + hexKey(0) + "\n" +
		"protocol_version=1\n" +
		"endpoint=192.0.2.1:1\n" +
		"last_handshake_time_sec=0\n" +
		"last_handshake_time_nsec=0\n" +
		"tx_bytes=0\n" +
		"rx_bytes=0\n" +
		"persistent_keepalive_interval=0\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	if err := WriteState(&b, State{}); err != nil {
		t.Fatal(err)
	}
	if b.String() != "listen_port=0\n" {
		t.Errorf("empty state: got %q", b.String())
	}
}

func TestWriteSetRoundTrip(t *testing.T) {
	priv := noise.PrivateKey(pubKey(9))
	psk := noise.PresharedKey(pubKey(8))
	c := &Config{
		PrivateKey:   &priv,
		ListenPort:   ptr[uint16](0),
		FwMark:       ptr[uint32](7),
		ReplacePeers: true,
		Peers: []PeerConfig{{
			PublicKey:           pubKey(1),
			UpdateOnly:          true,
			PresharedKey:        &psk,
			Endpoint:            "[fe80::1%eth0]:51820",
			PersistentKeepalive: ptr[uint16](65535),
			ReplaceAllowedIPs:   true,
			AllowedIPs:          pfxs("0.0.0.0/0", "::/0"),
			RemoveAllowedIPs:    pfxs("10.0.0.0/8"),
		}, {
			PublicKey: pubKey(2),
			Remove:    true,
		}},
	}
	var b bytes.Buffer
	if err := WriteSet(&b, c); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(&b)
	op, _ := r.ReadString('\n')
	if op != "set=1\n" {
		t.Fatalf("operation line %q", op)
	}
	got, err := ParseSet(r)
	if err != nil {
		t.Fatalf("%v in:\n%s", err, b.String())
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("got  %+v\nwant %+v", got, c)
	}
	if b.Len() != 0 {
		t.Errorf("%d bytes left after the request", b.Len())
	}

	b.Reset()
	if err := WriteSet(&b, &Config{}); err != nil || b.String() != "set=1\n\n" {
		t.Errorf("empty config: %q, %v", b.String(), err)
	}
}

func TestWriteSetRejectsBadValues(t *testing.T) {
	for _, pc := range []PeerConfig{
		{Endpoint: "192.0.2.1:1\nlisten_port=1"},
		{Endpoint: "example.com:1"},
		{AllowedIPs: []netip.Prefix{pfx("10.0.0.0/8"), {}}},
	} {
		var b bytes.Buffer
		err := WriteSet(&b, &Config{Peers: []PeerConfig{{PublicKey: pubKey(1)}, pc}})
		var e *Error
		if !errors.As(err, &e) || e.Errno != EINVAL {
			t.Errorf("%+v: error %v, want EINVAL", pc, err)
		}
		if b.Len() != 0 {
			t.Errorf("%+v: wrote %q", pc, b.String())
		}
	}
}
