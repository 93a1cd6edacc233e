package dhcp

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var mac = net.HardwareAddr{0x00, 0x24, 0xe8, 0x10, 0x20, 0x30}

func offerFrame(t testing.TB) []byte {
	m := NewMessage(layers.DHCPOpReply, layers.DHCPMsgTypeOffer, 0xdeadbeef, mac)
	m.YourClientIP = net.IPv4(198, 18, 1, 7).To4()
	AddOption(m, layers.DHCPOptServerID, []byte{198, 18, 0, 1})
	AddOption(m, layers.DHCPOptLeaseTime, Uint32(3600))
	AddOption(m, layers.DHCPOptSubnetMask, []byte{255, 254, 0, 0})
	AddOption(m, layers.DHCPOptRouter, []byte{198, 18, 0, 1})
	AddOption(m, layers.DHCPOptDNS, Addrs(netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.3")))
	AddOption(m, layers.DHCPOptDomainName, []byte("amtsim.example"))
	f, err := Encode(Packet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: mac,
		SrcIP: netip.MustParseAddr("198.18.0.1"), DstIP: netip.MustParseAddr("198.18.1.7"),
		SrcPort: ServerPort, DstPort: ClientPort, Msg: m})
	require.NoError(t, err)
	return f
}

func TestRoundTrip(t *testing.T) {
	p, err := Decode(offerFrame(t))
	require.NoError(t, err)
	mt, ok := MessageType(p.Msg)
	require.True(t, ok)
	assert.Equal(t, layers.DHCPMsgTypeOffer, mt)
	assert.Equal(t, uint32(0xdeadbeef), p.Msg.Xid)
	assert.Equal(t, uint16(ClientPort), p.DstPort)
	assert.Equal(t, "198.18.1.7", p.DstIP.String())
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.3")}, OptionAddrs(p.Msg, layers.DHCPOptDNS))
	p.Msg.Operation = layers.DHCPOpReply
	l, err := leaseFrom(p.Msg, time.Time{})
	require.NoError(t, err)
	assert.Equal(t, "198.18.1.7/15", l.Addr.String())
	assert.Equal(t, "amtsim.example", l.Domain)
}

func TestNotDHCPAndMalformed(t *testing.T) {
	_, err := Decode([]byte{1, 2, 3})
	assert.ErrorIs(t, err, ErrNotDHCP)
	f := offerFrame(t)
	f[14+20+3] = 99 // UDP destination port low byte: 68 → 99
	_, err = Decode(f)
	assert.ErrorIs(t, err, ErrNotDHCP)

	f = offerFrame(t)
	cut := f[:14+20+8+100] // UDP payload cut inside the BOOTP header
	_, err = Decode(cut)
	assert.True(t, errors.Is(err, ErrMalformed) || errors.Is(err, ErrNotDHCP), "%v", err)
}

func FuzzDecode(f *testing.F) {
	f.Add(offerFrame(f))
	g := offerFrame(f)
	f.Add(g[:len(g)-20])
	f.Add(g[:14+20+8+240])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, err := Decode(frame)
		if err != nil {
			if !errors.Is(err, ErrNotDHCP) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if _, ok := MessageType(p.Msg); !ok {
			t.Fatal("decoded a message without a type")
		}
		_, _ = leaseFrom(p.Msg, time.Time{})
	})
}
