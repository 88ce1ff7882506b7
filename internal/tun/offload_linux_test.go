package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
)

// Offloads against the kernel: a TCP connection of the namespace's stack to
// an address routed into the TUN, whose other end the test plays by hand,
// and UDP sockets. The kernel's super-packets must come out of Read as
// valid segments, and the super-packets Write makes of a batch must be
// taken in by the kernel as one packet each.

// readResult is what one Read returned: copies of the packets.
type readResult struct {
	pkts [][]byte
	err  error
}

// startReader reads dev until it is closed, sending every batch read.
func startReader(dev Device) <-chan readResult {
	ch := make(chan readResult, 4096)
	go func() {
		bufs, sizes := makeBufs(offloadBatchSize)
		for {
			n, err := dev.Read(bufs, sizes, offset)
			if errors.Is(err, os.ErrClosed) {
				return
			}
			r := readResult{err: err}
			for i := 0; i < n; i++ {
				r.pkts = append(r.pkts, bytes.Clone(bufs[i][offset:offset+sizes[i]]))
			}
			select {
			case ch <- r:
			default: // the test is gone or not reading any more
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// tcpSeg is a parsed TCP segment.
type tcpSeg struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8
	payload  []byte
}

// parseTCPSeg parses an IPv4 or IPv6 TCP packet without options or
// extension headers.
func parseTCPSeg(pkt []byte) (s tcpSeg, ok bool) {
	var l4 []byte
	var sa, da netip.Addr
	switch {
	case len(pkt) >= 40 && pkt[0] == 0x45 && pkt[9] == ipProtoTCP:
		sa, da = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		l4 = pkt[20:]
	case len(pkt) >= 60 && pkt[0]>>4 == 6 && pkt[6] == ipProtoTCP:
		sa, da = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		l4 = pkt[40:]
	default:
		return s, false
	}
	doff := int(l4[12]>>4) * 4
	if doff < 20 || doff > len(l4) {
		return s, false
	}
	s.src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(l4[0:]))
	s.dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(l4[2:]))
	s.seq = binary.BigEndian.Uint32(l4[4:])
	s.ack = binary.BigEndian.Uint32(l4[8:])
	s.flags = l4[13]
	s.payload = l4[doff:]
	return s, true
}

// checkTCPUDP verifies the checksums of a TCP or UDP packet; other packets
// (the kernel's ICMPv6 chatter) are left alone.
func checkTCPUDP(pkt []byte) error {
	if len(pkt) >= 40 && (pkt[0]>>4 == 4 && (pkt[9] == ipProtoTCP || pkt[9] == ipProtoUDP) ||
		pkt[0]>>4 == 6 && (pkt[6] == ipProtoTCP || pkt[6] == ipProtoUDP)) {
		return checkPacket(pkt)
	}
	return nil
}

func rxPackets(t *testing.T, ns *nettest.NS, ifc string) int {
	t.Helper()
	out, err := ns.Output("cat", "/sys/class/net/"+ifc+"/statistics/rx_packets")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newOffloadTUN(t *testing.T, ns *nettest.NS, name string) *linuxDevice {
	t.Helper()
	t.Setenv(EnvNoOffload, "0")
	dev := configure(t, ns, name).(*linuxDevice)
	if !dev.mode.vnetHdr || !dev.mode.tso || dev.BatchSize() != offloadBatchSize {
		t.Fatalf("device not in offload mode: %+v, BatchSize %d", dev.mode, dev.BatchSize())
	}
	return dev
}

func TestOffloadTCP(t *testing.T) {
	needTUN(t)
	for _, tc := range []struct {
		name        string
		local, peer netip.Addr
		mss         int
	}{{"ipv4", tunAddr4, peerAddr4, 1420 - 40}, {"ipv6", tunAddr6, peerAddr6, 1420 - 60}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := nettest.NewNS(t, "wtot")
			dev := newOffloadTUN(t, ns, "wgot0")
			reads := startReader(dev)
			peer := netip.AddrPortFrom(tc.peer, 5001)
			deadline := time.After(20 * time.Second)
			stage := "handshake" // where a timeout happened, for its message
			// next returns the next TCP segment to peer, checking the
			// checksums of every packet read and the contiguity of the
			// segments read together; it reports how many there were.
			next := func() (tcpSeg, int) {
				for {
					select {
					case r := <-reads:
						if r.err != nil {
							t.Fatalf("Read: %v", r.err)
						}
						var segs []tcpSeg
						for i, p := range r.pkts {
							if err := checkTCPUDP(p); err != nil {
								t.Fatalf("packet %d of %d read together: %v", i, len(r.pkts), err)
							}
							if s, ok := parseTCPSeg(p); ok && s.dst == peer {
								if len(segs) > 0 && segs[len(segs)-1].seq+uint32(len(segs[len(segs)-1].payload)) != s.seq {
									t.Fatalf("segments read together not contiguous")
								}
								segs = append(segs, s)
							}
						}
						if len(segs) > 1 {
							// Fold the segments back into one, for the caller.
							s := segs[0]
							s.payload = nil
							for _, g := range segs {
								s.payload = append(s.payload, g.payload...)
							}
							return s, len(segs)
						}
						if len(segs) == 1 {
							return segs[0], 1
						}
					case <-deadline:
						t.Fatalf("timeout after 20 s during %s", stage)
					}
				}
			}
			write := func(pkts ...[]byte) {
				t.Helper()
				bufs := make([][]byte, len(pkts))
				for i, p := range pkts {
					bufs[i] = withRoom(p, 65535)
				}
				if n, err := dev.Write(bufs, offset); n != len(pkts) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}

			// The handshake, answered by hand.
			connc := make(chan net.Conn, 1)
			errc := make(chan error, 1)
			go func() {
				errc <- ns.Do(func() error {
					c, err := net.DialTimeout("tcp", peer.String(), 10*time.Second)
					if err == nil {
						connc <- c
					}
					return err
				})
			}()
			syn, _ := next()
			if syn.flags&tcpFlagSYN == 0 {
				t.Fatalf("first segment has flags %#x", syn.flags)
			}
			client := syn.src
			const iss = 0x7fff0000
			mssOpt := []byte{2, 4, byte(tc.mss >> 8), byte(tc.mss), 1, 3, 3, 7} // MSS, NOP, window scale 7
			write(testPkt{src: peer, dst: client, seq: iss, ack: syn.seq + 1, flags: tcpFlagSYN | tcpFlagACK,
				win: 65535, opts: mssOpt}.build())
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			conn := <-connc
			defer conn.Close()
			rcvBase := syn.seq + 1

			// The stack sends 512 KiB: super-packets come out of Read as
			// several valid segments.
			data := testPayload(0, 512<<10)
			go func() {
				conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
				conn.Write(data)
			}()
			got, maxSegs, reads1 := 0, 0, 0
			for got < len(data) {
				stage = fmt.Sprintf("the 512 KiB stream: %d bytes acknowledged after %d reads", got, reads1)
				s, n := next()
				off := int(s.seq - rcvBase)
				if len(s.payload) == 0 {
					continue
				}
				if off < 0 || off+len(s.payload) > len(data) || !bytes.Equal(s.payload, data[off:off+len(s.payload)]) {
					t.Fatalf("segment at stream offset %d (%d bytes) does not carry the data", off, len(s.payload))
				}
				if off <= got {
					got = max(got, off+len(s.payload))
				}
				maxSegs = max(maxSegs, n)
				reads1++
				write(testPkt{src: peer, dst: client, seq: iss + 1, ack: rcvBase + uint32(got), flags: tcpFlagACK, win: 4096}.build())
			}
			t.Logf("%d bytes in %d reads, up to %d segments per read", got, reads1, maxSegs)
			if maxSegs < 2 {
				t.Fatalf("no super-packet: at most %d segment per read", maxSegs)
			}

			// We send 40 segments in one batch: the kernel takes them as one
			// packet and the socket reads them all.
			before := rxPackets(t, ns, "wgot0")
			var pkts [][]byte
			for i := 0; i < 40; i++ {
				s := testPkt{src: peer, dst: client, seq: iss + 1 + uint32(i*1000), ack: rcvBase + uint32(got),
					flags: tcpFlagACK, win: 4096, payload: testPayload(i*1000, 1000)}
				if i == 39 {
					s.flags |= tcpFlagPSH
				}
				pkts = append(pkts, s.build())
			}
			write(pkts...)
			buf := make([]byte, 40*1000)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(conn, buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, testPayload(0, len(buf))) {
				t.Fatal("the socket read other data")
			}
			if after := rxPackets(t, ns, "wgot0"); after-before != 1 {
				t.Fatalf("the kernel received %d packets, want 1 super-packet", after-before)
			}
		})
	}
}

func TestOffloadUDP(t *testing.T) {
	needTUN(t)
	for _, tc := range []struct {
		name        string
		local, peer netip.Addr
	}{{"ipv4", tunAddr4, peerAddr4}, {"ipv6", tunAddr6, peerAddr6}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := nettest.NewNS(t, "wtou")
			dev := newOffloadTUN(t, ns, "wgou0")
			if !dev.mode.uso {
				t.Skip("the kernel does not take USO")
			}
			reads := startReader(dev)

			// Reading: a socket sends 10 datagrams in one sendmsg with
			// UDP_SEGMENT; they come out of one Read.
			dst := netip.AddrPortFrom(tc.peer, 9)
			data := testPayload(0, 9*1000+500)
			if _, err := dialUSO(t, ns, dst, 1000).Write(data); err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			timeout := time.After(10 * time.Second)
			for got == nil {
				select {
				case r := <-reads:
					if r.err != nil {
						t.Fatal(r.err)
					}
					for _, p := range r.pkts {
						if err := checkTCPUDP(p); err != nil {
							t.Fatal(err)
						}
						if _, d, payload, err := parseUDP(p); err == nil && d == dst {
							got = append(got, payload)
						}
					}
				case <-timeout:
					t.Fatal("no datagram read")
				}
			}
			if len(got) != 10 || !bytes.Equal(bytes.Join(got, nil), data) || len(got[0]) != 1000 {
				t.Fatalf("one Read returned %d datagrams, want the 10 of one send", len(got))
			}

			// Writing: 10 datagrams in a batch reach a socket as 10, through
			// one packet.
			var srv *net.UDPConn
			if err := ns.Do(func() (err error) {
				srv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.local, 0)))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			before := rxPackets(t, ns, "wgou0")
			src := netip.AddrPortFrom(tc.peer, 40000)
			var bufs [][]byte
			for i := 0; i < 10; i++ {
				n := 1000
				if i == 9 {
					n = 500
				}
				p := testPkt{udp: true, src: src, dst: srv.LocalAddr().(*net.UDPAddr).AddrPort(), id: uint16(i),
					payload: testPayload(i*1000, n)}.build()
				bufs = append(bufs, withRoom(p, 65535))
			}
			if n, err := dev.Write(bufs, offset); n != len(bufs) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 2000)
			for i := 0; i < 10; i++ {
				n, from, err := srv.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("datagram %d: %v", i, err)
				}
				want := testPayload(i*1000, min(1000, 9500-i*1000))
				if !bytes.Equal(buf[:n], want) || from.Port() != src.Port() {
					t.Fatalf("datagram %d: %d bytes from %v", i, n, from)
				}
			}
			if after := rxPackets(t, ns, "wgou0"); after-before != 1 {
				t.Fatalf("the kernel received %d packets, want 1 super-packet", after-before)
			}
		})
	}
}

// Writing a batch through the coalescer to the kernel does not allocate.
func TestOffloadWriteAllocs(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtoa")
	dev := newOffloadTUN(t, ns, "wgoa0")
	pkts := append(tcpFlow(false, 40, 1000, nil), udpFlow(true, 10, 1000, nil)...)
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = withRoom(p, 65535)
	}
	write := func() {
		for i, p := range pkts {
			copy(bufs[i][offset:], p) // Write changed the heads
		}
		if n, err := dev.Write(bufs, offset); n != len(bufs) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	write() // the coalescer's scratch space grows
	if raceEnabled {
		t.Skip("allocations are not counted under the race detector (sync.Pool drops items)")
	}
	if allocs := testing.AllocsPerRun(50, write); allocs != 0 {
		t.Fatalf("%v allocations per Write", allocs)
	}
}

// Packets queued behind the first are returned by the same Read while the
// buffers have room; one that does not fit is kept for the next Read.
func TestReadQueued(t *testing.T) {
	needTUN(t)
	ns := nettest.NewNS(t, "wtq")
	dev := newOffloadTUN(t, ns, "wgq0")
	if !dev.reader.raw {
		t.Error("a queue of our own is not read with raw system calls")
	}
	dst := netip.AddrPortFrom(peerAddr4, 9)
	const sent = 5
	if err := ns.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range sent {
			if _, err := c.Write([]byte{'q', byte(i)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A datagram is in the TUN's queue when its send returns (the
	// qdisc hands it to the TUN in the sender's call); leave the queue a
	// moment anyway.
	time.Sleep(20 * time.Millisecond)
	bufs := make([][]byte, 3)
	for i := range bufs {
		bufs[i] = make([]byte, offset+65535)
	}
	sizes := make([]int, len(bufs))
	timer := time.AfterFunc(5*time.Second, func() { dev.Close() })
	defer timer.Stop()
	var got []byte
	for reads := 0; len(got) < sent; reads++ {
		n, err := dev.Read(bufs, sizes, offset)
		if err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
		if reads == 0 && n != len(bufs) {
			t.Fatalf("first Read returned %d packets with %d queued, want %d (as many as buffers)", n, sent, len(bufs))
		}
		for i := range n {
			_, d, payload, err := parseUDP(bufs[i][offset : offset+sizes[i]])
			if err == nil && d == dst && len(payload) == 2 && payload[0] == 'q' {
				got = append(got, payload[1])
			}
		}
	}
	for i, b := range got {
		if int(b) != i {
			t.Fatalf("datagrams read in order %v, want 0..%d", got, sent-1)
		}
	}
}
