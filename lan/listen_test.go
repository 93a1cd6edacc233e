package lan

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/nic"
)

// resets records the TCP resets a host receives, without taking the
// frames from its stack.
type resets struct {
	mu  sync.Mutex
	got []*layers.TCP
	ip  []*layers.IPv4
}

func (r *resets) watch(h *nic.Host) {
	h.NIC().SetRawHandler(func(f []byte) bool {
		p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip != nil && tcp != nil && tcp.RST {
			r.mu.Lock()
			r.got, r.ip = append(r.got, tcp), append(r.ip, ip)
			r.mu.Unlock()
		}
		return false
	})
}

func (r *resets) last(t *testing.T, n int) (*layers.IPv4, *layers.TCP) {
	t.Helper()
	require.Eventually(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.got) == n }, 5*time.Second, time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ip[n-1], r.got[n-1]
}

// The hosts of a stack share its listener on a port: each connection
// reaches the listener of the host it was for, and a host that does not
// listen on the port refuses a SYN with the same reset as a port no host of
// the stack listens on.
func TestSharedListenerServesEachHostAndRefusesTheRest(t *testing.T) {
	n, stacks := startLAN(t, NetworkOptions{})
	a, b := newDevice(t, n, stacks, 3), newDevice(t, n, stacks, 4)
	la, lb := a.lease(t), b.lease(t)
	require.Equal(t, 1, stacks.Count(), "both devices on one stack")
	answer := func(s string) func(net.Conn) {
		return func(c net.Conn) { defer c.Close(); _, _ = c.Write([]byte(s)) }
	}
	lnA, err := a.host.Listen(16992, answer("a"))
	require.NoError(t, err)
	lnB, err := b.host.Listen(16992, answer("b"))
	require.NoError(t, err)

	peer, err := n.AddHost(net.HardwareAddr{0x02, 0xa0, 0, 0, 0, 9}, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), nil)
	require.NoError(t, err)
	var rst resets
	rst.watch(peer)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	read := func(to netip.Addr, port uint16) (string, error) {
		c, err := peer.DialTCP(ctx, netip.AddrPortFrom(to, port))
		if err != nil {
			return "", err
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		return string(got), err
	}
	for range 2 {
		got, err := read(la.Addr.Addr(), 16992)
		require.NoError(t, err)
		assert.Equal(t, "a", got)
		got, err = read(lb.Addr.Addr(), 16992)
		require.NoError(t, err)
		assert.Equal(t, "b", got)
	}
	assert.Equal(t, uint64(2), lnA.Accepted.Load())
	assert.Equal(t, uint64(2), lnB.Accepted.Load())

	// b stops listening; a still does, so the stack's listener stays.
	require.NoError(t, lnB.Close())
	_, err = read(lb.Addr.Addr(), 16992)
	require.Error(t, err, "b refuses 16992")
	assert.Contains(t, err.Error(), "refused")
	ipShared, refused := rst.last(t, 1)
	assert.Equal(t, uint64(1), b.host.NIC().Stats.RxRefused.Load())
	got, err := read(la.Addr.Addr(), 16992)
	require.NoError(t, err)
	assert.Equal(t, "a", got, "a still listens")

	// The reset is the stack's own for a closed port: compare it with the
	// one for a port nothing on the stack listens on.
	_, err = read(lb.Addr.Addr(), 16994)
	require.Error(t, err)
	ipClosed, closed := rst.last(t, 2)
	assert.Equal(t, uint64(1), b.host.NIC().Stats.RxRefused.Load(), "a port with no listener is the stack's to refuse")
	for _, seg := range []*layers.TCP{refused, closed} {
		assert.True(t, seg.RST && seg.ACK && !seg.SYN, "RST+ACK")
		assert.Zero(t, seg.Seq)
		assert.Zero(t, seg.Window)
	}
	assert.Equal(t, closed.DataOffset, refused.DataOffset)
	assert.Equal(t, closed.Options, refused.Options)
	assert.Equal(t, ipClosed.TTL, ipShared.TTL)
	assert.Equal(t, ipClosed.Flags, ipShared.Flags)
	assert.Equal(t, ipClosed.Length, ipShared.Length)
	assert.Equal(t, ipClosed.TOS, ipShared.TOS)

	// Listening again takes connections again; a host's second Listen on
	// a port replaces its first.
	lnB2, err := b.host.Listen(16992, answer("b2"))
	require.NoError(t, err)
	got, err = read(lb.Addr.Addr(), 16992)
	require.NoError(t, err)
	assert.Equal(t, "b2", got)
	lnB3, err := b.host.Listen(16992, answer("b3"))
	require.NoError(t, err)
	got, err = read(lb.Addr.Addr(), 16992)
	require.NoError(t, err)
	assert.Equal(t, "b3", got)
	assert.Equal(t, uint64(1), lnB2.Accepted.Load())
	assert.Equal(t, uint64(1), lnB3.Accepted.Load())
	require.NoError(t, lnB2.Close(), "closing a replaced listener leaves its successor")
	got, err = read(lb.Addr.Addr(), 16992)
	require.NoError(t, err)
	assert.Equal(t, "b3", got)
}
