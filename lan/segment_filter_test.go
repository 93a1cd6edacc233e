package lan

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/nic"
)

// Broadcasts go to open ports and to the filtered ports they pass, and to
// no other: a DHCP DISCOVER reaches the server, not the other devices; an
// ARP request reaches the one device that owns the address.
func TestSegmentDeliversBroadcastsByFilter(t *testing.T) {
	seg := NewSegment(SegmentOptions{})
	t.Cleanup(seg.Close)
	mk := func(last byte, filter bool) *nic.NIC {
		n, err := nic.New(nic.Options{MAC: net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, last}, Uplink: seg, MEFilter: filter})
		require.NoError(t, err)
		t.Cleanup(n.Close)
		n.SetRawHandler(func([]byte) bool { return true })
		return n
	}
	server := mk(1, false)
	a, b, c := mk(2, true), mk(3, true), mk(4, true)
	b.SetFilterAddrs(netip.MustParseAddr("10.0.0.3"))
	c.SetFilterAddrs(netip.MustParseAddr("10.0.0.4"))

	bc := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	frame := func(ls ...gopacket.SerializableLayer) []byte {
		buf := gopacket.NewSerializeBuffer()
		require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...))
		return buf.Bytes()
	}
	discover := frame(&layers.Ethernet{SrcMAC: a.HardwareAddr(), DstMAC: bc, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4zero.To4(), DstIP: net.IPv4bcast.To4()},
		&layers.UDP{SrcPort: 68, DstPort: 67}, gopacket.Payload(make([]byte, 240)))
	arpFor := func(ip string) []byte {
		return frame(&layers.Ethernet{SrcMAC: a.HardwareAddr(), DstMAC: bc, EthernetType: layers.EthernetTypeARP},
			&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
				Operation: layers.ARPRequest, SourceHwAddress: a.HardwareAddr(), SourceProtAddress: net.IPv4(10, 0, 0, 2).To4(),
				DstHwAddress: make([]byte, 6), DstProtAddress: netip.MustParseAddr(ip).AsSlice()})
	}

	require.NoError(t, a.WriteRaw(discover))
	require.Eventually(t, func() bool { return server.Stats.RxFrames.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, a.WriteRaw(arpFor("10.0.0.4")))
	require.Eventually(t, func() bool { return c.Stats.RxFrames.Load() == 1 && server.Stats.RxFrames.Load() == 2 }, 5*time.Second, time.Millisecond)
	assert.Zero(t, b.Stats.RxFrames.Load()+b.Stats.RxFiltered.Load(), "b was never handed a frame")
	assert.Equal(t, uint64(3), seg.Stats.Filtered.Load(), "DISCOVER skipped b and c, ARP skipped b")

	// A filter change moves the port in the index: c loses its address.
	c.SetFilterAddrs()
	require.NoError(t, a.WriteRaw(arpFor("10.0.0.4")))
	require.Eventually(t, func() bool { return server.Stats.RxFrames.Load() == 3 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, uint64(1), c.Stats.RxFrames.Load())
	assert.Equal(t, uint64(5), seg.Stats.Filtered.Load(), "the second ARP skipped b and c")

	// A DHCP server's broadcast offer reaches the device it is for (by
	// chaddr), and none of the others that listen on port 68.
	offer := frame(&layers.Ethernet{SrcMAC: server.HardwareAddr(), DstMAC: bc, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(10, 0, 0, 1).To4(), DstIP: net.IPv4bcast.To4()},
		&layers.UDP{SrcPort: 67, DstPort: 68},
		&layers.DHCPv4{Operation: layers.DHCPOpReply, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6, ClientHWAddr: b.HardwareAddr()})
	require.NoError(t, server.WriteRaw(offer))
	require.Eventually(t, func() bool { return b.Stats.RxFrames.Load() == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, uint64(1), c.Stats.RxFrames.Load(), "c saw no offer")
	assert.Zero(t, a.Stats.RxFrames.Load()+a.Stats.RxFiltered.Load(), "a was never handed one")
	assert.Equal(t, uint64(7), seg.Stats.Filtered.Load(), "the offer skipped a and c")
}
