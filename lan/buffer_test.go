package lan

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/nic"
)

// stalledPort takes no frame until released, then records their sequence
// numbers (bytes 14–17) in the order they arrive.
type stalledPort struct {
	mac     net.HardwareAddr
	release chan struct{}
	mu      sync.Mutex
	seqs    []uint32
}

func (p *stalledPort) HardwareAddr() net.HardwareAddr { return p.mac }
func (p *stalledPort) DeliverFrame(f []byte) {
	<-p.release
	p.mu.Lock()
	p.seqs = append(p.seqs, binary.BigEndian.Uint32(f[14:]))
	p.mu.Unlock()
}
func (p *stalledPort) got() []uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint32(nil), p.seqs...)
}

func seqFrame(src, dst net.HardwareAddr, seq uint32) []byte {
	f := make([]byte, 60)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint32(f[14:], seq)
	return f
}

// stalledPair attaches a sender a and a stalled receiver z whose MAC the
// switch has learned, and returns a's attachment.
func stalledPair(t *testing.T, seg *Segment) (*countingPort, nic.Attachment, *stalledPort) {
	t.Helper()
	a := &countingPort{mac: net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, 1}}
	z := &stalledPort{mac: net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, 2}, release: make(chan struct{})}
	atA, err := seg.Attach(a)
	require.NoError(t, err)
	atZ, err := seg.Attach(z)
	require.NoError(t, err)
	require.NoError(t, atZ.Send(seqFrame(z.mac, a.mac, 0))) // the switch learns z
	require.Eventually(t, func() bool { return a.got.Load() == 1 }, 5*time.Second, time.Millisecond)
	return a, atA, z
}

// A burst far larger than any fixed queue, sent while the receiver is
// stalled, is buffered whole and delivered in order once it takes frames
// again: the switch buffers rather than drops, and the sender never waits.
func TestSegmentBuffersABurst(t *testing.T) {
	seg := NewSegment(SegmentOptions{Workers: 1})
	t.Cleanup(seg.Close)
	a, atA, z := stalledPair(t, seg)

	const burst = 50_000
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range uint32(burst) {
			if err := atA.Send(seqFrame(a.mac, z.mac, i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-sent:
	case <-time.After(30 * time.Second):
		t.Fatal("a sender waited for a stalled receiver")
	}
	close(z.release)
	require.Eventually(t, func() bool { return len(z.got()) == burst }, 30*time.Second, time.Millisecond)
	for i, seq := range z.got() {
		if seq != uint32(i) {
			t.Fatalf("frame %d arrived as the %dth", seq, i)
		}
	}
	assert.Zero(t, seg.Stats.Dropped.Load())
}

// Past BufferBytes a stalled receiver's frames are dropped and counted,
// and every frame is either delivered or counted dropped.
func TestSegmentBufferIsBounded(t *testing.T) {
	const limit = 6000 // a hundred 60-byte frames
	seg := NewSegment(SegmentOptions{Workers: 1, BufferBytes: limit})
	a, atA, z := stalledPair(t, seg)

	const sent = 1000
	for i := range uint32(sent) {
		require.NoError(t, atA.Send(seqFrame(a.mac, z.mac, i)))
	}
	dropped := seg.Stats.Dropped.Load()
	// At most one frame is with the stalled receiver and limit's worth
	// queued (a batch may have been taken before it filled).
	assert.GreaterOrEqual(t, dropped, uint64(sent-2*limit/60-1))
	close(z.release)
	seg.Close() // delivers what was queued first
	assert.Equal(t, sent, len(z.got())+int(dropped))
	got := z.got()
	for i := 1; i < len(got); i++ {
		assert.Less(t, got[i-1], got[i], "in order")
	}
}
