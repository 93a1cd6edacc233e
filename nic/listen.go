package nic

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/amtsim/amtsim/internal/workers"
)

// A stack's hosts share one TCP listener per port. A listener of gVisor's
// of its own per host cost each device 8–10 KB of heap for its two AMT
// ports: the endpoint (about 2.4 KB each), its port reservation (gVisor
// keeps a map per NIC bound to a port, 1.8 KB each) and its demultiplexer
// entries; a tenth of its whole live heap, which the collector marks on
// every cycle. One endpoint bound to no address and no NIC takes a port's
// connections for every host of the stack, and hands each to the Listener
// of the host whose NIC it came in on.
//
// That listener would also take SYNs for the stack's hosts that do not
// listen on the port (a provisioned device with TLS keeps 16992 closed).
// Their NICs answer those as a closed port does: the SYN goes to gVisor's
// own reply for a segment no endpoint wants, so the reset is the one the
// stack sends for any closed port (Host.refuses). A segment other than a
// SYN to such a port, for no connection, is dropped by the listener where
// a closed port would answer it with a reset: a difference seen only by a
// peer that keeps sending into a connection the device never had.

// portListener is a stack's one listener on a port.
type portListener struct {
	ep        tcpip.Endpoint
	wq        waiter.Queue
	entry     waiter.Entry
	workers   *workers.Pool
	accepting atomic.Bool
	closed    atomic.Bool

	mu    sync.RWMutex
	hosts map[tcpip.NICID]*Listener
}

// listener returns ss's listener on port, or nil.
func (ss *sharedStack) listener(port uint16) *portListener {
	ss.lmu.Lock()
	defer ss.lmu.Unlock()
	return ss.listeners[port]
}

// listen returns ss's listener on port, opening it on first use. It stays
// open while the stack lives: hosts come and go, and the port is wanted
// again by the next.
func (ss *sharedStack) listen(port uint16, w *workers.Pool) (*portListener, error) {
	ss.lmu.Lock()
	defer ss.lmu.Unlock()
	if pl := ss.listeners[port]; pl != nil {
		return pl, nil
	}
	pl := &portListener{workers: w, hosts: map[tcpip.NICID]*Listener{}}
	ep, terr := ss.s.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &pl.wq)
	if terr != nil {
		return nil, fmt.Errorf("tcp endpoint: %s", terr)
	}
	// SO_REUSEADDR, as servers set it.
	ep.SocketOptions().SetReuseAddress(true)
	if terr := ep.Bind(tcpip.FullAddress{Port: port}); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("bind tcp/%d: %s", port, terr)
	}
	if terr := ep.Listen(ListenBacklog); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("listen tcp/%d: %s", port, terr)
	}
	pl.ep = ep
	pl.entry = waiter.NewFunctionEntry(waiter.ReadableEvents, func(waiter.EventMask) { pl.kick() })
	pl.wq.EventRegister(&pl.entry)
	if ss.listeners == nil {
		ss.listeners = map[uint16]*portListener{}
	}
	ss.listeners[port] = pl
	pl.kick() // a connection may have raced the registration
	return pl, nil
}

// serves reports whether the host with NIC id listens on the port.
func (pl *portListener) serves(id tcpip.NICID) bool {
	pl.mu.RLock()
	defer pl.mu.RUnlock()
	return pl.hosts[id] != nil
}

func (pl *portListener) kick() {
	if pl.closed.Load() || !pl.accepting.CompareAndSwap(false, true) {
		return
	}
	pl.workers.Go(pl.drain)
}

func (pl *portListener) drain() {
	for {
		for !pl.closed.Load() {
			ep, wq, err := pl.ep.Accept(nil)
			if _, wouldBlock := err.(*tcpip.ErrWouldBlock); wouldBlock {
				break
			}
			if err != nil {
				// The endpoint is closed or broken (its stack shut down): it
				// reports itself ready forever, so stop here for good.
				pl.closed.Store(true)
				return
			}
			pl.dispatch(ep, wq)
		}
		pl.accepting.Store(false)
		// A connection that arrived between the last Accept and the store
		// above raised no new event we would act on: look once more.
		if pl.closed.Load() || pl.ep.Readiness(waiter.ReadableEvents) == 0 || !pl.accepting.CompareAndSwap(false, true) {
			return
		}
	}
}

// dispatch hands an accepted connection to the listener of the host it
// came in for. One whose host stopped listening while it waited in the
// queue is reset, as closing a listener resets the connections it had not
// accepted.
func (pl *portListener) dispatch(ep tcpip.Endpoint, wq *waiter.Queue) {
	var l *Listener
	if la, err := ep.GetLocalAddress(); err == nil {
		pl.mu.RLock()
		l = pl.hosts[la.NIC]
		pl.mu.RUnlock()
	}
	if l == nil || l.closed.Load() {
		ep.Abort()
		return
	}
	l.Accepted.Add(1)
	c := tcpConn{gonet.NewTCPConn(wq, ep)}
	pl.workers.Go(func() { l.handle(c) })
}

// Listen accepts TCP connections on port and hands each to handle on a
// goroutine of its own. No goroutine waits for connections: the stack's
// readiness callback starts one to accept only when a connection is ready,
// so an idle listener costs memory alone. A host listens on a port once;
// a second Listen on it replaces the first.
func (h *Host) Listen(port uint16, handle func(net.Conn)) (*Listener, error) {
	pl, err := h.ss.listen(port, h.pool.workers)
	if err != nil {
		return nil, fmt.Errorf("host %v: %w", h.nic.HardwareAddr(), err)
	}
	l := &Listener{pl: pl, h: h, handle: handle}
	pl.mu.Lock()
	old := pl.hosts[h.id]
	pl.hosts[h.id] = l
	pl.mu.Unlock()
	h.lmu.Lock()
	h.listeners = append(h.listeners, l)
	h.lmu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return l, nil
}

// Listener is a host's TCP listener on a port; see Host.Listen.
type Listener struct {
	pl     *portListener
	h      *Host
	handle func(net.Conn)
	closed atomic.Bool

	Accepted atomic.Uint64
}

// Close stops accepting: from then on the host answers a SYN to the port
// with a reset. Connections already handed out stay open.
func (l *Listener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.pl.mu.Lock()
	if l.pl.hosts[l.h.id] == l {
		delete(l.pl.hosts, l.h.id)
	}
	l.pl.mu.Unlock()
	l.h.lmu.Lock()
	l.h.listeners = slices.DeleteFunc(l.h.listeners, func(x *Listener) bool { return x == l })
	l.h.lmu.Unlock()
	return nil
}

// closeListeners closes the host's listeners (the host is going).
func (h *Host) closeListeners() {
	h.lmu.Lock()
	ls := slices.Clone(h.listeners)
	h.lmu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
}

// Offsets in an Ethernet frame carrying IPv4.
const (
	ipAt        = 14
	tcpFlagsOff = 13
)

// synTo returns the destination port of frame when it is a TCP SYN (no
// ACK, no RST) in an unfragmented IPv4 datagram whose stated length holds
// the TCP header and fits the frame, with the TCP header's offset in the
// frame and the datagram's length.
func synTo(frame []byte) (port uint16, tcpAt, total int, ok bool) {
	if len(frame) < ipAt+header.IPv4MinimumSize || frame[12] != 0x08 || frame[13] != 0x00 || frame[ipAt]>>4 != 4 {
		return 0, 0, 0, false
	}
	ihl := int(frame[ipAt]&0x0f) * 4
	if ihl < header.IPv4MinimumSize || frame[ipAt+9] != uint8(tcp.ProtocolNumber) {
		return 0, 0, 0, false
	}
	if frame[ipAt+6]&0x3f != 0 || frame[ipAt+7] != 0 { // more fragments, or an offset
		return 0, 0, 0, false
	}
	total = int(binary.BigEndian.Uint16(frame[ipAt+2:]))
	tcpAt = ipAt + ihl
	if total < ihl+header.TCPMinimumSize || ipAt+total > len(frame) {
		return 0, 0, 0, false
	}
	if header.TCPFlags(frame[tcpAt+tcpFlagsOff])&(header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagRst) != header.TCPFlagSyn {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint16(frame[tcpAt+2:]), tcpAt, total, true
}

// refuses answers a SYN for h on a port that the stack's shared listener
// takes but h does not listen on, and reports whether it did: the SYN is
// handed to gVisor's TCP as a segment no endpoint wants, which answers it
// with the reset a closed port sends. Any other frame, and a SYN gVisor
// would drop anyway (not to h's address, a bad IP checksum), goes on to
// the stack.
func (h *Host) refuses(frame []byte) bool {
	port, tcpAt, total, ok := synTo(frame)
	if !ok {
		return false
	}
	pl := h.ss.listener(port)
	if pl == nil || pl.serves(h.id) {
		return false
	}
	ip := header.IPv4(frame[ipAt:])
	if !ip.IsChecksumValid() {
		return false
	}
	own := h.Prefix()
	if !own.IsValid() || netip.AddrFrom4([4]byte(frame[ipAt+16:ipAt+20])) != own.Addr() {
		return false
	}
	t := header.TCP(frame[tcpAt:])
	hlen := int(t.DataOffset())
	if hlen < header.TCPMinimumSize || tcpAt+hlen > ipAt+total {
		return false
	}
	// The datagram without the Ethernet padding a short frame carries.
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame[:ipAt+total])})
	defer pkt.DecRef()
	pkt.LinkHeader().Consume(ipAt)
	pkt.NetworkProtocolNumber = ipv4.ProtocolNumber
	pkt.NetworkHeader().Consume(tcpAt - ipAt)
	pkt.TransportProtocolNumber = tcp.ProtocolNumber
	pkt.TransportHeader().Consume(hlen)
	pkt.NICID = h.id
	id := stack.TransportEndpointID{
		LocalPort: port, LocalAddress: ip.DestinationAddress(),
		RemotePort: t.SourcePort(), RemoteAddress: ip.SourceAddress(),
	}
	h.s.TransportProtocolInstance(tcp.ProtocolNumber).HandleUnknownDestinationPacket(id, pkt)
	h.nic.Stats.RxRefused.Add(1)
	return true
}

// ListenBacklog is the accept queue of a stack's listener on a port. A
// device's own ports see one connection at a time, but the listeners serve
// every host of the stack, the embedded SCS's among them, where a whole
// fleet's Hellos arrive at once: a short queue there drops the handshakes'
// last ACKs, and the device, connected as far as it knows, sends its Hello
// into a connection the listener never had (with 4,096, 219 of a 10k
// synchronized round and 30 of a 30k one were still not accepted a minute
// later). gVisor keeps the queue as a list, so a long bound costs nothing
// until it is used.
const ListenBacklog = 1 << 16
