package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/control/audit"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

// Interactive enables registration by signing in (warren up without an
// auth key); see Options.Interactive.
type Interactive struct {
	// LoginURL is the absolute URL a person opens to sign in for a
	// registration ID (PUBLIC_URL + oidcauth.RegisterURL(id)).
	LoginURL func(regID string) string
	// KeyExpiry is how long a node joined this way stays valid before
	// it must sign in again; 0: never.
	KeyExpiry time.Duration
	// Approval leaves such nodes out of the network until an admin
	// approves them.
	Approval bool
	// Wait is how long a node's "am I registered yet?" is held open
	// before the answer is "not yet"; default 25 s.
	Wait time.Duration
	// TTL is how long a sign-in URL stays usable; default 15 minutes.
	TTL time.Duration
}

// regWaiters wakes the nodes waiting on a registration ID.
type regWaiters struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

func (w *regWaiters) wait(id string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = map[string]chan struct{}{}
	}
	c, ok := w.ch[id]
	if !ok {
		c = make(chan struct{})
		w.ch[id] = c
	}
	return c
}

func (w *regWaiters) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.ch[id]; ok {
		close(c)
		delete(w.ch, id)
	}
}

// registerInteractive answers a RegisterRequest without an auth key.
func (s *Server) registerInteractive(key pubkey.Node, req *proto.RegisterRequest) *proto.RegisterResponse {
	in := s.opts.Interactive
	if in == nil {
		return &proto.RegisterResponse{Code: proto.CodeLoginUnavailable,
			Error: "registration refused: this server has no sign-in; join with --auth-key KEY"}
	}
	ctx, cancel := storeCtx()
	defer cancel()
	if req.RegistrationID != "" {
		return s.continueRegistration(key, req.RegistrationID)
	}
	n, err := s.st.GetNodeByKey(ctx, key)
	switch {
	case err == nil && !n.Approved:
		return &proto.RegisterResponse{Code: proto.CodeApprovalRequired,
			Error: fmt.Sprintf("node %s waits for an admin's approval (warren admin nodes approve %s)", n.Name, n.Name)}
	case err == nil && !req.ForceReauth && (n.Expiry.IsZero() || n.Expiry.After(s.clk.Now())):
		return s.registered(ctx, n) // already in: a retry
	case err != nil && !errors.Is(err, store.ErrNotFound):
		code, msg := s.failed("interactive registration", key, err)
		return &proto.RegisterResponse{Code: code, Error: msg}
	}
	ttl := in.TTL
	if ttl <= 0 {
		ttl = 15 * time.Minute
	}
	r, err := s.st.CreateRegistration(ctx, key, req.Hostname, ttl)
	if err != nil {
		code, msg := s.failed("interactive registration", key, err)
		return &proto.RegisterResponse{Code: code, Error: msg}
	}
	u := in.LoginURL(r.RegID)
	return &proto.RegisterResponse{Code: proto.CodeLoginRequired, AuthURL: u, RegistrationID: r.RegID,
		Error: "to add this machine, sign in at " + u}
}

// continueRegistration answers a node asking again with its registration
// ID: its node once a person signed in, else (after waiting a while)
// "not yet".
func (s *Server) continueRegistration(key pubkey.Node, regID string) *proto.RegisterResponse {
	in := s.opts.Interactive
	wait := in.Wait
	if wait <= 0 {
		wait = 25 * time.Second
	}
	woken := s.regs.wait(regID)
	ctx, cancel := storeCtx()
	defer cancel()
	for round := 0; ; round++ {
		r, err := s.st.GetRegistration(ctx, regID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && r.NodeKey != key) {
			return &proto.RegisterResponse{Code: proto.CodeRegistrationExpired, Error: "registration refused: unknown registration ID; run warren up again"}
		} else if err != nil {
			code, msg := s.failed("interactive registration", key, err)
			return &proto.RegisterResponse{Code: code, Error: msg}
		}
		if r.NodeID != 0 {
			n, err := s.st.GetNode(ctx, r.NodeID)
			if err != nil {
				return &proto.RegisterResponse{Code: proto.CodeNodeDeleted, Error: "registration refused: the node was deleted; run warren up again"}
			}
			if !n.Approved {
				return &proto.RegisterResponse{Code: proto.CodeApprovalRequired, RegistrationID: regID,
					Error: fmt.Sprintf("node %s waits for an admin's approval (warren admin nodes approve %s)", n.Name, n.Name)}
			}
			return s.registered(ctx, n)
		}
		if !s.clk.Now().Before(r.Expiry) {
			return &proto.RegisterResponse{Code: proto.CodeRegistrationExpired, Error: "registration refused: nobody signed in in time; run warren up again"}
		}
		if round > 0 {
			return &proto.RegisterResponse{Code: proto.CodeLoginRequired, AuthURL: in.LoginURL(regID), RegistrationID: regID,
				Error: "not signed in yet: sign in at " + in.LoginURL(regID)}
		}
		t := time.NewTimer(wait) // a network deadline: the real clock
		select {
		case <-woken:
		case <-t.C:
		case <-s.stop:
		}
		t.Stop()
	}
}

// registered is the answer for a node that is in: itself as its map shows
// it, once the world has it.
func (s *Server) registered(ctx context.Context, n *store.Node) *proto.RegisterResponse {
	if err := s.sync(); err != nil {
		s.log.Error("control: register failed", "node", n.NodeKey, "err", err)
	}
	nn, ok := toNetmap(n, s.storedUserName(ctx, n.UserID))
	if !ok {
		return &proto.RegisterResponse{Code: proto.CodeInternal, Error: "internal server error"}
	}
	return &proto.RegisterResponse{Node: &nn}
}

// CompleteRegistration is the sign-in's end of an interactive
// registration (oidcauth.Config.OnRegister): the node of regID becomes
// u's, with the configured key expiry; the waiting node is woken. The
// returned text is shown to the person.
func (s *Server) CompleteRegistration(ctx context.Context, r *http.Request, regID string, u *store.User, email string) (string, error) {
	in := s.opts.Interactive
	if in == nil {
		return "", errors.New("this server does not register machines by signing in")
	}
	var expiry time.Time
	if in.KeyExpiry > 0 {
		expiry = s.clk.Now().Add(in.KeyExpiry)
	}
	n, err := s.st.CompleteRegistration(ctx, regID, u.ID, expiry, !in.Approval)
	actor := "user:" + u.Name
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		audit.Record(ctx, s.st, s.log, r, actor, "node.register", "registration "+regID, "unknown or already used", false)
		return "", errors.New("This machine link is unknown or was already used. Run warren up on the machine again.")
	case errors.Is(err, store.ErrRegistrationExpired):
		audit.Record(ctx, s.st, s.log, r, actor, "node.register", "registration "+regID, "expired", false)
		return "", errors.New("This machine link has expired. Run warren up on the machine again.")
	case errors.Is(err, store.ErrNodeKeyInUse):
		audit.Record(ctx, s.st, s.log, r, actor, "node.register", "registration "+regID, "node key of another user", false)
		return "", errors.New("This machine belongs to another user.")
	case err != nil:
		s.log.Error("control: completing a registration failed", "err", err)
		return "", errors.New("The server could not add the machine.")
	}
	detail := "interactive"
	if !expiry.IsZero() {
		detail += ", key expires " + expiry.UTC().Format(time.RFC3339)
	}
	if !n.Approved {
		detail += ", waits for approval"
	}
	audit.Record(ctx, s.st, s.log, r, actor, "node.register", fmt.Sprintf("node %d %s", n.ID, n.Name), detail, true)
	s.Notify()
	s.regs.wake(regID)
	if !n.Approved {
		return fmt.Sprintf("The machine %s is registered to %s and waits for an admin's approval. You can close this page.", n.Name, u.Name), nil
	}
	return fmt.Sprintf("The machine %s joined the network; it belongs to %s. You can close this page.", n.Name, u.Name), nil
}
