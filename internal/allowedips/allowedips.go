// Package allowedips owns WireGuard's cryptokey routing table: the map from
// inner IP prefixes to the peer that owns them, queried by longest-prefix
// match once per packet in each direction (which peer to encrypt an outgoing
// packet for, and whether a decrypted packet's source belongs to the peer it
// came from). Each prefix belongs to exactly one owner. The table is a
// path-compressed binary trie with one root per address family; lookups walk
// at most one node per distinct branching point and never allocate.
package allowedips

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
)

// Table maps IP prefixes to owners of type T (the engine uses *Peer) and
// answers longest-prefix-match queries. The zero value is an empty table
// ready to use.
//
// IPv4 and IPv6 prefixes live in separate tries. An IPv4-mapped IPv6 address
// or prefix (::ffff:a.b.c.d) is IPv6 here: it is never unmapped, so it only
// matches IPv6 prefixes such as ::/0 or ::ffff:0:0/96, never an IPv4 one.
// This follows the packet's own IP version, which is what WireGuard routes
// on.
//
// Table is not safe for concurrent use and takes no locks: the caller must
// serialize writers against each other and against readers (the engine
// guards it with a sync.RWMutex; concurrent lookups alone are fine).
type Table[T comparable] struct {
	v4, v6 *node[T]
	n      int
}

// node is one trie node: a prefix of length bits, stored masked in the top
// bits of hi:lo (an IPv4 prefix uses the top 32 bits of hi). mhi:mlo is the
// mask of the first bits bits, kept so that matching is two XOR-ANDs.
// Invariants: a child extends its parent's prefix, is longer, and sits in
// child[b] where b is the child's bit at position parent.bits; a node
// without a value has exactly two children.
type node[T comparable] struct {
	hi, lo   uint64
	mhi, mlo uint64
	child    [2]*node[T]
	value    T
	bits     uint8
	set      bool
}

// mask returns the mask of the first n bits of a 128-bit key.
func mask(n uint8) (hi, lo uint64) {
	switch {
	case n == 0:
		return 0, 0
	case n <= 64:
		return ^uint64(0) << (64 - n), 0
	default:
		return ^uint64(0), ^uint64(0) << (128 - n)
	}
}

// bitAt returns bit i (0 = most significant) of the key hi:lo. For i >= 128
// it returns 0, which is harmless: nodes of full length have no children.
func bitAt(hi, lo uint64, i uint8) uint8 {
	if i < 64 {
		return uint8(hi>>(63-i)) & 1
	}
	return uint8(lo>>(127-i)) & 1
}

// commonLen returns the length of the common prefix of two 128-bit keys.
func commonLen(ahi, alo, bhi, blo uint64) uint8 {
	if x := ahi ^ bhi; x != 0 {
		return uint8(bits.LeadingZeros64(x))
	}
	return uint8(64 + bits.LeadingZeros64(alo^blo))
}

func newNode[T comparable](hi, lo uint64, n uint8) *node[T] {
	mhi, mlo := mask(n)
	return &node[T]{hi: hi & mhi, lo: lo & mlo, mhi: mhi, mlo: mlo, bits: n}
}

// key splits a valid prefix into its family root, masked key and length.
func (t *Table[T]) key(p netip.Prefix) (root **node[T], hi, lo uint64, n uint8) {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		hi = uint64(binary.BigEndian.Uint32(b[:])) << 32
		root = &t.v4
	} else {
		b := a.As16()
		hi = binary.BigEndian.Uint64(b[:8])
		lo = binary.BigEndian.Uint64(b[8:])
		root = &t.v6
	}
	n = uint8(p.Bits())
	mhi, mlo := mask(n)
	return root, hi & mhi, lo & mlo, n
}

// Insert makes v the owner of p, with p's host bits masked off. If p was
// already in the table its previous owner loses it. An invalid prefix is
// ignored.
func (t *Table[T]) Insert(p netip.Prefix, v T) {
	if !p.IsValid() {
		return
	}
	link, hi, lo, n := t.key(p)
	for {
		cur := *link
		if cur == nil {
			leaf := newNode[T](hi, lo, n)
			leaf.value, leaf.set = v, true
			*link = leaf
			t.n++
			return
		}
		c := min(commonLen(hi, lo, cur.hi, cur.lo), n, cur.bits)
		switch {
		case c == cur.bits && c == n: // the prefix itself
			if !cur.set {
				t.n++
			}
			cur.value, cur.set = v, true
			return
		case c == cur.bits: // cur is a shorter prefix of p: descend
			link = &cur.child[bitAt(hi, lo, c)]
		case c == n: // p is a shorter prefix of cur: p becomes cur's parent
			leaf := newNode[T](hi, lo, n)
			leaf.value, leaf.set = v, true
			leaf.child[bitAt(cur.hi, cur.lo, n)] = cur
			*link = leaf
			t.n++
			return
		default: // p and cur diverge at bit c: join them under a fork
			fork := newNode[T](hi, lo, c)
			leaf := newNode[T](hi, lo, n)
			leaf.value, leaf.set = v, true
			fork.child[bitAt(hi, lo, c)] = leaf
			fork.child[bitAt(cur.hi, cur.lo, c)] = cur
			*link = fork
			t.n++
			return
		}
	}
}

// Remove deletes p (masked) from the table if it is there and owned by v,
// and reports whether it did.
func (t *Table[T]) Remove(p netip.Prefix, v T) bool {
	if !p.IsValid() {
		return false
	}
	root, hi, lo, n := t.key(p)
	var removed bool
	*root, removed = t.remove(*root, hi, lo, n, v)
	return removed
}

func (t *Table[T]) remove(cur *node[T], hi, lo uint64, n uint8, v T) (*node[T], bool) {
	if cur == nil || cur.bits > n || (hi^cur.hi)&cur.mhi|(lo^cur.lo)&cur.mlo != 0 {
		return cur, false
	}
	if cur.bits == n {
		if !cur.set || cur.value != v {
			return cur, false
		}
		var zero T
		cur.value, cur.set = zero, false
		t.n--
		return compact(cur), true
	}
	b := bitAt(hi, lo, cur.bits)
	child, removed := t.remove(cur.child[b], hi, lo, n, v)
	if !removed {
		return cur, false
	}
	cur.child[b] = child
	return compact(cur), true
}

// compact returns what should replace n in its parent once n may have lost
// its value or a child: n itself if it still has a value or two children,
// otherwise its only child or nil.
func compact[T comparable](n *node[T]) *node[T] {
	switch {
	case n.set:
		return n
	case n.child[0] == nil:
		return n.child[1]
	case n.child[1] == nil:
		return n.child[0]
	default:
		return n
	}
}

// RemoveValue deletes every prefix owned by v. It visits the whole table,
// which is fine for the rare removal of a peer.
func (t *Table[T]) RemoveValue(v T) {
	t.v4 = t.removeValue(t.v4, v)
	t.v6 = t.removeValue(t.v6, v)
}

func (t *Table[T]) removeValue(cur *node[T], v T) *node[T] {
	if cur == nil {
		return nil
	}
	cur.child[0] = t.removeValue(cur.child[0], v)
	cur.child[1] = t.removeValue(cur.child[1], v)
	if cur.set && cur.value == v {
		var zero T
		cur.value, cur.set = zero, false
		t.n--
	}
	return compact(cur)
}

// Prefixes returns every prefix owned by v, sorted by netip.Prefix.Compare
// (IPv4 before IPv6, then by address, then by length). It visits the whole
// table.
func (t *Table[T]) Prefixes(v T) []netip.Prefix {
	var out []netip.Prefix
	out = collect(out, t.v4, v, true)
	out = collect(out, t.v6, v, false)
	slices.SortFunc(out, netip.Prefix.Compare)
	return out
}

func collect[T comparable](out []netip.Prefix, cur *node[T], v T, is4 bool) []netip.Prefix {
	if cur == nil {
		return out
	}
	if cur.set && cur.value == v {
		out = append(out, cur.prefix(is4))
	}
	out = collect(out, cur.child[0], v, is4)
	return collect(out, cur.child[1], v, is4)
}

func (n *node[T]) prefix(is4 bool) netip.Prefix {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(n.hi>>32))
		return netip.PrefixFrom(netip.AddrFrom4(b), int(n.bits))
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], n.hi)
	binary.BigEndian.PutUint64(b[8:], n.lo)
	return netip.PrefixFrom(netip.AddrFrom16(b), int(n.bits))
}

// Len returns the number of prefixes in the table.
func (t *Table[T]) Len() int {
	return t.n
}

// lookup walks from root towards the key, remembering the deepest node with
// a value whose prefix contains the key.
func lookup[T comparable](cur *node[T], hi, lo uint64) (T, bool) {
	var best *node[T]
	for cur != nil && (hi^cur.hi)&cur.mhi|(lo^cur.lo)&cur.mlo == 0 {
		if cur.set {
			best = cur
		}
		cur = cur.child[bitAt(hi, lo, cur.bits)]
	}
	if best == nil {
		var zero T
		return zero, false
	}
	return best.value, true
}

// Lookup returns the owner of the longest prefix containing a. An
// IPv4-mapped IPv6 address is looked up as IPv6 (see Table); a zone is
// ignored; the zero Addr matches nothing.
func (t *Table[T]) Lookup(a netip.Addr) (T, bool) {
	if a.Is4() {
		return t.LookupIPv4(a.As4())
	}
	if a.Is6() {
		return t.LookupIPv6(a.As16())
	}
	var zero T
	return zero, false
}

// LookupIPv4 is Lookup for an IPv4 address in network byte order, as read
// from a packet header.
func (t *Table[T]) LookupIPv4(a [4]byte) (T, bool) {
	return lookup(t.v4, uint64(binary.BigEndian.Uint32(a[:]))<<32, 0)
}

// LookupIPv6 is Lookup for an IPv6 address in network byte order, as read
// from a packet header.
func (t *Table[T]) LookupIPv6(a [16]byte) (T, bool) {
	return lookup(t.v6, binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:]))
}

// LookupBytes is Lookup for an address slice taken straight from a packet:
// 4 bytes for IPv4, 16 for IPv6. Any other length matches nothing.
func (t *Table[T]) LookupBytes(a []byte) (T, bool) {
	switch len(a) {
	case 4:
		return t.LookupIPv4([4]byte(a))
	case 16:
		return t.LookupIPv6([16]byte(a))
	}
	var zero T
	return zero, false
}
