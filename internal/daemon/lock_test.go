package daemon

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/controltest"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
)

// silentServer accepts connections and never answers, like a server that
// hangs: a request to it lasts until its timeout (10-30 s).
type silentServer struct {
	ln       net.Listener
	accepted chan struct{} // closed at the first connection
	mu       sync.Mutex
	conns    []net.Conn
}

func newSilentServer(t *testing.T) *silentServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentServer{ln: ln, accepted: make(chan struct{})}
	go func() {
		var once sync.Once
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			once.Do(func() { close(s.accepted) })
		}
	}()
	t.Cleanup(s.close)
	return s
}

// close ends the hang: the requests waiting on it fail at once.
func (s *silentServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
}

// While a logout or a key rotation waits for a server that does not
// answer, the daemon keeps answering status (and the route commands):
// no daemon lock is held across the request.
func TestNoLockAcrossServerRequests(t *testing.T) {
	for _, op := range []struct {
		name string
		do   func(d *Daemon) error
	}{
		{"logout", func(d *Daemon) error { return d.Logout(context.Background()) }},
		{"rotate", func(d *Daemon) error {
			_, err := d.Up(context.Background(), localapi.UpRequest{ForceReauth: true})
			return err
		}},
	} {
		t.Run(op.name, func(t *testing.T) {
			cs := startServer(t)
			td := startDaemon(t, cs)
			td.up("node")
			silent := newSilentServer(t)
			td.d.mu.Lock()
			td.d.prefs.ServerURL = "http://" + silent.ln.Addr().String() // the server now hangs
			td.d.mu.Unlock()

			opDone := make(chan error, 1)
			go func() { opDone <- op.do(td.d) }()
			select {
			case <-silent.accepted:
			case err := <-opDone:
				t.Fatalf("%s returned before asking the server: %v", op.name, err)
			}
			statusDone := make(chan *localapi.Status, 1)
			go func() { statusDone <- td.d.Status() }()
			select {
			case st := <-statusDone:
				t.Logf("status during %s: %s", op.name, st.BackendState)
			case err := <-opDone:
				t.Fatalf("status waited for the %s to end (%v): a lock was held across the request", op.name, err)
			}
			routesDone := make(chan struct{})
			go func() { td.d.RouteStatus(); close(routesDone) }()
			select {
			case <-routesDone:
			case err := <-opDone:
				t.Fatalf("route status waited for the %s to end (%v)", op.name, err)
			}
			// Another lifecycle change waits for this one, but only as
			// long as its caller does.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := td.d.Down(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("down during the %s with its context cancelled: %v, want context.Canceled", op.name, err)
			}
			select {
			case err := <-opDone:
				t.Fatalf("the %s ended while the server still hung: %v", op.name, err)
			default:
			}
			keyBefore := td.key()
			silent.close()
			err := <-opDone
			st := td.d.Status()
			switch op.name {
			case "logout": // forgotten locally all the same, and said so
				if err != nil || st.BackendState != localapi.StateNeedsLogin ||
					!slices.ContainsFunc(st.Health, func(h string) bool { return strings.Contains(h, "could not be told") }) {
					t.Errorf("logout with the server gone: err %v, state %q, health %q", err, st.BackendState, st.Health)
				}
			case "rotate": // refused: the old key stays
				if err == nil || td.key() != keyBefore || td.eng.privateKey().PublicKey() != keyBefore {
					t.Errorf("rotation with the server gone: err %v; key changed %v", err, td.key() != keyBefore)
				}
			}
		})
	}
}

// stuckRelay is a relay session whose Close blocks until release is
// closed, like a TLS session whose close_notify cannot be written.
type stuckRelay struct {
	closing, release chan struct{}
	once             sync.Once
}

func (r *stuckRelay) Send(pubkey.Node, []byte) error { return nil }

func (r *stuckRelay) Close() error {
	r.once.Do(func() { close(r.closing) })
	<-r.release
	return nil
}

// Ending the relay session (down, a new home relay, key rotation, exit)
// waits for its connection's teardown, which is network I/O; the daemon
// keeps answering status and down returns meanwhile. Before #17 it held
// Daemon.mu across that wait (this test failed at the status check).
func TestNoLockAcrossRelayClose(t *testing.T) {
	rk, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cs := controltest.Start(t, server.Options{Relays: []netmap.RelayRegion{{ID: 1, Code: "test", URL: "http://127.0.0.1:1", Key: pubkey.Relay{PublicKey: rk.PublicKey()}}}})
	r := &stuckRelay{closing: make(chan struct{}), release: make(chan struct{})}
	var sessions atomic.Int32
	td := startDaemonWith(t, cs, t.TempDir(), nil, func(d *Daemon) {
		d.newRelay = func(netmap.RelayRegion, relay.ClientOptions) relaySession { sessions.Add(1); return r }
	})
	t.Cleanup(func() { close(r.release) }) // before the daemon stops (cleanups run last first)
	td.up("node")
	waitFor(t, "a relay session", func() bool { return sessions.Load() == 1 })

	downDone := make(chan error, 1)
	go func() { downDone <- td.d.Down(context.Background()) }()
	select {
	case <-r.closing:
	case <-time.After(waitLong):
		t.Fatal("down did not end the relay session")
	}
	statusDone := make(chan *localapi.Status, 1)
	go func() { statusDone <- td.d.Status() }()
	select {
	case st := <-statusDone:
		t.Logf("status while the relay session closes: %s", st.BackendState)
	case <-time.After(waitLong):
		t.Fatal("status waited for the relay session to close: Daemon.mu was held across it")
	}
	select {
	case err := <-downDone:
		if err != nil {
			t.Fatalf("down: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("down waited for the relay session to close")
	}
}
