package nic

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var bcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func arpRequest(t testing.TB, target string) []byte {
	src := net.HardwareAddr{0x02, 0, 0, 0, 0, 9}
	buf := gopacket.NewSerializeBuffer()
	require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
		&layers.Ethernet{SrcMAC: src, DstMAC: bcast, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: src, SourceProtAddress: net.IPv4(10, 0, 0, 9).To4(),
			DstHwAddress: make([]byte, 6), DstProtAddress: netip.MustParseAddr(target).AsSlice()}))
	return buf.Bytes()
}

func udpBroadcast(t testing.TB, port uint16) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4zero.To4(), DstIP: net.IPv4bcast.To4()}
	udp := &layers.UDP{SrcPort: 67, DstPort: layers.UDPPort(port)}
	require.NoError(t, udp.SetNetworkLayerForChecksum(ip))
	buf := gopacket.NewSerializeBuffer()
	require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, DstMAC: bcast, EthernetType: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload([]byte("x"))))
	return buf.Bytes()
}

// bootpReply is a DHCP server's broadcast reply (an OFFER) for chaddr.
func bootpReply(t testing.TB, chaddr net.HardwareAddr) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(10, 0, 0, 1).To4(), DstIP: net.IPv4bcast.To4()}
	udp := &layers.UDP{SrcPort: 67, DstPort: 68}
	require.NoError(t, udp.SetNetworkLayerForChecksum(ip))
	buf := gopacket.NewSerializeBuffer()
	require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, DstMAC: bcast, EthernetType: layers.EthernetTypeIPv4},
		ip, udp, &layers.DHCPv4{Operation: layers.DHCPOpReply, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6,
			Xid: 7, ClientHWAddr: chaddr, YourClientIP: net.IPv4(10, 0, 0, 5).To4(),
			Options: layers.DHCPOptions{layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(layers.DHCPMsgTypeOffer)})}}))
	return buf.Bytes()
}

// A filter with BOOTPFor takes the DHCP replies for its MAC only, and
// reads chaddr from the frame exactly where gopacket does.
func TestBroadcastFilterBOOTPFor(t *testing.T) {
	mine, other := net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, 1}, net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, 2}
	f := &BroadcastFilter{UDPPorts: []uint16{68}, BOOTPFor: [6]byte(mine)}
	assert.True(t, f.Match(bootpReply(t, mine)), "an offer for this NIC")
	assert.False(t, f.Match(bootpReply(t, other)), "an offer for another device")
	assert.False(t, f.Match(udpBroadcast(t, 68)), "a datagram to 68 that is no BOOTP reply")
	chaddr, ok := BOOTPClient(bootpReply(t, other))
	assert.True(t, ok)
	assert.Equal(t, [6]byte(other), chaddr)
	// Without BOOTPFor every datagram to 68 passes, as before.
	assert.True(t, (&BroadcastFilter{UDPPorts: []uint16{68}}).Match(bootpReply(t, other)))

	// Cut anywhere before chaddr ends, the reply is no longer one.
	full := bootpReply(t, mine)
	for n := len(full) - 1; n >= 0; n-- {
		cut := slices.Clone(full[:n])
		if n >= 18 { // keep the IP total length honest for the cut
			binary.BigEndian.PutUint16(cut[16:], uint16(n-14))
		}
		if _, ok := BOOTPClient(cut); ok && n < 14+20+8+34 {
			t.Fatalf("a frame of %d bytes read as a BOOTP reply", n)
		}
	}
}

func TestBroadcastFilterMatch(t *testing.T) {
	f := &BroadcastFilter{ARPFor: []netip.Addr{netip.MustParseAddr("10.0.0.5")}, UDPPorts: []uint16{68}}
	assert.True(t, f.Match(arpRequest(t, "10.0.0.5")), "ARP for the NIC's address")
	assert.False(t, f.Match(arpRequest(t, "10.0.0.6")), "ARP for another host")
	assert.True(t, f.Match(udpBroadcast(t, 68)), "a DHCP server's broadcast reply")
	assert.False(t, f.Match(udpBroadcast(t, 67)), "another client's DISCOVER")
	assert.False(t, f.Match(udpBroadcast(t, 137)), "NetBIOS chatter")
	assert.False(t, f.Match([]byte{0xff, 0xff}), "a runt")
}

// A NIC with the ME filter hands its handlers only the broadcasts it acts
// on, and learns its address from its Host.
func TestNICMEFilter(t *testing.T) {
	w := &wire{}
	n, err := New(Options{MAC: net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, 1}, Uplink: w, MEFilter: true})
	require.NoError(t, err)
	var seen int
	n.SetRawHandler(func([]byte) bool { seen++; return true })

	n.DeliverFrame(arpRequest(t, "10.0.0.5"))
	assert.Zero(t, seen, "no address yet: no ARP passes")
	n.DeliverFrame(bootpReply(t, n.HardwareAddr()))
	assert.Equal(t, 1, seen, "DHCP replies pass before an address exists")
	n.DeliverFrame(bootpReply(t, net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, 2}))
	assert.Equal(t, 1, seen, "not another device's")

	stacks := NewStacks(StackOptions{})
	defer stacks.Close()
	h, err := stacks.Attach(n)
	require.NoError(t, err)
	require.NoError(t, h.SetAddress(netip.MustParsePrefix("10.0.0.5/24"), netip.Addr{}))
	n.DeliverFrame(arpRequest(t, "10.0.0.5"))
	assert.Equal(t, 2, seen)
	n.DeliverFrame(udpBroadcast(t, 67))
	assert.Equal(t, 2, seen)
	assert.Equal(t, uint64(3), n.Stats.RxFiltered.Load())

	h.ClearAddress()
	n.DeliverFrame(arpRequest(t, "10.0.0.5"))
	assert.Equal(t, 2, seen, "a lost lease closes the ARP filter")
}

func FuzzClassify(f *testing.F) {
	f.Add(arpRequest(f, "10.0.0.5"))
	f.Add(udpBroadcast(f, 68))
	f.Add(bootpReply(f, net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, 1}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		kind, key := Classify(frame)
		// Whatever Classify reads, gopacket reads the same.
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		switch kind {
		case BroadcastARP:
			a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP)
			if !ok || a.Operation != layers.ARPRequest || [4]byte(a.DstProtAddress) != key {
				t.Fatalf("ARP target %v, gopacket %+v", key, p.Layer(layers.LayerTypeARP))
			}
		case BroadcastUDP:
			u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if ok && uint16(u.DstPort) != binary.BigEndian.Uint16(key[:2]) {
				t.Fatalf("UDP port %v, gopacket %d", key, u.DstPort)
			}
		}
		// A chaddr read is one gopacket reads too, from a reply.
		if chaddr, ok := BOOTPClient(frame); ok {
			d, isDHCP := p.Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4)
			if isDHCP && (d.Operation != layers.DHCPOpReply || [6]byte(d.ClientHWAddr) != chaddr) {
				t.Fatalf("chaddr %x, gopacket %+v", chaddr, d)
			}
		}
	})
}
