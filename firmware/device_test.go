package firmware

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/workers"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// The whole boot on the embedded LAN: lease, ProvisionServer.<option 15
// domain>, and Hellos whose fields match the MEBx store and the identity,
// with the retry counter running 0–14 on the schedule and then starting
// over.
func TestBootDiscoverAndHelloOnEmbeddedLAN(t *testing.T) {
	n, stacks := startLAN(t, lan.NetworkOptions{})
	srv := startHelloServer(t, n, nil, nil, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), mebx.DefaultSCSPort)
	id, err := identity.Of(5, 0, 42)
	require.NoError(t, err)
	s := setupSettings(t, id)
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks}, id, s)

	bound := d.ev.wait(t, "dhcp.bound", 1, 10*time.Second)[0]
	dom, _ := bound.Attr("domain")
	assert.Equal(t, n.Domain(), dom.String(), "option 15")

	round := hello.DefaultSchedule().RoundLen()
	var got []hello.Received
	for range round + 1 {
		got = append(got, srv.next(t, 30*time.Second))
	}
	for k, r := range got {
		assert.Equal(t, hello.VersionPSK, r.Version)
		assert.Equal(t, id.UUID, r.UUID, "UUID from the identity")
		assert.Equal(t, s.PID, r.PID, "PID from the MEBx store")
		assert.True(t, r.AdminSet, "the MEBx password was changed")
		assert.Equal(t, uint32(k%round), r.Retry, "Hello %d", k)
		assert.Equal(t, d.Addr(), r.From.Addr(), "from the leased address")
	}

	res := d.ev.named("scs.resolved")
	require.Len(t, res, 1, "reported once, not per Hello")
	name, _ := res[0].Attr("name")
	src, _ := res[0].Attr("source")
	assert.Equal(t, "ProvisionServer."+n.Domain(), name.String())
	assert.Equal(t, "dhcp-domain", src.String())

	// On the device clock the Hellos are due on the schedule, and go out
	// never before they are due, nor much after.
	sent := d.ev.wait(t, "hello.sent", round+1, time.Second)
	sched := hello.DefaultSchedule()
	due := func(k int) time.Time { v, _ := sent[k].Attr("due"); return v.Time() }
	for k := 0; k <= round; k++ {
		assert.Equal(t, sched.Offset(k), due(k).Sub(due(0)), "Hello %d due", k)
		late := sent[k].Time.Sub(due(k))
		assert.GreaterOrEqual(t, late, time.Duration(0), "Hello %d early", k)
		assert.Less(t, late, 5*time.Minute, "Hello %d late", k)
	}

	names := strings.Join(d.ev.names(), " ")
	assert.Regexp(t, `^power.on state link.up dhcp.discover .*dhcp.bound amt.listening scs.resolved hello.sent`, names)
	assert.Zero(t, d.Stats.HellosFailed.Load())
}

// No DHCP server at all: static settings and an SCS address typed into
// MEBx, on a custom port.
func TestStaticAddressAndSCSFromMEBx(t *testing.T) {
	seg := lan.NewSegment(lan.SegmentOptions{})
	t.Cleanup(seg.Close)
	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)
	scs := netip.MustParseAddr("10.9.0.200")
	srv := startHelloServer(t, nil, seg, stacks, netip.PrefixFrom(scs, 24), 19971)

	id, _ := identity.Of(5, 0, 7)
	s := setupSettings(t, id)
	require.NoError(t, s.Set("dhcp=false", "ip=10.9.0.50", "netmask=255.255.255.0", "gateway=10.9.0.1",
		"scs.address=10.9.0.200", "scs.port=19971"))
	d := bootDevice(t, Options{Uplink: seg, Stacks: stacks}, id, s)

	r := srv.next(t, 10*time.Second)
	assert.Equal(t, "10.9.0.50", r.From.Addr().String())
	assert.Equal(t, s.PID, r.PID)
	assert.Len(t, d.ev.named("address.static"), 1)
	assert.Empty(t, d.ev.named("dhcp.discover"), "a static device sends no DHCP")
	conf := d.ev.named("scs.configured")
	require.Len(t, conf, 1)
	addr, _ := conf[0].Attr("addr")
	assert.Equal(t, "10.9.0.200:19971", addr.String())
	assert.Zero(t, d.Stats.DNSQueries.Load(), "an address in MEBx needs no DNS")
}

// DHCP, but no ProvisionServer record: every Hello slot asks DNS, fails,
// says why and counts on; once the record appears the next Hello goes out.
func TestNoDNSRecordKeepsRetrying(t *testing.T) {
	n, stacks := startLAN(t, lan.NetworkOptions{NoSCSRecord: true})
	scs := netip.MustParseAddr("198.18.0.9")
	srv := startHelloServer(t, n, nil, nil, netip.PrefixFrom(scs, n.Subnet().Bits()), mebx.DefaultSCSPort)
	id, _ := identity.Of(5, 0, 8)
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks}, id, setupSettings(t, id))

	failed := d.ev.wait(t, "hello.failed", 3, 20*time.Second)
	for k, f := range failed[:3] {
		retry, _ := f.Attr("retry")
		assert.Equal(t, uint64(k), retry.Uint64(), "the retry counter counts failed slots too")
		why, _ := f.Attr("err")
		assert.Contains(t, why.String(), "ProvisionServer."+n.Domain()+": NXDOMAIN")
		assert.Contains(t, why.String(), "ProvisionServer: NXDOMAIN", "the bare name is tried last")
	}
	assert.NotEmpty(t, d.ev.named("scs.unresolved"))
	select {
	case r := <-srv.got:
		t.Fatalf("a Hello arrived with no SCS in DNS: %+v", r)
	default:
	}

	n.DNS.Set("ProvisionServer."+n.Domain(), scs)
	r := srv.next(t, 20*time.Second)
	assert.Equal(t, id.UUID, r.UUID)
	assert.Positive(t, r.Retry, "the counter went on while DNS failed")
}

// A DNS server that sends garbage before each real answer: the garbage is
// counted and skipped, and the device resolves and sends its Hello.
func TestMalformedDNSAnswerIsCountedAndIgnored(t *testing.T) {
	d := helloThroughRogueDNS(t, func(q *dns.Msg) []byte {
		// A header that promises an answer the bytes do not hold.
		return []byte{byte(q.Id >> 8), byte(q.Id), 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 3, 'a'}
	})
	assert.GreaterOrEqual(t, d.Stats.DNSMalformed.Load(), uint64(1))
	assert.NotEmpty(t, d.ev.named("dns.malformed"))
	res := d.ev.named("scs.resolved")
	require.NotEmpty(t, res)
	src, _ := res[0].Attr("source")
	assert.Equal(t, "mebx-domain", src.String(), "the MEBx domain comes before DHCP's")
}

// An answer longer than the 512 bytes a query without EDNS allows (RFC
// 1035 §4.2.1) is not taken, though it is well formed and names an
// address: the device reads 512 bytes of it, counts it as malformed and
// waits for the real answer, so its Hello reaches the SCS and not the
// oversized answer's address.
func TestOversizedDNSAnswerIsNotTaken(t *testing.T) {
	d := helloThroughRogueDNS(t, func(q *dns.Msg) []byte {
		r := new(dns.Msg)
		r.SetReply(q)
		for i := range 15 {
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(198, 18, 1, byte(i+1))})
		}
		out, err := r.Pack()
		require.NoError(t, err)
		require.Greater(t, len(out), dns.MinMsgSize)
		require.Less(t, len(out), 1000, "short of a frame: only the 512-byte limit refuses it")
		return out
	})
	assert.GreaterOrEqual(t, d.Stats.DNSMalformed.Load(), uint64(1))
}

// helloThroughRogueDNS boots a device whose only DNS server sends first
// before(query), then the true answer, and waits for the device's Hello at
// the SCS.
func helloThroughRogueDNS(t *testing.T, before func(q *dns.Msg) []byte) *testDevice {
	t.Helper()
	n, stacks := startLAN(t, lan.NetworkOptions{})
	srv := startHelloServer(t, n, nil, nil, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), mebx.DefaultSCSPort)

	rogueAddr := netip.MustParseAddr("198.18.0.53")
	rogue, err := n.AddHost([]byte{0x02, 0xa0, 0, 0, 0, 0x53}, netip.PrefixFrom(rogueAddr, n.Subnet().Bits()), nil)
	require.NoError(t, err)
	pc, err := rogue.ListenUDP(53)
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:k]) != nil {
				continue
			}
			_, _ = pc.WriteTo(before(q), from)
			r := new(dns.Msg)
			r.SetReply(q)
			if strings.EqualFold(q.Question[0].Name, "ProvisionServer."+n.Domain()+".") {
				r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: n.SCS().AsSlice()})
			} else {
				r.Rcode = dns.RcodeNameError
			}
			out, _ := r.Pack()
			_, _ = pc.WriteTo(out, from)
		}
	}()

	id, _ := identity.Of(5, 0, 9)
	s := setupSettings(t, id)
	require.NoError(t, s.Set("dhcp=false", "ip=198.18.0.60", "netmask=255.254.0.0", "dns1="+rogueAddr.String(), "domain="+n.Domain()))
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks}, id, s)

	r := srv.next(t, 10*time.Second)
	assert.Equal(t, id.UUID, r.UUID)
	return d
}

// A factory-fresh AMT 5 sends the PKI Hello: remote configuration is on
// from the factory, with AMT 5's five SHA-1 root hashes, in one segment.
// With remote configuration off it opens its ports but sends no Hello.
func TestFactoryDeviceSendsPKIHello(t *testing.T) {
	n, stacks := startLAN(t, lan.NetworkOptions{})
	srv := startHelloServer(t, n, nil, nil, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), mebx.DefaultSCSPort)
	id, _ := identity.Of(5, 0, 10)
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks}, id, mebx.Defaults())
	r := srv.next(t, 10*time.Second)
	assert.Equal(t, hello.VersionPKI, r.Version)
	assert.Equal(t, id.UUID, r.UUID)
	assert.False(t, r.AdminSet, "the MEBx password is the factory one")
	require.Len(t, r.Hashes, 5)
	for i, h := range mebx.AMT5RootHashes() {
		assert.Equal(t, hello.HashSHA1, r.Hashes[i].Type)
		assert.Equal(t, h.Hash, r.Hashes[i].Hash, h.Name)
	}
	sent := d.ev.wait(t, "hello.sent", 1, time.Second)
	v, _ := sent[0].Attr("version")
	assert.Equal(t, "PKI", v.String())

	id2, _ := identity.Of(5, 0, 11)
	s := mebx.Defaults()
	require.NoError(t, s.Set("pki.remote_config=off"))
	d2 := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks}, id2, s)
	off := d2.ev.wait(t, "hello.off", 1, 10*time.Second)
	why, _ := off[0].Attr("reason")
	assert.Contains(t, why.String(), "factory mode")
	assert.Len(t, d2.ev.named("amt.listening"), 1)
	assert.Empty(t, d2.ev.named("hello.sent"))
}

// The window closes: the device falls silent, and a power cycle starts the
// schedule (and the retry counter) again.
func TestHelloWindowAndPowerCycle(t *testing.T) {
	n, stacks := startLAN(t, lan.NetworkOptions{})
	srv := startHelloServer(t, n, nil, nil, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), mebx.DefaultSCSPort)
	id, _ := identity.Of(5, 0, 11)
	sched := hello.Schedule{
		Round:  []hello.Step{{Count: 3, Interval: 12 * time.Second}},
		Then:   time.Minute,
		Window: 2 * time.Minute, // Hellos at 0, 12, 24 and 84 s; the next (144 s) is outside
	}
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks, Schedule: sched, Clock: clock.Scaled(500)}, id, setupSettings(t, id))
	var retries []uint32
	for range 4 {
		retries = append(retries, srv.next(t, 10*time.Second).Retry)
	}
	assert.Equal(t, []uint32{0, 1, 2, 0}, retries)
	stop := d.ev.wait(t, "hello.stopped", 1, 10*time.Second)
	count, _ := stop[0].Attr("hellos")
	assert.Equal(t, int64(4), count.Int64())
	select {
	case r := <-srv.got:
		t.Fatalf("a Hello after the window closed: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}

	d.PowerOff()
	require.NoError(t, d.PowerOn(t.Context()))
	assert.Equal(t, uint32(0), srv.next(t, 10*time.Second).Retry, "the counter starts again at power-up")
	assert.Len(t, d.ev.named("power.on"), 2)
}

// The AMT ports accept connections and the device reports each one.
func TestAMTPortsAcceptAndReport(t *testing.T) {
	n, stacks := startLAN(t, lan.NetworkOptions{})
	id, _ := identity.Of(5, 0, 12)
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks}, id, mebx.Defaults())
	d.ev.wait(t, "amt.listening", 1, 10*time.Second)
	peer, err := n.AddHost([]byte{0x02, 0xa0, 0, 0, 0, 0x33}, netip.MustParsePrefix("198.18.0.33/15"), nil)
	require.NoError(t, err)
	for _, port := range []uint16{PortHTTP, PortHTTPS} {
		c, err := peer.DialTCP(t.Context(), netip.AddrPortFrom(d.Addr(), port))
		require.NoError(t, err, "port %d", port)
		c.Close()
	}
	acc := d.ev.wait(t, "conn.accepted", 2, 10*time.Second)
	ports := map[int64]bool{}
	for _, a := range acc {
		p, _ := a.Attr("port")
		from, _ := a.Attr("peer")
		ports[int64(p.Uint64())] = true
		assert.Contains(t, from.String(), "198.18.0.33:")
	}
	assert.Equal(t, map[int64]bool{PortHTTP: true, PortHTTPS: true}, ports)
	assert.Equal(t, uint64(2), d.Stats.ConnsAccepted.Load())
}

// The lease runs out with the DHCP server gone: the device drops its
// address, its Hello slots fail for want of one, and it leases again when
// a server is back.
func TestLeaseLossAndRecovery(t *testing.T) {
	n, stacks := startLAN(t, lan.NetworkOptions{LeaseTime: 400 * time.Second})
	srv := startHelloServer(t, n, nil, nil, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), mebx.DefaultSCSPort)
	id, _ := identity.Of(5, 0, 13)
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks, Clock: clock.Scaled(1000)}, id, setupSettings(t, id))
	srv.next(t, 10*time.Second)
	d.ev.wait(t, "dhcp.renewed", 1, 10*time.Second)

	n.DHCP.Stop()
	d.ev.wait(t, "dhcp.lost", 1, 10*time.Second)
	assert.False(t, d.Addr().IsValid(), "no address after the lease ran out")
	failed := d.ev.wait(t, "hello.failed", 1, 10*time.Second)
	why, _ := failed[len(failed)-1].Attr("err")
	assert.Contains(t, why.String(), "no IPv4 address")

	var err error
	n.DHCP, err = lan.StartDHCP(lan.DHCPOptions{
		Host: n.Server, PoolFirst: netip.MustParseAddr("198.18.1.1"), PoolLast: netip.MustParseAddr("198.19.255.254"),
		Router: n.Gateway(), DNS: []netip.Addr{n.Gateway()}, Domain: n.Domain(), Leases: n.Leases, LeaseTime: 400 * time.Second,
	})
	require.NoError(t, err)
	d.ev.wait(t, "dhcp.bound", 2, 20*time.Second)
	for {
		r := srv.next(t, 20*time.Second)
		if r.From.Addr() == d.Addr() {
			break // a Hello from the new lease
		}
	}
}

// An SCS address where nothing listens: each Hello fails with the reason,
// and the retry counter goes on.
func TestHelloRefusedIsReportedAndRetried(t *testing.T) {
	n, stacks := startLAN(t, lan.NetworkOptions{})
	id, _ := identity.Of(5, 0, 14)
	s := setupSettings(t, id)
	require.NoError(t, s.Set("scs.address="+n.Gateway().String())) // the DHCP/DNS host: no port 9971
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks}, id, s)
	failed := d.ev.wait(t, "hello.failed", 2, 20*time.Second)
	for k, f := range failed[:2] {
		retry, _ := f.Attr("retry")
		assert.Equal(t, uint64(k), retry.Uint64())
		why, _ := f.Attr("err")
		assert.Contains(t, why.String(), "connect to SCS "+n.Gateway().String()+":9971")
	}
	assert.Zero(t, d.Stats.HellosSent.Load())
}

// PowerOff ends a DNS query that waits for an answer that will not come
// (the device's DNS server is silent): its socket is among the
// connections PowerOff closes, and the query does not run out its minute.
func TestPowerOffEndsDNSWait(t *testing.T) {
	n, stacks := startLAN(t, lan.NetworkOptions{NoSCSRecord: true})
	id, _ := identity.Of(5, 0, 11)
	s := setupSettings(t, id)
	// 198.18.0.77 is on the segment's subnet, and nothing answers there.
	require.NoError(t, s.Set("dhcp=false", "ip=198.18.0.61", "netmask=255.254.0.0", "dns1=198.18.0.77", "domain="+n.Domain()))
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks, DNSTimeout: time.Minute, Clock: clock.Real()}, id, s)
	require.Eventually(t, func() bool { return d.Stats.DNSQueries.Load() > 0 }, 10*time.Second, time.Millisecond, "a query went out")
	off := make(chan struct{})
	go func() { d.PowerOff(); close(off) }()
	select {
	case <-off:
	case <-time.After(30 * time.Second):
		t.Fatal("PowerOff waited for the DNS query's minute")
	}
	assert.NotEmpty(t, d.ev.named("power.off"))
}

// With a fleet's Hello gate full, a due Hello waits its turn: no lookup,
// no Hello, until a place frees. A slot still waiting when its power cycle
// ends sends nothing when its turn comes: after the next power-on one
// Hello loop runs, not two.
func TestHelloWaitsItsTurn(t *testing.T) {
	n, stacks := startLAN(t, lan.NetworkOptions{})
	srv := startHelloServer(t, n, nil, nil, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), mebx.DefaultSCSPort)
	id, _ := identity.Of(5, 0, 17)
	gate := workers.NewGate(1)
	hold := make(chan struct{})
	go gate.Do(func() { <-hold }) // the one place, held
	require.Eventually(t, func() bool { return gate.Running() == 1 }, 10*time.Second, time.Millisecond)
	sched := hello.Schedule{Round: []hello.Step{{Count: 3, Interval: 12 * time.Second}}, Then: time.Hour, Window: time.Hour}
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks, Schedule: sched, Clock: clock.Scaled(500), HelloGate: gate}, id, setupSettings(t, id))
	require.Eventually(t, func() bool { return gate.Waiting() == 1 }, 10*time.Second, time.Millisecond, "the first Hello waits")
	assert.Zero(t, d.Stats.DNSQueries.Load(), "no lookup before its turn")
	assert.Zero(t, d.Stats.HellosSent.Load())

	d.PowerOff() // does not wait for the queued slot
	require.NoError(t, d.PowerOn(t.Context()))
	require.Eventually(t, func() bool { return gate.Waiting() == 2 }, 10*time.Second, time.Millisecond, "the new cycle's first Hello waits behind the old one's")
	close(hold)
	var retries []uint32
	for range 3 {
		retries = append(retries, srv.next(t, 10*time.Second).Retry)
	}
	assert.Equal(t, []uint32{0, 1, 2}, retries, "one loop, in order")
	// A second loop would send the next Hello as soon as the first, long
	// before it is due.
	sent := d.ev.wait(t, "hello.sent", 3, 10*time.Second)
	for _, e := range sent {
		due, _ := e.Attr("due")
		assert.False(t, e.Time.Before(due.Time()), "a Hello sent at %v, due %v", e.Time, due.Time())
	}
	assert.Zero(t, gate.Waiting())
}
