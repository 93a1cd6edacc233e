package nic

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The NIC's own ARP (Options.OwnARP). gVisor gives every NIC that needs
// link resolution a neighbor table made for 512 entries, about 40 KB each,
// the better part of an idle device's memory; an AMT device talks to a
// handful of peers (gateway, DNS, SCS). So device NICs answer and resolve
// ARP themselves (RFC 826) with a table of a few entries, and the stack
// sees a link that needs no resolution.

const (
	arpRetry    = time.Second // between requests for an unanswered address
	arpTries    = 3
	arpQueueMax = 16 // frames held per unresolved address
	arpMaxAge   = 20 * time.Minute
	arpMaxSize  = 64 // entries; the oldest goes first beyond
)

// arpTable holds its few entries in slices, searched in order: a map
// with room for four entries was 1 KB of every device's idle heap (10 MB
// of a 10,000-device fleet's 254), where two entries in a slice are 80
// bytes.
type arpTable struct {
	mu      sync.Mutex
	own     netip.Addr
	entries []arpEntry
	pending []*arpPending // nil when none waits
}

type arpEntry struct {
	ip  [4]byte
	mac [6]byte
	at  time.Time
}

type arpPending struct {
	ip     netip.Addr
	frames [][]byte
	tries  int
	timer  *time.Timer
}

func (t *arpTable) entry(ip netip.Addr) *arpEntry {
	a := ip.As4()
	for i := range t.entries {
		if t.entries[i].ip == a {
			return &t.entries[i]
		}
	}
	return nil
}

func (t *arpTable) waiting(ip netip.Addr) *arpPending {
	for _, p := range t.pending {
		if p.ip == ip {
			return p
		}
	}
	return nil
}

// unwait drops ip's pending frames, and the slice with the last of them.
func (t *arpTable) unwait(ip netip.Addr) {
	t.pending = slices.DeleteFunc(t.pending, func(p *arpPending) bool { return p.ip == ip })
	if len(t.pending) == 0 {
		t.pending = nil
	}
}

// setOwn sets the NIC's IPv4 address (invalid: none), and forgets the
// table: a new address is a new network.
func (t *arpTable) setOwn(a netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a == t.own {
		return
	}
	t.own = a
	for _, p := range t.pending {
		p.timer.Stop()
	}
	t.entries, t.pending = nil, nil
}

// learnLocked merges a sender into the table.
func (t *arpTable) learnLocked(ip netip.Addr, mac [6]byte) {
	if e := t.entry(ip); e != nil {
		e.mac, e.at = mac, time.Now()
		return
	}
	if len(t.entries) >= arpMaxSize {
		oldest := 0
		for i, e := range t.entries {
			if e.at.Before(t.entries[oldest].at) {
				oldest = i
			}
		}
		t.entries = slices.Delete(t.entries, oldest, oldest+1)
	}
	t.entries = append(t.entries, arpEntry{ip: ip.As4(), mac: mac, at: time.Now()})
}

// handleARP takes an ARP frame: a request for our address is answered
// (and its sender learned, as RFC 826 merges it); a reply is learned and
// releases the frames that waited for it. It reports whether the frame
// was ARP.
func (n *NIC) handleARP(frame []byte) bool {
	if header.Ethernet(frame).Type() != header.ARPProtocolNumber {
		return false
	}
	a := header.ARP(frame[header.EthernetMinimumSize:])
	if !a.IsValid() { // Ethernet, IPv4, sizes
		n.Stats.RxMalformed.Add(1)
		return true
	}
	sender, ok := netip.AddrFromSlice(a.ProtocolAddressSender())
	target, ok2 := netip.AddrFromSlice(a.ProtocolAddressTarget())
	if !ok || !ok2 {
		n.Stats.RxMalformed.Add(1)
		return true
	}
	var smac [6]byte
	copy(smac[:], a.HardwareAddressSender())
	t := &n.arp
	t.mu.Lock()
	if !t.own.IsValid() || target != t.own || sender == t.own {
		t.mu.Unlock()
		return true
	}
	t.learnLocked(sender, smac)
	var release [][]byte
	if p := t.waiting(sender); p != nil {
		p.timer.Stop()
		release = p.frames
		t.unwait(sender)
	}
	own := t.own
	t.mu.Unlock()
	if a.Op() == header.ARPRequest {
		_ = n.transmit(n.arpFrame(header.ARPReply, own, sender, smac))
	}
	for _, f := range release {
		copy(f[:6], smac[:])
		_ = n.transmit(f)
	}
	return true
}

// arpFrame builds an ARP request or reply from own to ip (at mac; a
// request goes to broadcast).
func (n *NIC) arpFrame(op header.ARPOp, own, ip netip.Addr, mac [6]byte) []byte {
	f := make([]byte, minFrame)
	eth := header.Ethernet(f)
	dst := header.EthernetBroadcastAddress
	if op == header.ARPReply {
		dst = tcpipLink(mac)
	}
	eth.Encode(&header.EthernetFields{SrcAddr: n.mac, DstAddr: dst, Type: header.ARPProtocolNumber})
	a := header.ARP(f[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(op)
	copy(a.HardwareAddressSender(), n.hw)
	o, r := own.As4(), ip.As4()
	copy(a.ProtocolAddressSender(), o[:])
	copy(a.HardwareAddressTarget(), mac[:])
	copy(a.ProtocolAddressTarget(), r[:])
	return f
}

// resolve fills in the destination MAC of an IPv4 frame for next hop ip,
// or holds the frame and asks who has ip. It reports whether the frame may
// go now.
func (n *NIC) resolve(frame []byte, ip netip.Addr) bool {
	if ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		copy(frame[:6], header.EthernetBroadcastAddress)
		return true
	}
	t := &n.arp
	t.mu.Lock()
	if e := t.entry(ip); e != nil && time.Since(e.at) < arpMaxAge {
		mac := e.mac
		t.mu.Unlock()
		copy(frame[:6], mac[:])
		return true
	}
	own := t.own
	if !own.IsValid() {
		t.mu.Unlock()
		return false
	}
	p := t.waiting(ip)
	first := p == nil
	if first {
		p = &arpPending{ip: ip}
		t.pending = append(t.pending, p)
		p.timer = time.AfterFunc(arpRetry, func() { n.arpRetry(ip) })
	}
	if len(p.frames) < arpQueueMax {
		p.frames = append(p.frames, frame)
	}
	t.mu.Unlock()
	if first {
		_ = n.transmit(n.arpFrame(header.ARPRequest, own, ip, [6]byte{}))
	}
	return false
}

// arpRetry asks again, or gives up and drops what waited.
func (n *NIC) arpRetry(ip netip.Addr) {
	t := &n.arp
	t.mu.Lock()
	p := t.waiting(ip)
	if p == nil {
		t.mu.Unlock()
		return
	}
	p.tries++
	if p.tries >= arpTries {
		t.unwait(ip)
		t.mu.Unlock()
		n.Stats.ARPFailures.Add(1)
		return
	}
	p.timer = time.AfterFunc(arpRetry, func() { n.arpRetry(ip) })
	own := t.own
	t.mu.Unlock()
	_ = n.transmit(n.arpFrame(header.ARPRequest, own, ip, [6]byte{}))
}

// nextHop is where an outbound IPv4 frame goes on the link: the route's
// next hop, or its destination when that is on the link.
func nextHop(frame []byte, hop netip.Addr) (netip.Addr, bool) {
	if hop.IsValid() && !hop.IsUnspecified() {
		return hop, true
	}
	if len(frame) < header.EthernetMinimumSize+header.IPv4MinimumSize {
		return netip.Addr{}, false
	}
	var d [4]byte
	copy(d[:], frame[header.EthernetMinimumSize+16:header.EthernetMinimumSize+20])
	return netip.AddrFrom4(d), true
}
