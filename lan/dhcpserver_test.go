package lan

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/amtsim/amtsim/dhcp"
)

// FuzzDHCPServer feeds hostile frames to the DHCP server's raw handler: it
// must count or ignore them, never crash, and keep its lease table sane.
func FuzzDHCPServer(f *testing.F) {
	mac := net.HardwareAddr{0x00, 0x21, 0x9b, 1, 2, 3}
	for _, t := range []layers.DHCPMsgType{layers.DHCPMsgTypeDiscover, layers.DHCPMsgTypeRequest, layers.DHCPMsgTypeRelease, layers.DHCPMsgTypeDecline, layers.DHCPMsgTypeInform} {
		m := dhcp.NewMessage(layers.DHCPOpRequest, t, 7, mac)
		dhcp.AddOption(m, layers.DHCPOptRequestIP, []byte{198, 18, 1, 9})
		dhcp.AddOption(m, layers.DHCPOptServerID, []byte{198, 18, 0, 1})
		frame, err := dhcp.Encode(dhcp.Packet{SrcMAC: mac, DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			SrcIP: netip.IPv4Unspecified(), DstIP: netip.MustParseAddr("255.255.255.255"), SrcPort: 68, DstPort: 67, Msg: m})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add([]byte{})

	n, err := StartNetwork(NetworkOptions{Subnet: netip.MustParsePrefix("198.18.0.0/22")})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(n.Close)
	srv := n.DHCP
	f.Fuzz(func(t *testing.T, frame []byte) {
		srv.handleFrame(frame)
		for _, l := range n.Leases.Bound() {
			if !srv.pool.contains(l.Addr) {
				t.Fatalf("lease %s outside the pool", l.Addr)
			}
		}
	})
}
