package lan

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/amtsim/amtsim/nic"
)

// NetworkOptions configure the embedded LAN. The zero value is the default
// network of `make run`.
type NetworkOptions struct {
	// Subnet of the segment; default 198.18.0.0/15, the RFC 2544
	// benchmarking range: room for 131,000 devices, and never a real network.
	Subnet netip.Prefix
	// Domain handed out in DHCP option 15; default "amtsim.example".
	Domain string
	// SCS is the address ProvisionServer.<Domain> resolves to; default the
	// subnet's third address (.2). Invalid (netip.Addr{} with NoSCSRecord)
	// leaves the name out.
	SCS         netip.Addr
	NoSCSRecord bool
	// Hosts are extra A records: name (without the domain) → address.
	Hosts     map[string]netip.Addr
	LeaseTime time.Duration
	// Stacks carries the server hosts; default a pool of its own.
	Stacks  *nic.Stacks
	Segment SegmentOptions
	// Capture, when set, records the server host's frames.
	Capture *nic.Capture
}

// Network is a running embedded LAN: the segment and one infrastructure host
// (router address, DHCP and DNS, like a small dnsmasq box) at the subnet's
// first address.
type Network struct {
	Segment *Segment
	Server  *nic.Host
	DHCP    *DHCPServer
	DNS     *DNSServer
	Leases  *Leases

	subnet    netip.Prefix
	domain    string
	scs       netip.Addr
	stacks    *nic.Stacks
	ownStacks bool

	mu    sync.Mutex
	infra []*nic.Host // hosts that know every leased device's MAC
}

// The infrastructure hosts' MACs (locally administered, so never a Dell
// device's): the DHCP/DNS server, and the host at the ProvisionServer
// address (the embedded SCS, or `amtsim run`'s Hello listener).
var (
	ServerMAC  = net.HardwareAddr{0x02, 0xa0, 0x00, 0x00, 0x00, 0x01}
	SCSHostMAC = net.HardwareAddr{0x02, 0xa0, 0x00, 0x00, 0x00, 0x02}
)

// AddSCSHost adds the host at the ProvisionServer address.
func (n *Network) AddSCSHost() (*nic.Host, error) {
	return n.AddHost(SCSHostMAC, netip.PrefixFrom(n.scs, n.subnet.Bits()), nil)
}

// StartNetwork builds and starts the embedded LAN.
func StartNetwork(o NetworkOptions) (*Network, error) {
	if !o.Subnet.IsValid() {
		o.Subnet = netip.MustParsePrefix("198.18.0.0/15")
	}
	o.Subnet = o.Subnet.Masked()
	if !o.Subnet.Addr().Is4() || o.Subnet.Bits() > 29 {
		return nil, fmt.Errorf("lan: subnet %s must be IPv4 with room for hosts", o.Subnet)
	}
	if o.Domain == "" {
		o.Domain = "amtsim.example"
	}
	gw := o.Subnet.Addr().Next()
	if !o.SCS.IsValid() && !o.NoSCSRecord {
		o.SCS = gw.Next()
	}
	n := &Network{subnet: o.Subnet, domain: o.Domain, scs: o.SCS, stacks: o.Stacks}
	if n.stacks == nil {
		n.stacks, n.ownStacks = nic.NewStacks(nic.StackOptions{}), true
	}
	n.Segment = NewSegment(o.Segment)
	n.Leases = NewLeases()
	var err error
	if n.Server, err = n.AddHost(ServerMAC, netip.PrefixFrom(gw, o.Subnet.Bits()), o.Capture); err != nil {
		n.Close()
		return nil, err
	}
	last := lastAddr(o.Subnet)
	// Leave the first 256 addresses for infrastructure (gateway, SCS, …):
	// devices lease from x.y.1.1 on.
	first := o.Subnet.Addr()
	for range 257 {
		first = first.Next()
	}
	if !o.Subnet.Contains(first) || !first.Less(last) {
		first = gw.Next().Next()
	}
	recs := map[string][]netip.Addr{}
	for name, a := range o.Hosts {
		recs[name+"."+o.Domain] = []netip.Addr{a}
	}
	if o.SCS.IsValid() {
		recs["ProvisionServer."+o.Domain] = []netip.Addr{o.SCS}
	}
	if n.DNS, err = StartDNS(DNSOptions{Host: n.Server, Records: recs}); err != nil {
		n.Close()
		return nil, err
	}
	n.DHCP, err = StartDHCP(DHCPOptions{
		Host: n.Server, PoolFirst: first, PoolLast: last,
		Router: gw, DNS: []netip.Addr{gw}, Domain: o.Domain,
		LeaseTime: o.LeaseTime, Leases: n.Leases,
		OnBind:    n.registerLease,
		OnRelease: n.unregisterLease,
	})
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// registerLease gives a DHCP client that sent a host name (option 12) an A
// record under the domain, as dnsmasq does.
// It also pins the device's MAC in the ARP tables of the infrastructure
// hosts (see nic.Host.SetNeighbor).
func (n *Network) registerLease(l Lease) {
	if l.HostName != "" {
		n.DNS.Set(l.HostName+"."+n.domain, l.Addr)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, h := range n.infra {
		_ = h.SetNeighbor(l.Addr, l.MAC) // a closed host refuses; nothing to do
	}
}

func (n *Network) unregisterLease(l Lease) {
	if l.HostName != "" {
		n.DNS.Delete(l.HostName + "." + n.domain)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, h := range n.infra {
		h.RemoveNeighbor(l.Addr)
	}
}

// Subnet is the segment's subnet.
func (n *Network) Subnet() netip.Prefix { return n.subnet }

// Gateway is the infrastructure host's address (router, DHCP, DNS).
func (n *Network) Gateway() netip.Addr { return n.subnet.Addr().Next() }

// Domain is the DHCP option-15 domain.
func (n *Network) Domain() string { return n.domain }

// SCS is the address ProvisionServer.<domain> resolves to.
func (n *Network) SCS() netip.Addr { return n.scs }

// Stacks is the pool the network's own hosts live on.
func (n *Network) Stacks() *nic.Stacks { return n.stacks }

// AddHost attaches a host with a static address to the segment (an SCS, a
// Hello listener, a test peer).
func (n *Network) AddHost(mac net.HardwareAddr, addr netip.Prefix, capture *nic.Capture) (*nic.Host, error) {
	c, err := nic.New(nic.Options{MAC: mac, Uplink: n.Segment, Capture: capture})
	if err != nil {
		return nil, err
	}
	h, err := n.stacks.Attach(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	if err := h.SetAddress(addr, netip.Addr{}); err != nil {
		h.Close()
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.infra = append(n.infra, h)
	if n.Leases != nil {
		for _, l := range n.Leases.Bound() {
			_ = h.SetNeighbor(l.Addr, l.MAC)
		}
	}
	return h, nil
}

// Close stops the servers and the segment. Leases stay in n.Leases.
func (n *Network) Close() {
	if n.DNS != nil {
		_ = n.DNS.Stop()
	}
	if n.DHCP != nil {
		n.DHCP.Stop()
	}
	if n.Server != nil {
		n.Server.Close()
	}
	if n.Segment != nil {
		n.Segment.Close()
	}
	if n.ownStacks {
		n.stacks.Close()
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= 1<<(32-p.Bits()) - 1
	v-- // not the broadcast address
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
