package lan

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/nic"
)

type countingPort struct {
	mac net.HardwareAddr
	got atomic.Int32
}

func (p *countingPort) HardwareAddr() net.HardwareAddr { return p.mac }
func (p *countingPort) DeliverFrame([]byte)            { p.got.Add(1) }

// Detaching a port forgets the addresses learned on it, and only those: a
// MAC that moved to another port stays reachable there.
func TestSegmentDetachForgetsItsMACs(t *testing.T) {
	seg := NewSegment(SegmentOptions{})
	t.Cleanup(seg.Close)
	mac := func(last byte) net.HardwareAddr { return net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, last} }
	frame := func(src, dst net.HardwareAddr) []byte {
		f := make([]byte, 60)
		copy(f[0:6], dst)
		copy(f[6:12], src)
		return f
	}
	a, b, d := &countingPort{mac: mac(1)}, &countingPort{mac: mac(2)}, &countingPort{mac: mac(3)}
	atA, err := seg.Attach(a)
	require.NoError(t, err)
	atB, err := seg.Attach(b)
	require.NoError(t, err)
	atD, err := seg.Attach(d)
	require.NoError(t, err)

	require.NoError(t, atA.Send(frame(a.mac, b.mac))) // learns a's MAC on a
	require.NoError(t, atB.Send(frame(b.mac, a.mac)))
	require.Eventually(t, func() bool { return a.got.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, atD.Send(frame(a.mac, b.mac))) // a's MAC moves to d
	atA.Detach()

	unicast, flooded, atD0 := seg.Stats.Unicast.Load(), seg.Stats.Flooded.Load(), d.got.Load()
	require.NoError(t, atB.Send(frame(b.mac, a.mac)))
	require.Eventually(t, func() bool { return d.got.Load() == atD0+1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, unicast+1, seg.Stats.Unicast.Load(), "the moved MAC is still known, at d")

	atD.Detach()
	require.NoError(t, atB.Send(frame(b.mac, a.mac)))
	assert.Equal(t, flooded+1, seg.Stats.Flooded.Load(), "with d gone the MAC is unknown")
	assert.Equal(t, unicast+1, seg.Stats.Unicast.Load())
}

// A second port with a MAC already on the segment is refused and counted;
// once the first detaches, the MAC may attach again.
func TestSegmentRefusesDuplicateMAC(t *testing.T) {
	seg := NewSegment(SegmentOptions{})
	t.Cleanup(seg.Close)
	mac := net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, 9}
	first, err := seg.Attach(&countingPort{mac: mac})
	require.NoError(t, err)
	_, err = seg.Attach(&countingPort{mac: mac})
	assert.ErrorContains(t, err, "already on the segment")
	assert.Equal(t, uint64(1), seg.Stats.DuplicateMACs.Load())
	first.Detach()
	again, err := seg.Attach(&countingPort{mac: mac})
	require.NoError(t, err)
	again.Detach()
}

// Unicast to a MAC the switch has not learned goes to the unfiltered
// ports and to the filtered port whose own MAC it is, not to every device:
// a frame for a device that powered off costs nothing per other device.
func TestSegmentUnknownUnicastSkipsOtherNICs(t *testing.T) {
	seg := NewSegment(SegmentOptions{})
	t.Cleanup(seg.Close)
	mac := func(last byte) net.HardwareAddr { return net.HardwareAddr{0x00, 0x21, 0x9b, 0, 1, last} }
	server := &countingPort{mac: mac(1)} // an infrastructure host: no filter
	atServer, err := seg.Attach(server)
	require.NoError(t, err)
	open := &countingPort{mac: mac(2)}
	_, err = seg.Attach(open)
	require.NoError(t, err)
	var devs []*countingPort
	for i := range 50 {
		d := &countingPort{mac: mac(byte(10 + i))}
		at, err := seg.Attach(d)
		require.NoError(t, err)
		at.(nic.FilterAware).SetBroadcastFilter(&nic.BroadcastFilter{})
		devs = append(devs, d)
	}
	frame := func(dst net.HardwareAddr) []byte {
		f := make([]byte, 60)
		copy(f[0:6], dst)
		copy(f[6:12], server.mac)
		return f
	}
	filtered := seg.Stats.Filtered.Load()
	require.NoError(t, atServer.Send(frame(devs[7].mac))) // devs[7] never sent: not learned
	require.Eventually(t, func() bool { return devs[7].got.Load() == 1 && open.got.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, atServer.Send(frame(mac(200)))) // nobody's
	require.Eventually(t, func() bool { return open.got.Load() == 2 }, 5*time.Second, time.Millisecond)
	for i, d := range devs {
		if i != 7 {
			assert.Zero(t, d.got.Load(), "device %d", i)
		}
	}
	assert.Equal(t, filtered+49+50, seg.Stats.Filtered.Load(), "the skipped deliveries are counted")
	assert.Equal(t, uint64(2), seg.Stats.Flooded.Load())
}
