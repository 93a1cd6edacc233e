package nic

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// UplinkStats count what an uplink onto a real interface saw.
type UplinkStats struct {
	RxFrames, ReadErrors, WriteErrors atomic.Uint64
	// RxOther counts the frames of RxFrames for none of the devices.
	RxOther atomic.Uint64
	// TxFrames counts frames the devices sent out through the uplink.
	TxFrames atomic.Uint64
	// DuplicateMACs counts frames from the wire whose source MAC is one of
	// this uplink's devices': another host on the segment uses it.
	DuplicateMACs atomic.Uint64
}

// UplinkCounts is a reading of an uplink's counts, for a fleet's report
// and metrics.
type UplinkCounts struct {
	// Uplink names the interface as --uplink does: "tap:NAME", "packet:NAME".
	Uplink   string `json:"uplink"`
	RxFrames uint64 `json:"rx_frames"`
	TxFrames uint64 `json:"tx_frames"`
	// RxOther are the frames of RxFrames for none of the devices: unicast
	// to another MAC (a bridge floods those while it learns), or runts.
	RxOther     uint64 `json:"rx_other"`
	ReadErrors  uint64 `json:"read_errors"`
	WriteErrors uint64 `json:"write_errors"`
	// DuplicateMACs are frames from another host with a device's MAC.
	DuplicateMACs uint64 `json:"duplicate_mac_frames"`
	// Unfinished are frames a packet uplink could not finish as a NIC
	// would have sent them (Packet.Unfinished); a TAP has none.
	Unfinished uint64 `json:"unfinished,omitempty"`
	// KernelDrops are frames the kernel dropped before a packet uplink
	// read them, its receive buffer full (PACKET_STATISTICS); a TAP's
	// kernel side counts its own (ip -s link).
	KernelDrops uint64 `json:"kernel_drops,omitempty"`
}

// Add sums two readings: the uplinks of a sharded fleet's pods. The name
// stays when both have it, and is "" otherwise.
func (c UplinkCounts) Add(o UplinkCounts) UplinkCounts {
	if c.Uplink != o.Uplink {
		c.Uplink = ""
	}
	c.RxFrames += o.RxFrames
	c.TxFrames += o.TxFrames
	c.RxOther += o.RxOther
	c.ReadErrors += o.ReadErrors
	c.WriteErrors += o.WriteErrors
	c.DuplicateMACs += o.DuplicateMACs
	c.Unfinished += o.Unfinished
	c.KernelDrops += o.KernelDrops
	return c
}

// CountingUplink is an uplink onto a real interface, which counts what it
// saw (TAP, Packet); the embedded LAN's segment keeps counts of its own.
type CountingUplink interface {
	Uplink
	Counts() UplinkCounts
}

func (s *UplinkStats) read(name string) UplinkCounts {
	return UplinkCounts{Uplink: name, RxFrames: s.RxFrames.Load(), TxFrames: s.TxFrames.Load(), RxOther: s.RxOther.Load(),
		ReadErrors: s.ReadErrors.Load(), WriteErrors: s.WriteErrors.Load(), DuplicateMACs: s.DuplicateMACs.Load()}
}

// demux hands the frames of one interface to the ports behind it, like a
// switch port with many PCs: unicast to the port with that MAC, group
// frames to all. The TAP and packet uplinks share it.
type demux struct {
	name  string // "tap NAME", "packet NAME": for errors
	stats *UplinkStats
	onDup func(net.HardwareAddr)

	mu    sync.RWMutex
	ports map[[6]byte]Port
	// groups finds the ports a group frame passes, by the filters the
	// NICs set (FilterAware), so that an offer broadcast to one device
	// of 10,000 is one delivery, not 10,000.
	groups *BroadcastIndex[[6]byte]
	dups   sync.Map // [6]byte → struct{}: MACs already reported
}

func newDemux(name string, stats *UplinkStats, onDup func(net.HardwareAddr)) demux {
	return demux{name: name, stats: stats, onDup: onDup, ports: map[[6]byte]Port{}, groups: NewBroadcastIndex[[6]byte]()}
}

// dispatch delivers one frame read from the interface. The frame is only
// valid for the call.
func (d *demux) dispatch(frame []byte) {
	d.stats.RxFrames.Add(1)
	if len(frame) < 14 {
		d.stats.RxOther.Add(1)
		return
	}
	d.mu.RLock()
	if _, ours := d.ports[[6]byte(frame[6:12])]; ours {
		d.mu.RUnlock()
		// The interface hands us only what others sent: our own source
		// MAC here means a second host with the same MAC (another amtsim
		// on the same seed and shard, as a rule).
		d.stats.DuplicateMACs.Add(1)
		if _, seen := d.dups.LoadOrStore([6]byte(frame[6:12]), struct{}{}); !seen && d.onDup != nil {
			d.onDup(net.HardwareAddr(append([]byte(nil), frame[6:12]...)))
		}
		return
	}
	if frame[0]&1 == 0 {
		p, ok := d.ports[[6]byte(frame[:6])]
		d.mu.RUnlock()
		if !ok {
			d.stats.RxOther.Add(1)
			return
		}
		p.DeliverFrame(frame)
		return
	}
	// Delivered with the lock released: a delivery may set a filter.
	var buf [8][6]byte
	macs := d.groups.AppendPasses(buf[:0], frame)
	var pbuf [8]Port
	to := pbuf[:0]
	for _, mac := range macs {
		to = append(to, d.ports[mac])
	}
	d.mu.RUnlock()
	for _, p := range to {
		p.DeliverFrame(frame)
	}
}

// attach adds p; a MAC already attached is refused.
func (d *demux) attach(p Port) ([6]byte, error) {
	mac := [6]byte(p.HardwareAddr())
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.ports[mac]; dup {
		return mac, fmt.Errorf("%s: MAC %v is already attached", d.name, p.HardwareAddr())
	}
	d.ports[mac] = p
	d.groups.Set(mac, nil)
	return mac, nil
}

// setFilter files the port of mac under f (FilterAware).
func (d *demux) setFilter(mac [6]byte, f *BroadcastFilter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ports[mac]; ok {
		d.groups.Set(mac, f)
	}
}

func (d *demux) detach(mac [6]byte) {
	d.mu.Lock()
	delete(d.ports, mac)
	d.groups.Remove(mac)
	d.mu.Unlock()
}
