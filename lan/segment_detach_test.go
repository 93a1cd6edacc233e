package lan

import (
	"net"
	"slices"
	"sync"
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

// recordingPort keeps a copy of each frame delivered to it.
type recordingPort struct {
	mac net.HardwareAddr
	mu  sync.Mutex
	got [][]byte
}

func (p *recordingPort) HardwareAddr() net.HardwareAddr { return p.mac }
func (p *recordingPort) DeliverFrame(f []byte) {
	p.mu.Lock()
	p.got = append(p.got, append([]byte(nil), f...))
	p.mu.Unlock()
}
func (p *recordingPort) frames() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// The segment lends its ports the buffers frames are built in and takes a
// frame back only where no delivery can still read it: a unicast frame
// once delivered, a frame not delivered at all. A flooded frame is shared
// by its deliveries and never taken back.
func TestSegmentRecyclesOnlyFramesNoDeliveryHolds(t *testing.T) {
	seg := NewSegment(SegmentOptions{Workers: 2})
	t.Cleanup(seg.Close)
	mac := func(last byte) net.HardwareAddr { return net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, last} }
	a, b, c := &recordingPort{mac: mac(1)}, &recordingPort{mac: mac(2)}, &recordingPort{mac: mac(3)}
	var at []nic.Attachment
	for _, p := range []nic.Port{a, b, c} {
		x, err := seg.Attach(p)
		require.NoError(t, err)
		at = append(at, x)
	}
	send := func(from int, src, dst net.HardwareAddr, mark byte) {
		l, ok := at[from].(nic.FrameLender)
		require.True(t, ok, "a segment port lends frames")
		f := l.Frames().Get(60)
		f = append(f, dst...)
		f = append(f, src...)
		f = append(f, 0x88, 0xb5)
		f = append(f, make([]byte, 46)...)
		f[14] = mark
		require.Equal(t, nic.PooledFrameSize, cap(f))
		require.NoError(t, at[from].Send(f))
	}
	delivered := func(p *recordingPort, n int) {
		t.Helper()
		require.Eventually(t, func() bool { return len(p.frames()) == n }, 5*time.Second, time.Millisecond)
	}

	send(0, a.mac, b.mac, 1) // b not learned yet: flooded to b and c
	delivered(b, 1)
	delivered(c, 1)
	send(1, b.mac, a.mac, 2) // a learned: unicast
	delivered(a, 1)
	require.Eventually(t, func() bool { return seg.Stats.Recycled.Load() == 1 }, 5*time.Second, time.Millisecond,
		"the unicast frame comes back once delivered")
	send(0, a.mac, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 3) // broadcast
	delivered(b, 2)
	delivered(c, 2)
	send(0, a.mac, a.mac, 4) // hairpin: not delivered, taken back at once
	assert.Equal(t, uint64(2), seg.Stats.Recycled.Load(), "flooded frames stay out of the pool; a hairpin comes back")
	assert.Equal(t, uint64(1), seg.Stats.Hairpin.Load())

	// Every delivery read the frame as it was sent.
	for _, got := range [][]byte{b.frames()[0], c.frames()[0], a.frames()[0], b.frames()[1], c.frames()[1]} {
		require.Len(t, got, 60)
	}
	assert.Equal(t, []byte{1, 3}, []byte{b.frames()[0][14], b.frames()[1][14]})
	assert.Equal(t, []byte{1, 3}, []byte{c.frames()[0][14], c.frames()[1][14]})
	assert.Equal(t, byte(2), a.frames()[0][14])
}
