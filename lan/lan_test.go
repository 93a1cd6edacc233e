package lan

import (
	"context"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/dhcp"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/nic"
)

// device is a NIC + host on the segment with a DHCP client on its raw path.
type device struct {
	host   *nic.Host
	client *dhcp.Client
}

func newDevice(t *testing.T, n *Network, stacks *nic.Stacks, index int) *device {
	t.Helper()
	id, err := identity.Of(1, 0, index)
	require.NoError(t, err)
	c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: n.Segment})
	require.NoError(t, err)
	h, err := stacks.Attach(c)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	cl := dhcp.NewClient(dhcp.ClientOptions{Link: c, HostName: id.HostName, Retransmit: 200 * time.Millisecond})
	c.SetRawHandler(cl.HandleFrame)
	return &device{host: h, client: cl}
}

func (d *device) lease(t *testing.T) dhcp.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := d.client.Acquire(ctx)
	require.NoError(t, err)
	var gw netip.Addr
	if len(l.Routers) > 0 {
		gw = l.Routers[0]
	}
	require.NoError(t, d.host.SetAddress(l.Addr, gw))
	return l
}

// startLAN starts an embedded LAN and a stack pool for devices, both closed
// when the test ends.
func startLAN(t *testing.T, o NetworkOptions) (*Network, *nic.Stacks) {
	t.Helper()
	n, err := StartNetwork(o)
	require.NoError(t, err)
	t.Cleanup(n.Close)
	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)
	return n, stacks
}

func query(t *testing.T, h *nic.Host, server netip.Addr, name string) *dns.Msg {
	t.Helper()
	c, err := h.DialUDP(netip.AddrPortFrom(server, 53))
	require.NoError(t, err)
	defer c.Close()
	co := &dns.Conn{Conn: c}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	require.NoError(t, co.WriteMsg(q))
	r, err := co.ReadMsg()
	require.NoError(t, err)
	require.Equal(t, q.Id, r.Id)
	return r
}

func TestEmbeddedLANDHCPAndDNS(t *testing.T) {
	n, stacks := startLAN(t, NetworkOptions{Hosts: map[string]netip.Addr{"scs-console": netip.MustParseAddr("198.18.0.7")}})

	a, b := newDevice(t, n, stacks, 0), newDevice(t, n, stacks, 1)
	la, lb := a.lease(t), b.lease(t)

	assert.Equal(t, "amtsim.example", la.Domain, "option 15")
	assert.Equal(t, []netip.Addr{n.Gateway()}, la.DNS, "option 6")
	assert.Equal(t, []netip.Addr{n.Gateway()}, la.Routers, "option 3")
	assert.Equal(t, 15, la.Addr.Bits(), "option 1")
	assert.Equal(t, time.Hour, la.Duration, "option 51")
	assert.Equal(t, n.Gateway(), la.ServerID, "option 54")
	assert.True(t, n.Subnet().Contains(la.Addr.Addr()))
	assert.NotEqual(t, la.Addr.Addr(), lb.Addr.Addr(), "two devices, two leases")
	assert.Len(t, n.Leases.Bound(), 2)

	r := query(t, a.host, la.DNS[0], "ProvisionServer."+la.Domain)
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, n.SCS().String(), r.Answer[0].(*dns.A).A.String())

	r = query(t, b.host, la.DNS[0], "provisionserver."+la.Domain)
	require.Len(t, r.Answer, 1, "names are case-insensitive")

	// DHCP clients that sent option 12 are in DNS under the domain.
	idB, err := identity.Of(1, 0, 1)
	require.NoError(t, err)
	r = query(t, a.host, la.DNS[0], idB.HostName+"."+la.Domain)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, lb.Addr.Addr().String(), r.Answer[0].(*dns.A).A.String())

	r = query(t, b.host, la.DNS[0], "ProvisionServer.elsewhere.example")
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "NXDOMAIN for names we do not hold")
	assert.Equal(t, uint64(1), n.DNS.Stats.NXDomain.Load())

	r = query(t, b.host, la.DNS[0], "scs-console."+la.Domain)
	require.Len(t, r.Answer, 1, "static host records")
	assert.Equal(t, "198.18.0.7", r.Answer[0].(*dns.A).A.String())
}

func TestDHCPLeasesSurviveServerRestart(t *testing.T) {
	n, stacks := startLAN(t, NetworkOptions{})
	d := newDevice(t, n, stacks, 5)
	first := d.lease(t)

	n.DHCP.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := d.client.Acquire(ctx)
	cancel()
	require.Error(t, err, "no server, no lease")

	n.DHCP, err = StartDHCP(DHCPOptions{
		Host: n.Server, PoolFirst: n.DHCP.pool.first, PoolLast: n.DHCP.pool.last,
		Router: n.Gateway(), DNS: []netip.Addr{n.Gateway()}, Domain: n.Domain(), Leases: n.Leases,
	})
	require.NoError(t, err)
	// A device that did not hold a lease before must not get the old one.
	other := newDevice(t, n, stacks, 6)
	lo := other.lease(t)
	assert.NotEqual(t, first.Addr, lo.Addr)
	again := d.lease(t)
	assert.Equal(t, first.Addr, again.Addr, "the restarted server remembers the lease")
}

func TestDHCPNakAndRelease(t *testing.T) {
	n, stacks := startLAN(t, NetworkOptions{Subnet: netip.MustParsePrefix("198.18.0.0/24")})
	d := newDevice(t, n, stacks, 9)
	l := d.lease(t)

	// RENEWING for an address the client does not hold: NAK.
	mac := d.host.NIC().HardwareAddr()
	got := make(chan dhcp.Packet, 4)
	d.host.NIC().SetRawHandler(func(f []byte) bool {
		if p, err := dhcp.Decode(f); err == nil && p.DstPort == dhcp.ClientPort {
			got <- p
			return true
		}
		return false
	})
	send := func(m dhcpMsg) {
		frame, err := dhcp.Encode(dhcp.Packet{SrcMAC: mac, DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			SrcIP: m.src, DstIP: netip.MustParseAddr("255.255.255.255"), SrcPort: 68, DstPort: 67, Msg: m.msg})
		require.NoError(t, err)
		require.NoError(t, d.host.NIC().WriteRaw(frame))
	}
	wrong := l.Addr.Addr().Next()
	send(renew(mac, wrong))
	select {
	case p := <-got:
		mt, _ := dhcp.MessageType(p.Msg)
		assert.Equal(t, layers.DHCPMsgTypeNak, mt)
	case <-time.After(5 * time.Second):
		t.Fatal("no NAK")
	}
	// RELEASE frees the lease.
	rel := dhcp.NewMessage(layers.DHCPOpRequest, layers.DHCPMsgTypeRelease, 99, mac)
	rel.ClientIP = l.Addr.Addr().AsSlice()
	id, err := identity.Of(1, 0, 9)
	require.NoError(t, err)
	require.Len(t, query(t, d.host, n.Gateway(), id.HostName+"."+n.Domain()).Answer, 1, "registered at bind")
	send(dhcpMsg{src: l.Addr.Addr(), msg: rel})
	require.Eventually(t, func() bool { _, ok := n.Leases.Lookup(mac); return !ok }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, dns.RcodeNameError, query(t, d.host, n.Gateway(), id.HostName+"."+n.Domain()).Rcode, "unregistered at release")
}

// TestListenerAcceptsOverTheWire: a host dials a device's 16992 across the
// segment (ARP, TCP handshake, data both ways), and a closed stack leaves no
// accept goroutine behind.
func TestListenerAcceptsOverTheWire(t *testing.T) {
	n, err := StartNetwork(NetworkOptions{})
	require.NoError(t, err)
	defer n.Close()
	g0 := runtime.NumGoroutine()
	stacks := nic.NewStacks(nic.StackOptions{})
	d := newDevice(t, n, stacks, 3)
	l := d.lease(t)
	ln, err := d.host.Listen(16992, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write(append([]byte("echo:"), buf...))
		}
	})
	require.NoError(t, err)

	peer, err := n.AddHost(net.HardwareAddr{0x02, 0xa0, 0, 0, 0, 9}, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 3 {
		c, err := peer.DialTCP(ctx, netip.AddrPortFrom(l.Addr.Addr(), 16992))
		require.NoError(t, err, "dial %d", i)
		_, err = c.Write([]byte("hello"))
		require.NoError(t, err)
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		assert.Equal(t, "echo:hello", string(got))
		c.Close()
	}
	assert.Equal(t, uint64(3), ln.Accepted.Load())

	// Nothing listens on 16993: the connection is refused, not hung.
	_, err = peer.DialTCP(ctx, netip.AddrPortFrom(l.Addr.Addr(), 16993))
	assert.Error(t, err)

	stacks.Close()
	// Eventually runs the condition on a goroutine of its own: hence g0+1.
	if !assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= g0+1 }, 5*time.Second, 20*time.Millisecond,
		"closing the stacks leaves no goroutine behind") {
		buf := make([]byte, 1<<20)
		t.Logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
	}
}
