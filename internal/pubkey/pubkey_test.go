package pubkey

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/warrenmesh/warren/internal/noise"
)

func TestParseAndText(t *testing.T) {
	priv, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.PublicKey()
	n, err := ParseNode(pub.String())
	if err != nil || n.PublicKey != pub || n.Text() != pub.String() {
		t.Fatalf("ParseNode = %v, %v", n, err)
	}
	d, err := ParseDisco(pub.String())
	if err != nil || d.PublicKey != pub || d.Text() != pub.String() {
		t.Fatalf("ParseDisco = %v, %v", d, err)
	}
	var zero noise.PublicKey
	for _, s := range []string{"", "not base64", zero.String(), pub.String()[:20]} {
		if _, err := ParseNode(s); err == nil {
			t.Errorf("ParseNode(%q) accepted", s)
		}
	}
	if d, err := ParseDisco(""); err != nil || !d.IsZero() || d.Text() != "" {
		t.Errorf(`ParseDisco("") = %v, %v`, d, err)
	}
	for _, s := range []string{"not base64", zero.String()} { // the zero key is low order
		if _, err := ParseDisco(s); err == nil {
			t.Errorf("ParseDisco(%q) accepted", s)
		}
	}
	if (Node{}).Text() != "" {
		t.Error("zero node key has text")
	}
}

// TestJSONIsBase64: the typed keys keep the wire form of noise.PublicKey,
// a base64 string, both ways.
func TestJSONIsBase64(t *testing.T) {
	priv, _ := noise.GeneratePrivateKey()
	pub := priv.PublicKey()
	type msg struct {
		N Node  `json:"n"`
		D Disco `json:"d"`
		R Relay `json:"r"`
	}
	in := msg{Node{pub}, Disco{pub}, Relay{pub}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	s := strconv.Quote(pub.String())
	if want := `{"n":` + s + `,"d":` + s + `,"r":` + s + `}`; string(b) != want {
		t.Fatalf("json %s, want %s", b, want)
	}
	var out msg
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("round trip %+v, %v", out, err)
	}
}
