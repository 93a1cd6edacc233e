package lan

import "sync"

// portBuffer is one delivery worker's frame queue, the switch's buffer for
// the ports that worker serves. It grows with a burst instead of dropping,
// up to a byte bound: a sender may hold locks of a stack the worker is
// delivering into, so put never waits for room, and a synchronized round
// of 30,000 devices (ARP, DNS, SYN at one instant) is queued whole rather
// than dropped and left to retransmit timers.
//
// The worker takes everything queued in one swap, so a sender and the
// worker meet on the mutex once per batch rather than once per frame.
type portBuffer struct {
	mu     sync.Mutex
	queued []delivery
	bytes  int // the frames' bytes in queued
	limit  int
	closed bool
	// wake has room for one signal: put sends it when queued was empty,
	// and the worker, having found it empty, waits on it.
	wake chan struct{}
	// recycle takes back a frame delivered to its one port (see delivery).
	recycle func([]byte)
}

func newPortBuffer(limit int, recycle func([]byte)) *portBuffer {
	return &portBuffer{limit: limit, wake: make(chan struct{}, 1), recycle: recycle}
}

// put queues d, or reports false when the buffer holds limit bytes already
// (or is closed): the frame is dropped, as a switch with full buffers does.
func (b *portBuffer) put(d delivery) bool {
	b.mu.Lock()
	if b.closed || b.bytes+len(d.frame) > b.limit {
		b.mu.Unlock()
		return false
	}
	first := len(b.queued) == 0
	b.queued = append(b.queued, d)
	b.bytes += len(d.frame)
	b.mu.Unlock()
	if first {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// close makes put refuse; the worker still drains what is queued.
func (b *portBuffer) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// take waits for frames and returns all of them, handing the buffer spare
// (emptied) to queue the next ones in; ok is false once closed and drained.
func (b *portBuffer) take(spare []delivery) (batch []delivery, ok bool) {
	b.mu.Lock()
	for len(b.queued) == 0 {
		if b.closed {
			b.mu.Unlock()
			return nil, false
		}
		b.mu.Unlock()
		<-b.wake
		b.mu.Lock()
	}
	batch, b.queued, b.bytes = b.queued, spare[:0], 0
	b.mu.Unlock()
	return batch, true
}

// serve delivers every frame put, in order, until the buffer is closed
// and drained.
func (b *portBuffer) serve() {
	var spare []delivery
	for {
		batch, ok := b.take(spare)
		if !ok {
			return
		}
		for _, d := range batch {
			if !d.to.detached.Load() {
				d.to.port.DeliverFrame(d.frame)
			}
			if d.last {
				b.recycle(d.frame)
			}
		}
		clear(batch) // the frames and ports are not kept alive by the spare
		// A burst's array is not kept for good: after a large one the
		// next batch starts from a fresh small slice.
		if cap(batch) > maxSpare {
			batch = nil
		}
		spare = batch
	}
}

// maxSpare is the largest batch array a worker keeps between bursts.
const maxSpare = 4096
