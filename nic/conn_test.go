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
)

// The connections a Host hands out keep what callers rely on beyond
// net.Conn (CloseWrite, for a half-close) and close cleanly with a
// deadline set, which their Close also clears.
func TestHostConnsCloseWithDeadlines(t *testing.T) {
	n, err := lan.StartNetwork(lan.NetworkOptions{})
	require.NoError(t, err)
	defer n.Close()
	aAddr := n.Subnet().Addr().Next().Next().Next()
	bAddr := aAddr.Next()
	a, err := n.AddHost(net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, netip.PrefixFrom(aAddr, n.Subnet().Bits()), nil)
	require.NoError(t, err)
	b, err := n.AddHost(net.HardwareAddr{2, 0, 0, 0, 0, 0xb}, netip.PrefixFrom(bAddr, n.Subnet().Bits()), nil)
	require.NoError(t, err)

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
