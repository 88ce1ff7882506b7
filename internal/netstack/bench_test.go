package netstack

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tcp4 builds an IPv4 TCP packet with payload bytes of data.
func tcp4(payload int) []byte {
	p := make([]byte, 40+payload)
	p[0], p[8], p[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:], []byte{100, 64, 0, 1, 100, 64, 0, 2})
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 5001)
	p[32] = 5 << 4
	p[33] = 0x18 // PSH|ACK
	header.IPv4(p).SetChecksum(^header.IPv4(p).CalculateChecksum())
	return p
}

// flowSegment is segment i of an IPv4 TCP flow as a sender with DF set
// sends it: size bytes of payload at sequence number i*size, ACK only,
// so that it merges with its neighbours.
func flowSegment(i, size int) []byte {
	p := tcp4(size)
	binary.BigEndian.PutUint32(p[24:], uint32(i*size))
	p[6] = 0x40  // DF
	p[33] = 0x10 // ACK
	h := header.IPv4(p)
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
	return p
}

// BenchmarkReadSplit: Read cutting one netstack super-packet (64 KiB of
// TCP payload, MSS 1380) into the engine's buffers. The packet buffer is
// reused, so what is counted is the device's own work: no allocation.
func BenchmarkReadSplit(b *testing.B) {
	d := NewDevice(1420)
	defer d.Close()
	raw := tcp4(47 * 1380)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(raw)})
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1380, L3HdrLen: header.IPv4MinimumSize}
	bufs := make([][]byte, BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	sizes := make([]int, BatchSize)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		d.out <- pkt.IncRef()
		n, err := d.Read(bufs, sizes, offset)
		if err != nil || n != 47 {
			b.Fatalf("Read = %d, %v", n, err)
		}
	}
}

// BenchmarkWriteBatch: Write of a batch of 64 MSS-sized TCP segments of
// one flow, each with PSH (so delivered one by one), to a stack with no
// such connection; counts the allocations of Write and netstack's first
// steps per batch.
func BenchmarkWriteBatch(b *testing.B) {
	st, err := New(1420)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	d := st.Device()
	bufs := make([][]byte, 64)
	for i := range bufs {
		p := tcp4(1380)
		binary.BigEndian.PutUint32(p[24:], uint32(i*1380))
		bufs[i] = append(make([]byte, offset), p...)
	}
	b.SetBytes(64 * 1420)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := d.Write(bufs, offset); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteMerged: Write of a batch of 64 MSS-sized TCP segments of
// one flow that merge (ACK only, in sequence) into two packets of up to
// 64 KiB, copied into netstack's buffers, to a stack with no such
// connection; counts the allocations of merging, copying and netstack's
// first steps per batch.
func BenchmarkWriteMerged(b *testing.B) {
	st, err := New(1420)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	d := st.Device()
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = append(make([]byte, offset), flowSegment(i, 1380)...)
	}
	bufs := make([][]byte, len(pkts))
	b.SetBytes(64 * 1420)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		// Merging rewrites the first packet's headers: a fresh copy
		// of the batch each time.
		b.StopTimer()
		for i, p := range pkts {
			bufs[i] = append(bufs[i][:0], p...)
		}
		b.StartTimer()
		if _, err := d.Write(bufs, offset); err != nil {
			b.Fatal(err)
		}
	}
	if d.Stats().InMerged.Load() == 0 {
		b.Fatal("nothing merged")
	}
}
