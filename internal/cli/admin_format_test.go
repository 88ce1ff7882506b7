package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// TestTablesShowTags: the nodes and auth-key tables carry a TAGS column
// (a tagged node is owned by its tags, so an admin must see them), "-" for
// none.
func TestTablesShowTags(t *testing.T) {
	var b bytes.Buffer
	printNodes(&b, []admin.Node{
		{ID: 1, Name: "db1", User: "alice", Tags: []string{"tag:db", "tag:prod"}},
		{ID: 2, Name: "laptop", User: "alice"},
	})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "TAGS") {
		t.Fatalf("nodes table:\n%s", b.String())
	}
	if f := strings.Fields(lines[1]); len(f) < 4 || f[3] != "tag:db,tag:prod" {
		t.Errorf("tagged node's row: %q", lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) < 4 || f[3] != "-" {
		t.Errorf("untagged node's row: %q", lines[2])
	}
	b.Reset()
	printAuthKeys(&b, []admin.AuthKey{{ID: 7, Prefix: "wkey_abc", User: "alice", Tags: []string{"tag:db"}}})
	lines = strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "TAGS") {
		t.Fatalf("auth keys table:\n%s", b.String())
	}
	if f := strings.Fields(lines[1]); len(f) < 4 || f[3] != "tag:db" {
		t.Errorf("tagged key's row: %q", lines[1])
	}
}

// TestNodesListShowsAwaitingApproval: a node joined by sign-in that waits
// for approval says so; an auth-key node never does.
func TestNodesListShowsAwaitingApproval(t *testing.T) {
	var b strings.Builder
	printNodes(&b, []admin.Node{
		{ID: 1, Name: "kiosk", User: "ivy", Interactive: true, Approved: false},
		{ID: 2, Name: "laptop", User: "ivy", Interactive: true, Approved: true},
		{ID: 3, Name: "server", User: "ivy"},
	})
	lines := strings.Split(b.String(), "\n")
	if !strings.Contains(lines[1], "awaiting approval") || strings.Contains(lines[2], "awaiting") || strings.Contains(lines[3], "awaiting") {
		t.Fatalf("nodes list:\n%s", b.String())
	}
}
