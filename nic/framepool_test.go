package nic

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/amtsim/amtsim/internal/race"
)

func TestFramePoolSizes(t *testing.T) {
	var fp FramePool
	f := fp.Get(60)
	assert.Empty(t, f)
	assert.Equal(t, PooledFrameSize, cap(f), "a frame up to the pool's size comes from the pool")

	big := fp.Get(9018)
	assert.GreaterOrEqual(t, cap(big), 9018, "a jumbo frame still fits")

	// Frames of another size are never taken in: the next Get must not
	// hand out a buffer too small for its frame.
	fp.Put(make([]byte, 0, 100))
	fp.Put(big)
	for range 10 {
		assert.Equal(t, PooledFrameSize, cap(fp.Get(1514)))
	}
}

func TestFramePoolReuses(t *testing.T) {
	if race.Enabled {
		t.Skip("the race detector makes sync.Pool drop a share of what is put, at random")
	}
	var fp FramePool
	reused := false
	// A Get right after a Put on one goroutine finds the buffer, unless the
	// goroutine moved to another processor in between; a few tries make
	// that chance negligible.
	for range 10 {
		f := fp.Get(1514)
		f = append(f, 1, 2, 3)
		fp.Put(f)
		g := fp.Get(1514)
		if &g[:1][0] == &f[0] {
			reused = true
			assert.Empty(t, g, "a reused frame starts empty")
			break
		}
	}
	assert.True(t, reused, "a frame put back is handed out again")
}

// lendingWire is the test wire, lending its frames as the embedded LAN does.
type lendingWire struct {
	wire
	pool FramePool
}

func (w *lendingWire) Attach(p Port) (Attachment, error) { w.port = p; return w, nil }
func (w *lendingWire) Frames() *FramePool                { return &w.pool }

// A NIC whose wire lends frames builds the stack's packets in them; on any
// other wire it allocates its own.
func TestNICBuildsFramesInTheWiresPool(t *testing.T) {
	packet := func() stack.PacketBufferList {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			ReserveHeaderBytes: header.EthernetMinimumSize,
			Payload:            buffer.MakeWithData(make([]byte, 100)),
		})
		eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
		eth.Encode(&header.EthernetFields{SrcAddr: "\x00\x21\x9b\x01\x02\x03", DstAddr: "\xff\xff\xff\xff\xff\xff", Type: 0x88b5})
		var l stack.PacketBufferList
		l.PushBack(pkt)
		return l
	}

	lw := &lendingWire{}
	c, err := New(Options{MAC: testMAC, Uplink: lw})
	require.NoError(t, err)
	pkts := packet()
	n, terr := c.WritePackets(pkts)
	pkts.DecRef()
	require.Nil(t, terr)
	require.Equal(t, 1, n)
	require.Len(t, lw.frames, 1)
	assert.Equal(t, PooledFrameSize, cap(lw.frames[0]))
	assert.Len(t, lw.frames[0], header.EthernetMinimumSize+100)

	w := &wire{}
	c, err = New(Options{MAC: testMAC, Uplink: w})
	require.NoError(t, err)
	pkts = packet()
	_, terr = c.WritePackets(pkts)
	pkts.DecRef()
	require.Nil(t, terr)
	require.Len(t, w.frames, 1)
	assert.Equal(t, header.EthernetMinimumSize+100, cap(w.frames[0]), "no pool, a frame of its own size")
}

// A duplicated frame goes to the wire as two frames: a lender takes each
// back once delivered, so the two must not share a buffer.
func TestDuplicateIsAFrameOfItsOwn(t *testing.T) {
	lw := &lendingWire{}
	c, err := New(Options{MAC: testMAC, Uplink: lw, Egress: Netem{Duplicate: 1, Seed: 1}})
	require.NoError(t, err)
	f := lw.pool.Get(64)
	f = append(f, numbered(5)...)
	require.NoError(t, c.WriteRaw(f))
	require.Eventually(t, func() bool { lw.mu.Lock(); defer lw.mu.Unlock(); return len(lw.frames) == 2 }, 2*time.Second, time.Millisecond)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	assert.Equal(t, lw.frames[0], lw.frames[1])
	assert.NotSame(t, &lw.frames[0][0], &lw.frames[1][0])
}
