package lan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/amtsim/amtsim/dhcp"
	"github.com/amtsim/amtsim/nic"
)

// DHCPOptions configure a DHCPServer.
type DHCPOptions struct {
	// Host is the server's host on the segment; its address is the server
	// identifier (option 54). The server takes its NIC's raw frames for UDP
	// port 67, as dnsmasq uses a raw socket to reach clients that have no
	// address yet; everything else goes on to the host's stack.
	Host *nic.Host
	// PoolFirst and PoolLast bound the addresses leased (inclusive).
	PoolFirst, PoolLast netip.Addr
	Router              netip.Addr   // option 3; omitted when zero
	DNS                 []netip.Addr // option 6
	Domain              string       // option 15
	LeaseTime           time.Duration
	// Leases is the lease table; pass the same table to a restarted server
	// to keep its leases. Default: a new table.
	Leases *Leases
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnBind and OnRelease, when set, see every lease bound (or renewed)
	// and released; the embedded LAN registers client host names in DNS
	// with them, as dnsmasq does.
	OnBind    func(Lease)
	OnRelease func(Lease)
}

// DHCPStats count the server's work.
type DHCPStats struct {
	Discover, Request, Release, Decline, Inform atomic.Uint64
	Offer, Ack, Nak                             atomic.Uint64
	Malformed, Ignored, Exhausted               atomic.Uint64
}

// DHCPServer is an RFC 2131 server for one segment.
type DHCPServer struct {
	o       DHCPOptions
	id      netip.Addr
	mask    net.IPMask
	pool    pool
	stopped atomic.Bool
	Stats   DHCPStats
}

// offerHold is how long an offered address is kept for the client that was
// offered it.
const offerHold = 60 * time.Second

// StartDHCP starts serving on o.Host's NIC.
func StartDHCP(o DHCPOptions) (*DHCPServer, error) {
	if o.Host == nil {
		return nil, errors.New("lan: dhcp: no host")
	}
	pfx := o.Host.Prefix()
	if !pfx.IsValid() {
		return nil, errors.New("lan: dhcp: the server host has no address")
	}
	p := pool{first: o.PoolFirst, last: o.PoolLast}
	if !pfx.Contains(p.first) || !pfx.Contains(p.last) || p.last.Less(p.first) {
		return nil, fmt.Errorf("lan: dhcp: pool %s-%s is not inside %s", p.first, p.last, pfx.Masked())
	}
	if o.LeaseTime <= 0 {
		o.LeaseTime = time.Hour
	}
	if o.Leases == nil {
		o.Leases = NewLeases()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &DHCPServer{o: o, id: pfx.Addr(), mask: net.CIDRMask(pfx.Bits(), 32), pool: p}
	o.Host.NIC().SetRawHandler(s.handleFrame)
	return s, nil
}

// Leases returns the server's lease table.
func (s *DHCPServer) Leases() *Leases { return s.o.Leases }

// Resume serves again after Stop, from the same lease table, as dnsmasq
// restarted over its lease file does.
func (s *DHCPServer) Resume() {
	if s.stopped.Swap(false) {
		s.o.Host.NIC().SetRawHandler(s.handleFrame)
	}
}

// Stop stops serving; the lease table stays with its owner.
func (s *DHCPServer) Stop() {
	if !s.stopped.Swap(true) {
		s.o.Host.NIC().SetRawHandler(nil)
	}
}

func (s *DHCPServer) handleFrame(frame []byte) bool {
	p, err := dhcp.Decode(frame)
	if errors.Is(err, dhcp.ErrNotDHCP) {
		return false
	}
	if err != nil {
		s.Stats.Malformed.Add(1)
		return true
	}
	if p.DstPort != dhcp.ServerPort {
		return false
	}
	if p.Msg.Operation != layers.DHCPOpRequest || len(p.Msg.RelayAgentIP) == 4 && !p.Msg.RelayAgentIP.IsUnspecified() {
		s.Stats.Ignored.Add(1) // replies, and relayed requests: there are no relays here
		return true
	}
	s.serve(p.Msg)
	return true
}

func (s *DHCPServer) serve(m *layers.DHCPv4) {
	t, _ := dhcp.MessageType(m)
	now := s.o.Now()
	mac := m.ClientHWAddr
	ciaddr := addr4(m.ClientIP)
	requested, hasRequested := dhcp.OptionAddr(m, layers.DHCPOptRequestIP)
	host := ""
	if h, ok := dhcp.Option(m, layers.DHCPOptHostname); ok {
		host = strings.TrimRight(string(h), "\x00")
	}

	switch t {
	case layers.DHCPMsgTypeDiscover:
		s.Stats.Discover.Add(1)
		a, err := s.o.Leases.reserve(s.pool, mac, requested, now, offerHold)
		if err != nil {
			s.Stats.Exhausted.Add(1)
			return
		}
		s.reply(m, layers.DHCPMsgTypeOffer, a)

	case layers.DHCPMsgTypeRequest:
		s.Stats.Request.Add(1)
		sid, hasSID := dhcp.OptionAddr(m, layers.DHCPOptServerID)
		switch {
		case hasSID: // SELECTING
			if sid != s.id {
				// The client took another server's offer: free ours.
				if l, ok := s.o.Leases.Lookup(mac); ok && !l.Bound {
					s.o.Leases.release(mac, l.Addr)
				}
				return
			}
			if !hasRequested {
				s.nak(m)
				return
			}
			s.ackOrNak(m, mac, requested, host, now)
		case ciaddr.IsValid() && !ciaddr.IsUnspecified(): // RENEWING / REBINDING
			s.ackOrNak(m, mac, ciaddr, host, now)
		case hasRequested: // INIT-REBOOT
			if !s.pool.contains(requested) {
				s.nak(m)
				return
			}
			if _, ok := s.o.Leases.Lookup(mac); !ok {
				return // no record of this client: stay silent (RFC 2131 §4.3.2)
			}
			s.ackOrNak(m, mac, requested, host, now)
		default:
			s.Stats.Ignored.Add(1)
		}

	case layers.DHCPMsgTypeRelease:
		s.Stats.Release.Add(1)
		if l, ok := s.o.Leases.Lookup(mac); ok && s.o.Leases.release(mac, ciaddr) && s.o.OnRelease != nil {
			s.o.OnRelease(l)
		}

	case layers.DHCPMsgTypeDecline:
		s.Stats.Decline.Add(1)
		if hasRequested {
			s.o.Leases.decline(mac, requested, now.Add(10*time.Minute))
		}

	case layers.DHCPMsgTypeInform:
		s.Stats.Inform.Add(1)
		if ciaddr.IsValid() && !ciaddr.IsUnspecified() {
			s.reply(m, layers.DHCPMsgTypeAck, netip.Addr{})
		}

	default:
		s.Stats.Ignored.Add(1)
	}
}

func (s *DHCPServer) ackOrNak(m *layers.DHCPv4, mac net.HardwareAddr, a netip.Addr, host string, now time.Time) {
	if !s.o.Leases.bind(mac, a, host, now, s.o.LeaseTime) {
		s.nak(m)
		return
	}
	if s.o.OnBind != nil {
		if l, ok := s.o.Leases.Lookup(mac); ok {
			s.o.OnBind(l)
		}
	}
	s.reply(m, layers.DHCPMsgTypeAck, a)
}

func (s *DHCPServer) nak(m *layers.DHCPv4) {
	r := dhcp.NewMessage(layers.DHCPOpReply, layers.DHCPMsgTypeNak, m.Xid, m.ClientHWAddr)
	r.Flags = m.Flags
	dhcp.AddOption(r, layers.DHCPOptServerID, s.id.AsSlice())
	s.Stats.Nak.Add(1)
	// A NAK is always broadcast: the client may no longer own its address.
	s.send(r, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, netip.AddrFrom4([4]byte{255, 255, 255, 255}))
}

// reply sends an OFFER or ACK for address a (zero for an INFORM answer),
// addressed as RFC 2131 §4.1 says.
func (s *DHCPServer) reply(m *layers.DHCPv4, t layers.DHCPMsgType, a netip.Addr) {
	r := dhcp.NewMessage(layers.DHCPOpReply, t, m.Xid, m.ClientHWAddr)
	r.Flags = m.Flags
	r.ClientIP = m.ClientIP
	if a.IsValid() {
		r.YourClientIP = a.AsSlice()
	}
	dhcp.AddOption(r, layers.DHCPOptServerID, s.id.AsSlice())
	if a.IsValid() {
		secs := uint32(s.o.LeaseTime / time.Second)
		dhcp.AddOption(r, layers.DHCPOptLeaseTime, dhcp.Uint32(secs))
		dhcp.AddOption(r, layers.DHCPOptT1, dhcp.Uint32(secs/2))
		dhcp.AddOption(r, layers.DHCPOptT2, dhcp.Uint32(secs/8*7))
	}
	dhcp.AddOption(r, layers.DHCPOptSubnetMask, s.mask)
	if s.o.Router.IsValid() {
		dhcp.AddOption(r, layers.DHCPOptRouter, s.o.Router.AsSlice())
	}
	if len(s.o.DNS) > 0 {
		dhcp.AddOption(r, layers.DHCPOptDNS, dhcp.Addrs(s.o.DNS...))
	}
	if s.o.Domain != "" {
		dhcp.AddOption(r, layers.DHCPOptDomainName, []byte(s.o.Domain))
	}
	switch t {
	case layers.DHCPMsgTypeOffer:
		s.Stats.Offer.Add(1)
	case layers.DHCPMsgTypeAck:
		s.Stats.Ack.Add(1)
	}
	ciaddr := addr4(m.ClientIP)
	switch {
	case ciaddr.IsValid() && !ciaddr.IsUnspecified():
		s.send(r, m.ClientHWAddr, ciaddr)
	case m.Flags&0x8000 != 0:
		s.send(r, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, netip.AddrFrom4([4]byte{255, 255, 255, 255}))
	default:
		s.send(r, m.ClientHWAddr, a)
	}
}

func (s *DHCPServer) send(r *layers.DHCPv4, dstMAC net.HardwareAddr, dst netip.Addr) {
	n := s.o.Host.NIC()
	frame, err := dhcp.Encode(dhcp.Packet{
		SrcMAC: n.HardwareAddr(), DstMAC: dstMAC,
		SrcIP: s.id, DstIP: dst,
		SrcPort: dhcp.ServerPort, DstPort: dhcp.ClientPort, Msg: r,
	})
	if err != nil {
		s.Stats.Malformed.Add(1)
		return
	}
	_ = n.WriteRaw(frame)
}

func addr4(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return netip.Addr{}
	}
	return a
}
