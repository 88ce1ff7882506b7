package magicsock

import (
	"crypto/rand"
	"net/netip"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// This file gives the external tests the means of a hostile member: disco
// messages sealed with a disco key the test holds, as a rogue node (or one
// that captured a peer's packets) would send them.

// SealPingForTest seals a fresh ping from the disco key from, for the node
// with disco key to, naming nodeKey as the sender, at the sender's ping
// clock (see PingClockForTest).
func SealPingForTest(from noise.PrivateKey, to, nodeKey noise.PublicKey, clock uint64) []byte {
	var tx txID
	rand.Read(tx[:])
	return seal(discoOf(from), sharedKey(from, pubkey.Disco{PublicKey: to}), &discoMsg{typ: msgPing, tx: tx, nodeKey: pubkey.Node{PublicKey: nodeKey}, clock: clock})
}

// PingClockForTest is c's ping clock now: what a ping c sent now carries.
func (c *Conn) PingClockForTest() uint64 { return c.pingClock(c.clock.Now()) }

// SealCallMeMaybeForTest seals a call-me-maybe listing addrs.
func SealCallMeMaybeForTest(from noise.PrivateKey, to noise.PublicKey, addrs []netip.AddrPort) []byte {
	return seal(discoOf(from), sharedKey(from, pubkey.Disco{PublicKey: to}), &discoMsg{typ: msgCallMeMaybe, addrs: addrs})
}

// OpenDiscoForTest opens a disco packet sealed for the disco key priv by
// the disco key from; typ is 1 (ping), 2 (pong) or 3 (call me maybe), tx
// the transaction ID of pings and pongs.
func OpenDiscoForTest(priv noise.PrivateKey, from noise.PublicKey, b []byte) (typ byte, tx [12]byte, ok bool) {
	m, err := open(b, sharedKey(priv, pubkey.Disco{PublicKey: from}))
	if err != nil {
		return 0, tx, false
	}
	return m.typ, m.tx, true
}

// TxOfPingForTest is the transaction ID of a ping sealed for priv by from.
func TxOfPingForTest(priv noise.PrivateKey, from noise.PublicKey, b []byte) [12]byte {
	_, tx, _ := OpenDiscoForTest(priv, from, b)
	return tx
}

// nodeOf and discoOf are the typed public keys of a private key, for the
// package's own tests.
func nodeOf(k noise.PrivateKey) pubkey.Node   { return pubkey.Node{PublicKey: k.PublicKey()} }
func discoOf(k noise.PrivateKey) pubkey.Disco { return pubkey.Disco{PublicKey: k.PublicKey()} }
