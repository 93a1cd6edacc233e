package nic

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// demuxUplink is a TAP's demultiplexing without the TAP.
type demuxUplink struct{ d demux }

type demuxAttachment struct {
	u   *demuxUplink
	mac [6]byte
}

func (u *demuxUplink) Attach(p Port) (Attachment, error) {
	mac, err := u.d.attach(p)
	return &demuxAttachment{u, mac}, err
}
func (a *demuxAttachment) Send([]byte) error                     { return nil }
func (a *demuxAttachment) Detach()                               { a.u.d.detach(a.mac) }
func (a *demuxAttachment) SetBroadcastFilter(f *BroadcastFilter) { a.u.d.setFilter(a.mac, f) }

// A broadcast offer from the wire is handed to the device it is for and to
// NICs without a filter, never to the other devices; a detached NIC gets
// nothing.
func TestDemuxDeliversOffersByChaddr(t *testing.T) {
	u := &demuxUplink{d: newDemux("test", &UplinkStats{}, nil)}
	mk := func(last byte, filter bool) *NIC {
		n, err := New(Options{MAC: net.HardwareAddr{0x00, 0x21, 0x9b, 0, 0, last}, Uplink: u, MEFilter: filter})
		require.NoError(t, err)
		n.SetRawHandler(func([]byte) bool { return true })
		return n
	}
	open, a, b := mk(1, false), mk(2, true), mk(3, true)
	u.d.dispatch(bootpReply(t, b.HardwareAddr()))
	assert.Equal(t, uint64(1), b.Stats.RxFrames.Load())
	assert.Equal(t, uint64(1), open.Stats.RxFrames.Load())
	assert.Zero(t, a.Stats.RxFrames.Load()+a.Stats.RxFiltered.Load(), "a was never handed the offer")

	// A delivery that changes the NIC's filter, as a DHCP ACK does, must
	// not wait on the demux's own lock.
	a.SetRawHandler(func([]byte) bool { a.SetFilterAddrs(); return true })
	done := make(chan struct{})
	go func() { u.d.dispatch(bootpReply(t, a.HardwareAddr())); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a filter change inside a delivery deadlocked the demux")
	}
	assert.Equal(t, uint64(1), a.Stats.RxFrames.Load())

	b.Close()
	u.d.dispatch(bootpReply(t, b.HardwareAddr()))
	assert.Equal(t, uint64(1), b.Stats.RxFrames.Load(), "b is gone from the index")
	assert.Equal(t, uint64(3), open.Stats.RxFrames.Load())
}
