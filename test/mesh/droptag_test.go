package mesh

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestDropTagged: file drop is between one user's own machines, and a
// tagged node is owned by its tags, not by the user who made its key: a
// node joined with alice's tagged key may neither send files to alice's
// machines nor receive files from them.
func TestDropTagged(t *testing.T) {
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	if err := os.WriteFile(pol, []byte(`{
	"tagOwners": {"tag:srv": ["alice@"]},
	"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	l.mustAdmin("policy", "set", pol)
	ka := l.mustAdmin("authkeys", "create", "--user", "alice")
	ks := l.mustAdmin("authkeys", "create", "--user", "alice", "--tags", "tag:srv")
	a, s := l.startNode("a"), l.startNode("srv")
	parallel(t, []*node{a, s}, func(n *node) error {
		k := ka
		if n == s {
			k = ks
		}
		_, err := n.up(k)
		return err
	})
	waitPeers(t, []*node{a, s}, 1, 10*time.Second)
	aV4, _ := a.ips()
	if !wait.Poll(5*time.Second, func() bool { return s.pingOnce(aV4, time.Second) == nil }) {
		t.Fatal("srv cannot reach a")
	}
	src := t.TempDir()
	p := filepath.Join(src, "from-tagged")
	os.WriteFile(p, []byte("hi"), 0o644)
	for _, tc := range []struct {
		from, to *node
		dst      string
		want     string
	}{
		{s, a, "a:", "is a tagged node"},
		{a, s, "srv:", "this node is tagged"},
	} {
		res, err := warren(tc.from.ns, "file", "cp", "--socket", tc.from.sock, p, tc.dst)
		msg := strings.TrimSpace(res)
		if err == nil || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Fatalf("send to %s: %v\n%s", tc.dst, err, msg)
		}
		t.Logf("send to %s: %s", tc.dst, msg)
		if n := len(tc.to.fileList(t).Files); n != 0 {
			t.Fatalf("%d files stored at %s", n, tc.dst)
		}
	}
}
