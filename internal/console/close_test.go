package console

import (
	"sync"
	"testing"
)

// TestCloseTwiceAtOnce: the server registers Close to run on its HTTP
// server's Shutdown (in a goroutine of net/http) and also defers it, so
// two calls can overlap. Close checked and closed its channel in two
// steps, and both calls could close it: "close of closed channel" took
// the server down at shutdown (seen once in a CI run of
// internal/cli). Many overlapping pairs; each must return.
func TestCloseTwiceAtOnce(t *testing.T) {
	for range 2000 {
		c := &Console{done: make(chan struct{})}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c.Close()
			}()
		}
		close(start)
		wg.Wait()
		select {
		case <-c.done:
		default:
			t.Fatal("Close left the console open")
		}
	}
}
