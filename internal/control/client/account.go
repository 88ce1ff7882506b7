package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// request sends one message on a fresh session and returns the answer.
func (c *Client) request(ctx context.Context, what string, m *proto.Message) (*proto.Message, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer conn.Close()
	defer closeOnDone(ctx, conn)()
	if err := proto.Write(conn, m); err != nil {
		return nil, fmt.Errorf("%s: %w", what, ctxErr(ctx, err))
	}
	r, err := proto.Read(conn, proto.MaxClientMessage)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, ctxErr(ctx, err))
	}
	if r.Error != nil {
		return nil, &RegisterError{Code: r.Error.Code, Message: r.Error.Message}
	}
	return r, nil
}

// RotateKey moves this node to newKey, keeping its name and addresses. The
// session runs under the current key, and the request carries a proof that
// the caller holds newKey. On success the caller must use a new Client
// with newKey: the server closes streams under the old one. A refusal is a
// *RegisterError.
func (c *Client) RotateKey(ctx context.Context, newKey noise.PrivateKey) (*netmap.Node, error) {
	proof, err := proto.RotationProof(newKey, c.cfg.ServerKey, pubkey.Node{PublicKey: c.cfg.NodeKey.PublicKey()})
	if err != nil {
		return nil, fmt.Errorf("rotate key: %w", err)
	}
	var node *netmap.Node
	err = c.retryUnavailable(ctx, func() error {
		node, err = c.rotateKeyOnce(ctx, newKey, proof)
		return err
	})
	return node, err
}

func (c *Client) rotateKeyOnce(ctx context.Context, newKey noise.PrivateKey, proof []byte) (*netmap.Node, error) {
	r, err := c.request(ctx, "rotate key", &proto.Message{RotateKeyRequest: &proto.RotateKeyRequest{
		NewKey: pubkey.Node{PublicKey: newKey.PublicKey()}, Proof: proof}})
	if err != nil {
		return nil, err
	}
	resp := r.RotateKeyResponse
	switch {
	case resp == nil:
		return nil, fmt.Errorf("rotate key: %w: unexpected reply", proto.ErrMalformed)
	case resp.Error != "":
		return nil, &RegisterError{Code: resp.Code, Message: resp.Error}
	case resp.Node == nil || resp.Node.Key.PublicKey != newKey.PublicKey():
		return nil, fmt.Errorf("rotate key: %w: reply without the node under its new key", proto.ErrMalformed)
	}
	return resp.Node, nil
}

// Logout removes this node from the deployment. A refusal is a
// *RegisterError.
func (c *Client) Logout(ctx context.Context) error {
	return c.retryUnavailable(ctx, func() error { return c.logoutOnce(ctx) })
}

func (c *Client) logoutOnce(ctx context.Context) error {
	r, err := c.request(ctx, "logout", &proto.Message{LogoutRequest: &proto.LogoutRequest{}})
	if err != nil {
		return err
	}
	switch resp := r.LogoutResponse; {
	case resp == nil:
		return fmt.Errorf("logout: %w: unexpected reply", proto.ErrMalformed)
	case resp.Error != "":
		return &RegisterError{Code: resp.Code, Message: resp.Error}
	}
	return nil
}

// maxUnavailableWait caps the wait between two asks while the server
// cannot reach its database: a failover takes seconds, and a person may
// be waiting on warren up.
const maxUnavailableWait = 5 * time.Second

// retryUnavailable runs do until it returns anything but the server's
// "cannot reach its database" (proto.CodeUnavailable: nothing was done),
// waiting MinBackoff, doubling up to maxUnavailableWait, jittered. When
// ctx ends first — while waiting or in the middle of asking again — the
// server's last answer is returned: it says why, where "context deadline
// exceeded" would not.
func (c *Client) retryUnavailable(ctx context.Context, do func() error) error {
	backoff := min(c.cfg.MinBackoff, maxUnavailableWait)
	var last error
	for {
		err := do()
		if last != nil && ctx.Err() != nil {
			return last
		}
		var re *RegisterError
		if !errors.As(err, &re) || re.Code != proto.CodeUnavailable {
			return err
		}
		last = err
		wait := backoff/2 + rand.N(backoff/2+1)
		c.cfg.Logger.Info("control: the server cannot reach its database; asking again", "in", wait.Round(time.Millisecond))
		if !c.sleep(ctx, wait) {
			return err
		}
		backoff = min(backoff*2, maxUnavailableWait)
	}
}

// sleep waits d on the client's clock; false if ctx ended first.
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	fired := make(chan struct{})
	t := c.cfg.Clock.NewTimer(func() { close(fired) })
	t.Reset(d)
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-fired:
		return true
	}
}
