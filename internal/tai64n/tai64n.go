// Package tai64n owns the TAI64N timestamps that a WireGuard initiator puts in
// its handshake initiation and that a responder compares against the last one
// it accepted from the same peer, to refuse replayed initiations. A timestamp
// is 12 bytes: an 8-byte big-endian TAI64 label (2^62 + 10 + Unix seconds,
// the conventional fixed TAI-UTC offset of 10 s) followed by a 4-byte
// big-endian nanosecond count. The nanoseconds are rounded down to a coarse
// granularity (2^24 ns, about 16.7 ms) so that the timestamp, which travels
// encrypted but is seen by the peer, reveals less about the sender's clock.
package tai64n

import (
	"bytes"
	"encoding/binary"
	"time"
)

// Size is the encoded length of a Timestamp in bytes.
const Size = 12

const (
	// base is the TAI64 label of the Unix epoch: 2^62 plus the 10 s offset
	// between TAI and UTC at 1970 that TAI64N conventionally uses.
	base = uint64(1)<<62 + 10

	// whiteningBits is log2 of the whitening granularity in nanoseconds.
	whiteningBits = 24

	// Whitening is the granularity to which nanoseconds are rounded down.
	Whitening = time.Duration(1) << whiteningBits
)

// Timestamp is an encoded TAI64N timestamp. Timestamps order correctly as
// byte strings; the zero Timestamp is older than any that FromTime makes for
// a real date.
type Timestamp [Size]byte

// FromTime encodes t as a whitened TAI64N timestamp: its nanoseconds are
// rounded down to a multiple of Whitening. Leap seconds are ignored, as in
// every WireGuard implementation: the label is simply 2^62 + 10 + t.Unix().
func FromTime(t time.Time) Timestamp {
	var ts Timestamp
	secs := base + uint64(t.Unix()) // two's complement wraps pre-1970 times correctly
	nanos := uint32(t.Nanosecond()) &^ (uint32(Whitening) - 1)
	binary.BigEndian.PutUint64(ts[0:8], secs)
	binary.BigEndian.PutUint32(ts[8:12], nanos)
	return ts
}

// Now returns the whitened timestamp of the current wall-clock time. Two
// calls within the same whitening interval return equal timestamps, and a
// wall clock stepped backwards yields a smaller one; a responder that
// requires strictly increasing timestamps will then refuse initiations until
// the clock passes the last accepted value again. WireGuard accepts that:
// initiations are at least REKEY_TIMEOUT (5 s) apart.
func Now() Timestamp {
	return FromTime(time.Now())
}

// After reports whether t is strictly later than o.
func (t Timestamp) After(o Timestamp) bool {
	return bytes.Compare(t[:], o[:]) > 0
}

// Time decodes t back to a time.Time (in UTC), for logging and tests. It is
// the inverse of FromTime up to the whitening of the nanoseconds.
func (t Timestamp) Time() time.Time {
	secs := int64(binary.BigEndian.Uint64(t[0:8]) - base)
	nanos := int64(binary.BigEndian.Uint32(t[8:12]))
	return time.Unix(secs, nanos).UTC()
}
