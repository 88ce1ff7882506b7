package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

// nodeKey is simulated node i's private key, derived from the run's seed so
// that the server child can register the same keys the parent dials with.
func nodeKey(seed uint64, i int) noise.PrivateKey {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seed)
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	return noise.NewPrivateKey(sha256.Sum256(b[:]))
}

// serveOpts are the flags of the hidden -serve mode.
type serveOpts struct {
	nodes      int
	seed       uint64
	db         string // "" for SQLite in dir
	dir        string
	cpuProfile string
	quiet      bool
	// replica, if set, serves as that replica (server.Options.Replica) of
	// several on one PostgreSQL database; only the first registers the
	// nodes (register), the others serve what it registered.
	replica  string
	register bool
}

// serverKey is the run's server key, derived from its seed: replicas
// share it (the database records one, store.ClaimServerKey).
func serverKey(seed uint64) noise.PrivateKey {
	var b [24]byte
	copy(b[:], "controlbench-server")
	binary.BigEndian.PutUint64(b[16:], seed)
	return noise.NewPrivateKey(sha256.Sum256(b[:]))
}

// serve is the server child: it opens the store, registers the simulated
// nodes' keys directly in it (setup, not measured; the first replica only,
// the others print "-" for the auth key), starts server.New on 127.0.0.1
// and prints "ready URL SERVERKEY AUTHKEY". It then reads
// commands on stdin: "delete ID" (an admin deleting a node: store write
// plus Notify), "profile PATH" and "stopprofile" (a CPU profile of the
// server), "heapprofile PATH" (its live heap after a GC), each answered "ok" or "error ...", and "endpointstats",
// answered "endpointstats RECEIVED WRITTEN MERGED" (the server's endpoint
// report counters), and "storestats", answered "storestats PASSES NS" (how
// often the server read the store behind map changes, and for how long in
// all: server.Stats.StoreRead); it exits when stdin closes.
func serve(o serveOpts) error {
	ctx := context.Background()
	dsn := o.db
	if dsn == "" || dsn == "sqlite" {
		dsn = "sqlite:" + filepath.Join(o.dir, "warren.db")
	}
	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	authKey := "-"
	if o.register {
		u, err := st.CreateUser(ctx, fmt.Sprintf("bench-%d", o.seed%100000))
		if err != nil {
			return err
		}
		if authKey, _, err = st.CreatePreAuthKey(ctx, u.ID, store.PreAuthKeyOptions{Reusable: true}); err != nil {
			return err
		}
		if err := registerAll(ctx, st, authKey, o); err != nil {
			return err
		}
	}
	key := serverKey(o.seed)
	if o.replica != "" {
		if err := st.ClaimServerKey(ctx, key.PublicKey().String()); err != nil {
			return err
		}
	}
	logger := slog.Default()
	if o.quiet {
		logger = slog.New(slog.DiscardHandler)
	}
	srv := server.New(st, key, server.Options{Logger: logger, Replica: o.replica})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ErrorLog: log.New(io.Discard, "", 0)}
	go hs.Serve(ln)
	fmt.Printf("ready http://%s %s %s\n", ln.Addr(), key.PublicKey(), authKey)

	var prof *os.File
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "delete":
			id, _ := strconv.ParseInt(f[1], 10, 64)
			if err := st.DeleteNode(ctx, id); err != nil {
				fmt.Printf("error %v\n", err)
				continue
			}
			srv.Notify()
			fmt.Println("ok")
		case len(f) == 2 && f[0] == "profile" && prof == nil:
			if prof, err = os.Create(f[1]); err == nil {
				err = pprof.StartCPUProfile(prof)
			}
			if err != nil {
				fmt.Printf("error %v\n", err)
				continue
			}
			fmt.Println("ok")
		case len(f) == 2 && f[0] == "heapprofile":
			runtime.GC()
			hf, err := os.Create(f[1])
			if err == nil {
				err = pprof.WriteHeapProfile(hf)
				hf.Close()
			}
			if err != nil {
				fmt.Printf("error %v\n", err)
				continue
			}
			fmt.Println("ok")
		case len(f) == 1 && f[0] == "storestats":
			var n uint64
			sr := srv.Stats().StoreRead
			for _, c := range sr.Counts {
				n += c
			}
			fmt.Printf("storestats %d %d\n", n, sr.Sum.Nanoseconds())
		case len(f) == 1 && f[0] == "endpointstats":
			st := srv.Stats()
			fmt.Printf("endpointstats %d %d %d\n", st.EndpointUpdates, st.EndpointWrites, st.EndpointsCoalesced)
		case len(f) == 1 && f[0] == "stopprofile" && prof != nil:
			pprof.StopCPUProfile()
			prof.Close()
			prof = nil
			fmt.Println("ok")
		default:
			fmt.Printf("error unknown command %q\n", sc.Text())
		}
	}
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	hs.Close()
	return srv.Close()
}

// registerAll registers the simulated nodes through store.RegisterNode (what
// a RegisterRequest does, minus the handshake), one at a time on SQLite
// (writes are serialized anyway; concurrent ones hit the busy timeout once
// each registration scans thousands of nodes), a few at a time on Postgres.
func registerAll(ctx context.Context, st *store.Store, authKey string, o serveOpts) error {
	workers := 1
	if strings.HasPrefix(o.db, "postgres") {
		workers = 4
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				pub := pubkey.Node{PublicKey: nodeKey(o.seed, i).PublicKey()}
				ep := []string{netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 41641).String()}
				if _, err := st.RegisterNode(ctx, authKey, pub, fmt.Sprintf("node-%d", i), store.RegisterOptions{Endpoints: ep}); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	for i := 0; i < o.nodes; i++ {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			return err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}
