// Package dhcp carries DHCPv4 (RFC 2131/2132) as the firmware and the
// embedded LAN see it: whole Ethernet frames, below the TCP/IP stack, since a
// client without an address has no socket to speak from. Messages are
// gopacket's layers.DHCPv4; this package frames them (Ethernet, IPv4, UDP),
// reads them back from untrusted frames, and runs the client's
// DISCOVER/OFFER/REQUEST/ACK exchange.
package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// UDP ports of DHCP.
const (
	ServerPort = 67
	ClientPort = 68
)

// ErrNotDHCP means the frame is not a UDP datagram to a DHCP port; a NIC's
// raw handler passes such frames on to the stack.
var ErrNotDHCP = errors.New("dhcp: not a DHCP frame")

// ErrMalformed means the frame claims to be DHCP but cannot be read.
var ErrMalformed = errors.New("dhcp: malformed message")

// Packet is one DHCP message with the addressing of the frame around it.
type Packet struct {
	SrcMAC, DstMAC net.HardwareAddr
	SrcIP, DstIP   netip.Addr
	SrcPort        uint16
	DstPort        uint16
	Msg            *layers.DHCPv4
}

// Encode builds the Ethernet frame for p, with IPv4 and UDP checksums.
func Encode(p Packet) ([]byte, error) {
	if p.Msg == nil {
		return nil, errors.New("dhcp: encode: no message")
	}
	if !p.SrcIP.Is4() || !p.DstIP.Is4() {
		return nil, fmt.Errorf("dhcp: encode: addresses %v → %v are not IPv4", p.SrcIP, p.DstIP)
	}
	eth := &layers.Ethernet{SrcMAC: p.SrcMAC, DstMAC: p.DstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: p.SrcIP.AsSlice(), DstIP: p.DstIP.AsSlice(),
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(p.SrcPort), DstPort: layers.UDPPort(p.DstPort)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, fmt.Errorf("dhcp: encode: %w", err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, udp, p.Msg); err != nil {
		return nil, fmt.Errorf("dhcp: encode: %w", err)
	}
	return buf.Bytes(), nil
}

// Decode reads a DHCP message from an Ethernet frame. Frames that are not
// UDP to port 67 or 68 give ErrNotDHCP; DHCP frames that cannot be read give
// an error wrapping ErrMalformed.
func Decode(frame []byte) (p Packet, err error) {
	if !maybeDHCP(frame) {
		return Packet{}, ErrNotDHCP
	}
	// gopacket's decoders are not all hardened against hostile bytes; a
	// panic in one is a malformed frame, not a dead device.
	defer func() {
		if r := recover(); r != nil {
			p, err = Packet{}, fmt.Errorf("%w: decoder panic: %v", ErrMalformed, r)
		}
	}()
	var (
		eth  layers.Ethernet
		ip   layers.IPv4
		udp  layers.UDP
		msg  layers.DHCPv4
		kind []gopacket.LayerType
	)
	parser := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &ip, &udp)
	parser.IgnoreUnsupported = true
	if err := parser.DecodeLayers(frame, &kind); err != nil || len(kind) < 3 {
		return Packet{}, ErrNotDHCP
	}
	if udp.DstPort != ServerPort && udp.DstPort != ClientPort {
		return Packet{}, ErrNotDHCP
	}
	if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
		return Packet{}, fmt.Errorf("%w: fragmented datagram", ErrMalformed)
	}
	if err := msg.DecodeFromBytes(udp.Payload, gopacket.NilDecodeFeedback); err != nil {
		return Packet{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if msg.HardwareType != layers.LinkTypeEthernet || msg.HardwareLen != 6 || len(msg.ClientHWAddr) < 6 {
		return Packet{}, fmt.Errorf("%w: hardware type %d length %d is not Ethernet", ErrMalformed, msg.HardwareType, msg.HardwareLen)
	}
	if _, ok := MessageType(&msg); !ok {
		return Packet{}, fmt.Errorf("%w: no message type option", ErrMalformed)
	}
	src, _ := netip.AddrFromSlice(ip.SrcIP)
	dst, _ := netip.AddrFromSlice(ip.DstIP)
	msg.ClientHWAddr = msg.ClientHWAddr[:6]
	return Packet{
		SrcMAC: eth.SrcMAC, DstMAC: eth.DstMAC,
		SrcIP: src.Unmap(), DstIP: dst.Unmap(),
		SrcPort: uint16(udp.SrcPort), DstPort: uint16(udp.DstPort),
		Msg: &msg,
	}, nil
}

// MessageType returns option 53.
func MessageType(m *layers.DHCPv4) (layers.DHCPMsgType, bool) {
	o, ok := Option(m, layers.DHCPOptMessageType)
	if !ok || len(o) != 1 {
		return 0, false
	}
	return layers.DHCPMsgType(o[0]), true
}

// Option returns the data of the first option with code t.
func Option(m *layers.DHCPv4, t layers.DHCPOpt) ([]byte, bool) {
	for _, o := range m.Options {
		if o.Type == t {
			return o.Data, true
		}
	}
	return nil, false
}

// OptionAddr returns an option holding one IPv4 address (50, 54, 1, …).
func OptionAddr(m *layers.DHCPv4, t layers.DHCPOpt) (netip.Addr, bool) {
	o, ok := Option(m, t)
	if !ok || len(o) < 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(o[:4])), true
}

// OptionAddrs returns an option holding a list of IPv4 addresses (3, 6).
func OptionAddrs(m *layers.DHCPv4, t layers.DHCPOpt) []netip.Addr {
	o, _ := Option(m, t)
	var out []netip.Addr
	for len(o) >= 4 {
		out = append(out, netip.AddrFrom4([4]byte(o[:4])))
		o = o[4:]
	}
	return out
}

// OptionUint32 returns a 4-byte big-endian option (51, 58, 59).
func OptionUint32(m *layers.DHCPv4, t layers.DHCPOpt) (uint32, bool) {
	o, ok := Option(m, t)
	if !ok || len(o) != 4 {
		return 0, false
	}
	return uint32(o[0])<<24 | uint32(o[1])<<16 | uint32(o[2])<<8 | uint32(o[3]), true
}

// NewMessage starts a BOOTP message of the given DHCP type.
func NewMessage(op layers.DHCPOp, t layers.DHCPMsgType, xid uint32, chaddr net.HardwareAddr) *layers.DHCPv4 {
	return &layers.DHCPv4{
		Operation:    op,
		HardwareType: layers.LinkTypeEthernet,
		HardwareLen:  6,
		Xid:          xid,
		ClientHWAddr: chaddr,
		Options:      layers.DHCPOptions{layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(t)})},
	}
}

// AddOption appends an option.
func AddOption(m *layers.DHCPv4, t layers.DHCPOpt, data []byte) {
	m.Options = append(m.Options, layers.NewDHCPOption(t, data))
}

// Uint32 is a 4-byte big-endian option value.
func Uint32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// Addrs is an option value holding IPv4 addresses.
func Addrs(as ...netip.Addr) []byte {
	var b []byte
	for _, a := range as {
		b = append(b, a.AsSlice()...)
	}
	return b
}

// maybeDHCP is a cheap look at the headers (IPv4, UDP, a DHCP port) so
// that the frames of every other conversation skip the full decode: the
// client sees each frame its device receives.
func maybeDHCP(frame []byte) bool {
	const eth = 14
	if len(frame) < eth+20+8 || frame[12] != 0x08 || frame[13] != 0x00 {
		return false
	}
	ihl := int(frame[eth]&0x0f) * 4
	if frame[eth]>>4 != 4 || ihl < 20 || frame[eth+9] != 17 || len(frame) < eth+ihl+8 {
		return false
	}
	dst := uint16(frame[eth+ihl+2])<<8 | uint16(frame[eth+ihl+3])
	return dst == ClientPort || dst == ServerPort
}
