package nic

import "encoding/binary"

// BroadcastIndex finds the ports a group frame can pass, by their
// broadcast filters, without asking each: a switch with 100,000 filtered
// ports must not walk them all for every ARP request or DHCP offer. Ports
// without a filter (open) take every group frame. The owner locks it.
type BroadcastIndex[P comparable] struct {
	filters  map[P]*BroadcastFilter // nil: open
	open     map[P]struct{}
	arpFor   map[[4]byte]map[P]struct{}
	udpTo    map[uint16]map[P]struct{}
	bootpFor map[[6]byte]P // ports whose filter takes port 68 for one chaddr
}

// NewBroadcastIndex returns an empty index.
func NewBroadcastIndex[P comparable]() *BroadcastIndex[P] {
	return &BroadcastIndex[P]{filters: map[P]*BroadcastFilter{}, open: map[P]struct{}{},
		arpFor: map[[4]byte]map[P]struct{}{}, udpTo: map[uint16]map[P]struct{}{}, bootpFor: map[[6]byte]P{}}
}

// Set adds p, or moves it, under filter f (nil: open).
func (x *BroadcastIndex[P]) Set(p P, f *BroadcastFilter) {
	x.Remove(p)
	x.filters[p] = f
	if f == nil {
		x.open[p] = struct{}{}
		return
	}
	x.file(p, f, true)
}

// Remove forgets p.
func (x *BroadcastIndex[P]) Remove(p P) {
	f, ok := x.filters[p]
	if !ok {
		return
	}
	delete(x.filters, p)
	delete(x.open, p)
	if f != nil {
		x.file(p, f, false)
	}
}

// file adds p under each key of f, or takes it out.
func (x *BroadcastIndex[P]) file(p P, f *BroadcastFilter, add bool) {
	for _, a := range f.ARPFor {
		if a.Is4() {
			addOrRemove(x.arpFor, a.As4(), p, add)
		}
	}
	for _, port := range f.UDPPorts {
		switch {
		case port != bootpClientPort || f.BOOTPFor == ([6]byte{}):
			addOrRemove(x.udpTo, port, p, add)
		case add:
			x.bootpFor[f.BOOTPFor] = p
		case x.bootpFor[f.BOOTPFor] == p:
			delete(x.bootpFor, f.BOOTPFor)
		}
	}
}

// Filtered reports whether p is indexed with a filter.
func (x *BroadcastIndex[P]) Filtered(p P) bool { return x.filters[p] != nil }

// AppendOpen appends to dst every port without a filter.
func (x *BroadcastIndex[P]) AppendOpen(dst []P) []P {
	for p := range x.open {
		dst = append(dst, p)
	}
	return dst
}

// AppendPasses appends to dst every port the group frame passes: the open
// ports, then the filtered ones whose filter matches it, each once. It
// returns the ports rather than calling back so that the owner can deliver
// with its lock released: a delivery may change a filter (a DHCP ACK gives
// the NIC its address).
func (x *BroadcastIndex[P]) AppendPasses(dst []P, frame []byte) []P {
	dst = x.AppendOpen(dst)
	switch kind, key := Classify(frame); kind {
	case BroadcastARP:
		for p := range x.arpFor[key] {
			dst = append(dst, p)
		}
	case BroadcastUDP:
		port := binary.BigEndian.Uint16(key[:2])
		for p := range x.udpTo[port] {
			dst = append(dst, p)
		}
		if port == bootpClientPort {
			if chaddr, ok := BOOTPClient(frame); ok {
				if p, ok := x.bootpFor[chaddr]; ok {
					dst = append(dst, p)
				}
			}
		}
	}
	return dst
}

func addOrRemove[K, P comparable](m map[K]map[P]struct{}, k K, p P, add bool) {
	set := m[k]
	if add {
		if set == nil {
			set = map[P]struct{}{}
			m[k] = set
		}
		set[p] = struct{}{}
		return
	}
	delete(set, p)
	if len(set) == 0 {
		delete(m, k)
	}
}
