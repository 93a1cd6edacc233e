package nic

import "sync"

// PooledFrameSize is the capacity of a frame from a FramePool: a 1500-byte
// MTU's frame with its Ethernet header and a VLAN tag, rounded up. A larger
// frame (a larger MTU) is allocated and left to the collector.
const PooledFrameSize = 1536

// A FramePool keeps frame buffers for reuse. Without it every packet a
// stack sends is a fresh, zeroed buffer: 150 frames and about 90 KB per
// provisioning on the embedded LAN, a tenth of all the fleet allocates.
//
// The zero FramePool is ready to use. A frame taken with Get is its
// taker's until it is given to Put; a frame given to Put must not be used
// again by anyone, which is why only the owner of a frame after its last
// use (an uplink that has delivered it) puts it back.
type FramePool struct {
	p sync.Pool // *[PooledFrameSize]byte
}

// Get returns an empty frame with room for size bytes.
func (fp *FramePool) Get(size int) []byte {
	if size > PooledFrameSize {
		return make([]byte, 0, size)
	}
	if b, ok := fp.p.Get().(*[PooledFrameSize]byte); ok {
		return b[:0]
	}
	return new([PooledFrameSize]byte)[:0]
}

// Put gives frame back for reuse. A frame not of the pool's size (one
// Get allocated for a larger MTU, or one built elsewhere) is left alone.
func (fp *FramePool) Put(frame []byte) {
	if cap(frame) != PooledFrameSize {
		return
	}
	fp.p.Put((*[PooledFrameSize]byte)(frame[:PooledFrameSize]))
}

// A FrameLender is an Attachment that lends the buffers its port builds
// frames in. Send already takes ownership of a frame; a lender's Send puts
// it back into the pool once it has been delivered, so that the next
// frame reuses it.
type FrameLender interface {
	Frames() *FramePool
}
