package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/localapi"
)

// loginWait bounds how long the daemon keeps waiting for a person to sign
// in (the server's sign-in URL lives 15 minutes).
const loginWait = 20 * time.Minute

// login is an interactive registration in progress: the URL to show and
// how to stop waiting for it.
type login struct {
	authURL string
	cancel  context.CancelFunc
}

// cancelLogin stops waiting for a sign-in in progress.
func (d *Daemon) cancelLogin() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.login.cancel != nil {
		d.login.cancel()
	}
	d.login = login{}
}

// joinInteractive registers by a person signing in: the server answers
// with a sign-in URL, returned in the status (NeedsLogin, AuthURL) for
// `warren up` to show, while the daemon waits for the sign-in in the
// background and then completes the join as with an auth key. relogin is
// `up --force-reauth` of a registered node: on a server without sign-in it
// rotates the node's key and brings it up, as before sign-in existed.
func (d *Daemon) joinInteractive(ctx context.Context, cc *client.Client, j joinTarget, hostname string, relogin bool) (*localapi.Status, error) {
	if relogin && j.hostname == "" {
		d.mu.Lock()
		j.hostname = d.prefs.Hostname
		d.mu.Unlock()
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	node, err := cc.RegisterInteractive(rctx, hostname, d.endpoints(), relogin, "")
	cancel()
	var re *client.RegisterError
	switch {
	case err == nil:
		return d.completeJoin(j, node)
	case errors.As(err, &re) && re.Code == proto.CodeLoginUnavailable && relogin:
		if err := d.rotateKey(ctx); err != nil {
			return nil, err
		}
		return d.bringUp()
	case errors.As(err, &re) && re.Code == proto.CodeLoginUnavailable:
		return nil, errors.New("this node is not registered and " + j.serverURL + " has no sign-in: pass --auth-key KEY")
	case errors.As(err, &re) && (re.Code == proto.CodeLoginRequired || re.Code == proto.CodeApprovalRequired):
	case errors.As(err, &re):
		return nil, errors.New(re.Message)
	default:
		return nil, fmt.Errorf("join %s: %w", j.serverURL, err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), loginWait)
	d.mu.Lock()
	if d.login.cancel != nil {
		d.login.cancel()
	}
	d.login = login{authURL: re.AuthURL, cancel: wcancel}
	if !relogin {
		d.state = localapi.StateNeedsLogin
	}
	st := d.statusLocked()
	d.mu.Unlock()
	if j.fetchedOver != "" {
		// The key this join will pin, and how it was learned: the CLI
		// shows it (and warns about plain http) before the sign-in.
		st.ServerURL, st.ServerKey, st.ServerKeyFetched = j.serverURL, j.serverKey.String(), j.fetchedOver
	}
	d.log.Info("waiting for a sign-in", "server", j.serverURL, "url", re.AuthURL)
	go d.waitLogin(wctx, wcancel, cc, j, hostname, re.RegistrationID)
	return st, nil
}

// waitLogin asks the server again (each ask is held there until the
// sign-in or a while) until the node is registered, then completes the
// join.
func (d *Daemon) waitLogin(ctx context.Context, cancel context.CancelFunc, cc *client.Client, j joinTarget, hostname, regID string) {
	defer cancel()
	for ctx.Err() == nil {
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		node, err := cc.RegisterInteractive(rctx, hostname, d.endpoints(), false, regID)
		rcancel()
		var re *client.RegisterError
		switch {
		case err == nil:
			d.mu.Lock()
			current := d.login.cancel != nil && ctx.Err() == nil
			d.mu.Unlock()
			if !current {
				return
			}
			if _, err := d.completeJoin(j, node); err != nil {
				d.log.Error("joining after the sign-in failed", "err", err)
			}
			d.mu.Lock()
			d.login = login{}
			d.mu.Unlock()
			return
		case errors.As(err, &re) && re.Code == proto.CodeLoginRequired:
			continue // not yet; the server held the ask
		case errors.As(err, &re) && re.Code == proto.CodeApprovalRequired:
			t := time.NewTimer(2 * time.Second) // polling the admin's approval
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		case errors.As(err, &re):
			d.log.Warn("sign-in registration ended", "err", re.Message)
			d.mu.Lock()
			d.login = login{}
			d.mu.Unlock()
			return
		default:
			d.log.Warn("waiting for the sign-in", "err", err) // the server is unreachable a while
			t := time.NewTimer(2 * time.Second)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}
