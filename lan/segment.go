// Package lan is the embedded LAN: an in-process Ethernet segment (a
// learning switch) with a DHCP server and a DNS server attached as hosts,
// each with its own MAC, address and gVisor stack, exactly as devices are.
// It lets `make run` and the tests run a whole network with no root and no
// host networking.
package lan

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/amtsim/amtsim/nic"
)

// SegmentOptions configure a Segment.
type SegmentOptions struct {
	// Workers deliver frames; default GOMAXPROCS. Frames for one port always
	// go through the same worker, so they arrive in the order sent.
	Workers int
	// BufferBytes bounds the frames queued for each worker, in bytes; a
	// frame that would pass it is dropped (and counted), as a switch with
	// full buffers drops. Default 64 MiB: a synchronized round of 30,000
	// devices queues a few megabytes, and the bound is only there so that
	// a receiver that stops taking frames cannot grow the process without
	// end.
	BufferBytes int
}

// SegmentStats count what the switch did.
type SegmentStats struct {
	Frames  atomic.Uint64 // frames sent into the segment
	Unicast atomic.Uint64 // delivered to the one learned port
	Flooded atomic.Uint64 // group or unknown-unicast frames flooded
	// Filtered counts group-frame deliveries skipped because the port's
	// broadcast filter (nic.BroadcastFilter) would refuse them.
	Filtered atomic.Uint64
	Dropped  atomic.Uint64 // lost to a full buffer (BufferBytes)
	Hairpin  atomic.Uint64 // addressed back to the sender's own port
	Runts    atomic.Uint64 // shorter than an Ethernet header
	// DuplicateMACs counts Attach calls refused because another port
	// has the same MAC.
	DuplicateMACs atomic.Uint64
	// Recycled counts frames whose buffers went back to the pool the
	// ports' NICs build frames in (nic.FrameLender): each unicast frame
	// once delivered, and each frame not delivered at all.
	Recycled atomic.Uint64
}

// Segment is a learning Ethernet switch. It implements nic.Uplink.
type Segment struct {
	mu    sync.RWMutex
	ports map[*segPort]struct{}
	// own maps each attached port's own MAC to it: two NICs with one MAC
	// on a segment is a misconfiguration the switch refuses at Attach.
	own   map[[6]byte]*segPort
	table map[[6]byte]*segPort
	// Group frames go to the ports without a filter (open) and to the
	// filtered ports they pass, found by the index, never to the rest.
	groups *nic.BroadcastIndex[*segPort]
	nextID uint64
	closed bool

	queues []*portBuffer
	wg     sync.WaitGroup
	// frames are lent to the ports' NICs (nic.FrameLender) and come back
	// once delivered.
	frames nic.FramePool

	Stats SegmentStats
}

type delivery struct {
	to    *segPort
	frame []byte
	// last is set when no other delivery holds frame (a unicast frame):
	// the worker gives it back to the pool once delivered. A flooded frame
	// is shared by its deliveries and left to the collector.
	last bool
}

type segPort struct {
	seg      *Segment
	port     nic.Port
	id       uint64
	detached atomic.Bool
	mac      [6]byte // the port's own MAC (zero if it has none)
	// macs are the source addresses learned on this port (a NIC's one,
	// as a rule), so that Detach forgets them without walking the whole
	// table: a walk per port made stopping 100,000 devices take 98 s.
	// Guarded by seg.mu.
	macs [][6]byte
}

var (
	_ nic.Uplink      = (*Segment)(nil)
	_ nic.FrameLender = (*segPort)(nil)
)

// NewSegment starts a segment; Close stops it.
func NewSegment(o SegmentOptions) *Segment {
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.BufferBytes <= 0 {
		o.BufferBytes = 64 << 20
	}
	s := &Segment{
		ports: map[*segPort]struct{}{}, own: map[[6]byte]*segPort{}, table: map[[6]byte]*segPort{},
		groups: nic.NewBroadcastIndex[*segPort](),
	}
	for range o.Workers {
		q := newPortBuffer(o.BufferBytes, s.recycle)
		s.queues = append(s.queues, q)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			q.serve()
		}()
	}
	return s
}

// Attach implements nic.Uplink.
func (s *Segment) Attach(p nic.Port) (nic.Attachment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("lan: segment is closed")
	}
	var mac [6]byte
	if hw := p.HardwareAddr(); len(hw) == 6 {
		mac = [6]byte(hw)
		if _, dup := s.own[mac]; dup {
			s.Stats.DuplicateMACs.Add(1)
			return nil, fmt.Errorf("lan: MAC %v is already on the segment (two devices with one identity: same seed, shard and index?)", hw)
		}
	}
	sp := &segPort{seg: s, port: p, id: s.nextID, mac: mac}
	if mac != ([6]byte{}) {
		s.own[mac] = sp
	}
	s.nextID++
	s.ports[sp] = struct{}{}
	s.groups.Set(sp, nil)
	return sp, nil
}

// Frames implements nic.FrameLender.
func (p *segPort) Frames() *nic.FramePool { return &p.seg.frames }

// SetBroadcastFilter implements nic.FilterAware.
func (p *segPort) SetBroadcastFilter(f *nic.BroadcastFilter) {
	s := p.seg
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, attached := s.ports[p]; !attached {
		return
	}
	s.groups.Set(p, f)
}

// Ports returns how many ports are attached.
func (s *Segment) Ports() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.ports)
}

// Close stops delivery; frames still queued are delivered first.
func (s *Segment) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for _, q := range s.queues {
		q.close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (p *segPort) Send(frame []byte) error {
	s := p.seg
	if len(frame) < 14 {
		s.Stats.Runts.Add(1)
		s.recycle(frame)
		return errors.New("lan: runt frame")
	}
	s.Stats.Frames.Add(1)
	src, dst := [6]byte(frame[6:12]), [6]byte(frame[0:6])

	// Learn the source under the write lock only when it is new or moved.
	s.mu.RLock()
	known := s.table[src] == p
	s.mu.RUnlock()
	if !known && src[0]&1 == 0 && !p.detached.Load() {
		s.mu.Lock()
		s.table[src] = p
		if !slices.Contains(p.macs, src) {
			p.macs = append(p.macs, src)
		}
		s.mu.Unlock()
	}

	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		s.recycle(frame)
		return errors.New("lan: segment is closed")
	}
	if dst[0]&1 == 0 {
		if to, ok := s.table[dst]; ok {
			if to == p {
				s.Stats.Hairpin.Add(1)
				s.recycle(frame)
				return nil
			}
			s.Stats.Unicast.Add(1)
			s.enqueue(delivery{to: to, frame: frame, last: true})
			return nil
		}
	}
	s.Stats.Flooded.Add(1)
	sent := 0
	if dst[0]&1 == 0 {
		// Unknown unicast (its MAC not learned yet, or gone with a device
		// that powered off). A switch floods it and every NIC but the one
		// it is for drops it. The ports with a broadcast filter are NICs
		// that take unicast only for their own MAC, so the flood goes to
		// the unfiltered ports and to the port whose own MAC it is: the
		// only ones that can take it. Flooding every port made each frame
		// to a powered-off device cost one delivery per device (at 30,000
		// booted devices, most of the CPU while a fleet stopped).
		var buf [16]*segPort
		for _, to := range s.groups.AppendOpen(buf[:0]) {
			if to != p {
				s.enqueue(delivery{to: to, frame: frame})
				sent++
			}
		}
		if to, ok := s.own[dst]; ok && to != p && s.groups.Filtered(to) {
			s.enqueue(delivery{to: to, frame: frame})
			sent++
		}
		if skipped := len(s.ports) - 1 - sent; skipped > 0 {
			s.Stats.Filtered.Add(uint64(skipped))
		}
		return nil
	}
	var buf [16]*segPort
	for _, to := range s.groups.AppendPasses(buf[:0], frame) {
		if to != p {
			s.enqueue(delivery{to: to, frame: frame})
			sent++
		}
	}
	if skipped := len(s.ports) - 1 - sent; skipped > 0 {
		s.Stats.Filtered.Add(uint64(skipped))
	}
	return nil
}

func (s *Segment) recycle(frame []byte) {
	s.Stats.Recycled.Add(1)
	s.frames.Put(frame)
}

// enqueue never waits (see portBuffer): only a full buffer drops.
func (s *Segment) enqueue(d delivery) {
	if !s.queues[d.to.id%uint64(len(s.queues))].put(d) {
		s.Stats.Dropped.Add(1)
		if d.last {
			s.recycle(d.frame)
		}
	}
}

func (p *segPort) Detach() {
	s := p.seg
	p.detached.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups.Remove(p)
	delete(s.ports, p)
	if s.own[p.mac] == p {
		delete(s.own, p.mac)
	}
	for _, mac := range p.macs {
		if s.table[mac] == p { // a MAC that moved on belongs to its new port
			delete(s.table, mac)
		}
	}
	p.macs = nil
}
