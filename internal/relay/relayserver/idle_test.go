package relayserver

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestThousandIdleClients: 1000 vouched nodes hold idle sessions; the
// relay (and, in this process, the clients too) stays within a small,
// fixed amount of memory and goroutines per session, and still relays.
func TestThousandIdleClients(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 1000
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: func(pubkey.Node) bool { return true }})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()

	keys := make([]noise.PrivateKey, n)
	conns := make([]*relay.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		keys[i] = genKey(t)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := relay.Dial(ctxT(t, 30*time.Second), r.url, pubkey.Relay{PublicKey: r.key.PublicKey()}, keys[i], relay.DialOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	wait.Until(t, "1000 clients", func() bool { return r.srv.Stats().Clients == n })

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perSession := (int64(after.HeapInuse) - int64(before.HeapInuse)) / n
	goroutines := (runtime.NumGoroutine() - g0) / n
	t.Logf("%d idle sessions: %d bytes of heap and %d goroutines per session (relay and client sides together)", n, perSession, goroutines)
	// Both sides of an idle session together: no per-session queue
	// buffers or frame buffers beyond the Noise state and one read buffer.
	if perSession > 80<<10 {
		t.Errorf("%d bytes of heap per idle session (want at most 80 KiB for both sides)", perSession)
	}
	if goroutines > 4 {
		t.Errorf("%d goroutines per idle session", goroutines)
	}

	// Still relaying between two of them.
	if err := conns[0].Send(nodeOf(keys[n-1]), []byte("still there")); err != nil {
		t.Fatal(err)
	}
	m, err := recvPacket(t, conns[n-1], 5*time.Second)
	if err != nil || string(m.Data) != "still there" {
		t.Fatalf("relay after 1000 sessions: %+v %v", m, err)
	}
}
