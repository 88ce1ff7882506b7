package daemon

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
)

func TestProcsGovernor(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	g := &procsGovernor{enabled: true, low: 1, high: 2}
	runtime.GOMAXPROCS(g.low)
	end1 := g.begin()
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Fatalf("one transfer: %d Ps, want 2", n)
	}
	end2 := g.begin()
	end1()
	end1() // a second call does nothing
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Fatalf("one transfer left: %d Ps, want 2", n)
	}
	end2()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("no transfer: %d Ps, want 1", n)
	}

	// Uploads to the peer API count; other requests do not.
	var during int
	h := g.uploads(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { during = runtime.GOMAXPROCS(0) }))
	for _, tc := range []struct {
		method string
		want   int
	}{{http.MethodPut, 2}, {http.MethodGet, 1}} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, "/v2/f", nil))
		if during != tc.want {
			t.Errorf("%s: %d Ps while served, want %d", tc.method, during, tc.want)
		}
		if n := runtime.GOMAXPROCS(0); n != 1 {
			t.Errorf("after %s: %d Ps, want 1", tc.method, n)
		}
	}

	// Disabled (GOMAXPROCS set, many CPUs, or the pipeline datapath), or
	// absent: nothing changes.
	for _, g := range []*procsGovernor{{high: 2}, nil} {
		g.begin()()
		if n := runtime.GOMAXPROCS(0); n != 1 {
			t.Errorf("disabled governor changed Ps to %d", n)
		}
	}
}
