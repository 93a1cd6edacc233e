package dhcp_test

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/dhcp"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/nic"
)

// recorder keeps the client's callbacks in order.
type recorder struct {
	mu     sync.Mutex
	events []string
	bound  chan dhcp.Lease
	lost   chan error
	on     map[string]func()
}

func newRecorder() *recorder {
	return &recorder{bound: make(chan dhcp.Lease, 16), lost: make(chan error, 16), on: map[string]func(){}}
}

func (r *recorder) options(o dhcp.ClientOptions) dhcp.ClientOptions {
	o.OnEvent = func(ev event.Name, _ ...any) {
		name := string(ev)
		r.mu.Lock()
		r.events = append(r.events, name)
		f := r.on[name]
		delete(r.on, name)
		r.mu.Unlock()
		if f != nil {
			f()
		}
	}
	o.OnBound = func(l dhcp.Lease, renewed bool) {
		r.mu.Lock()
		if renewed {
			r.events = append(r.events, "renewed")
		} else {
			r.events = append(r.events, "bound")
		}
		r.mu.Unlock()
		r.bound <- l
	}
	o.OnLost = func(err error) {
		r.mu.Lock()
		r.events = append(r.events, "lost")
		r.mu.Unlock()
		r.lost <- err
	}
	return o
}

func (r *recorder) when(event string, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on[event] = f
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func (r *recorder) waitBound(t *testing.T) dhcp.Lease {
	t.Helper()
	select {
	case l := <-r.bound:
		return l
	case <-time.After(20 * time.Second):
		t.Fatalf("no lease; events %v", r.seen())
	}
	return dhcp.Lease{}
}

// client puts a DHCP client on a fresh NIC on the network's segment.
func client(t *testing.T, n *lan.Network, stacks *nic.Stacks, o dhcp.ClientOptions, capture *nic.Capture) (*dhcp.Client, *nic.Host) {
	t.Helper()
	id, err := identity.Of(11, 0, 1)
	require.NoError(t, err)
	c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: n.Segment, Capture: capture})
	require.NoError(t, err)
	h, err := stacks.Attach(c)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	o.Link, o.HostName = c, id.HostName
	cl := dhcp.NewClient(o)
	c.SetRawHandler(cl.HandleFrame)
	t.Cleanup(cl.Stop)
	return cl, h
}

func startLAN(t *testing.T, lease time.Duration) (*lan.Network, *nic.Stacks) {
	t.Helper()
	n, err := lan.StartNetwork(lan.NetworkOptions{LeaseTime: lease})
	require.NoError(t, err)
	t.Cleanup(n.Close)
	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)
	return n, stacks
}

func restartDHCP(t *testing.T, n *lan.Network, lease time.Duration) {
	t.Helper()
	var err error
	n.DHCP, err = lan.StartDHCP(lan.DHCPOptions{
		Host: n.Server, PoolFirst: netip.MustParseAddr("198.18.1.1"), PoolLast: netip.MustParseAddr("198.19.255.254"),
		Router: n.Gateway(), DNS: []netip.Addr{n.Gateway()}, Domain: n.Domain(), Leases: n.Leases, LeaseTime: lease,
	})
	require.NoError(t, err)
}

// At T1 the client renews by unicast to the server that granted the lease,
// keeps its address, and is bound again.
func TestRenewAtT1IsUnicast(t *testing.T) {
	const lease = 1000 * time.Second // T1 500 s, T2 875 s
	n, stacks := startLAN(t, lease)
	var pcap bytes.Buffer
	capture, err := nic.NewCapture(&pcap)
	require.NoError(t, err)
	rec := newRecorder()
	cl, h := client(t, n, stacks, rec.options(dhcp.ClientOptions{Clock: clock.Scaled(1000)}), capture)
	cl.Start()
	first := rec.waitBound(t)
	require.NoError(t, h.SetAddress(first.Addr, first.Gateway()))
	assert.Equal(t, 500*time.Second, first.Renew)
	assert.Equal(t, 875*time.Second, first.Rebind)

	again := rec.waitBound(t)
	assert.Equal(t, first.Addr, again.Addr, "a renewal keeps the address")
	assert.Equal(t, []string{"dhcp.discover", "dhcp.offer", "dhcp.request", "bound", "dhcp.renewing", "renewed"}, rec.seen()[:6])
	assert.Equal(t, dhcp.StateBound, cl.State())

	require.NoError(t, capture.Flush())
	r, err := pcapgo.NewReader(&pcap)
	require.NoError(t, err)
	var renewals int
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		d, ok := p.Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4)
		if !ok || d.Operation != layers.DHCPOpRequest || d.ClientIP.IsUnspecified() {
			continue
		}
		renewals++
		eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		assert.Equal(t, lan.ServerMAC, eth.DstMAC, "renewal goes to the server's MAC")
		assert.Equal(t, n.Gateway().String(), ip.DstIP.String(), "… and its address")
		assert.Equal(t, first.Addr.Addr().String(), ip.SrcIP.String(), "from the leased address")
	}
	assert.GreaterOrEqual(t, renewals, 1)
}

// With the server gone the client renews, rebinds at T2, loses the lease at
// expiry and starts over; when a server answers the rebinding broadcast the
// lease carries on.
func TestRebindAndLeaseLoss(t *testing.T) {
	const lease = 2000 * time.Second // T1 1000 s, T2 1750 s
	n, stacks := startLAN(t, lease)
	rec := newRecorder()
	cl, _ := client(t, n, stacks, rec.options(dhcp.ClientOptions{Clock: clock.Scaled(1000)}), nil)
	cl.Start()
	first := rec.waitBound(t)

	// No answer to renewals; a server back in time answers the rebinding.
	n.DHCP.Stop()
	rec.when("dhcp.rebinding", func() { restartDHCP(t, n, lease) })
	again := rec.waitBound(t)
	assert.Equal(t, first.Addr, again.Addr)
	seen := rec.seen()
	assert.Contains(t, seen, "dhcp.renewing")
	assert.Contains(t, seen, "dhcp.rebinding")
	assert.NotContains(t, seen, "lost")

	// No server at all now: the lease runs out.
	n.DHCP.Stop()
	select {
	case err := <-rec.lost:
		assert.ErrorIs(t, err, dhcp.ErrLeaseExpired)
	case <-time.After(20 * time.Second):
		t.Fatalf("lease never lost; events %v", rec.seen())
	}
	_, bound := cl.Lease()
	assert.False(t, bound)
	assert.Equal(t, dhcp.StateSelecting, cl.State(), "a client that lost its lease starts over")

	restartDHCP(t, n, lease)
	rec.waitBound(t)
	assert.Equal(t, uint64(1), cl.Stats.Lost.Load())
}

// A rogue host answers DISCOVERs with broken OFFERs: they are counted and
// ignored, and the client takes the real server's offer when it comes.
func TestMalformedOffersAreCountedAndIgnored(t *testing.T) {
	n, stacks := startLAN(t, 0)
	n.DHCP.Stop()
	rogueMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x66}
	rogue, err := nic.New(nic.Options{MAC: rogueMAC, Uplink: n.Segment})
	require.NoError(t, err)
	t.Cleanup(rogue.Close)
	rogue.SetRawHandler(func(frame []byte) bool {
		p, err := dhcp.Decode(frame)
		if err != nil || p.DstPort != dhcp.ServerPort {
			return false
		}
		// An OFFER with no server identifier, and a frame cut short.
		m := dhcp.NewMessage(layers.DHCPOpReply, layers.DHCPMsgTypeOffer, p.Msg.Xid, p.Msg.ClientHWAddr)
		m.YourClientIP = net.IPv4(198, 18, 9, 9).To4()
		f, err := dhcp.Encode(dhcp.Packet{
			SrcMAC: rogueMAC, DstMAC: p.Msg.ClientHWAddr, SrcIP: netip.MustParseAddr("198.18.0.66"),
			DstIP: netip.MustParseAddr("198.18.9.9"), SrcPort: dhcp.ServerPort, DstPort: dhcp.ClientPort, Msg: m,
		})
		if err == nil {
			_ = rogue.WriteRaw(f)
			_ = rogue.WriteRaw(f[:14+20+8+40])
		}
		return true
	})

	rec := newRecorder()
	cl, _ := client(t, n, stacks, rec.options(dhcp.ClientOptions{Retransmit: time.Second, Clock: clock.Scaled(20)}), nil)
	cl.Start()
	require.Eventually(t, func() bool { return cl.Stats.Malformed.Load() >= 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, dhcp.StateSelecting, cl.State(), "broken offers move nothing")

	restartDHCP(t, n, 0)
	l := rec.waitBound(t)
	assert.Equal(t, n.Gateway(), l.ServerID)
	assert.Contains(t, rec.seen(), "dhcp.malformed")
}

// With no DHCP server on the segment, the client says so once, after
// NoAnswerAfter unanswered DISCOVERs, and keeps asking as a real client
// does.
func TestNoAnswerIsReportedOnce(t *testing.T) {
	seg := lan.NewSegment(lan.SegmentOptions{})
	t.Cleanup(seg.Close)
	id, err := identity.Of(11, 0, 2)
	require.NoError(t, err)
	c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: seg})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	r := newRecorder()
	cl := dhcp.NewClient(r.options(dhcp.ClientOptions{Link: c, HostName: id.HostName,
		Retransmit: 5 * time.Millisecond, MaxRetransmit: 10 * time.Millisecond, MinWait: time.Millisecond, NoAnswerAfter: 3}))
	c.SetRawHandler(cl.HandleFrame)
	t.Cleanup(cl.Stop)
	cl.Start()
	require.Eventually(t, func() bool { return countOf(r.seen(), "dhcp.discover") >= 8 }, 20*time.Second, time.Millisecond, "it keeps asking")
	ev := r.seen()
	assert.Equal(t, 1, countOf(ev, "dhcp.no_answer"), "said once: %v", ev)
	for i, e := range ev {
		if e == "dhcp.no_answer" {
			assert.Equal(t, 3, countOf(ev[:i], "dhcp.discover"), "after the third unanswered DISCOVER")
		}
	}
}

func countOf(events []string, name string) int {
	n := 0
	for _, e := range events {
		if e == name {
			n++
		}
	}
	return n
}
