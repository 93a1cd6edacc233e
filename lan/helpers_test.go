package lan

import (
	"net"
	"net/netip"

	"github.com/google/gopacket/layers"

	"github.com/amtsim/amtsim/dhcp"
)

type dhcpMsg struct {
	src netip.Addr
	msg *layers.DHCPv4
}

func renew(mac net.HardwareAddr, ciaddr netip.Addr) dhcpMsg {
	m := dhcp.NewMessage(layers.DHCPOpRequest, layers.DHCPMsgTypeRequest, 42, mac)
	m.ClientIP = ciaddr.AsSlice()
	return dhcpMsg{src: ciaddr, msg: m}
}
