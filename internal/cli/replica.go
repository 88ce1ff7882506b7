package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/store"
)

// claimReplica makes a server on a shared (PostgreSQL) store one of its
// replicas (docs/HA.md): the server key must be the one the database is
// served with (the first server records it; every replica is the same
// server to the nodes), and the replica gets a name unique to this
// process. On SQLite the server is alone: "" and no check.
func claimReplica(ctx context.Context, st *store.Store, key noise.PrivateKey) (string, error) {
	if !st.Shared() {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := st.ClaimServerKey(ctx, key.PublicKey().String())
	if errors.Is(err, store.ErrServerKeyMismatch) {
		return "", fmt.Errorf("%v: every replica must use the same server key file (copy it from the first replica)", err)
	}
	if err != nil {
		return "", err
	}
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:])), nil
}
