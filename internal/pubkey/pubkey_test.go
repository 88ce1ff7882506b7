package pubkey

import (
	"testing"

	"warren/internal/noise"
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
