package lan

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Lease is one entry of the DHCP server's lease table.
type Lease struct {
	MAC      net.HardwareAddr
	Addr     netip.Addr
	HostName string
	Expiry   time.Time
	Bound    bool // false while only offered
}

// Leases is the DHCP lease table. It is owned by the caller, not the
// server, so that a server stopped and started again in the same process
// (a DHCP server restart) keeps every lease it granted.
type Leases struct {
	mu       sync.Mutex
	byMAC    map[[6]byte]*Lease
	byAddr   map[netip.Addr]*Lease
	declined map[netip.Addr]time.Time
	// cursor is where the search for a free address resumes, so that a
	// fleet's leases cost O(1) each rather than a scan of the pool.
	cursor netip.Addr
}

// NewLeases returns an empty table.
func NewLeases() *Leases {
	return &Leases{byMAC: map[[6]byte]*Lease{}, byAddr: map[netip.Addr]*Lease{}, declined: map[netip.Addr]time.Time{}}
}

// Lookup returns a copy of the lease held by mac.
func (t *Leases) Lookup(mac net.HardwareAddr) (Lease, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.byMAC[[6]byte(mac)]
	if !ok {
		return Lease{}, false
	}
	return *l, true
}

// Len returns the number of leases (bound or offered).
func (t *Leases) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byMAC)
}

// Bound returns copies of the bound leases.
func (t *Leases) Bound() []Lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Lease
	for _, l := range t.byMAC {
		if l.Bound {
			out = append(out, *l)
		}
	}
	return out
}

// pool is an inclusive range of addresses to lease.
type pool struct{ first, last netip.Addr }

func (p pool) contains(a netip.Addr) bool {
	return a.Is4() && p.first.Compare(a) <= 0 && a.Compare(p.last) <= 0
}

// reserve finds an address for mac: its current lease, else want if free,
// else the first free address; it records an offer until expiry.
func (t *Leases) reserve(p pool, mac net.HardwareAddr, want netip.Addr, now time.Time, hold time.Duration) (netip.Addr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := [6]byte(mac)
	if l, ok := t.byMAC[key]; ok {
		if !l.Bound {
			l.Expiry = now.Add(hold)
		}
		return l.Addr, nil
	}
	if !p.contains(want) || !t.freeLocked(want, now) {
		want = t.nextFreeLocked(p, now)
	}
	if !want.IsValid() {
		return netip.Addr{}, fmt.Errorf("lan: dhcp pool %s-%s is exhausted", p.first, p.last)
	}
	l := &Lease{MAC: append(net.HardwareAddr(nil), mac...), Addr: want, Expiry: now.Add(hold)}
	t.byMAC[key], t.byAddr[want] = l, l
	return want, nil
}

// nextFreeLocked scans the pool from the cursor round to it again.
func (t *Leases) nextFreeLocked(p pool, now time.Time) netip.Addr {
	start := t.cursor
	if !p.contains(start) {
		start = p.first
	}
	a := start
	for {
		if t.freeLocked(a, now) {
			t.cursor = a.Next()
			return a
		}
		if a = a.Next(); !p.contains(a) {
			a = p.first
		}
		if a == start {
			return netip.Addr{}
		}
	}
}

// freeLocked reports whether a is unleased (or its lease has expired, in
// which case the stale lease is dropped) and not recently declined.
func (t *Leases) freeLocked(a netip.Addr, now time.Time) bool {
	if until, ok := t.declined[a]; ok {
		if now.Before(until) {
			return false
		}
		delete(t.declined, a)
	}
	l, ok := t.byAddr[a]
	if !ok {
		return true
	}
	if now.Before(l.Expiry) {
		return false
	}
	delete(t.byAddr, a)
	delete(t.byMAC, [6]byte(l.MAC))
	return true
}

// bind turns mac's lease of addr into a bound lease until now+d. It fails
// when mac holds no lease of addr.
func (t *Leases) bind(mac net.HardwareAddr, addr netip.Addr, host string, now time.Time, d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.byMAC[[6]byte(mac)]
	if !ok || l.Addr != addr || (!l.Bound && now.After(l.Expiry)) {
		return false
	}
	l.Bound, l.Expiry = true, now.Add(d)
	if host != "" {
		l.HostName = host
	}
	return true
}

// release frees mac's lease of addr.
func (t *Leases) release(mac net.HardwareAddr, addr netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.byMAC[[6]byte(mac)]
	if !ok || l.Addr != addr {
		return false
	}
	delete(t.byMAC, [6]byte(mac))
	delete(t.byAddr, addr)
	return true
}

// decline marks addr as in use by someone else for a while (RFC 2131 §3.1.5).
func (t *Leases) decline(mac net.HardwareAddr, addr netip.Addr, until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l, ok := t.byMAC[[6]byte(mac)]; ok && l.Addr == addr {
		delete(t.byMAC, [6]byte(mac))
		delete(t.byAddr, addr)
	}
	t.declined[addr] = until
}
