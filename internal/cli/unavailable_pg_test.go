package cli

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/store/storetest"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestRegisterWhileDatabaseDown: `warren server` on PostgreSQL, the
// database cut away (as by a failover): a node joining is told the server
// cannot reach its database — not "internal server error" — and, asking
// again, joins once the database is back.
func TestRegisterWhileDatabaseDown(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	proxy, viaProxy := newPGProxy(t, dsn)
	ts := startServer(t, filepath.Join(t.TempDir(), "data"), "--db", viaProxy)
	st, err := store.Open(ctx, dsn, store.Options{}) // the test's own way in, never cut
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.CreateUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	authKey, _, err := st.CreatePreAuthKey(ctx, u.ID, store.PreAuthKeyOptions{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	serverKey, err := noise.ParsePublicKey(ts.pub)
	if err != nil {
		t.Fatal(err)
	}
	nodeKey, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	logger, rec := logtest.New()
	c, err := client.New(client.Config{ServerURL: ts.url, ServerKey: pubkey.Server{PublicKey: serverKey}, NodeKey: nodeKey,
		MinBackoff: 50 * time.Millisecond, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}

	// register asks in the background; it returns once the node was told
	// the database is unreachable and is asking again.
	register := func(ctx context.Context) chan error {
		done := make(chan error, 1)
		before := len(rec.Records())
		go func() {
			_, err := c.Register(ctx, authKey, "alpha", nil)
			done <- err
		}()
		wait.For(t, 20*time.Second, "the node asking again", func() bool {
			for _, r := range rec.Records()[before:] {
				if strings.Contains(r.Msg, "cannot reach its database; asking again") {
					return true
				}
			}
			return false
		})
		return done
	}

	proxy.setCut(true)
	// The node gives up (its context ends): the server's answer says why.
	gaveUp, giveUp := context.WithCancel(ctx)
	done := register(gaveUp)
	giveUp()
	err = <-done
	var re *client.RegisterError
	if !errors.As(err, &re) || re.Code != proto.CodeUnavailable || !strings.Contains(re.Message, "cannot reach its database") {
		t.Fatalf("register with the database cut: %v\nserver log:\n%s", err, ts.stderr.String())
	}
	if strings.Contains(re.Message, viaProxy) || strings.Contains(re.Message, "PGSQL") {
		t.Fatalf("the answer names the database: %q", re.Message)
	}

	// The database comes back while the node is asking again.
	done = register(ctx)
	proxy.setCut(false)
	if err := <-done; err != nil {
		t.Fatalf("register once the database is back: %v\nserver log:\n%s", err, ts.stderr.String())
	}
	if n, err := st.GetNodeByKey(ctx, pubkey.Node{PublicKey: nodeKey.PublicKey()}); err != nil || n.Name != "alpha" {
		t.Fatalf("stored node: %v %v", n, err)
	}
}
