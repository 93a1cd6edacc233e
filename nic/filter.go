package nic

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// BroadcastFilter is the part of the 82566DM's manageability filters that
// concerns broadcasts: the NIC hands the management engine only the
// broadcasts it acts on, not every broadcast on the LAN. With many devices
// on one segment this is also what keeps a DHCP DISCOVER from costing every
// other device a frame.
type BroadcastFilter struct {
	// ARPFor passes ARP requests asking for one of these addresses.
	ARPFor []netip.Addr
	// UDPPorts passes IPv4 UDP broadcasts to one of these ports (68: a
	// DHCP server's broadcast reply).
	UDPPorts []uint16
}

// FilterAware is implemented by attachments that can use a port's filter
// to deliver broadcasts only where they pass, rather than to every port.
// A nil filter means the port takes every broadcast.
type FilterAware interface {
	SetBroadcastFilter(f *BroadcastFilter)
}

// Frame offsets.
const (
	ethTypeOff   = 12
	ethHdrLen    = 14
	etherARP     = 0x0806
	etherIPv4    = 0x0800
	arpOpRequest = 1
)

// Match reports whether the broadcast frame passes f.
func (f *BroadcastFilter) Match(frame []byte) bool {
	switch kind, key := Classify(frame); kind {
	case BroadcastARP:
		return slices.Contains(f.ARPFor, netip.AddrFrom4([4]byte(key[:4])))
	case BroadcastUDP:
		return slices.Contains(f.UDPPorts, binary.BigEndian.Uint16(key[:2]))
	}
	return false
}

// BroadcastKind sorts broadcast frames for filtering.
type BroadcastKind int

const (
	BroadcastOther BroadcastKind = iota
	BroadcastARP                 // an ARP request; key: the target IPv4 address
	BroadcastUDP                 // an IPv4 UDP datagram; key: the destination port
)

// Classify reads the filter key of a broadcast frame without allocating.
func Classify(frame []byte) (BroadcastKind, [4]byte) {
	if len(frame) < ethHdrLen {
		return BroadcastOther, [4]byte{}
	}
	switch binary.BigEndian.Uint16(frame[ethTypeOff:]) {
	case etherARP:
		// htype 1, ptype IPv4, hlen 6, plen 4, op; target IP at 24 of the ARP body.
		a := frame[ethHdrLen:]
		if len(a) < 28 || binary.BigEndian.Uint16(a[6:]) != arpOpRequest || a[4] != 6 || a[5] != 4 {
			return BroadcastOther, [4]byte{}
		}
		return BroadcastARP, [4]byte(a[24:28])
	case etherIPv4:
		ip := frame[ethHdrLen:]
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 17 {
			return BroadcastOther, [4]byte{}
		}
		ihl, total := int(ip[0]&0x0f)*4, int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < 20 || total < ihl+8 || len(ip) < total || binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
			return BroadcastOther, [4]byte{} // a fragment past the first has no UDP header
		}
		var k [4]byte
		copy(k[:2], ip[ihl+2:ihl+4])
		return BroadcastUDP, k
	}
	return BroadcastOther, [4]byte{}
}
