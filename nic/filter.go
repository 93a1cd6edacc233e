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
	// BOOTPFor, when not zero, narrows the broadcasts to port 68 to the
	// BOOTP replies whose client hardware address (chaddr) is this MAC:
	// the firmware drops the others unread, and a server that broadcasts
	// (dnsmasq --dhcp-broadcast) then costs the devices an offer is not
	// for nothing. Without it every offer of a booting fleet went through
	// every device's stack and DHCP parser: CPU per lease grew with the
	// fleet (issue 18: 2.55 → 5.1 → 10.6 ms at 1k/2k/4k devices).
	BOOTPFor [6]byte
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
		port := binary.BigEndian.Uint16(key[:2])
		if !slices.Contains(f.UDPPorts, port) {
			return false
		}
		if port == bootpClientPort && f.BOOTPFor != ([6]byte{}) {
			chaddr, ok := BOOTPClient(frame)
			return ok && chaddr == f.BOOTPFor
		}
		return true
	}
	return false
}

// bootpClientPort is where BOOTP and DHCP servers send replies.
const bootpClientPort = 68

// BOOTPClient returns the client hardware address (chaddr) of a BOOTP
// reply (op 2, Ethernet: htype 1, hlen 6) carried in an IPv4 UDP frame to
// port 68, without allocating. ok is false for anything else, or a frame
// too short to hold the fixed BOOTP header's first 34 bytes.
func BOOTPClient(frame []byte) (chaddr [6]byte, ok bool) {
	if kind, key := Classify(frame); kind != BroadcastUDP || binary.BigEndian.Uint16(key[:2]) != bootpClientPort {
		return chaddr, false
	}
	ip := frame[ethHdrLen:]
	// Classify checked the header length and that the datagram is whole;
	// Ethernet padding past the IP total length is not BOOTP.
	bootp := ip[int(ip[0]&0x0f)*4+8 : binary.BigEndian.Uint16(ip[2:])]
	// op, htype, hlen, hops, xid(4), secs(2), flags(2), ciaddr, yiaddr,
	// siaddr, giaddr (4 each), chaddr (16) at 28.
	if len(bootp) < 34 || bootp[0] != 2 || bootp[1] != 1 || bootp[2] != 6 {
		return chaddr, false
	}
	return [6]byte(bootp[28:34]), true
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
