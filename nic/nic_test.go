package nic

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// wire is an Uplink that records what a NIC sends. It stands in for a
// switch only in these unit tests of the NIC's own transmit path; the
// integration tests use the real segment and a real TAP.
type wire struct {
	mu     sync.Mutex
	frames [][]byte
	port   Port
}

func (w *wire) Attach(p Port) (Attachment, error) { w.port = p; return w, nil }
func (w *wire) Send(f []byte) error {
	w.mu.Lock()
	w.frames = append(w.frames, f)
	w.mu.Unlock()
	return nil
}
func (w *wire) Detach() {}

var testMAC = net.HardwareAddr{0x00, 0x21, 0x9b, 0x01, 0x02, 0x03}

// numbered returns frame i: broadcast, with i in the payload.
func numbered(i int) []byte {
	f := make([]byte, 64)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:], testMAC)
	f[12], f[13] = 0x88, 0xb5 // local experimental EtherType
	f[14], f[15], f[16] = byte(i>>16), byte(i>>8), byte(i)
	return f
}

func index(f []byte) int { return int(f[14])<<16 | int(f[15])<<8 | int(f[16]) }

func sendAll(t *testing.T, cfg Netem, n int) []int {
	t.Helper()
	w := &wire{}
	c, err := New(Options{MAC: testMAC, Uplink: w, Egress: cfg})
	require.NoError(t, err)
	for i := range n {
		require.NoError(t, c.WriteRaw(numbered(i)))
	}
	var got []int
	for _, f := range w.frames {
		got = append(got, index(f))
	}
	if cfg.Duplicate == 0 {
		assert.Equal(t, uint64(n-len(got)), c.Stats.TxImpairDrops.Load())
	}
	return got
}

func dropped(sent int, delivered []int) []int {
	seen := map[int]bool{}
	for _, i := range delivered {
		seen[i] = true
	}
	var d []int
	for i := range sent {
		if !seen[i] {
			d = append(d, i)
		}
	}
	return d
}

func TestLossRateAndRepeatability(t *testing.T) {
	const n = 20000
	a := dropped(n, sendAll(t, Netem{Loss: 0.2, Seed: 7}, n))
	rate := float64(len(a)) / n
	assert.InDelta(t, 0.2, rate, 0.015, "20%% loss drops about 20%% of frames (got %.4f)", rate)

	b := dropped(n, sendAll(t, Netem{Loss: 0.2, Seed: 7}, n))
	assert.Equal(t, a, b, "the same seed drops the same frames")

	c := dropped(n, sendAll(t, Netem{Loss: 0.2, Seed: 8}, n))
	assert.NotEqual(t, a, c, "another seed drops other frames")

	none := dropped(n, sendAll(t, Netem{}, n))
	assert.Empty(t, none, "no impairment, no loss")
}

func TestDuplicate(t *testing.T) {
	got := sendAll(t, Netem{Duplicate: 0.5, Seed: 1}, 2000)
	assert.InDelta(t, 3000, len(got), 150)
}

func TestDelayReorderJitter(t *testing.T) {
	w := &wire{}
	c, err := New(Options{MAC: testMAC, Uplink: w, Egress: Netem{Delay: 30 * time.Millisecond, Jitter: 10 * time.Millisecond, Reorder: 0.3, Seed: 3}})
	require.NoError(t, err)
	for i := range 200 {
		require.NoError(t, c.WriteRaw(numbered(i)))
	}
	w.mu.Lock()
	immediate := len(w.frames)
	w.mu.Unlock()
	assert.InDelta(t, 60, immediate, 25, "about 30%% go at once (reorder)")
	require.Eventually(t, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.frames) == 200 }, 2*time.Second, 5*time.Millisecond)
	var order []int
	for _, f := range w.frames {
		order = append(order, index(f))
	}
	inOrder := true
	for i := 1; i < len(order); i++ {
		inOrder = inOrder && order[i] > order[i-1]
	}
	assert.False(t, inOrder, "reordered frames overtake delayed ones")
}

// SetNetem changes a running NIC's impairments: from none to all frames
// lost and back, and the same switch at the same point draws the same fates.
func TestSetNetemWhileRunning(t *testing.T) {
	run := func() []int {
		w := &wire{}
		c, err := New(Options{MAC: testMAC, Uplink: w})
		require.NoError(t, err)
		for i := range 100 {
			require.NoError(t, c.WriteRaw(numbered(i)))
		}
		require.NoError(t, c.SetNetem(Netem{Loss: 0.5, Seed: 9}, Netem{}))
		for i := 100; i < 1100; i++ {
			require.NoError(t, c.WriteRaw(numbered(i)))
		}
		require.NoError(t, c.SetNetem(Netem{}, Netem{}))
		for i := 1100; i < 1200; i++ {
			require.NoError(t, c.WriteRaw(numbered(i)))
		}
		assert.Error(t, c.SetNetem(Netem{Loss: 2}, Netem{}), "a bad setting is refused")
		var got []int
		for _, f := range w.frames {
			got = append(got, index(f))
		}
		return dropped(1200, got)
	}
	a := run()
	require.NotEmpty(t, a)
	assert.GreaterOrEqual(t, a[0], 100, "nothing is lost before the switch")
	assert.Less(t, a[len(a)-1], 1100, "nothing is lost after the switch back")
	assert.InDelta(t, 500, len(a), 60)
	assert.Equal(t, a, run(), "the same switches draw the same fates")
}

func TestNetemValidate(t *testing.T) {
	for _, bad := range []Netem{{Loss: 1.5}, {Loss: -0.1}, {Reorder: 0.1}, {Jitter: time.Millisecond}, {Delay: -1}} {
		_, err := New(Options{MAC: testMAC, Uplink: &wire{}, Egress: bad})
		assert.Error(t, err, "%+v", bad)
	}
}

func TestLinkDownAndFilter(t *testing.T) {
	w := &wire{}
	c, err := New(Options{MAC: testMAC, Uplink: w})
	require.NoError(t, err)
	var raw [][]byte
	c.SetRawHandler(func(f []byte) bool { raw = append(raw, append([]byte(nil), f...)); return true })

	c.SetLink(false)
	assert.ErrorIs(t, c.WriteRaw(numbered(1)), ErrLinkDown)
	w.port.DeliverFrame(numbered(2))
	assert.Empty(t, raw)
	assert.Equal(t, uint64(2), c.Stats.LinkDownDrops.Load())

	c.SetLink(true)
	other := numbered(3)
	copy(other, []byte{0x00, 0x21, 0x9b, 0xff, 0xff, 0xff})
	w.port.DeliverFrame(other)
	assert.Empty(t, raw, "unicast for another MAC is filtered")
	assert.Equal(t, uint64(1), c.Stats.RxFiltered.Load())
	w.port.DeliverFrame([]byte{1, 2, 3})
	assert.Equal(t, uint64(1), c.Stats.RxMalformed.Load())

	mine := numbered(4)
	copy(mine, testMAC)
	w.port.DeliverFrame(mine)
	require.Len(t, raw, 1)
	assert.True(t, bytes.Equal(mine, raw[0]))

	short := make([]byte, 20)
	copy(short, numbered(5)[:20])
	require.NoError(t, c.WriteRaw(short))
	assert.Len(t, w.frames[len(w.frames)-1], 60, "short frames are padded to the Ethernet minimum")
}

func TestPCIIdentity(t *testing.T) {
	c, err := New(Options{MAC: testMAC, Uplink: &wire{}})
	require.NoError(t, err)
	v, d := c.PCIID()
	assert.Equal(t, uint16(0x8086), v)
	assert.Equal(t, uint16(0x104A), d)
	_, err = New(Options{MAC: net.HardwareAddr{0x01, 0, 0, 0, 0, 1}, Uplink: &wire{}})
	assert.Error(t, err, "a group address is no NIC's MAC")
}

// FuzzDeliverFrame feeds hostile frames through the NIC's receive path and
// into a real gVisor stack.
func FuzzDeliverFrame(f *testing.F) {
	f.Add(numbered(1))
	f.Add([]byte{})
	arp := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3, 4, 5, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1}
	f.Add(arp)
	ipv4 := append(append([]byte{}, testMAC...), 0, 1, 2, 3, 4, 5, 0x08, 0x00, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2)
	f.Add(ipv4)
	w := &wire{}
	c, err := New(Options{MAC: testMAC, Uplink: w})
	if err != nil {
		f.Fatal(err)
	}
	stacks := NewStacks(StackOptions{})
	h, err := stacks.Attach(c)
	if err != nil {
		f.Fatal(err)
	}
	if err := h.SetAddress(netip.MustParsePrefix("10.0.0.2/24"), netip.Addr{}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		w.port.DeliverFrame(frame)
	})
}

func TestStacksReuseRoomOfClosedHosts(t *testing.T) {
	p := NewStacks(StackOptions{NICsPerStack: 2})
	defer p.Close()
	attach := func(i byte) *Host {
		c, err := New(Options{MAC: net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, i}, Uplink: &wire{}})
		require.NoError(t, err)
		h, err := p.Attach(c)
		require.NoError(t, err)
		return h
	}
	a, _ := attach(1), attach(2)
	assert.Equal(t, 1, p.Count())
	a.Close()
	a.Close() // idempotent: gives its place back once
	attach(3)
	assert.Equal(t, 1, p.Count(), "a closed host's place is reused")
	attach(4)
	assert.Equal(t, 2, p.Count(), "a full stack makes a new one")
}
