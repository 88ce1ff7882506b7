package device

import (
	"sync"

	"github.com/warrenmesh/warren/internal/conn"
)

// elem is one packet moving through a pipeline. Its buffer is big enough for
// any datagram; outbound plaintext sits at MessageTransportStart so that the
// transport header is written in front of it and sealing happens in place.
type elem struct {
	buf     *[MaxMessageSize]byte
	pkt     []byte // outbound: the plaintext, then the sealed message; inbound: the datagram, then the plaintext
	counter uint64
	keypair *Keypair
	ep      conn.Endpoint
	drop    bool
}

// batch is a group of packets of one peer moving together. Its mutex is
// locked while the crypto worker still has it.
type batch struct {
	sync.Mutex
	peer  *Peer
	elems []*elem
	nonce [12]byte // AEAD nonce scratch (a local one would escape per call)
}

var (
	elemPool = sync.Pool{New: func() any {
		return &elem{buf: new([MaxMessageSize]byte)}
	}}
	batchPool = sync.Pool{New: func() any {
		return &batch{elems: make([]*elem, 0, 128)}
	}}
)

func getElem() *elem { return elemPool.Get().(*elem) }

func putElem(e *elem) {
	e.pkt, e.keypair, e.ep, e.drop, e.counter = nil, nil, nil, false, 0
	elemPool.Put(e)
}

func getBatch(p *Peer) *batch {
	b := batchPool.Get().(*batch)
	b.peer = p
	return b
}

func putBatch(b *batch) {
	for i, e := range b.elems {
		putElem(e)
		b.elems[i] = nil
	}
	b.elems = b.elems[:0]
	b.peer = nil
	batchPool.Put(b)
}
