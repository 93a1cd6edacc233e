package nic_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/nic"
)

// twoHosts starts the embedded LAN with two hosts on it, a and b (at
// bAddr); the LAN closes with the test.
func twoHosts(t *testing.T) (n *lan.Network, a, b *nic.Host, bAddr netip.Addr) {
	t.Helper()
	n, err := lan.StartNetwork(lan.NetworkOptions{})
	require.NoError(t, err)
	t.Cleanup(n.Close)
	aAddr := n.Subnet().Addr().Next().Next().Next()
	bAddr = aAddr.Next()
	a, err = n.AddHost(net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, netip.PrefixFrom(aAddr, n.Subnet().Bits()), nil)
	require.NoError(t, err)
	b, err = n.AddHost(net.HardwareAddr{2, 0, 0, 0, 0, 0xb}, netip.PrefixFrom(bAddr, n.Subnet().Bits()), nil)
	require.NoError(t, err)
	return n, a, b, bAddr
}

// The connections a Host hands out keep what callers rely on beyond
// net.Conn (CloseWrite, for a half-close) and close cleanly with a
// deadline set, which their Close also clears.
func TestHostConnsCloseWithDeadlines(t *testing.T) {
	_, a, b, bAddr := twoHosts(t)

	got := make(chan []byte, 1)
	l, err := b.Listen(7000, func(c net.Conn) {
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		data, _ := io.ReadAll(c)
		got <- data
		assert.NoError(t, c.Close())
	})
	require.NoError(t, err)
	defer l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, netip.AddrPortFrom(bAddr, 7000))
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(time.Minute)))
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	cw, ok := c.(interface{ CloseWrite() error })
	require.True(t, ok, "a Host's TCP connection half-closes")
	require.NoError(t, cw.CloseWrite())
	select {
	case data := <-got:
		assert.Equal(t, "hello", string(data))
	case <-ctx.Done():
		t.Fatal("the half-close never reached the peer")
	}
	require.NoError(t, c.Close())
	_, err = c.Read(make([]byte, 1))
	assert.Error(t, err, "a closed connection reads nothing")

	u, err := a.DialUDP(netip.AddrPortFrom(bAddr, 53))
	require.NoError(t, err)
	require.NoError(t, u.SetDeadline(time.Now().Add(time.Minute)))
	assert.NoError(t, u.Close())
}

// An ACK that comes late, on a LAN whose round trips are microseconds, is
// waited for, not answered with a retransmission: the stacks run classic
// loss recovery (the RTO, at least 200 ms), without gVisor's tail loss
// probe, whose timeout of twice the smoothed RTT has no floor. The pool's
// TCPCounts see the segments and would see the retransmissions.
func TestLateACKDrawsNoRetransmission(t *testing.T) {
	n, a, b, bAddr := twoHosts(t)

	const size = 3000 // three segments in flight: the probe's shortest timeout
	l, err := b.Listen(7000, func(c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf[:1]); err != nil {
				return
			}
		}
	})
	require.NoError(t, err)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, netip.AddrPortFrom(bAddr, 7000))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(time.Minute)))
	exchange := func() {
		_, err := c.Write(make([]byte, size))
		require.NoError(t, err)
		_, err = io.ReadFull(c, make([]byte, 1))
		require.NoError(t, err)
	}
	// Fast round trips first, so that the smoothed RTT is microseconds…
	for range 50 {
		exchange()
	}
	before := n.Stacks().TCPCounts()
	// …then a peer whose ACKs take 30 ms, as a busy one's can.
	require.NoError(t, b.NIC().SetNetem(nic.Netem{Delay: 30 * time.Millisecond}, nic.Netem{}))
	for range 5 {
		exchange()
	}
	after := n.Stacks().TCPCounts()
	assert.Greater(t, after.SegmentsSent, before.SegmentsSent+10)
	assert.Zero(t, after.Retransmits-before.Retransmits, "segments sent again while their ACKs were on the way")
}

// A server socket that stops reading drops what its receive buffer cannot
// hold, and the pool counts it (the fleet benchmark reports it, to tell a
// DNS server that fell behind from a LAN that lost frames).
func TestUDPReceiveDropsCounted(t *testing.T) {
	n, a, b, bAddr := twoHosts(t)
	srv, err := b.ListenUDP(5300)
	require.NoError(t, err)
	defer srv.Close()
	c, err := a.DialUDP(netip.AddrPortFrom(bAddr, 5300))
	require.NoError(t, err)
	defer c.Close()
	before := n.Stacks().UDPReceiveDrops()
	// 6 MiB of datagrams at a socket that takes 4 MiB and reads none.
	msg := make([]byte, 1024)
	for range 6 << 10 {
		_, err := c.Write(msg)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return n.Stacks().UDPReceiveDrops() > before },
		10*time.Second, 10*time.Millisecond, "no datagram counted as dropped")
	// What was kept is still read.
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _, err := srv.ReadFrom(make([]byte, 2048))
	require.NoError(t, err)
	assert.Equal(t, len(msg), got)
}
