package nic

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// UplinkStats count what an uplink onto a real interface saw.
type UplinkStats struct {
	RxFrames, RxUnknown, ReadErrors, WriteErrors atomic.Uint64
	// TxFrames counts frames the devices sent out through the uplink.
	TxFrames atomic.Uint64
	// DuplicateMACs counts frames from the wire whose source MAC is one of
	// this uplink's devices': another host on the segment uses it.
	DuplicateMACs atomic.Uint64
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
	dups  sync.Map // [6]byte → struct{}: MACs already reported
}

func newDemux(name string, stats *UplinkStats, onDup func(net.HardwareAddr)) demux {
	return demux{name: name, stats: stats, onDup: onDup, ports: map[[6]byte]Port{}}
}

// dispatch delivers one frame read from the interface. The frame is only
// valid for the call.
func (d *demux) dispatch(frame []byte) {
	if len(frame) < 14 {
		d.stats.RxUnknown.Add(1)
		return
	}
	d.stats.RxFrames.Add(1)
	d.mu.RLock()
	defer d.mu.RUnlock()
	if _, ours := d.ports[[6]byte(frame[6:12])]; ours {
		// The interface hands us only what others sent: our own source
		// MAC here means a second host with the same MAC (another amtsim
		// on the same seed and shard, as a rule).
		d.stats.DuplicateMACs.Add(1)
		if _, seen := d.dups.LoadOrStore([6]byte(frame[6:12]), struct{}{}); !seen && d.onDup != nil {
			d.onDup(net.HardwareAddr(append([]byte(nil), frame[6:12]...)))
		}
		return
	}
	if frame[0]&1 != 0 {
		for _, p := range d.ports {
			p.DeliverFrame(frame)
		}
		return
	}
	if p, ok := d.ports[[6]byte(frame[:6])]; ok {
		p.DeliverFrame(frame)
		return
	}
	d.stats.RxUnknown.Add(1)
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
	return mac, nil
}

func (d *demux) detach(mac [6]byte) {
	d.mu.Lock()
	delete(d.ports, mac)
	d.mu.Unlock()
}
