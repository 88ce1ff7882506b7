package tun

import (
	"encoding/binary"
	"math/bits"
)

// The Internet checksum (RFC 1071) over byte slices, as needed to split and
// coalesce TCP and UDP packets.
//
// A one's complement sum does not depend on the byte order it is computed
// in, up to a final swap of its two bytes, so the bytes are summed as
// little-endian 64-bit words (plain loads on the usual hosts) with carries
// folded back in, and the folded 16-bit result is swapped into the
// big-endian (network) value the headers hold.

// checksumAdd returns the folded one's complement sum of b, read as
// big-endian 16-bit words (an odd last byte padded with zero), added to
// initial. It is not complemented. To continue a sum over a following slice,
// the slice summed first must be of even length.
func checksumAdd(b []byte, initial uint16) uint16 {
	var acc, carry uint64
	// Sixteen words per turn: the carry flag does not survive the loop's
	// own compare and branch, so each turn saves and restores it, a cost
	// that a longer turn spreads thinner (about 1.6× the speed of four
	// words per turn on a 1400-byte segment).
	for len(b) >= 128 {
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:16]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:24]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:32]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[32:40]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[40:48]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[48:56]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[56:64]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[64:72]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[72:80]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[80:88]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[88:96]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[96:104]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[104:112]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[112:120]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[120:128]), carry)
		b = b[128:]
	}
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:16]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:24]), carry)
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:32]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.LittleEndian.Uint64(b), carry)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, carry = bits.Add64(acc, uint64(binary.LittleEndian.Uint32(b)), carry)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, carry = bits.Add64(acc, uint64(binary.LittleEndian.Uint16(b)), carry)
		b = b[2:]
	}
	if len(b) == 1 {
		// Little-endian, a lone byte is the low half of its word.
		acc, carry = bits.Add64(acc, uint64(b[0]), carry)
	}
	acc, carry = bits.Add64(acc, 0, carry)
	acc += carry // cannot carry again: acc was at most 2^64-2 if carry was set
	// Fold 64 -> 32 -> 16 bits with end-around carries (2^16 ≡ 1 mod 2^16-1).
	s := (acc >> 32) + (acc & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return csumAdd16(bits.ReverseBytes16(uint16(s)), initial)
}

// csumAdd16 adds two folded one's complement sums.
func csumAdd16(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// pseudoHeaderSum returns the folded, uncomplemented sum of the TCP/UDP
// pseudo-header: the source and destination addresses (4 or 16 bytes each),
// the protocol number and the transport length.
func pseudoHeaderSum(src, dst []byte, proto uint8, length int) uint16 {
	s := checksumAdd(src, 0)
	s = checksumAdd(dst, s)
	s = csumAdd16(s, uint16(proto))
	return csumAdd16(s, uint16(length))
}

// ipv4HeaderChecksum computes and stores the header checksum of the IPv4
// header h (its whole length, options included).
func ipv4HeaderChecksum(h []byte) {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^checksumAdd(h, 0))
}

// ipv4HeaderValid tells whether the IPv4 header h has a correct checksum.
func ipv4HeaderValid(h []byte) bool {
	return checksumAdd(h, 0) == 0xffff
}
