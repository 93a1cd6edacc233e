package firmware

import (
	"context"
	"encoding/hex"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/nic"
)

// The device against real peers: dnsmasq in a network namespace serves
// DHCP (with option 15) and DNS on the TAP; the device, on that TAP, leases
// from dnsmasq, resolves ProvisionServer.<domain> through it, and a Hello
// listener inside the namespace reads its Hello. The device's pcap decodes
// with tshark as DHCP, DNS and TCP.
func TestDnsmasqDHCPAndDNSOverTAP(t *testing.T) {
	netns.Need(t, "dnsmasq", "tshark")
	const (
		domain = "amtsim.test"
		router = "198.19.251.1"
	)
	ns := netns.New(t)
	tap := ns.TAP(t, "amt0", router+"/24")

	dnsmasqLog := ns.Dnsmasq(t, netns.DnsmasqOptions{Interface: "amt0", Range: "198.19.251.100,198.19.251.150,255.255.255.0,1h",
		Domain: domain, Router: router, Hosts: []string{"ProvisionServer." + domain + "," + router},
		Extra: []string{"--log-dhcp", "--log-queries"}})

	got := nsHelloListener(t, ns, router+":9971")

	pcapPath := filepath.Join(t.TempDir(), "device.pcap")
	capture, err := nic.CreateCapture(pcapPath)
	require.NoError(t, err)
	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)

	id, err := identity.Of(9, 0, 1)
	require.NoError(t, err)
	s := setupSettings(t, id)
	// dnsmasq may take a moment to bind; the client's retransmission covers
	// that. Real time: the peers are real.
	d := bootDevice(t, Options{Uplink: tap, Stacks: stacks, Capture: capture, Clock: clock.Real()}, id, s)

	var r hello.Received
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		t.Fatalf("no Hello from the device; events %v", d.ev.names())
	}
	assert.Equal(t, id.UUID, r.UUID)
	assert.Equal(t, s.PID, r.PID)
	assert.Equal(t, uint32(0), r.Retry)
	from := r.From.Addr()
	assert.True(t, netip.MustParsePrefix("198.19.251.0/24").Contains(from), "leased from dnsmasq's range: %s", from)

	bound := d.ev.named("dhcp.bound")
	require.Len(t, bound, 1)
	dom, _ := bound[0].Attr("domain")
	assert.Equal(t, domain, dom.String(), "option 15 from dnsmasq")
	res := d.ev.named("scs.resolved")
	require.Len(t, res, 1)
	name, _ := res[0].Attr("name")
	assert.Equal(t, "ProvisionServer."+domain, name.String())

	d.PowerOff()
	require.NoError(t, capture.Close())
	protos := tshark(t, "-r", pcapPath, "-T", "fields", "-e", "frame.protocols")
	assert.Contains(t, protos, "eth:ethertype:ip:udp:dhcp")
	assert.Contains(t, protos, "eth:ethertype:ip:udp:dns")
	assert.Contains(t, protos, "eth:ethertype:ip:tcp")
	queries := tshark(t, "-r", pcapPath, "-Y", "dns.flags.response == 1", "-T", "fields", "-e", "dns.qry.name", "-e", "dns.a")
	assert.Contains(t, queries, "ProvisionServer."+domain+"\t"+router, "dnsmasq's answer in the capture")
	payload := tshark(t, "-r", pcapPath, "-Y", "tcp.dstport == 9971 && tcp.len == 32", "-T", "fields", "-e", "tcp.payload")
	want, err := r.Message.Marshal()
	require.NoError(t, err)
	assert.Contains(t, payload, hex.EncodeToString(want), "the Hello on the wire is the one the listener decoded")
	assert.Contains(t, dnsmasqLog.String(), "DHCPACK(amt0) "+from.String())
}

// nsHelloListener is an SCS's Hello listener on a kernel socket inside ns
// at addr, until the test ends; each Hello read is sent on the channel.
func nsHelloListener(t *testing.T, ns *netns.NS, addr string) <-chan hello.Received {
	t.Helper()
	got := make(chan hello.Received, 4)
	rx := hello.NewReceiver(hello.ReceiverOptions{Handle: func(r hello.Received) { got <- r }})
	var ln net.Listener
	require.NoError(t, ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { _ = rx.Serve(ctx, ln); close(served) }()
	t.Cleanup(func() { cancel(); <-served })
	return got
}

func tshark(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("tshark", args...).Output()
	require.NoError(t, err, "tshark %s", strings.Join(args, " "))
	return string(out)
}
