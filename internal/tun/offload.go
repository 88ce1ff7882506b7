package tun

import (
	"encoding/binary"
	"errors"
)

// Offloads. With IFF_VNET_HDR every packet crossing a TUN queue is preceded
// by a struct virtio_net_hdr (include/uapi/linux/virtio_net.h):
//
//	u8  flags        VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum is to be completed
//	u8  gso_type     NONE, TCPV4, TCPV6, UDP_L4 (| ECN)
//	u16 hdr_len      length of the headers repeated in front of every segment
//	u16 gso_size     payload bytes per segment
//	u16 csum_start   where the checksummed range starts
//	u16 csum_offset  where, after csum_start, the checksum goes
//
// in host byte order (the TUN is not switched to a fixed vnet endianness).
// Reading, the kernel hands over TCP (TSO) and UDP (USO) super-packets of up
// to 64 KiB and packets whose checksum is only partial; gsoSplit turns them
// into plain packets. Writing, coalesce merges the segments of a flow into
// such super-packets, so that the kernel's stack handles one packet where it
// would have handled dozens.

// virtioNetHdrLen is the size of struct virtio_net_hdr, set with
// TUNSETVNETHDRSZ. A caller's offset must leave at least this much room in
// front of each packet.
const virtioNetHdrLen = 10

const (
	vnetFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM

	vnetGSONone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	vnetGSOTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	vnetGSOTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	vnetGSOUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4
	vnetGSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN
)

// IP and transport header constants used by the offloads.
const (
	ipProtoTCP = 6
	ipProtoUDP = 17

	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
	tcpHeaderLen  = 20 // without options

	// maxSegHeaderLen bounds the headers of a segment: IPv4 with options
	// and TCP with options (60 bytes each).
	maxSegHeaderLen = 120

	tcpFlagFIN = 0x01
	tcpFlagSYN = 0x02
	tcpFlagRST = 0x04
	tcpFlagPSH = 0x08
	tcpFlagACK = 0x10
	tcpFlagCWR = 0x80

	tcpCsumOffset = 16 // offsetof(struct tcphdr, check)
	udpCsumOffset = 6  // offsetof(struct udphdr, check)

	ipv4FlagDF = 0x40 // in byte 6 of the IPv4 header
	ipv4FlagMF = 0x20
)

// maxPacketLen is the largest IP packet a coalesced packet may grow to: the
// IPv4 total length field's limit, kept for IPv6 as well.
const maxPacketLen = 65535

// maxReadLen is the most a single read(2) of an offloading TUN queue returns:
// the virtio-net header and an IPv6 packet of the largest payload length.
const maxReadLen = virtioNetHdrLen + ipv6HeaderLen + 65535

// Errors of one packet read from an offloading TUN; the packet is dropped and
// the next Read goes on with the next one.
var (
	// ErrTooManySegments is returned by Read for a super-packet that would
	// split into more packets than the buffers given.
	ErrTooManySegments = errors.New("tun: super-packet has more segments than buffers")
	// ErrBadOffload is returned by Read for a packet whose virtio-net header
	// does not fit its contents, or that does not fit its buffer.
	ErrBadOffload = errors.New("tun: malformed offloaded packet")
)

// virtioNetHdr is struct virtio_net_hdr.
type virtioNetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *virtioNetHdr) decode(b []byte) {
	_ = b[virtioNetHdrLen-1]
	h.flags = b[0]
	h.gsoType = b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *virtioNetHdr) encode(b []byte) {
	_ = b[virtioNetHdrLen-1]
	b[0] = h.flags
	b[1] = h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}
