// Package capture writes the packet captures of `warren debug capture`:
// classic pcap (LINKTYPE_RAW, microsecond timestamps) for the plaintext IP
// packets at the tunnel boundary, and pcapng for the encrypted WireGuard
// messages, each wrapped in a synthesized IP/UDP header (the peer's
// current address, the engine's port) and annotated with a comment
// naming the path (direct, relay) and the peer. Both formats are read by
// tcpdump and Wireshark. It also splits such a stream into whole records,
// so that a capture cut short (Ctrl-C) still ends on a record boundary.
package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// LinkTypeRaw is LINKTYPE_RAW: each packet begins with an IPv4 or IPv6
// header.
const LinkTypeRaw = 101

// SnapLen is the largest packet a capture holds.
const SnapLen = 65535

// Pcap magic numbers.
const (
	pcapMagic   = 0xa1b2c3d4 // classic pcap, microseconds
	blockSHB    = 0x0A0D0D0A
	blockIDB    = 1
	blockEPB    = 6
	byteOrderNG = 0x1A2B3C4D
)

// WritePcapHeader writes a classic pcap file header.
func WritePcapHeader(w io.Writer) error {
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], pcapMagic)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], SnapLen)
	binary.LittleEndian.PutUint32(h[20:], LinkTypeRaw)
	_, err := w.Write(h[:])
	return err
}

// AppendPcapRecord appends one classic pcap record for pkt to b.
func AppendPcapRecord(b []byte, t time.Time, pkt []byte) []byte {
	if len(pkt) > SnapLen {
		pkt = pkt[:SnapLen]
	}
	us := t.UnixMicro()
	b = binary.LittleEndian.AppendUint32(b, uint32(us/1e6))
	b = binary.LittleEndian.AppendUint32(b, uint32(us%1e6))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(pkt)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(pkt)))
	return append(b, pkt...)
}

// WritePcapngHeader writes a pcapng section header and one raw-IP
// interface (microsecond timestamps, the default resolution).
func WritePcapngHeader(w io.Writer) error {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, blockSHB)
	b = binary.LittleEndian.AppendUint32(b, 28)
	b = binary.LittleEndian.AppendUint32(b, byteOrderNG)
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint64(b, ^uint64(0)) // section length unknown
	b = binary.LittleEndian.AppendUint32(b, 28)
	b = binary.LittleEndian.AppendUint32(b, blockIDB)
	b = binary.LittleEndian.AppendUint32(b, 20)
	b = binary.LittleEndian.AppendUint16(b, LinkTypeRaw)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint32(b, SnapLen)
	b = binary.LittleEndian.AppendUint32(b, 20)
	_, err := w.Write(b)
	return err
}

func pad4(n int) int { return (n + 3) &^ 3 }

// AppendPcapngRecord appends an enhanced packet block for pkt, with comment
// as its opt_comment when not empty.
func AppendPcapngRecord(b []byte, t time.Time, pkt []byte, comment string) []byte {
	if len(pkt) > SnapLen {
		pkt = pkt[:SnapLen]
	}
	if len(comment) > 1000 {
		comment = comment[:1000]
	}
	n := 28 + pad4(len(pkt)) + 4
	if comment != "" {
		n += 4 + pad4(len(comment)) + 4
	}
	us := uint64(t.UnixMicro())
	b = binary.LittleEndian.AppendUint32(b, blockEPB)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = binary.LittleEndian.AppendUint32(b, 0) // interface 0
	b = binary.LittleEndian.AppendUint32(b, uint32(us>>32))
	b = binary.LittleEndian.AppendUint32(b, uint32(us))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(pkt)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(pkt)))
	b = append(b, pkt...)
	b = append(b, make([]byte, pad4(len(pkt))-len(pkt))...)
	if comment != "" {
		b = binary.LittleEndian.AppendUint16(b, 1) // opt_comment
		b = binary.LittleEndian.AppendUint16(b, uint16(len(comment)))
		b = append(b, comment...)
		b = append(b, make([]byte, pad4(len(comment))-len(comment))...)
		b = binary.LittleEndian.AppendUint32(b, 0) // opt_endofopt
	}
	return binary.LittleEndian.AppendUint32(b, uint32(n))
}

// AppendUDP appends an IPv4 or IPv6 + UDP header carrying payload from src
// to dst, then payload. The UDP checksum is left zero. Mismatched
// families are written as IPv6 (IPv4 addresses mapped).
func AppendUDP(b []byte, src, dst netip.AddrPort, payload []byte) []byte {
	udpLen := 8 + len(payload)
	if src.Addr().Is4() && dst.Addr().Is4() {
		start := len(b)
		b = append(b, 0x45, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(20+udpLen))
		b = append(b, 0, 0, 0x40, 0, 64, 17, 0, 0)
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
		binary.BigEndian.PutUint16(b[start+10:], ipv4Checksum(b[start:start+20]))
	} else {
		b = append(b, 0x60, 0, 0, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(udpLen))
		b = append(b, 17, 64)
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(udpLen))
	b = append(b, 0, 0)
	return append(b, payload...)
}

func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// CopyRecords copies a pcap or pcapng stream from r to w one whole record
// at a time (the file header first), stopping cleanly at the end of r or
// when r fails; it returns the number of packet records copied. A stream
// cut in the middle of a record loses only that record.
func CopyRecords(w io.Writer, r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head, err := br.Peek(4)
	if err != nil {
		return 0, fmt.Errorf("capture: no pcap header: %w", err)
	}
	ng := binary.LittleEndian.Uint32(head) == blockSHB
	if !ng && binary.LittleEndian.Uint32(head) != pcapMagic {
		return 0, errors.New("capture: not a pcap stream")
	}
	n := 0
	first := true
	buf := make([]byte, 0, 1<<16)
	for {
		buf = buf[:0]
		var hdr int
		switch {
		case !ng && first:
			hdr = 24
		case !ng:
			hdr = 16
		default:
			hdr = 8
		}
		h, err := br.Peek(hdr)
		if err != nil {
			return n, nil
		}
		size := hdr
		switch {
		case !ng && !first:
			size += int(binary.LittleEndian.Uint32(h[8:]))
		case ng:
			size = int(binary.LittleEndian.Uint32(h[4:]))
		}
		if size < hdr || size > SnapLen+4096 {
			return n, errors.New("capture: malformed record")
		}
		buf = append(buf, make([]byte, size)...)
		if _, err := io.ReadFull(br, buf); err != nil {
			return n, nil
		}
		if _, err := w.Write(buf); err != nil {
			return n, err
		}
		isPacket := !first && (!ng || binary.LittleEndian.Uint32(buf) == blockEPB)
		if isPacket {
			n++
		}
		first = false
	}
}
