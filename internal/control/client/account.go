package client

import (
	"context"
	"fmt"

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
