// Package nic is the Intel 82566DM gigabit NIC of a simulated OptiPlex 960:
// its PCI identity and MAC, link state, and the gVisor link endpoint that
// carries the device's TCP/IP stack. Frames leave and enter through an
// Uplink (a segment of the embedded LAN, or a TAP interface shared by many
// NICs), pass the NIC's seeded impairments (netem vocabulary) and its pcap
// capture, and can be taken or sent raw below the stack (DHCP before the
// device has an address).
//
// A NIC owns no goroutine: transmit runs on the caller's goroutine, receive
// on the uplink's, and delayed frames wait on runtime timers. That keeps an
// idle device at the cost of its memory alone.
package nic

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// PCI identity of the 82566DM (docs/protocol.md §1). 0x10BD is the 82566DM-2
// variant some OptiPlex 960 boards carry.
const (
	PCIVendorIntel    = 0x8086
	PCIDevice82566DM  = 0x104A
	PCIDevice82566DM2 = 0x10BD
)

// Model names the NIC as lspci would.
const Model = "Intel Corporation 82566DM Gigabit Network Connection"

const (
	defaultMTU = 1500
	// minFrame is the shortest Ethernet frame without FCS; shorter frames
	// are padded on transmit, as the hardware does.
	minFrame = 60
)

// ErrLinkDown is returned for frames sent while the link is down.
var ErrLinkDown = errors.New("nic: link is down")

// Options configure a NIC.
type Options struct {
	// MAC is the burned-in address. Required.
	MAC net.HardwareAddr
	// PCIDevice is the PCI device id; default PCIDevice82566DM.
	PCIDevice uint16
	// MTU is the IP MTU; default 1500.
	MTU uint32
	// Uplink is where frames go. Required.
	Uplink Uplink
	// Capture, when set, records every frame the NIC sends and receives.
	Capture *Capture
	// Egress and Ingress impair frames leaving and entering the NIC. The
	// zero value is a perfect link.
	Egress, Ingress Netem
	// Down starts the NIC with its link down.
	Down bool
	// MEFilter turns on the manageability filter for broadcasts: only ARP
	// requests for the NIC's address (as its Host sets it) and UDP
	// broadcasts to MEPorts reach the NIC's handlers. Off, every broadcast
	// does, as on a NIC that serves a host OS.
	MEFilter bool
	// MEPorts are the UDP ports the filter passes; default 68 (DHCP client).
	MEPorts []uint16
	// OwnARP makes the NIC answer and resolve ARP itself with a small table
	// (arp.go) instead of gVisor's per-NIC neighbor table; for devices,
	// which talk to a few peers. The NIC's Host tells it its address.
	OwnARP bool
}

// Counters are the NIC's frame statistics.
type Counters struct {
	TxFrames, TxBytes          atomic.Uint64
	RxFrames, RxBytes          atomic.Uint64
	TxImpairDrops              atomic.Uint64 // lost to Egress impairment
	RxImpairDrops              atomic.Uint64 // lost to Ingress impairment
	TxErrors                   atomic.Uint64 // the uplink refused the frame
	LinkDownDrops              atomic.Uint64
	RxFiltered                 atomic.Uint64 // unicast for another MAC, broadcasts the ME filter refused
	RxMalformed                atomic.Uint64 // shorter than an Ethernet header
	RxRaw                      atomic.Uint64 // taken by the raw handler
	RxRefused                  atomic.Uint64 // SYNs to a port the host does not listen on, answered with a reset (see listen.go)
	ARPFailures                atomic.Uint64 // next hops that never answered (OwnARP)
	TxDuplicates, RxDuplicates atomic.Uint64 // extra copies made by impairment
}

// RawHandler sees every inbound frame accepted by the NIC before the stack
// does. It returns true when it consumed the frame. The frame is valid only
// for the call.
type RawHandler func(frame []byte) bool

// NIC is one 82566DM. It implements stack.LinkEndpoint.
type NIC struct {
	hw        net.HardwareAddr
	mac       tcpip.LinkAddress
	pciDevice uint16
	mtu       atomic.Uint32
	up        atomic.Bool
	capture   *Capture
	// egress and ingress are nil for a perfect link; SetNetem swaps them
	// while frames flow.
	egress   atomic.Pointer[impairer]
	ingress  atomic.Pointer[impairer]
	raw      atomic.Pointer[RawHandler]
	wire     Attachment
	frames   *FramePool // the wire's, when it lends them; else nil
	meFilter bool
	mePorts  []uint16
	filter   atomic.Pointer[BroadcastFilter]
	ownARP   bool
	arp      arpTable
	// host is the stack's side of the NIC, once attached (Stacks.Attach):
	// it refuses the SYNs its stack's shared listeners would take.
	host atomic.Pointer[Host]

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
	onClose    func()
	closed     bool

	Stats Counters
}

var _ stack.LinkEndpoint = (*NIC)(nil)

// New makes a NIC and plugs it into its uplink.
func New(o Options) (*NIC, error) {
	if len(o.MAC) != 6 {
		return nil, fmt.Errorf("nic: MAC %v is not 6 bytes", o.MAC)
	}
	if o.MAC[0]&1 != 0 {
		return nil, fmt.Errorf("nic: MAC %v is a group address", o.MAC)
	}
	if o.Uplink == nil {
		return nil, errors.New("nic: no uplink")
	}
	n := &NIC{
		hw:        append(net.HardwareAddr(nil), o.MAC...),
		mac:       tcpip.LinkAddress(o.MAC),
		pciDevice: o.PCIDevice,
		capture:   o.Capture,
		ownARP:    o.OwnARP,
	}
	if n.pciDevice == 0 {
		n.pciDevice = PCIDevice82566DM
	}
	mtu := o.MTU
	if mtu == 0 {
		mtu = defaultMTU
	}
	n.mtu.Store(mtu)
	if err := n.SetNetem(o.Egress, o.Ingress); err != nil {
		return nil, err
	}
	var err error
	n.up.Store(!o.Down)
	if n.wire, err = o.Uplink.Attach(n); err != nil {
		return nil, fmt.Errorf("nic %v: attach: %w", o.MAC, err)
	}
	if l, ok := n.wire.(FrameLender); ok {
		n.frames = l.Frames()
	}
	if o.MEFilter {
		n.meFilter = true
		n.mePorts = o.MEPorts
		if len(n.mePorts) == 0 {
			n.mePorts = []uint16{68}
		}
		n.SetFilterAddrs()
	}
	return n, nil
}

// SetFilterAddrs tells the manageability filter the NIC's IPv4 addresses,
// the ones whose ARP requests it passes. Without MEFilter it does nothing.
func (n *NIC) SetFilterAddrs(addrs ...netip.Addr) {
	if !n.meFilter {
		return
	}
	f := &BroadcastFilter{ARPFor: slices.Clone(addrs), UDPPorts: n.mePorts, BOOTPFor: [6]byte(n.hw)}
	n.filter.Store(f)
	if fa, ok := n.wire.(FilterAware); ok {
		fa.SetBroadcastFilter(f)
	}
}

// HardwareAddr is the NIC's MAC.
func (n *NIC) HardwareAddr() net.HardwareAddr { return n.hw }

// PCIID returns the PCI vendor and device id.
func (n *NIC) PCIID() (vendor, device uint16) { return PCIVendorIntel, n.pciDevice }

// SetLink brings the link up or down. While down, frames are dropped both
// ways, as with the cable pulled.
func (n *NIC) SetLink(up bool) { n.up.Store(up) }

// SetNetem replaces the impairments of both directions, as tc qdisc
// change does: frames already held keep their delay, the next ones meet
// the new settings. Each direction's draws restart from the seed, so a
// scenario that switches impairments at the same points draws the same
// fates.
func (n *NIC) SetNetem(egress, ingress Netem) error {
	eg, err := newImpairer(egress, n.hw, 0)
	if err != nil {
		return fmt.Errorf("nic %v: egress: %w", n.hw, err)
	}
	in, err := newImpairer(ingress, n.hw, 1)
	if err != nil {
		return fmt.Errorf("nic %v: ingress: %w", n.hw, err)
	}
	n.egress.Store(eg)
	n.ingress.Store(in)
	return nil
}

// LinkUp reports the link state.
func (n *NIC) LinkUp() bool { return n.up.Load() }

// SetRawHandler installs (or, with nil, removes) the handler that sees frames
// below the stack.
func (n *NIC) SetRawHandler(h RawHandler) {
	if h == nil {
		n.raw.Store(nil)
		return
	}
	n.raw.Store(&h)
}

// WriteRaw sends a complete Ethernet frame, bypassing the stack. The NIC
// takes ownership of frame.
func (n *NIC) WriteRaw(frame []byte) error {
	if len(frame) < header.EthernetMinimumSize {
		return fmt.Errorf("nic: raw frame of %d bytes is shorter than an Ethernet header", len(frame))
	}
	return n.transmit(frame)
}

// transmit sends one frame out of the NIC: pad, capture, impair, uplink.
func (n *NIC) transmit(frame []byte) error {
	if !n.up.Load() {
		n.Stats.LinkDownDrops.Add(1)
		return ErrLinkDown
	}
	if len(frame) < minFrame {
		frame = append(frame, make([]byte, minFrame-len(frame))...)
	}
	n.Stats.TxFrames.Add(1)
	n.Stats.TxBytes.Add(uint64(len(frame)))
	if n.capture != nil {
		n.capture.write(frame)
	}
	eg := n.egress.Load()
	if eg == nil {
		return n.send(frame)
	}
	copies, delay := eg.decide()
	switch copies {
	case 0:
		n.Stats.TxImpairDrops.Add(1)
		return nil
	case 2:
		// The copy is a frame of its own: a wire owns each frame it is
		// given, and a lender may reuse the first once it is delivered.
		n.Stats.TxDuplicates.Add(1)
		dup := append([]byte(nil), frame...)
		eg.after(delay, func() { _ = n.send(dup) })
	}
	eg.after(delay, func() { _ = n.send(frame) })
	return nil
}

func (n *NIC) send(frame []byte) error {
	if err := n.wire.Send(frame); err != nil {
		n.Stats.TxErrors.Add(1)
		return err
	}
	return nil
}

// DeliverFrame is called by the uplink with a frame from the wire. The frame
// is valid only for the call.
func (n *NIC) DeliverFrame(frame []byte) {
	if !n.up.Load() {
		n.Stats.LinkDownDrops.Add(1)
		return
	}
	if len(frame) < header.EthernetMinimumSize {
		n.Stats.RxMalformed.Add(1)
		return
	}
	dst := tcpip.LinkAddress(frame[:6])
	if dst != n.mac && frame[0]&1 == 0 {
		// The MAC filter of a NIC that is not promiscuous.
		n.Stats.RxFiltered.Add(1)
		return
	}
	if f := n.filter.Load(); f != nil && frame[0]&1 != 0 && !f.Match(frame) {
		n.Stats.RxFiltered.Add(1)
		return
	}
	in := n.ingress.Load()
	if in == nil {
		n.receive(frame)
		return
	}
	copies, delay := in.decide()
	if copies == 0 {
		n.Stats.RxImpairDrops.Add(1)
		return
	}
	if copies == 2 {
		n.Stats.RxDuplicates.Add(1)
	}
	if delay == 0 {
		for range copies {
			n.receive(frame)
		}
		return
	}
	own := append([]byte(nil), frame...)
	for range copies {
		in.after(delay, func() { n.receive(own) })
	}
}

func (n *NIC) receive(frame []byte) {
	n.Stats.RxFrames.Add(1)
	n.Stats.RxBytes.Add(uint64(len(frame)))
	if n.capture != nil {
		n.capture.write(frame)
	}
	if h := n.raw.Load(); h != nil && (*h)(frame) {
		n.Stats.RxRaw.Add(1)
		return
	}
	if n.ownARP && n.handleARP(frame) {
		return
	}
	if h := n.host.Load(); h != nil && h.refuses(frame) {
		return
	}
	n.mu.RLock()
	d := n.dispatcher
	n.mu.RUnlock()
	if d == nil {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer pkt.DecRef()
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if !ok {
		n.Stats.RxMalformed.Add(1)
		return
	}
	eth := header.Ethernet(hdr)
	switch dst := eth.DestinationAddress(); {
	case dst == header.EthernetBroadcastAddress:
		pkt.PktType = tcpip.PacketBroadcast
	case header.IsMulticastEthernetAddress(dst):
		pkt.PktType = tcpip.PacketMulticast
	default:
		pkt.PktType = tcpip.PacketHost
	}
	pkt.NetworkProtocolNumber = eth.Type()
	d.DeliverNetworkPacket(eth.Type(), pkt)
}

// Close unplugs the NIC from its uplink.
func (n *NIC) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	onClose := n.onClose
	n.dispatcher = nil
	n.mu.Unlock()
	if onClose != nil {
		onClose()
	}
	n.wire.Detach()
}

// The rest implements stack.LinkEndpoint.

// MTU implements stack.LinkEndpoint.
func (n *NIC) MTU() uint32 { return n.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (n *NIC) SetMTU(mtu uint32) { n.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint.
func (n *NIC) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress implements stack.LinkEndpoint.
func (n *NIC) LinkAddress() tcpip.LinkAddress { return n.mac }

// SetLinkAddress implements stack.LinkEndpoint; the burned-in address of an
// 82566DM does not change, so it is ignored.
func (n *NIC) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint.
func (n *NIC) Capabilities() stack.LinkEndpointCapabilities {
	if n.ownARP {
		return 0 // arp.go resolves
	}
	return stack.CapabilityResolutionRequired
}

func addrOf(a tcpip.Address) netip.Addr {
	if a.BitLen() != 32 {
		return netip.Addr{}
	}
	return netip.AddrFrom4(a.As4())
}

func tcpipLink(mac [6]byte) tcpip.LinkAddress { return tcpip.LinkAddress(mac[:]) }

// setIPv4 tells the NIC its address, for OwnARP.
func (n *NIC) setIPv4(a netip.Addr) {
	if n.ownARP {
		n.arp.setOwn(a)
	}
}

// Attach implements stack.LinkEndpoint.
func (n *NIC) Attach(d stack.NetworkDispatcher) {
	n.mu.Lock()
	n.dispatcher = d
	n.mu.Unlock()
}

// IsAttached implements stack.LinkEndpoint.
func (n *NIC) IsAttached() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.dispatcher != nil
}

// Wait implements stack.LinkEndpoint; the NIC has no goroutines to wait for.
func (n *NIC) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (n *NIC) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint.
func (n *NIC) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: n.mac,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (n *NIC) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (n *NIC) SetOnCloseAction(f func()) {
	n.mu.Lock()
	n.onClose = f
	n.mu.Unlock()
}

// WritePackets implements stack.LinkWriter: each packet is flattened into
// one frame and transmitted.
func (n *NIC) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	sent := 0
	for _, pkt := range pkts.AsSlice() {
		var frame []byte
		if n.frames != nil {
			frame = n.frames.Get(max(pkt.Size(), minFrame))
		} else {
			frame = make([]byte, 0, max(pkt.Size(), minFrame))
		}
		for _, s := range pkt.AsSlices() {
			frame = append(frame, s...)
		}
		if n.ownARP && pkt.NetworkProtocolNumber == header.IPv4ProtocolNumber {
			hop, ok := nextHop(frame, addrOf(pkt.EgressRoute.NextHop))
			if !ok {
				sent++
				continue
			}
			if !n.resolve(frame, hop) {
				sent++ // held until the next hop answers
				continue
			}
		}
		if err := n.transmit(frame); err != nil {
			if sent == 0 {
				if errors.Is(err, ErrLinkDown) {
					return 0, &tcpip.ErrClosedForSend{}
				}
				return 0, &tcpip.ErrAborted{}
			}
			break
		}
		sent++
	}
	return sent, nil
}
