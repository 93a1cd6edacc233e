package nic

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// vnetHdr is the virtio_net_hdr (linux/virtio_net.h) the kernel puts
// before every frame on a packet socket with PACKET_VNET_HDR. It is why the
// packet uplink asks for one: a frame that a local stack sent through a
// veth or bridge has not been finished by any hardware. Its TCP or UDP
// checksum holds only the pseudo-header sum (the offload the sender counted
// on), and a TCP send may still be one GSO frame of up to 64 KiB. A NIC on
// the wire never sees either, so the uplink finishes the frame as the
// kernel would before a device gets it (resolve).
//
// Layout, 10 bytes, little-endian (what Linux uses on every little-endian
// host, as gVisor's fdbased does):
//
//	0  flags        1 NEEDS_CSUM: csum_start/offset name a checksum to fill
//	1  gso_type     0 none, 1 TCPv4, 3 UDP, 4 TCPv6, 5 UDP_L4; |0x80 ECN
//	2  hdr_len      Ethernet+IP+TCP header length (a hint; not trusted)
//	4  gso_size     payload bytes per segment (the MSS)
//	6  csum_start   offset from the frame's start where summing begins
//	8  csum_offset  offset from csum_start where the sum is stored
type vnetHdr struct {
	Flags, GSOType                       uint8
	HdrLen, GSOSize, CsumStart, CsumOffs uint16
}

const (
	vnetHdrLen      = 10
	vnetNeedsCsum   = 1
	vnetGSONone     = 0
	vnetGSOTCPv4    = 1
	vnetGSOECN      = 0x80
	tcpFlagsOffset  = 13
	tcpFlagFIN      = 0x01
	tcpFlagPSH      = 0x08
	tcpFlagCWR      = 0x80
	ethernetHdrSize = header.EthernetMinimumSize
)

var errVnetShort = errors.New("vnet header: shorter than 10 bytes")

func parseVnetHdr(b []byte) (vnetHdr, []byte, error) {
	if len(b) < vnetHdrLen {
		return vnetHdr{}, nil, errVnetShort
	}
	return vnetHdr{
		Flags:     b[0],
		GSOType:   b[1],
		HdrLen:    binary.LittleEndian.Uint16(b[2:]),
		GSOSize:   binary.LittleEndian.Uint16(b[4:]),
		CsumStart: binary.LittleEndian.Uint16(b[6:]),
		CsumOffs:  binary.LittleEndian.Uint16(b[8:]),
	}, b[vnetHdrLen:], nil
}

func (h vnetHdr) marshal(b []byte) {
	b[0], b[1] = h.Flags, h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffs)
}

// resolve hands deliver the frame as it would have left a NIC: its
// checksum filled in, or, for a GSO frame, each of its segments. What it
// delivers is valid only for the call; scratch holds one segment and
// bounds its size (the uplink's largest frame). A frame it cannot finish
// (a checksum position outside it, a GSO type other than TCPv4, which is
// all an AMT 5 device speaks, or a header that does not parse) is an error
// and nothing is delivered: a device would have got a frame it drops.
func (h vnetHdr) resolve(frame, scratch []byte, deliver func([]byte)) error {
	if h.GSOType&^vnetGSOECN == vnetGSONone {
		if h.Flags&vnetNeedsCsum != 0 {
			if err := fillChecksum(frame, int(h.CsumStart), int(h.CsumOffs)); err != nil {
				return err
			}
		}
		if len(frame) > len(scratch) {
			return fmt.Errorf("vnet: a %d-byte frame, larger than the interface's MTU", len(frame))
		}
		deliver(frame)
		return nil
	}
	if h.GSOType&^vnetGSOECN != vnetGSOTCPv4 {
		return fmt.Errorf("vnet: GSO type %d is not TCPv4", h.GSOType&^vnetGSOECN)
	}
	return segmentTCPv4(frame, int(h.GSOSize), scratch, deliver)
}

// fillChecksum finishes a checksum left to offload: the field at
// start+offset already holds the pseudo-header sum, so the one's
// complement of the sum from start to the end is the checksum. A result of
// zero is sent as 0xffff, which UDP requires and TCP reads the same.
func fillChecksum(frame []byte, start, offset int) error {
	at := start + offset
	if start < ethernetHdrSize || at+2 > len(frame) {
		return fmt.Errorf("vnet: checksum at %d+%d outside a %d-byte frame", start, offset, len(frame))
	}
	if offset%2 != 0 {
		// No protocol's checksum sits at an odd offset of what it sums.
		return fmt.Errorf("vnet: checksum at odd offset %d", offset)
	}
	sum := ^checksum.Checksum(frame[start:], 0)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(frame[at:], sum)
	return nil
}

// segmentTCPv4 cuts a GSO TCP/IPv4 frame into segments of mss payload
// bytes, as the kernel's tcp_gso_segment does: each segment has the
// headers of the first with its own IPv4 total length, an IPv4 ID one more
// than the last, its own sequence number, FIN and PSH only on the last,
// CWR only on the first, and both checksums computed whole.
func segmentTCPv4(frame []byte, mss int, scratch []byte, deliver func([]byte)) error {
	if len(frame) < ethernetHdrSize+header.IPv4MinimumSize {
		return fmt.Errorf("vnet: GSO frame of %d bytes is too short for IPv4", len(frame))
	}
	if binary.BigEndian.Uint16(frame[12:]) != uint16(header.IPv4ProtocolNumber) {
		return errors.New("vnet: GSO TCPv4 frame does not carry IPv4")
	}
	ip := header.IPv4(frame[ethernetHdrSize:])
	ihl := int(ip.HeaderLength())
	if ihl < header.IPv4MinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) || len(ip) < ihl+header.TCPMinimumSize {
		return errors.New("vnet: GSO TCPv4 frame without a whole IPv4 and TCP header")
	}
	tcp := header.TCP(ip[ihl:])
	thl := int(tcp.DataOffset())
	if thl < header.TCPMinimumSize || len(tcp) < thl {
		return errors.New("vnet: GSO TCPv4 frame with a bad TCP data offset")
	}
	if total := int(ip.TotalLength()); total != len(ip) {
		return fmt.Errorf("vnet: GSO frame's IPv4 total length %d, but %d bytes follow the Ethernet header", total, len(ip))
	}
	hdrs := ethernetHdrSize + ihl + thl
	payload := frame[hdrs:]
	if mss <= 0 || hdrs+mss > len(scratch) {
		return fmt.Errorf("vnet: GSO segment size %d does not fit the interface's MTU", mss)
	}
	if len(payload) == 0 {
		return errors.New("vnet: GSO frame with no payload")
	}
	id, seq, flags := ip.ID(), tcp.SequenceNumber(), tcp.Flags()
	src, dst := ip.SourceAddress(), ip.DestinationAddress()
	for i, off := 0, 0; off < len(payload); i, off = i+1, off+mss {
		n := min(mss, len(payload)-off)
		seg := scratch[:hdrs+n]
		copy(seg, frame[:hdrs])
		copy(seg[hdrs:], payload[off:off+n])
		sip := header.IPv4(seg[ethernetHdrSize:])
		sip.SetTotalLength(uint16(ihl + thl + n))
		sip.SetID(id + uint16(i))
		sip.SetChecksum(0)
		sip.SetChecksum(^sip.CalculateChecksum())
		st := header.TCP(sip[ihl:])
		st.SetSequenceNumber(seq + uint32(off))
		f := uint8(flags)
		if off+n < len(payload) {
			f &^= tcpFlagFIN | tcpFlagPSH
		}
		if i > 0 {
			f &^= tcpFlagCWR
		}
		st[tcpFlagsOffset] = f
		st.SetChecksum(0)
		ph := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(thl+n))
		st.SetChecksum(^checksum.Checksum(st, ph))
		deliver(seg)
	}
	return nil
}
