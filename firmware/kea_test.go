package firmware

import (
	"net/netip"
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

// The device against ISC Kea (kea-dhcp4), the DHCP server of larger
// sites: on a TAP in a namespace of its own, the device leases from Kea's
// pool with its domain (option 15) and DNS server (option 6), and sends its
// Hello to the SCS address typed into MEBx from that address.
func TestKeaDHCPOverTAP(t *testing.T) {
	netns.Need(t, "kea-dhcp4")
	const (
		domain = "amtsim.test"
		router = "198.19.252.1"
	)
	ns := netns.New(t)
	tap := ns.TAP(t, "amt0", router+"/24")
	ns.Kea(t, netns.KeaOptions{Interface: "amt0", Subnet: "198.19.252.0/24", Pool: "198.19.252.100 - 198.19.252.150",
		Domain: domain, DNS: router, Lease: time.Hour})

	got := nsHelloListener(t, ns, router+":9971")

	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)
	id, err := identity.Of(9, 0, 2)
	require.NoError(t, err)
	s := setupSettings(t, id)
	s.SCSAddress = netip.MustParseAddr(router)
	d := bootDevice(t, Options{Uplink: tap, Stacks: stacks, Clock: clock.Real()}, id, s)

	var r hello.Received
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		t.Fatalf("no Hello from the device; events %v", d.ev.names())
	}
	assert.Equal(t, id.UUID, r.UUID)
	from := r.From.Addr()
	pool := netip.MustParseAddr("198.19.252.100")
	assert.True(t, from.Compare(pool) >= 0 && from.Compare(netip.MustParseAddr("198.19.252.150")) <= 0, "leased from Kea's pool: %s", from)
	bound := d.ev.named("dhcp.bound")
	require.Len(t, bound, 1)
	dom, _ := bound[0].Attr("domain")
	assert.Equal(t, domain, dom.String(), "option 15 from Kea")
	ip, _ := bound[0].Attr("ip")
	assert.Contains(t, ip.String(), from.String())
	dns, _ := bound[0].Attr("dns")
	assert.Contains(t, dns.String(), router, "option 6 from Kea")
	d.PowerOff()
}
