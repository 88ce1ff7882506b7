package tun

// Merger merges the TCP segments of a batch for a stack in the same
// process (package netstack) that takes a merged packet as one buffer: the
// same planning as the GRO of writes to TUN (see coalesce), without the
// writev. Plan merges the batch's headers in place; Pieces gives the parts
// of one packet to copy into the stack's buffer. The merged packet's TCP
// checksum is left partial (the pseudo-header sum): the stack must trust
// the payload as the kernel does a NEEDS_CSUM packet.
type Merger struct{ c coalescer }

// MergeOffset is the least offset Plan takes: room in front of each packet
// for the header coalesce writes there.
const MergeOffset = virtioNetHdrLen

// Plan merges the TCP segments of bufs[i][offset:] (offset >= MergeOffset;
// each buffer ends where its packet does) and returns the number of
// packets, in batch order, that make up the batch now. The plan is valid
// until the next call; Plan does not allocate once its scratch space has
// grown to the batch size.
func (m *Merger) Plan(bufs [][]byte, offset int) int {
	return len(m.c.coalesce(bufs, offset, true, false))
}

// Packet returns packet k of the plan: the index in the batch of its first
// segment, its length and the number of segments it is made of (1: the
// packet unchanged, bufs[idx][offset:]).
func (m *Merger) Packet(k int) (idx, length, segs int) {
	o := &m.c.outs[k]
	return o.idx, o.length, o.segs
}

// Pieces appends to iov the parts of packet k, in order: its first
// segment with the merged headers, then the payload of each segment
// appended to it, each in its own buffer.
func (m *Merger) Pieces(iov [][]byte, bufs [][]byte, offset, k int) [][]byte {
	o := &m.c.outs[k]
	iov = append(iov, bufs[o.idx][offset:offset+o.origLength])
	hdrLen := o.ipLen + o.l4Len
	for j := o.first; j >= 0; j = m.c.next[j] {
		iov = append(iov, bufs[j][offset+hdrLen:])
	}
	return iov
}
