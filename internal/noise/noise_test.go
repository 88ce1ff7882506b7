package noise

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"io"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/hkdf"

	"github.com/warrenmesh/warren/internal/tai64n"
	"github.com/warrenmesh/warren/internal/wire"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The protocol's initial chaining key and hash are fixed by its name and
// identifier; other implementations publish the same constants.
func TestInitialState(t *testing.T) {
	if got := hex.EncodeToString(initialChainKey[:]); got != "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36" {
		t.Errorf("initial chaining key %s", got)
	}
	if got := hex.EncodeToString(initialHash[:]); got != "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3" {
		t.Errorf("initial hash %s", got)
	}
}

// WireGuard's KDF is HKDF (RFC 5869) with HMAC-BLAKE2s, the chaining key
// as salt and empty info: check it against x/crypto's independent HKDF.
func TestKDFMatchesHKDF(t *testing.T) {
	for _, tc := range []struct{ key, input string }{
		{"", ""},
		{"746573742d6b6579", "746573742d696e707574"},
		{hex.EncodeToString(bytes.Repeat([]byte{0xaa}, 32)), hex.EncodeToString(bytes.Repeat([]byte{0x55}, 100))},
	} {
		key, input := mustHex(t, tc.key), mustHex(t, tc.input)
		r := hkdf.New(newBlake2s, input, key, nil)
		var want [96]byte
		if _, err := io.ReadFull(r, want[:]); err != nil {
			t.Fatal(err)
		}
		t1, t2, t3 := KDF3(key, input)
		got := append(append(t1[:], t2[:]...), t3[:]...)
		if !bytes.Equal(got, want[:]) {
			t.Errorf("KDF3(%s,%s) = %x, want %x", tc.key, tc.input, got, want)
		}
		k1 := KDF1(key, input)
		if !bytes.Equal(k1[:], want[:32]) {
			t.Errorf("KDF1 mismatch")
		}
		a, b := KDF2(key, input)
		if !bytes.Equal(a[:], want[:32]) || !bytes.Equal(b[:], want[32:64]) {
			t.Errorf("KDF2 mismatch")
		}
	}
	// HMAC-BLAKE2s itself against the standard library's HMAC.
	m := hmac.New(newBlake2s, []byte("k"))
	m.Write([]byte("data"))
	h := hmacBlake2s([]byte("k"), []byte("da"), []byte("ta"))
	if !bytes.Equal(m.Sum(nil), h[:]) {
		t.Error("hmacBlake2s mismatch")
	}
}

// RFC 7748 section 6.1.
func TestX25519RFC7748(t *testing.T) {
	var a, b PrivateKey
	copy(a[:], mustHex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	copy(b[:], mustHex(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
	if got := a.PublicKey().Hex(); got != "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a" {
		t.Errorf("alice public %s", got)
	}
	if got := b.PublicKey().Hex(); got != "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f" {
		t.Errorf("bob public %s", got)
	}
	ss, err := a.SharedSecret(b.PublicKey())
	if err != nil || hex.EncodeToString(ss[:]) != "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742" {
		t.Errorf("shared %x %v", ss, err)
	}
}

// LowOrderPoints are the Curve25519 points of small order (as listed in the
// WireGuard kernel self-tests and libsodium).
var LowOrderPoints = []string{
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
}

func TestLowOrderRejected(t *testing.T) {
	priv, _ := GeneratePrivateKey()
	local := NewStatic(priv)
	for _, s := range LowOrderPoints {
		pk, err := ParsePublicKeyHex(s)
		if err != nil {
			t.Fatal(err)
		}
		if !pk.IsLowOrder() {
			t.Errorf("%s not detected as low order", s)
		}
		var h Handshake
		h.RemoteStatic = pk
		if h.Precompute(local) {
			t.Errorf("%s: precompute succeeded", s)
		}
		var msg wire.Initiation
		if err := local.CreateInitiation(&h, 1, tai64n.Now(), &msg); err == nil {
			t.Errorf("%s: initiation created", s)
		}
	}
	other, _ := GeneratePrivateKey()
	if other.PublicKey().IsLowOrder() {
		t.Error("random key reported low order")
	}
}

func newPair(t *testing.T) (a, b *Static, ha, hb *Handshake) {
	ka, _ := GeneratePrivateKey()
	kb, _ := GeneratePrivateKey()
	a, b = NewStatic(ka), NewStatic(kb)
	psk := PresharedKey{1, 2, 3}
	ha = &Handshake{RemoteStatic: b.Public, PresharedKey: psk}
	hb = &Handshake{RemoteStatic: a.Public, PresharedKey: psk}
	if !ha.Precompute(a) || !hb.Precompute(b) {
		t.Fatal("precompute")
	}
	return
}

func TestHandshake(t *testing.T) {
	a, b, ha, hb := newPair(t)
	var init wire.Initiation
	if err := a.CreateInitiation(ha, 11, tai64n.Now(), &init); err != nil {
		t.Fatal(err)
	}
	// Through the wire format.
	var buf [wire.InitiationSize]byte
	var init2 wire.Initiation
	if err := init2.Unmarshal(init.Marshal(buf[:])); err != nil {
		t.Fatal(err)
	}
	var ci ConsumedInitiation
	if err := b.BeginInitiation(&init2, &ci); err != nil {
		t.Fatal(err)
	}
	if ci.Static != a.Public {
		t.Fatal("wrong static decrypted")
	}
	if err := ci.FinishInitiation(hb); err != nil {
		t.Fatal(err)
	}
	// The same initiation again is a replay.
	if err := ci.FinishInitiation(hb); err != ErrReplay {
		t.Fatalf("replayed initiation: %v", err)
	}
	var resp wire.Response
	if err := b.CreateResponse(hb, 22, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Receiver != 11 || resp.Sender != 22 {
		t.Fatalf("indices %d %d", resp.Receiver, resp.Sender)
	}
	if err := a.ConsumeResponse(ha, &resp); err != nil {
		t.Fatal(err)
	}
	if err := a.ConsumeResponse(ha, &resp); err != ErrState {
		t.Fatalf("response consumed twice: %v", err)
	}
	as, ar, ai, err := ha.DeriveKeys()
	if err != nil || !ai {
		t.Fatal(err, ai)
	}
	bs, br, bi, err := hb.DeriveKeys()
	if err != nil || bi {
		t.Fatal(err, bi)
	}
	if as != br || ar != bs || as == ar {
		t.Fatal("transport keys do not match")
	}
	if ha.State != StateZeroed || ha.LocalIndex != 11 || ha.RemoteIndex != 22 {
		t.Fatalf("initiator state after derive: %+v", ha.State)
	}
	if !isZero(ha.chainKey[:]) || !isZero(ha.localEphemeral[:]) {
		t.Fatal("ephemeral state not wiped")
	}
}

func TestHandshakeTampering(t *testing.T) {
	a, b, ha, hb := newPair(t)
	var init wire.Initiation
	if err := a.CreateInitiation(ha, 1, tai64n.Now(), &init); err != nil {
		t.Fatal(err)
	}
	var buf [wire.InitiationSize]byte
	raw := init.Marshal(buf[:])
	for i := 8; i < wire.InitiationMac1Offset; i++ {
		bad := append([]byte(nil), raw...)
		bad[i] ^= 0x40
		var m wire.Initiation
		if err := m.Unmarshal(bad); err != nil {
			t.Fatal(err)
		}
		var ci ConsumedInitiation
		h := *hb
		if err := b.BeginInitiation(&m, &ci); err == nil {
			if err := ci.FinishInitiation(&h); err == nil {
				t.Fatalf("flipped byte %d accepted", i)
			}
		}
	}
	// A wrong PSK fails at the response.
	var ci ConsumedInitiation
	if err := b.BeginInitiation(&init, &ci); err != nil {
		t.Fatal(err)
	}
	hb.PresharedKey[0] ^= 1
	if err := ci.FinishInitiation(hb); err != nil {
		t.Fatal(err)
	}
	var resp wire.Response
	if err := b.CreateResponse(hb, 2, &resp); err != nil {
		t.Fatal(err)
	}
	if err := a.ConsumeResponse(ha, &resp); err != ErrDecrypt {
		t.Fatalf("psk mismatch: %v", err)
	}
	if ha.State != StateInitiationCreated {
		t.Fatal("failed response changed the state")
	}
}

func TestCookies(t *testing.T) {
	kb, _ := GeneratePrivateKey()
	b := NewStatic(kb)
	var checker CookieChecker
	checker.Init(b.Public)
	var gen CookieGenerator
	gen.Init(b.Public)
	now := time.Unix(1000, 0)

	msg := make([]byte, wire.InitiationSize)
	msg[0] = wire.TypeInitiation
	gen.AddMACs(msg, now)
	if !checker.CheckMAC1(msg) {
		t.Fatal("mac1 rejected")
	}
	src := []byte{198, 18, 0, 1, 0x1f, 0x90}
	if checker.CheckMAC2(msg, src, now) {
		t.Fatal("mac2 accepted without a cookie")
	}
	var reply wire.CookieReply
	if err := checker.CreateReply(msg, 7, src, now, &reply); err != nil {
		t.Fatal(err)
	}
	// A reply with a flipped bit is rejected; the real one accepted once.
	forged := reply
	forged.Cookie[3] ^= 1
	if gen.ConsumeReply(&forged, now) {
		t.Fatal("forged cookie reply accepted")
	}
	if !gen.ConsumeReply(&reply, now) {
		t.Fatal("cookie reply rejected")
	}
	if gen.ConsumeReply(&reply, now) {
		t.Fatal("cookie reply accepted twice")
	}
	gen.AddMACs(msg, now.Add(time.Second))
	if !checker.CheckMAC1(msg) || !checker.CheckMAC2(msg, src, now.Add(time.Second)) {
		t.Fatal("mac2 with cookie rejected")
	}
	if checker.CheckMAC2(msg, []byte{198, 18, 0, 2, 0x1f, 0x90}, now) {
		t.Fatal("cookie accepted from another source")
	}
	if checker.CheckMAC2(msg, src, now.Add(CookieRefreshTime+time.Second)) {
		t.Fatal("cookie accepted after the secret expired")
	}
	gen.AddMACs(msg, now.Add(CookieRefreshTime+time.Second))
	if !isZero(msg[wire.InitiationMac2Offset:]) {
		t.Fatal("expired cookie still used for mac2")
	}
	msg[10] ^= 1
	if checker.CheckMAC1(msg) {
		t.Fatal("mac1 accepted after tampering")
	}
}

func TestKeyParsing(t *testing.T) {
	k, _ := GeneratePrivateKey()
	k2, err := ParsePrivateKeyHex(k.Hex())
	if err != nil || k2 != k {
		t.Fatal("hex round trip")
	}
	k3, err := ParsePrivateKey(k.Base64())
	if err != nil || k3 != k {
		t.Fatal("base64 round trip")
	}
	for _, bad := range []string{"", "zz", k.Hex()[:62], k.Hex() + "00", "g" + k.Hex()[1:]} {
		if _, err := ParsePublicKeyHex(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if _, err := ParsePublicKey("AAAA"); err == nil {
		t.Error("short base64 accepted")
	}
	if k.String() == k.Base64() {
		t.Error("private key printed")
	}
	_ = blake2s.Size
}
