// Command hello is a web page that exists only on a Warren mesh: it joins
// the mesh as its own node (package node; no root, no TUN device), serves
// HTTP on its tunnel addresses, and greets each caller by the name of the
// node it came from, which WhoIs tells from the connection's address.
//
//	WARREN_AUTH_KEY=wkey_... go run ./examples/hello -server https://mesh.example.com -dir ./hello-state
//	curl http://hello/          # from any node of the mesh: Hello, laptop (alice)!
//
// The auth key is read from the environment, not a flag, so that it does
// not show in the process list. It is needed only on the first run: the
// node's key and registration stay in -dir.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/node"
)

func main() {
	server := flag.String("server", "", "coordination server URL (needed on the first run)")
	dir := flag.String("dir", "hello-state", "state directory (node key, registration)")
	hostname := flag.String("hostname", "hello", "the node's name on the mesh")
	listen := flag.String("listen", ":80", "address on the mesh to serve on")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, *server, *dir, *hostname, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, server, dir, hostname, listen string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.New(node.Options{Dir: dir, ServerURL: server, AuthKey: os.Getenv("WARREN_AUTH_KEY"),
		Hostname: hostname, Logger: log.With("component", "node")})
	if err != nil {
		return err
	}
	defer n.Close()
	upCtx, cancel := context.WithTimeout(ctx, time.Minute)
	st, err := n.Up(upCtx)
	cancel()
	if err != nil {
		return err
	}
	ln, err := n.Listen("tcp", listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !ourHost(r.Host, st) {
				// A name that is not ours: a web page in a browser on the
				// mesh trying its luck by DNS rebinding.
				http.Error(w, "unknown host", http.StatusMisdirectedRequest)
				return
			}
			who, err := n.WhoIs(r.Context(), r.RemoteAddr)
			if err != nil { // cannot happen on the mesh: every caller is a node
				http.Error(w, "who are you?", http.StatusForbidden)
				return
			}
			owner := who.User
			if owner == "" {
				owner = fmt.Sprint(who.Tags)
			}
			fmt.Fprintf(w, "Hello, %s (%s)!\n", who.Name, owner)
		}),
	}
	log.Info("serving on the mesh", "name", st.Self.DNSName, "addresses", fmt.Sprint(st.Self.Addresses), "listen", listen)
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ourHost reports whether a request's Host names this node: its MagicDNS
// name (bare or full) or one of its tunnel addresses, with any port.
func ourHost(host string, st *node.Status) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == st.Self.Name || host == st.Self.DNSName {
		return true
	}
	for _, a := range st.Self.Addresses {
		if host == a.String() {
			return true
		}
	}
	return false
}
