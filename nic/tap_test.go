package nic_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// TestTAPStaticDeviceAnswersPing: a device with a static address from its
// MEBx store, on a TAP inside a namespace, answers the kernel's ping, and
// its pcap decodes with tshark as ARP and ICMP.
func TestTAPStaticDeviceAnswersPing(t *testing.T) {
	netns.Need(t, "ping", "tshark")
	ns := netns.New(t)
	tap := ns.TAP(t, "amt0", "198.19.250.1/24")

	dir := t.TempDir()
	store := mebx.NewFileStore(filepath.Join(dir, "mebx.json"))
	s := mebx.Defaults()
	require.NoError(t, s.Set("password=P@ssw0rd!", "dhcp=off", "ip=198.19.250.10", "netmask=255.255.255.0", "gateway=198.19.250.1"))
	require.NoError(t, store.Save(s))
	s, err := store.Load()
	require.NoError(t, err)
	prefix, err := s.Prefix()
	require.NoError(t, err)

	id, err := identity.Of(1, 0, 0)
	require.NoError(t, err)
	pcapPath := filepath.Join(dir, "device.pcap")
	capture, err := nic.CreateCapture(pcapPath)
	require.NoError(t, err)
	c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: tap, Capture: capture})
	require.NoError(t, err)
	stacks := nic.NewStacks(nic.StackOptions{})
	defer stacks.Close()
	h, err := stacks.Attach(c)
	require.NoError(t, err)
	require.NoError(t, h.SetAddress(prefix, s.Gateway))

	// A second device shares the TAP with its own MAC, like a PC on the
	// same switch.
	id2, err := identity.Of(1, 0, 1)
	require.NoError(t, err)
	c2, err := nic.New(nic.Options{MAC: id2.MAC, Uplink: tap})
	require.NoError(t, err)
	h2, err := stacks.Attach(c2)
	require.NoError(t, err)
	require.NoError(t, h2.SetAddress(netip.MustParsePrefix("198.19.250.11/24"), s.Gateway))
	out, err := ns.Exec("ping", "-c", "2", "-W", "2", "-i", "0.2", "198.19.250.11")
	require.NoError(t, err, "ping the second device: %s", out)
	neigh2, _ := ns.Exec("ip", "neigh", "show", "198.19.250.11")
	assert.Contains(t, strings.ToLower(neigh2), id2.MAC.String())

	out, err = ns.Exec("ping", "-c", "3", "-W", "2", "-i", "0.2", s.IP.String())
	require.NoError(t, err, "ping from the namespace: %s", out)
	assert.Contains(t, out, "3 received")
	neigh, _ := ns.Exec("ip", "neigh", "show", s.IP.String())
	assert.Contains(t, strings.ToLower(neigh), id.MAC.String(), "the kernel learned the device's MAC by ARP")

	require.NoError(t, capture.Flush())
	protos := netns.Run(t, "tshark", "-r", pcapPath, "-T", "fields", "-e", "frame.protocols")
	assert.Contains(t, protos, "eth:ethertype:arp")
	assert.Contains(t, protos, "eth:ethertype:ip:icmp")
	replies := netns.Run(t, "tshark", "-r", pcapPath, "-Y", fmt.Sprintf("icmp.type == 0 && ip.src == %s", s.IP), "-T", "fields", "-e", "ip.dst")
	assert.Equal(t, 3, strings.Count(replies, "198.19.250.1"), "three echo replies from the device: %q", replies)
	require.NoError(t, capture.Close())
	assert.Equal(t, uint64(0), c.Stats.TxErrors.Load())
}
