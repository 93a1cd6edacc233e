package nic_test

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/nic"
)

// TestPacketUplink: two devices behind one AF_PACKET socket on a veth,
// each with its own MAC, answer the kernel's ping on the other end; the
// interface is promiscuous exactly while the uplink is open, and the
// devices' own frames are not read back as another host's.
func TestPacketUplink(t *testing.T) {
	netns.Need(t, "ping")
	ns := netns.New(t)
	ns.Veth(t, "amtp0", "amtp0k", "198.19.251.1/24")
	promisc := func() bool {
		out, err := ns.Exec("cat", "/sys/class/net/amtp0/flags")
		require.NoError(t, err, out)
		v, err := strconv.ParseUint(strings.TrimSpace(out), 0, 32)
		require.NoError(t, err)
		return v&0x100 != 0 // IFF_PROMISC
	}
	require.False(t, promisc(), "not promiscuous before the run")
	p := ns.Packet(t, "amtp0")
	assert.True(t, promisc(), "promiscuous while the devices are on it")

	stacks := nic.NewStacks(nic.StackOptions{})
	defer stacks.Close()
	for i := range 2 {
		id, err := identity.Of(1, 0, i)
		require.NoError(t, err)
		c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: p})
		require.NoError(t, err)
		h, err := stacks.Attach(c)
		require.NoError(t, err)
		require.NoError(t, h.SetAddress(netip.MustParsePrefix("198.19.251."+strconv.Itoa(10+i)+"/24"), netip.MustParseAddr("198.19.251.1")))
		ip := "198.19.251." + strconv.Itoa(10+i)
		out, err := ns.Exec("ping", "-c", "2", "-W", "2", "-i", "0.2", ip)
		require.NoError(t, err, "ping device %d: %s", i, out)
		assert.Contains(t, out, "2 received")
		neigh, _ := ns.Exec("ip", "neigh", "show", ip)
		assert.Contains(t, strings.ToLower(neigh), id.MAC.String(), "the kernel learned device %d's own MAC", i)
	}
	assert.Zero(t, p.DuplicateMACs.Load(), "the devices' own frames are not read back")
	assert.Positive(t, p.RxFrames.Load())
	rx := p.RxFrames.Load() // first: the kernel counts a frame before the reader takes it
	frames, drops, err := p.KernelStats()
	require.NoError(t, err)
	assert.Zero(t, drops)
	assert.GreaterOrEqual(t, frames, rx, "the kernel queued every frame the reader took")

	require.NoError(t, p.Close())
	c := p.Counts()
	assert.Equal(t, nic.UplinkCounts{Uplink: "packet:amtp0", RxFrames: p.RxFrames.Load(), TxFrames: p.TxFrames.Load(), RxOther: p.RxOther.Load()}, c,
		"after Close, the last reading")
	assert.Positive(t, c.TxFrames)
	again, _, err := p.KernelStats()
	require.NoError(t, err, "a closed socket is not asked again")
	assert.GreaterOrEqual(t, again, frames, "the counts since open, not since the last reading")
	assert.False(t, promisc(), "the interface's own setting is back after the run")
}

// A macvlan in any mode but passthru, and an ipvlan, cannot carry devices
// of their own MACs; the uplink says so at open. A veth and a passthru
// macvlan can.
func TestPacketUplinkProblems(t *testing.T) {
	netns.Need(t)
	ns := netns.New(t)
	ns.Veth(t, "amtq0", "amtq0k")
	assert.Empty(t, ns.Packet(t, "amtq0").Problems(), "a veth")
	for _, c := range []struct{ name, args, want string }{
		{"amtmb0", "macvlan mode bridge", "macvlan in bridge mode"},
		{"amtmv0", "macvlan mode vepa", "macvlan in vepa mode"},
		{"amtiv0", "ipvlan mode l2", "ipvlan"},
		{"amtmp0", "macvlan mode passthru", ""},
	} {
		if out, err := ns.Exec(append([]string{"ip", "link", "add", c.name, "link", "amtq0k", "type"}, strings.Fields(c.args)...)...); err != nil {
			// This machine's kernel has no ipvlan module.
			require.Contains(t, out, "Unknown device type", c.args)
			t.Logf("%s: not in this kernel: %s", c.args, strings.TrimSpace(out))
			continue
		}
		netns.Run(t, "ip", "-n", ns.Name, "link", "set", c.name, "up")
		p := ns.Packet(t, c.name)
		if c.want == "" {
			assert.Empty(t, p.Problems(), c.args)
		} else if assert.Len(t, p.Problems(), 1, c.args) {
			assert.Contains(t, p.Problems()[0], c.want)
		}
		require.NoError(t, p.Close())
		netns.Run(t, "ip", "-n", ns.Name, "link", "del", c.name)
	}
}
