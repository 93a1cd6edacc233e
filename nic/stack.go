package nic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/internal/workers"
)

// DefaultNICsPerStack is how many NICs share one gVisor stack by default.
//
// Every gVisor stack starts GOMAXPROCS TCP processor goroutines, so a stack
// per device makes goroutines grow with idle devices; one stack for all makes
// route lookups grow with them: Stack.FindRoute walks the route table on
// every connect, accept and UDP send, and every host's subnet route
// contains every peer on the LAN, so it visits each route before the
// host's own (a map lookup and a forwarding check each). Measured by lan's
// BenchmarkIdleDevice (a device NIC — ME filter, own ARP — on the segment,
// static address, listeners on 16992 and 16993; 2 cores, 10k devices):
//
//	                    B/device  goroutines/device  build 10k devices
//	64 per stack          15,701        0.031              0.67 s
//	1024 per stack        15,211        0.002              1.06 s
//	one stack for all     15,084        0.0002             9.2 s (route scans)
//	a stack per device    48,316        2                  2.8 s
//
// (Those figures predate the shared listeners of listen.go, which took
// 6.7 KB off each: 9,083 B/device at 64 per stack, 8,422 on one stack.)
//
// and by fleet's BenchmarkFleetProvisioning at 1k: with 1024 per stack
// FindRoute was 6.2% of all CPU (0.83 ms per provisioning); with 64 it is
// below 0.5%. 500 bytes and 0.03 goroutines per device buy that.
//
// (With gVisor's ARP instead of the NIC's own, each NIC also carries a
// neighbor table sized for 512 entries: 56 KB per device shared, 89 KB with
// a stack each.)
const DefaultNICsPerStack = 64

// StackOptions configure a Stacks pool.
type StackOptions struct {
	// NICsPerStack caps the NICs one stack carries; 1 gives every NIC a
	// stack of its own. Zero means DefaultNICsPerStack.
	NICsPerStack int
}

// Stacks hands out places on gVisor TCP/IP stacks (ARP, IPv4, ICMP, UDP,
// TCP). Each attached NIC becomes a Host with its own addresses, routes and
// sockets; hosts on one stack never talk to each other except over the wire.
type Stacks struct {
	perStack int
	clock    wheelClock // every stack's timers
	// workers run the hosts' accepted connections, each handler on a
	// goroutine kept from an earlier one with its grown stack.
	workers *workers.Pool

	mu     sync.Mutex
	cur    *sharedStack
	all    []*sharedStack
	closed bool
}

type sharedStack struct {
	s      *stack.Stack
	nextID tcpip.NICID // guarded by Stacks.mu
	nics   int         // guarded by Stacks.mu

	lmu       sync.Mutex
	listeners map[uint16]*portListener // see listen.go
}

// NewStacks returns an empty pool.
func NewStacks(o StackOptions) *Stacks {
	per := o.NICsPerStack
	if per <= 0 {
		per = DefaultNICsPerStack
	}
	return &Stacks{perStack: per, clock: wheelClock{std: tcpip.NewStdClock(), w: clock.NewWheel(clock.WheelOptions{})},
		workers: workers.New(workers.Options{})}
}

// wheelClock is the stacks' tcpip.Clock: gVisor's own, but with its long
// timers (TIME_WAIT, keepalive, neighbor reachability) on one clock.Wheel
// for the whole pool rather than a runtime timer each.
type wheelClock struct {
	std tcpip.Clock
	w   *clock.Wheel
}

func (c wheelClock) Now() time.Time                                  { return c.std.Now() }
func (c wheelClock) NowMonotonic() tcpip.MonotonicTime               { return c.std.NowMonotonic() }
func (c wheelClock) AfterFunc(d time.Duration, f func()) tcpip.Timer { return c.w.AfterFunc(d, f) }

// timeWait is how long a closed TCP connection's TIME_WAIT lasts.
const timeWait = 5 * time.Second

func newGVisorStack(clk tcpip.Clock) *stack.Stack {
	s := stack.New(stack.Options{
		Clock:              clk,
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
		// Hosts sharing a stack are separate machines: traffic between them
		// must cross the wire, never a loopback shortcut.
		HandleLocal: false,
	})
	// TIME_WAIT lasts 5 s rather than gVisor's 60 s. Every connection a
	// device closes first (each Hello) waits out TIME_WAIT on a timer, and
	// a fleet's tens of thousands of them were most of the timer heap the
	// scheduler scans (live timers at a 3k-device snapshot 25.6k → 8.9k;
	// they are on the pool's wheel now, where they still cost memory). No peer sees the difference on a LAN: nothing there
	// delivers a segment seconds late, and AMT's own value is unpublished.
	tw := tcpip.TCPTimeWaitTimeoutOption(timeWait)
	_ = s.SetTransportProtocolOption(tcp.ProtocolNumber, &tw)
	// No RACK and no tail loss probes: classic recovery (three duplicate
	// ACKs, else the RTO), as an embedded stack of AMT 5's age has it.
	// gVisor's probe timeout is twice the smoothed RTT with no floor
	// (Linux keeps 10 ms), and on a LAN of microsecond round trips every
	// ACK a busy peer sends late draws a needless retransmission: 2.2–2.4
	// per provisioning in BenchmarkProvisioning (of 108 segments), each
	// with the duplicate ACK it causes, and in every device's capture.
	rec := tcpip.TCPRecovery(0)
	_ = s.SetTransportProtocolOption(tcp.ProtocolNumber, &rec)
	return s
}

// Attach puts n on a stack with room and returns its host.
func (p *Stacks) Attach(n *NIC) (*Host, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("nic: stacks are closed")
	}
	// Reuse room that closed hosts left, so that devices that come and go
	// (power cycles, churn) do not keep adding stacks.
	if p.cur == nil || p.cur.nics >= p.perStack {
		p.cur = nil
		for _, ss := range p.all {
			if ss.nics < p.perStack {
				p.cur = ss
				break
			}
		}
		if p.cur == nil {
			p.cur = &sharedStack{s: newGVisorStack(p.clock), nextID: 1}
			p.all = append(p.all, p.cur)
		}
	}
	ss := p.cur
	id := ss.nextID
	ss.nextID++
	ss.nics++
	p.mu.Unlock()

	if err := ss.s.CreateNICWithOptions(id, n, stack.NICOptions{Name: n.HardwareAddr().String()}); err != nil {
		p.release(ss)
		return nil, fmt.Errorf("nic %v: create on stack: %s", n.HardwareAddr(), err)
	}
	h := &Host{nic: n, pool: p, ss: ss, s: ss.s, id: id}
	n.host.Store(h)
	return h, nil
}

// release gives back a NIC's place on ss.
func (p *Stacks) release(ss *sharedStack) {
	p.mu.Lock()
	ss.nics--
	p.mu.Unlock()
}

// TCPCounts are TCP segment counts summed over a pool's stacks: all
// segments sent, and those sent again.
type TCPCounts struct {
	SegmentsSent, Retransmits uint64
}

// Add returns the sum of c and o.
func (c TCPCounts) Add(o TCPCounts) TCPCounts {
	return TCPCounts{SegmentsSent: c.SegmentsSent + o.SegmentsSent, Retransmits: c.Retransmits + o.Retransmits}
}

// TCPCounts sums the pool's stacks' TCP statistics.
func (p *Stacks) TCPCounts() TCPCounts {
	var c TCPCounts
	for _, ss := range p.snapshot() {
		t := ss.s.Stats().TCP
		c.SegmentsSent += t.SegmentsSent.Value()
		c.Retransmits += t.Retransmits.Value()
	}
	return c
}

// UDPReceiveDrops sums the pool's stacks' UDP datagrams dropped for a full
// receive buffer: a server socket that fell behind a burst.
func (p *Stacks) UDPReceiveDrops() uint64 {
	var n uint64
	for _, ss := range p.snapshot() {
		n += ss.s.Stats().UDP.ReceiveBufferErrors.Value()
	}
	return n
}

// snapshot is the pool's stacks now, to read their statistics outside
// the pool's lock.
func (p *Stacks) snapshot() []*sharedStack {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*sharedStack(nil), p.all...)
}

// Count returns how many stacks the pool has made.
func (p *Stacks) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all)
}

// Close shuts every stack down.
func (p *Stacks) Close() {
	p.mu.Lock()
	all := p.all
	p.all, p.cur, p.closed = nil, nil, true
	p.mu.Unlock()
	for _, ss := range all {
		ss.s.Close()
		ss.s.Wait()
	}
	p.workers.Close()
	p.clock.w.Close()
}

// Host is the IP side of one NIC: its address, routes and sockets.
type Host struct {
	nic    *NIC
	pool   *Stacks
	ss     *sharedStack
	s      *stack.Stack
	id     tcpip.NICID
	closed atomic.Bool

	mu      sync.Mutex
	addr    netip.Prefix
	gateway netip.Addr

	lmu       sync.Mutex
	listeners []*Listener
}

// NIC returns the host's NIC.
func (h *Host) NIC() *NIC { return h.nic }

// Prefix returns the host's IPv4 address and prefix length; zero when it has
// none.
func (h *Host) Prefix() netip.Prefix {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

// SetAddress gives the host addr (replacing any previous one) and routes:
// the on-link subnet and, when gateway is valid, a default route.
func (h *Host) SetAddress(addr netip.Prefix, gateway netip.Addr) error {
	if !addr.Addr().Is4() {
		return fmt.Errorf("host %v: %s is not an IPv4 prefix", h.nic.HardwareAddr(), addr)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clearLocked()
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(addr.Addr().As4()), PrefixLen: addr.Bits()},
	}
	if err := h.s.AddProtocolAddress(h.id, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("host %v: add address %s: %s", h.nic.HardwareAddr(), addr, err)
	}
	h.s.AddRoute(tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: h.id})
	if gateway.IsValid() {
		h.s.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(gateway.As4()), NIC: h.id})
	}
	h.addr, h.gateway = addr, gateway
	h.nic.SetFilterAddrs(addr.Addr())
	h.nic.setIPv4(addr.Addr())
	return nil
}

// ClearAddress removes the host's address and routes (lease lost).
func (h *Host) ClearAddress() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clearLocked()
}

func (h *Host) clearLocked() {
	if !h.addr.IsValid() {
		return
	}
	_ = h.s.RemoveAddress(h.id, tcpip.AddrFrom4(h.addr.Addr().As4()))
	h.s.RemoveRoutes(func(r tcpip.Route) bool { return r.NIC == h.id })
	h.addr, h.gateway = netip.Prefix{}, netip.Addr{}
	h.nic.SetFilterAddrs()
	h.nic.setIPv4(netip.Addr{})
}

// SetNeighbor pins addr to mac in the host's ARP table. gVisor keeps at
// most 512 learned neighbors per NIC and resolves at most 64 at a time, so
// a server host answering thousands of devices at once would lose replies
// to ARP churn; a pinned entry is never evicted. The embedded LAN pins
// every leased device on its servers, as DHCP servers that write ARP
// entries for their clients do.
func (h *Host) SetNeighbor(addr netip.Addr, mac net.HardwareAddr) error {
	if !addr.Is4() || len(mac) != 6 {
		return fmt.Errorf("host %v: neighbor %s at %v: want IPv4 and a 6-byte MAC", h.nic.HardwareAddr(), addr, mac)
	}
	if terr := h.s.AddStaticNeighbor(h.id, ipv4.ProtocolNumber, tcpip.AddrFrom4(addr.As4()), tcpip.LinkAddress(mac)); terr != nil {
		return fmt.Errorf("host %v: neighbor %s: %s", h.nic.HardwareAddr(), addr, terr)
	}
	return nil
}

// RemoveNeighbor forgets addr's ARP entry.
func (h *Host) RemoveNeighbor(addr netip.Addr) {
	if addr.Is4() {
		_ = h.s.RemoveNeighbor(h.id, ipv4.ProtocolNumber, tcpip.AddrFrom4(addr.As4()))
	}
}

func (h *Host) local(port uint16) tcpip.FullAddress {
	fa := tcpip.FullAddress{NIC: h.id, Port: port}
	if a := h.Prefix(); a.IsValid() {
		fa.Addr = tcpip.AddrFrom4(a.Addr().As4())
	}
	return fa
}

func remote(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}
}

// DialTCP opens a TCP connection from the host's address.
func (h *Host) DialTCP(ctx context.Context, raddr netip.AddrPort) (net.Conn, error) {
	if !raddr.Addr().Is4() {
		return nil, fmt.Errorf("host %v: dial %s: not IPv4", h.nic.HardwareAddr(), raddr)
	}
	c, err := gonet.DialTCPWithBind(ctx, h.s, h.local(0), remote(raddr), ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("host %v: dial %s: %w", h.nic.HardwareAddr(), raddr, err)
	}
	return tcpConn{c}, nil
}

// DialContext is DialTCP in net.Dialer's shape ("tcp", "tcp4"; addr an
// IPv4 address and port), for http.Transport and the scs package.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" {
		return nil, fmt.Errorf("host %v: dial %s %s: only TCP over IPv4", h.nic.HardwareAddr(), network, addr)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("host %v: dial %s: %w", h.nic.HardwareAddr(), addr, err)
	}
	return h.DialTCP(ctx, ap)
}

// ListenUDP opens a UDP socket on port of this host (all its addresses,
// broadcasts included), for servers.
func (h *Host) ListenUDP(port uint16) (net.PacketConn, error) {
	var wq waiter.Queue
	ep, terr := h.s.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, fmt.Errorf("host %v: udp endpoint: %s", h.nic.HardwareAddr(), terr)
	}
	ep.SocketOptions().SetBindToDevice(int32(h.id))
	ep.SocketOptions().SetBroadcast(true)
	// A server socket (the LAN's DNS) takes a fleet's queries in bursts;
	// gVisor's 32 KiB default would drop them. 4 MiB is the stack's cap.
	ep.SocketOptions().SetReceiveBufferSize(4<<20, true)
	// And answers them in bursts, from a goroutine per query (miekg/dns).
	// With 32 KiB to send from, a 100,000-device fleet's Hello round can
	// keep enough answers mid-write to fill it; the other writers then wait
	// in WriteTo, and every answer sent wakes all of them (gonet's writers
	// share one wait queue). It does not happen in every run: in one it was
	// 120 µs of CPU per provisioning in those wake-ups, and answers late
	// enough to find the device's socket closed (ICMP errors, 60 µs more);
	// in two others under 2 µs. With 4 MiB a writer waits only behind 4 MiB
	// of answers (three 100k runs since: 0.4–1.5 µs).
	ep.SocketOptions().SetSendBufferSize(4<<20, true)
	if terr := ep.Bind(tcpip.FullAddress{NIC: h.id, Port: port}); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("host %v: bind udp/%d: %s", h.nic.HardwareAddr(), port, terr)
	}
	return udpConn{gonet.NewUDPConn(&wq, ep)}, nil
}

// DialUDP opens a UDP socket from the host's address to raddr.
func (h *Host) DialUDP(raddr netip.AddrPort) (net.Conn, error) {
	la, ra := h.local(0), remote(raddr)
	c, err := gonet.DialUDP(h.s, &la, &ra, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("host %v: dial udp %s: %w", h.nic.HardwareAddr(), raddr, err)
	}
	return udpConn{c}, nil
}

// Close removes the host from its stack and unplugs its NIC.
func (h *Host) Close() {
	if h.closed.Swap(true) {
		return
	}
	defer h.pool.release(h.ss)
	h.closeListeners()
	h.nic.host.Store(nil)
	// RemoveNIC drops the NIC's addresses and routes with it. ClearAddress
	// first would walk the stack's whole route table twice: that walk was
	// three quarters of stopping 15,000 booted devices (2.4 s).
	h.mu.Lock()
	h.addr, h.gateway = netip.Prefix{}, netip.Addr{}
	h.mu.Unlock()
	_ = h.s.RemoveNIC(h.id)
	h.nic.Close()
}
