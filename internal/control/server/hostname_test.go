package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/store"
)

// TestHostnameControlCharsRefused: a host name is shown to admins (`admin
// nodes list`), so one with control or other non-printable characters
// (escape sequences, newlines, bidi overrides) is refused at registration
// and nothing is stored.
func TestHostnameControlCharsRefused(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	e.start()
	ctx := context.Background()
	key, _, err := e.st.CreatePreAuthKey(ctx, e.user.ID, store.PreAuthKeyOptions{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"evil\x1b[2J", "two\nlines", "tab\there", "bidi\u202etxt.exe", "nul\x00"} {
		_, err := e.client(genKey(t), "", "").Register(ctx, key, h, nil)
		var re *client.RegisterError
		if !errors.As(err, &re) || re.Code != proto.CodeBadRequest || !strings.Contains(err.Error(), "hostname") {
			t.Errorf("hostname %q: %v", h, err)
		}
	}
	if _, err := e.client(genKey(t), "", "").Register(ctx, key, "Büro Laptop", nil); err != nil {
		t.Fatalf("a printable host name: %v", err)
	}
	nodes, _ := e.st.ListNodes(ctx, 0)
	if len(nodes) != 1 {
		t.Fatalf("%d nodes stored, want 1", len(nodes))
	}
}
