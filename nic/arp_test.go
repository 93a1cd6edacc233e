package nic_test

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/nic"
)

// A device NIC with its own ARP against the Linux kernel on a TAP: the
// kernel's ARP request for the device is answered (and the kernel learned,
// as RFC 826 merges the sender); the device resolves an address it has not
// heard from before a TCP connect; an address nobody has fails after three
// requests and is counted. tshark reads the exchange.
func TestOwnARPAgainstKernel(t *testing.T) {
	netns.Need(t, "ping", "tshark")
	ns := netns.New(t)
	tap := ns.TAP(t, "amt0", "198.19.249.1/24", "198.19.249.2/24")
	pcapPath := filepath.Join(t.TempDir(), "arp.pcap")
	capture, err := nic.CreateCapture(pcapPath)
	require.NoError(t, err)
	id, _ := identity.Of(1, 0, 5)
	c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: tap, Capture: capture, MEFilter: true, OwnARP: true})
	require.NoError(t, err)
	stacks := nic.NewStacks(nic.StackOptions{})
	defer stacks.Close()
	h, err := stacks.Attach(c)
	require.NoError(t, err)
	require.NoError(t, h.SetAddress(netip.MustParsePrefix("198.19.249.10/24"), netip.Addr{}))

	out, err := ns.Exec("ping", "-c", "2", "-W", "2", "198.19.249.10")
	require.NoError(t, err, "%s", out)
	assert.Contains(t, out, "2 received")
	neigh, _ := ns.Exec("ip", "neigh", "show", "198.19.249.10")
	assert.Contains(t, strings.ToLower(neigh), strings.ToLower(id.MAC.String()))

	// A peer the device has not heard from: it asks, the kernel answers.
	var ln net.Listener
	require.NoError(t, ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "198.19.249.2:7000")
		return err
	}))
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			_, _ = c.Write([]byte("hi"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := h.DialContext(ctx, "tcp4", "198.19.249.2:7000")
	require.NoError(t, err)
	b := make([]byte, 2)
	_, err = conn.Read(b)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(b))
	conn.Close()
	_, err = h.DialContext(ctx, "udp", "198.19.249.2:7000")
	assert.ErrorContains(t, err, "only TCP over IPv4")
	_, err = h.DialContext(ctx, "tcp", "provisionserver:7000")
	assert.Error(t, err, "a name, not an address")

	// Nobody at .99: three requests, then the frame is dropped and counted.
	dctx, dcancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer dcancel()
	_, err = h.DialTCP(dctx, netip.MustParseAddrPort("198.19.249.99:7000"))
	assert.Error(t, err)
	assert.Eventually(t, func() bool { return c.Stats.ARPFailures.Load() >= 1 }, 5*time.Second, 50*time.Millisecond)

	h.Close()
	require.NoError(t, capture.Close())
	out2, err := exec.Command("tshark", "-r", pcapPath, "-Y", "arp", "-T", "fields", "-e", "arp.opcode", "-e", "arp.src.proto_ipv4", "-e", "arp.dst.proto_ipv4").Output()
	require.NoError(t, err)
	arp := string(out2)
	assert.Contains(t, arp, "1\t198.19.249.1\t198.19.249.10", "the kernel asked for the device")
	assert.Contains(t, arp, "2\t198.19.249.10\t198.19.249.1", "the device answered")
	assert.Contains(t, arp, "1\t198.19.249.10\t198.19.249.2", "the device asked for a new peer")
	assert.Contains(t, arp, "2\t198.19.249.2\t198.19.249.10", "and heard back")
	assert.GreaterOrEqual(t, strings.Count(arp, "1\t198.19.249.10\t198.19.249.99"), 3, "three requests for nobody (and more for the SYN sent again)")
}
