package replay

import (
	"math"
	"math/rand/v2"
	"testing"
)

// rejectAfterMessages is WireGuard's REJECT_AFTER_MESSAGES, 2^64 - 2^13 - 1,
// the limit the receive path passes.
const rejectAfterMessages = math.MaxUint64 - (1 << 13)

const W = WindowSize

func TestWindowSizeConstant(t *testing.T) {
	if W != 8128 {
		t.Fatalf("WindowSize = %d, want 8128", W)
	}
	if rejectAfterMessages != 1<<64-1<<13-1 {
		t.Fatalf("test limit miscomputed: %d", uint64(rejectAfterMessages))
	}
}

type step struct {
	counter uint64
	want    bool
	why     string
}

// TestSequence feeds one Filter a long ordered sequence; each expectation
// depends on everything before it.
func TestSequence(t *testing.T) {
	const L = rejectAfterMessages
	seq := []step{
		{0, true, "first packet 0"},
		{0, false, "duplicate of 0"},
		{1, true, "next in order"},
		{1, false, "duplicate of highest"},
		{2, true, "next in order"},
		{4, true, "skip 3"},
		{3, true, "late 3 accepted once"},
		{3, false, "late 3 again"},
		{10, true, "gap"},
		{7, true, "reordered within window"},
		{7, false, "reordered duplicate"},
		{63, true, "end of block 0"},
		{64, true, "start of block 1"},
		{62, true, "reordered across block boundary"},
		{65, true, "in order"},
		{64, false, "duplicate across block boundary"},

		// highest = W: counter 0 is exactly WindowSize behind, inside the
		// window, so it is refused only because it was seen.
		{W, true, "highest becomes W"},
		{0, false, "0 at distance W, seen"},
		{5, true, "5 at distance W-5, unseen"},
		// highest = W+1: 0 is now W+1 behind, outside; 1 is exactly at the
		// edge (seen); 6 is unseen and inside.
		{W + 1, true, "highest becomes W+1"},
		{0, false, "0 at distance W+1, too old"},
		{1, false, "1 at distance W, seen"},
		{6, true, "6 at distance W-5, unseen"},

		// Window edge with a fresh window far ahead.
		{20000, true, "jump ahead"},
		{20000 - W, true, "exactly WindowSize behind: accepted"},
		{20000 - W - 1, false, "WindowSize+1 behind: too old"},
		{20000 - W, false, "edge counter again: seen"},
		{20000 - W + 1, true, "just inside the edge"},
		{20001, true, "advance by one"},
		{20000 - W, false, "previous edge, now too old"},
		{20001 - W, false, "new edge, seen"},
		{20001 - W + 1, true, "just inside the new edge"},
		{20001, false, "highest again"},

		// Highest at the first bit of a block: the edge counter is in the
		// oldest live block, and one further would alias the top block's
		// slot in the ring, which is why it must be refused.
		{64 * 1000, true, "highest at bit 0 of block 1000"},
		{64*1000 - W, true, "edge, in block 873 (oldest live)"},
		{64*1000 - W - 1, false, "block 872 shares block 1000's slot: too old"},
		{64*1000 - 1, true, "just below highest"},

		// Highest at the last bit of a block.
		{64*1100 + 63, true, "highest at bit 63 of block 1100"},
		{64*1100 + 63 - W, true, "edge, first bit of block 973"},
		{64*1100 + 62 - W, false, "one past the edge"},
		{64*1100 + 62, true, "below highest in top block"},

		// A jump of more than the ring: the slot of the old top block is
		// reused and must have been cleared.
		{64*1100 + 63 + 8192 + 64, true, "jump by more than the ring"},
		{64*1100 + 62 + 8192, true, "aliases 64*1100+62's bit: cleared, accepted"},
		{64*1100 + 63 + 8192, true, "aliases old highest's bit: cleared, accepted"},
		{64*1100 + 62, false, "old counter now far too old"},
		{64*1100 + 63 + 8192 + 64, false, "new highest again"},

		// A jump within the ring keeps what is still in the window.
		{64*1100 + 63 + 8192 + 64 + 6400, true, "jump by 100 blocks"},
		{64*1100 + 63 + 8192 + 64, false, "previous highest still remembered"},
		{64*1100 + 62 + 8192, false, "still remembered"},
		{64*1100 + 61 + 8192, true, "unseen neighbour accepted"},

		// Around the limit.
		{L - 1, true, "limit-1 accepted (jump)"},
		{L, false, "limit refused"},
		{L + 1, false, "above limit refused"},
		{math.MaxUint64, false, "2^64-1 refused"},
		{L - 1, false, "limit-1 again: seen"},
		{L - 2, true, "below highest near the limit"},
		{L - 1 - W, true, "window edge near the limit"},
		{L - 2 - W, false, "past the edge near the limit"},
		{0, false, "0 is far too old"},
		{64*1100 + 61 + 8192 + 1, false, "old window forgotten as too old"},
	}
	var f Filter
	for i, s := range seq {
		if got := f.ValidateCounter(s.counter, L); got != s.want {
			t.Fatalf("step %d (%s): ValidateCounter(%d) = %v, want %v", i, s.why, s.counter, got, s.want)
		}
	}
}

func TestLimit(t *testing.T) {
	cases := []struct {
		counter, limit uint64
		want           bool
	}{
		{0, 0, false},
		{0, 1, true},
		{1, 1, false},
		{99, 100, true},
		{100, 100, false},
		{math.MaxUint64 - 1, math.MaxUint64, true},
		{math.MaxUint64, math.MaxUint64, false},
		{rejectAfterMessages - 1, rejectAfterMessages, true},
		{rejectAfterMessages, rejectAfterMessages, false},
	}
	for _, c := range cases {
		var f Filter
		if got := f.ValidateCounter(c.counter, c.limit); got != c.want {
			t.Errorf("ValidateCounter(%d, %d) = %v, want %v", c.counter, c.limit, got, c.want)
		}
	}

	// A refused counter must not move the window.
	var f Filter
	if !f.ValidateCounter(5, 100) {
		t.Fatal("5 refused")
	}
	if f.ValidateCounter(1e9, 100) {
		t.Fatal("1e9 accepted with limit 100")
	}
	if !f.ValidateCounter(4, 100) {
		t.Fatal("refused counter above limit moved the window")
	}
}

func TestReset(t *testing.T) {
	var f Filter
	for c := uint64(0); c < 300; c++ {
		if !f.ValidateCounter(c, rejectAfterMessages) {
			t.Fatalf("%d refused", c)
		}
	}
	if !f.ValidateCounter(1e6, rejectAfterMessages) {
		t.Fatal("jump refused")
	}
	f.Reset()
	if f != (Filter{}) {
		t.Fatal("Reset did not return to the zero state")
	}
	for _, c := range []uint64{0, 5, 299, 1e6} {
		if !f.ValidateCounter(c, rejectAfterMessages) {
			t.Errorf("after Reset, %d refused", c)
		}
	}
}

// TestShuffledWindow accepts every counter of one full window in random
// order (the whole window fits whichever arrives first), then refuses each a
// second time, and refuses the counter just below the window.
func TestShuffledWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(6479, 1))
	for _, base := range []uint64{0, 1, 63, 64, 1_000_017, rejectAfterMessages - 1 - W} {
		var f Filter
		perm := r.Perm(W + 1)
		for _, p := range perm {
			if c := base + uint64(p); !f.ValidateCounter(c, rejectAfterMessages) {
				t.Fatalf("base %d: first %d refused", base, c)
			}
		}
		for _, p := range r.Perm(W + 1) {
			if c := base + uint64(p); f.ValidateCounter(c, rejectAfterMessages) {
				t.Fatalf("base %d: second %d accepted", base, c)
			}
		}
		if base > 0 && f.ValidateCounter(base-1, rejectAfterMessages) {
			t.Fatalf("base %d: counter below the window accepted", base)
		}
	}
}

// TestJumpOverRing fills every bit of the ring, then jumps by several rings:
// every counter of the new window aliases a set bit and must still be new.
func TestJumpOverRing(t *testing.T) {
	for _, jump := range []uint64{ringBlocks * blockBits, ringBlocks*blockBits + 1, 5*ringBlocks*blockBits + 100} {
		var f Filter
		for c := uint64(0); c < ringBlocks*blockBits; c++ {
			f.ValidateCounter(c, rejectAfterMessages)
		}
		top := ringBlocks*blockBits - 1 + jump
		if !f.ValidateCounter(top, rejectAfterMessages) {
			t.Fatalf("jump %d: %d refused", jump, top)
		}
		for c := top - W; c < top; c++ {
			if !f.ValidateCounter(c, rejectAfterMessages) {
				t.Fatalf("jump %d: %d in the new window refused (stale bit)", jump, c)
			}
		}
		for c := top - W; c <= top; c++ {
			if f.ValidateCounter(c, rejectAfterMessages) {
				t.Fatalf("jump %d: %d accepted twice", jump, c)
			}
		}
	}
}

// reference is a naive model of the window: the set of every counter
// accepted and the highest one.
type reference struct {
	seen    map[uint64]bool
	highest uint64
}

func (r *reference) validate(c, limit uint64) bool {
	if c >= limit || r.seen[c] || (c < r.highest && r.highest-c > W) {
		return false
	}
	r.seen[c] = true
	r.highest = max(r.highest, c)
	return true
}

// TestAgainstReference drives the Filter and the naive model with the same
// random mix of in-order, reordered, duplicate, edge and far counters.
func TestAgainstReference(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		r := rand.New(rand.NewPCG(seed, 42))
		var f Filter
		ref := reference{seen: map[uint64]bool{}}
		limit := uint64(rejectAfterMessages)
		if seed == 4 {
			limit = 3_000_000
		}
		accepted := 0
		for i := 0; i < 200_000; i++ {
			h := ref.highest
			var c uint64
			switch k := r.IntN(100); {
			case k < 40:
				c = h + 1 + uint64(r.IntN(4))
			case k < 75:
				c = h - uint64(r.IntN(W+200))
			case k < 85:
				c = h - W + uint64(r.IntN(3)) - 1 // around the edge
			case k < 95:
				c = h + uint64(r.IntN(3*ringBlocks*blockBits))
			case k < 98:
				c = h // duplicate of the highest
			default:
				c = h + uint64(r.Int64N(1<<40))
			}
			want := ref.validate(c, limit)
			if got := f.ValidateCounter(c, limit); got != want {
				t.Fatalf("seed %d op %d: ValidateCounter(%d) with highest %d = %v, reference %v", seed, i, c, h, got, want)
			}
			if want {
				accepted++
			}
		}
		minAccepted := 50_000
		if seed == 4 {
			minAccepted = 2_000 // the low limit is reached early on purpose
		}
		if accepted < minAccepted {
			t.Errorf("seed %d: only %d accepted; the mix is not exercising acceptance", seed, accepted)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	var f Filter
	c := uint64(0)
	allocs := testing.AllocsPerRun(1000, func() {
		c += 3
		f.ValidateCounter(c, rejectAfterMessages)
		f.ValidateCounter(c-1, rejectAfterMessages)
	})
	if allocs != 0 {
		t.Fatalf("ValidateCounter allocates %v times per run", allocs)
	}
}

func BenchmarkValidateInOrder(b *testing.B) {
	b.ReportAllocs()
	var f Filter
	c := uint64(0)
	for b.Loop() {
		f.ValidateCounter(c, rejectAfterMessages)
		c++
	}
}

func BenchmarkValidateReordered(b *testing.B) {
	b.ReportAllocs()
	var f Filter
	c := uint64(0)
	for b.Loop() {
		// Pairs swapped (1,0,3,2,...) plus one packet 100 early, which is
		// a duplicate by the time the pair reaches it.
		f.ValidateCounter(c+1, rejectAfterMessages)
		f.ValidateCounter(c, rejectAfterMessages)
		f.ValidateCounter(c+100, rejectAfterMessages)
		c += 2
	}
}

func BenchmarkValidateReplayed(b *testing.B) {
	b.ReportAllocs()
	var f Filter
	for c := uint64(0); c <= W; c++ {
		f.ValidateCounter(c, rejectAfterMessages)
	}
	c := uint64(0)
	for b.Loop() {
		f.ValidateCounter(c%W+1, rejectAfterMessages)
		c++
	}
}
