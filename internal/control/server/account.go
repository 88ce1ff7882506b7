package server

import (
	"errors"

	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

// rotateKey moves the session's node to a new key, proven by the request.
// The node keeps its ID, name and addresses; every peer gets a delta with
// the new key, and the node's stream under the old key is closed.
func (s *Server) rotateKey(key pubkey.Node, req *proto.RotateKeyRequest) *proto.RotateKeyResponse {
	refuse := func(code, msg string) *proto.RotateKeyResponse {
		return &proto.RotateKeyResponse{Code: code, Error: "key rotation refused: " + msg}
	}
	if err := proto.VerifyRotationProof(s.key, key, req.NewKey, req.Proof); err != nil {
		return refuse(proto.CodeBadRequest, "the proof of the new key does not verify")
	}
	ctx, cancel := storeCtx()
	defer cancel()
	n, err := s.st.GetNodeByKey(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return refuse(proto.CodeNotRegistered, "this node is not registered")
	case err != nil:
		return refuse(s.failed("rotate key", key, err))
	case n.Via != 0:
		return refuse(proto.CodeNotRegistered, wireGuardOnlyKey)
	case !n.Expiry.IsZero() && !n.Expiry.After(s.clk.Now()):
		return refuse(proto.CodeNodeExpired, "this node has expired; join again with an auth key")
	}
	if err := s.st.RotateNodeKey(ctx, n.ID, req.NewKey); err != nil {
		if errors.Is(err, store.ErrNodeKeyInUse) {
			return refuse(proto.CodeNodeKeyInUse, "the new key belongs to another node")
		}
		return refuse(s.failed("rotate key", key, err))
	}
	n.NodeKey = req.NewKey
	if err := s.sync(); err != nil {
		s.log.Error("control: rotate key failed", "node", key, "err", err)
	}
	s.mu.Lock()
	if ss := s.sessions[uint64(n.ID)]; ss != nil {
		ss.kill()
	}
	s.mu.Unlock()
	nn, ok := toNetmap(n, s.storedUserName(ctx, n.UserID))
	s.log.Info("control: node rotated its key", "node", n.ID, "name", n.Name)
	if !ok {
		return refuse(proto.CodeInternal, "internal server error")
	}
	return &proto.RotateKeyResponse{Node: &nn}
}

// logout deletes the session's node: it leaves every peer's map, and its
// addresses and name are free again.
func (s *Server) logout(key pubkey.Node) *proto.LogoutResponse {
	ctx, cancel := storeCtx()
	defer cancel()
	n, err := s.st.GetNodeByKey(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &proto.LogoutResponse{Code: proto.CodeNotRegistered, Error: "logout: this node is not registered"}
	case err != nil:
		code, msg := s.failed("logout", key, err)
		return &proto.LogoutResponse{Code: code, Error: msg}
	case n.Via != 0:
		return &proto.LogoutResponse{Code: proto.CodeNotRegistered, Error: "logout: " + wireGuardOnlyKey}
	}
	if err := s.st.DeleteNode(ctx, n.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		code, msg := s.failed("logout", key, err)
		return &proto.LogoutResponse{Code: code, Error: msg}
	}
	if err := s.sync(); err != nil {
		s.log.Error("control: logout failed", "node", key, "err", err)
	}
	s.log.Info("control: node logged out", "node", n.ID, "name", n.Name)
	return &proto.LogoutResponse{}
}

// wireGuardOnlyKey refuses the control protocol to the key of a
// WireGuard-only member (docs/WIREGUARD.md): such a device has no stream,
// key rotation or logout of its own; its gateway reports for it and the
// admin API manages it.
const wireGuardOnlyKey = "this key belongs to a WireGuard-only member, which has no control stream"
