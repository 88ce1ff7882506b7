// Package replay owns the anti-replay window that a WireGuard receiver keeps
// per keypair: it decides whether a transport message's 64-bit counter is new
// (never seen, not too old, below the rejection limit) and records it. The
// window is the ring-of-blocks bitmap described in RFC 6479: 128 blocks of
// 64 bits, one of which is slack so that sliding the window forward only ever
// clears whole blocks and never shifts bits, which keeps validation O(1) in
// the common case and free of allocation.
package replay

const (
	blockBits  = 64
	blockShift = 6 // log2(blockBits)
	ringBlocks = 128
	blockMask  = ringBlocks - 1
	bitMask    = blockBits - 1

	// WindowSize is how far behind the highest accepted counter a counter
	// may be and still be accepted: a counter c is inside the window when
	// highest-WindowSize <= c <= highest, so the window holds WindowSize+1
	// counters including the highest itself. It is the ring's 8192 bits
	// less one block of slack.
	WindowSize = (ringBlocks - 1) * blockBits // 8128
)

// Filter is a sliding anti-replay window. The zero value is ready to use and
// is equivalent to a Filter just Reset: no counter has been seen.
//
// Filter is not safe for concurrent use: the caller serializes calls (the
// receive path holds its keypair's lock around ValidateCounter).
type Filter struct {
	// last is the highest counter accepted so far (0 before any).
	last uint64
	// ring holds one bit per counter; counter c lives at bit c%64 of block
	// (c/64)%128. Blocks from last/64-127 to last/64 are live; the bits of
	// the live block above last are always zero.
	ring [ringBlocks]uint64
}

// Reset forgets every counter seen, returning f to its zero state.
func (f *Filter) Reset() {
	*f = Filter{}
}

// ValidateCounter reports whether counter may be accepted, and if so records
// it so that the same counter is refused next time. It refuses a counter
// that is >= limit (the caller passes REJECT_AFTER_MESSAGES), one that was
// already accepted, and one more than WindowSize below the highest counter
// accepted so far. A counter above the highest slides the window forward,
// forgetting the counters that fall out of it.
//
// Callers must only call ValidateCounter for messages that authenticated:
// an accepted counter moves the window.
func (f *Filter) ValidateCounter(counter, limit uint64) bool {
	if counter >= limit {
		return false
	}
	index := counter >> blockShift
	if counter > f.last {
		// Slide forward: clear every block between the current top block
		// (exclusive) and the new one (inclusive). A jump of a whole ring
		// or more clears it all.
		current := f.last >> blockShift
		diff := index - current
		if diff > ringBlocks {
			diff = ringBlocks
		}
		for i := uint64(1); i <= diff; i++ {
			f.ring[(current+i)&blockMask] = 0
		}
		f.last = counter
	} else if f.last-counter > WindowSize {
		return false
	}
	block := &f.ring[index&blockMask]
	bit := uint64(1) << (counter & bitMask)
	if *block&bit != 0 {
		return false
	}
	*block |= bit
	return true
}
