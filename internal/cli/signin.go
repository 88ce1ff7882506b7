package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/warrenmesh/warren/internal/localapi"
)

// signInWait bounds how long `warren up` waits for the person to sign in
// (the server's sign-in URL lives 15 minutes).
const signInWait = 16 * time.Minute

// waitSignIn shows where to sign in to add this node (and, with qr, a QR
// code of it), then waits until the daemon's interactive registration
// ends: the node registered (the status it then has), or given up.
func waitSignIn(ctx context.Context, lc *localapi.Client, st *localapi.Status, qr bool, stdout, stderr io.Writer) (*localapi.Status, error) {
	// The URL and its QR code go out in one write: whoever reads the
	// output (a person, a script) sees both or neither.
	msg := fmt.Sprintf("\nTo add this machine to the network, sign in at:\n\n\t%s\n\n", printable(st.AuthURL))
	if qr {
		q, err := qrcode.New(st.AuthURL, qrcode.Medium)
		if err != nil {
			fmt.Fprintf(stderr, "warren up: QR code: %v\n", err)
		} else {
			msg += q.ToSmallString(false) + "\n"
		}
	}
	io.WriteString(stdout, msg)
	ctx, cancel := context.WithTimeout(ctx, signInWait)
	defer cancel()
	for {
		var err error
		if st, err = lc.Status(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, errors.New("nobody signed in in time; run warren up again")
			}
			return nil, err
		}
		if st.AuthURL == "" {
			if st.BackendState == localapi.StateNeedsLogin {
				return nil, errors.New("the sign-in did not complete (see the daemon's log); run warren up again")
			}
			fmt.Fprintln(stdout, "Signed in.")
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, errors.New("nobody signed in in time; run warren up again")
		case <-time.After(500 * time.Millisecond): // polling the local daemon
		}
	}
}
