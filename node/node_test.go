package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/controltest"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

const waitLong = 30 * time.Second

// startNode creates and brings up an embedded node joined with key.
func startNode(t *testing.T, dir, url, key, hostname string) *Node {
	t.Helper()
	log, rec := logtest.New()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", hostname, rec.Text())
		}
	})
	n, err := New(Options{Dir: dir, ServerURL: url, AuthKey: key, Hostname: hostname, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	st, err := n.Up(ctx)
	if err != nil {
		t.Fatalf("%s: %v", hostname, err)
	}
	if st.Self == nil || st.Self.Name != hostname {
		t.Fatalf("%s: self %+v", hostname, st.Self)
	}
	return n
}

// serveWhoIs answers each connection on ln with "NAME USER" of the
// calling node, as WhoIs tells it, until ln closes.
func serveWhoIs(n *Node, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			who, err := n.WhoIs(context.Background(), c.RemoteAddr().String())
			if err != nil {
				fmt.Fprintf(c, "error %v\n", err)
				return
			}
			fmt.Fprintf(c, "%s %s\n", who.Name, who.User)
		}()
	}
}

// askWhoIs dials addr from n and returns the line the server sends.
func askWhoIs(ctx context.Context, n *Node, network, addr string) (string, error) {
	c, err := n.Dial(ctx, network, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func mustAsk(t *testing.T, n *Node, network, addr, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	got, err := askWhoIs(ctx, n, network, addr)
	if err != nil || got != want {
		t.Fatalf("%s %s: %q, %v; want %q", network, addr, got, err, want)
	}
}

// TestTwoNodesInOneProcess runs two embedded nodes of two users in this
// process against an in-process control server: each listens and the
// other dials it by MagicDNS name (bare and full, IPv4 and IPv6, TCP,
// UDP and HTTP), WhoIs names the calling node and its user, the policy
// decides who may connect, bad input gets a one-line error, a node comes
// back from its state directory without an auth key, and once the nodes
// are closed no goroutine of theirs is left.
func TestTwoNodesInOneProcess(t *testing.T) {
	cs := controltest.Start(t, server.Options{})
	ctx := context.Background()
	bob, err := cs.Store.CreateUser(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	bobKey, _, err := cs.Store.CreatePreAuthKey(ctx, bob.ID, store.PreAuthKeyOptions{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	dir := t.TempDir()

	// Before Up: nothing to listen or dial on.
	idle, err := New(Options{Dir: filepath.Join(dir, "idle")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idle.Listen("tcp", ":80"); !errors.Is(err, ErrNotUp) {
		t.Errorf("Listen before Up: %v, want ErrNotUp", err)
	}
	if _, err := idle.Dial(ctx, "tcp", "alpha:80"); !errors.Is(err, ErrNotUp) {
		t.Errorf("Dial before Up: %v, want ErrNotUp", err)
	}
	idle.Close()
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "Options.Dir") {
		t.Errorf("New without Dir: %v", err)
	}

	alphaDir := filepath.Join(dir, "alpha")
	alpha := startNode(t, alphaDir, cs.URL(), cs.ReusableKey, "alpha")
	beta := startNode(t, filepath.Join(dir, "beta"), cs.URL(), bobKey, "beta")
	wait.For(t, waitLong, "each node in the other's map", func() bool {
		sa, _ := alpha.Status(ctx)
		sb, _ := beta.Status(ctx)
		return len(sa.Peers) == 1 && len(sb.Peers) == 1
	})
	st, _ := alpha.Status(ctx)
	domain := strings.TrimPrefix(st.Self.DNSName, "alpha.")
	if st.Self.User != "alice" || st.Peers[0].Name != "beta" || st.Peers[0].User != "bob" || domain == "" {
		t.Fatalf("alpha's status: self %+v, peers %+v", st.Self, st.Peers)
	}

	la, err := alpha.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	go serveWhoIs(alpha, la)
	lb, err := beta.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	go serveWhoIs(beta, lb)

	// Both ways, by bare and full name, over IPv4 and IPv6.
	mustAsk(t, beta, "tcp", "alpha:8080", "beta bob")
	mustAsk(t, alpha, "tcp", "beta."+domain+":8080", "alpha alice")
	mustAsk(t, beta, "tcp6", "alpha:8080", "beta bob")
	mustAsk(t, alpha, "tcp4", "beta:8080", "alpha alice")
	// A node reaches itself, and knows itself.
	mustAsk(t, alpha, "tcp", "alpha:8080", "alpha alice")

	// UDP: a datagram from beta, WhoIs of its source, the reply.
	pc, err := alpha.ListenPacket("udp", ":5353")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			who, err := alpha.WhoIs(ctx, from.String())
			reply := "unknown"
			if err == nil {
				reply = who.Name + " " + string(buf[:n])
			}
			pc.WriteTo([]byte(reply), from)
		}
	}()
	uc, err := beta.Dial(ctx, "udp", "alpha:5353")
	if err != nil {
		t.Fatal(err)
	}
	var reply string
	wait.For(t, waitLong, "a UDP reply from alpha", func() bool {
		uc.Write([]byte("hello"))
		uc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		buf := make([]byte, 100)
		n, err := uc.Read(buf)
		reply = string(buf[:n])
		return err == nil
	})
	uc.Close()
	if reply != "beta hello" {
		t.Errorf("UDP reply %q, want %q", reply, "beta hello")
	}

	// HTTP on the mesh: the client resolves names through MagicDNS.
	lh, err := alpha.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := alpha.WhoIs(r.Context(), r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		fmt.Fprintf(w, "hello %s of %s", who.Name, who.User)
	})}
	go hs.Serve(lh)
	resp, err := beta.HTTPClient().Get("http://alpha/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello beta of bob" {
		t.Errorf("HTTP: %q", body)
	}

	// Bad input: each a one-line error naming the problem.
	short, cancel := context.WithTimeout(ctx, waitLong)
	defer cancel()
	if _, err := beta.Dial(short, "tcp", "nosuchnode:80"); !errors.Is(err, ErrNoSuchName) {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := beta.Dial(short, "tcp", "alpha:9"); err == nil || !strings.Contains(err.Error(), "refused") || short.Err() != nil {
		t.Errorf("refused port: %v", err)
	}
	if _, err := beta.Dial(short, "tcp", "192.0.2.1:80"); err == nil || !strings.Contains(err.Error(), "not on the mesh") {
		t.Errorf("address off the mesh: %v", err)
	}
	for _, tc := range []struct{ network, addr, want string }{
		{"tcp", "80", "missing port"},
		{"tcp", ":http", `port "http"`},
		{"tcp", "192.0.2.1:80", "not one of the node's tunnel addresses"},
		{"tcp", "alpha:80", `host "alpha"`},
		{"udp", ":80", "ListenPacket for udp"},
		{"unix", ":80", `network "unix"`},
		{"tcp", ":8080", "in use"}, // alpha's own listener has it
	} {
		if _, err := alpha.Listen(tc.network, tc.addr); err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Listen(%q, %q): %v, want %q", tc.network, tc.addr, err, tc.want)
		}
	}
	if _, err := alpha.ListenPacket("tcp", ":53"); err == nil || !strings.Contains(err.Error(), "Listen for tcp") {
		t.Errorf("ListenPacket tcp: %v", err)
	}
	if _, err := alpha.WhoIs(ctx, "192.0.2.1:80"); !errors.Is(err, ErrUnknownAddr) {
		t.Errorf("WhoIs of an address off the mesh: %v", err)
	}
	if _, err := alpha.WhoIs(ctx, "junk"); err == nil || !strings.Contains(err.Error(), "want IP:PORT") {
		t.Errorf("WhoIs junk: %v", err)
	}

	// The policy applies: bob's nodes may reach alice's on 8080, not the
	// other way round.
	cs.SetPolicy(`{"acls": [{"action": "accept", "src": ["bob@"], "dst": ["alice@:8080"]}]}`)
	wait.For(t, waitLong, "alpha refused by beta's policy", func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := askWhoIs(c, alpha, "tcp", "beta:8080")
		return err != nil
	})
	mustAsk(t, beta, "tcp", "alpha:8080", "beta bob")
	cs.SetPolicy(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`)

	// alpha comes back from its state directory: same name and
	// addresses, no auth key needed, reachable again.
	addrs := alpha.Addrs()
	if err := alpha.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := la.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	alpha = startNode(t, alphaDir, "", "", "alpha")
	if got := alpha.Addrs(); fmt.Sprint(got) != fmt.Sprint(addrs) {
		t.Errorf("rejoined with %v, had %v", got, addrs)
	}
	la, err = alpha.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	go serveWhoIs(alpha, la)
	mustAsk(t, beta, "tcp", "alpha:8080", "beta bob")
	mustAsk(t, alpha, "tcp", "beta:8080", "alpha alice")

	// Closed, they leave nothing running.
	hs.Close()
	alpha.Close()
	beta.Close()
	if !wait.Poll(10*time.Second, func() bool { return runtime.NumGoroutine() <= before }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
	}
}

// TestEphemeralNode: an ephemeral node without a state directory of its
// own serves the local API when asked to; Close deletes it from the
// server and removes its temporary state and the socket.
func TestEphemeralNode(t *testing.T) {
	cs := controltest.Start(t, server.Options{})
	ctx := context.Background()
	sock := filepath.Join(t.TempDir(), "api.sock")
	n, err := New(Options{ServerURL: cs.URL(), AuthKey: cs.ReusableKey, Hostname: "eph", Ephemeral: true, LocalAPISocket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	upCtx, cancel := context.WithTimeout(ctx, waitLong)
	defer cancel()
	st, err := n.Up(upCtx)
	if err != nil {
		t.Fatal(err)
	}
	ast, err := localapi.NewClient(sock).Status(ctx)
	if err != nil || ast.Self == nil || ast.Self.Name != "eph" {
		t.Fatalf("local API status: %+v %v", ast, err)
	}
	k, err := noise.ParsePublicKey(st.Self.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Store.GetNodeByKey(ctx, pubkey.Node{PublicKey: k}); err != nil {
		t.Fatalf("the node on the server: %v", err)
	}
	dir := n.dir
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Store.GetNodeByKey(ctx, pubkey.Node{PublicKey: k}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after Close, the server still has the node: %v", err)
	}
	for _, p := range []string{dir, sock} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}
