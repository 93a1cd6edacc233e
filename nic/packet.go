package nic

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip/link/stopfd"
)

// Packet is an uplink onto an existing interface (a veth, the host side of
// a bridge port, a macvlan in passthru mode, a lab NIC) through one
// AF_PACKET socket: the devices sit on that segment directly, each with its
// own MAC, with no TAP and no bridge of ours.
//
// gVisor's fdbased endpoint is the natural reader for such a socket, but
// its inbound filter passes only the endpoint's one link address and group
// frames; here one socket carries every device's MAC. So Packet uses the
// parts beneath it, gVisor's rawfile (recvmmsg batches that block in ppoll
// until data or a stop) and stopfd, and hands each frame to the device it
// is addressed to as the TAP uplink does.
//
// The interface is put in promiscuous mode with a PACKET_MR_PROMISC
// membership, which the kernel counts per socket and drops when the socket
// closes: the interface's own setting is restored at Close, and also when
// the process is killed. Frames the devices send are not read back
// (PACKET_IGNORE_OUTGOING).
//
// Frames come with a virtio_net_hdr (PACKET_VNET_HDR): a host's own stack
// sending through a veth or a bridge leaves TCP and UDP checksums and TCP
// segmentation to an offload that never happens, and the socket would
// otherwise hand over such frames unfinished (a DHCP lease would bind and
// the very next DNS answer fail its checksum). The reader finishes them
// (vnet.go) and counts the ones it cannot (Unfinished).
type Packet struct {
	name    string
	fd      int
	ifindex int
	stop    stopfd.StopFD
	done    chan struct{}
	closed  atomic.Bool
	demux

	UplinkStats
	// Unfinished counts frames the reader could not finish as a NIC would
	// have sent them (a checksum outside the frame, a GSO type other than
	// TCPv4, a GSO frame whose headers do not parse).
	Unfinished atomic.Uint64

	kmu                       sync.Mutex // PACKET_STATISTICS resets at each read: the sums since open
	kernelFrames, kernelDrops uint64
	fdClosed                  bool

	problems []string

	// noOffload is the virtio_net_hdr before every frame a device sends
	// (all zero: nothing left to fill or segment; the 82566DM does
	// neither). Never written.
	noOffload [vnetHdrLen]byte
}

// PacketOptions configure OpenPacket.
type PacketOptions struct {
	// Name of the interface, in the caller's network namespace.
	Name string
	// Batch is how many frames one recvmmsg may return (default 64).
	Batch int
	// RcvBuf is the socket's receive buffer in bytes (default 4 MiB; with
	// CAP_NET_ADMIN beyond net.core.rmem_max): a synchronized Hello round
	// of a large fleet arrives as a burst.
	RcvBuf int
	// OnDuplicateMAC is told, once per MAC, that a frame from the wire
	// carried the source MAC of a device on this uplink.
	OnDuplicateMAC func(net.HardwareAddr)
}

// OpenPacket opens an AF_PACKET socket on the named interface and starts
// its reader. It needs CAP_NET_RAW; the interface must exist and be up.
func OpenPacket(o PacketOptions) (*Packet, error) {
	if o.Name == "" {
		return nil, errors.New("packet: no interface name")
	}
	ifi, err := net.InterfaceByName(o.Name)
	if err != nil {
		return nil, fmt.Errorf("packet %s: no such interface in this network namespace: %w", o.Name, err)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("packet %s: the interface is down (`ip link set %s up`)", o.Name, o.Name)
	}
	if o.Batch <= 0 {
		o.Batch = 64
	}
	if o.RcvBuf <= 0 {
		o.RcvBuf = 4 << 20
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("packet %s: socket: %w (AF_PACKET needs CAP_NET_RAW)", o.Name, err)
	}
	fail := func(what string, err error) (*Packet, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("packet %s: %s: %w", o.Name, what, err)
	}
	// Before the bind, so that no frame of ours is queued back to us.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING (Linux 4.20 or later)", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.RcvBuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.RcvBuf); err != nil {
			return fail("SO_RCVBUF", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return fail("promiscuous membership", err)
	}
	sf, err := stopfd.New()
	if err != nil {
		return fail("stop fd", err)
	}
	p := &Packet{name: o.Name, fd: fd, ifindex: ifi.Index, stop: sf, done: make(chan struct{}), problems: linkProblems(o.Name)}
	p.demux = newDemux("packet "+o.Name, &p.UplinkStats, o.OnDuplicateMAC)
	// A device takes frames up to the MTU plus an Ethernet header and a
	// VLAN tag; a GSO frame from a local sender is up to 64 KiB of IP.
	go p.read(o.Batch, max(ifi.MTU, 1500)+18)
	return p, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Problems are what stands between the interface and devices of their
// own MACs, found at open: a macvlan in any mode but passthru delivers
// only frames for its own MAC (measured: a DHCP offer unicast to a
// device's MAC never reached a bridge-mode macvlan's socket, in passthru
// it did), and an ipvlan gives every slave its parent's MAC.
func (p *Packet) Problems() []string { return p.problems }

func linkProblems(name string) []string {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil // the open succeeded; netlink's view is a bonus
	}
	switch l := l.(type) {
	case *netlink.Macvlan:
		if l.Mode != netlink.MACVLAN_MODE_PASSTHRU {
			return []string{fmt.Sprintf("%s is a macvlan in %s mode: it takes in only frames for its own MAC, so no device's unicast (DHCP offers, DNS answers, the SCS) arrives; use a macvlan in passthru mode, a veth on a bridge or a NIC of its own", name, macvlanMode(l.Mode))}
		}
	case *netlink.IPVlan:
		return []string{fmt.Sprintf("%s is an ipvlan: its slaves share the parent's MAC, and the devices each need their own; use a veth on a bridge, a macvlan in passthru mode or a NIC of its own", name)}
	}
	return nil
}

func macvlanMode(m netlink.MacvlanMode) string {
	switch m {
	case netlink.MACVLAN_MODE_PRIVATE:
		return "private"
	case netlink.MACVLAN_MODE_VEPA:
		return "vepa"
	case netlink.MACVLAN_MODE_BRIDGE:
		return "bridge"
	case netlink.MACVLAN_MODE_SOURCE:
		return "source"
	}
	return fmt.Sprintf("%d", m)
}

// Name is the interface name.
func (p *Packet) Name() string { return p.name }

func (p *Packet) read(batch, mtu int) {
	defer close(p.done)
	size := vnetHdrLen + ethernetHdrSize + 4 + 65535
	scratch := make([]byte, mtu)
	bufs := make([]byte, batch*size)
	iovs := make([]unix.Iovec, batch)
	hdrs := make([]rawfile.MMsgHdr, batch)
	for i := range hdrs {
		iovs[i] = rawfile.IovecFromBytes(bufs[i*size : (i+1)*size])
		hdrs[i].Msg.Iov = &iovs[i]
		hdrs[i].Msg.SetIovlen(1)
	}
	for {
		n, errno := rawfile.BlockingRecvMMsgUntilStopped(p.stop.EFD, p.fd, hdrs)
		if n == -1 || p.closed.Load() {
			return
		}
		if errno != 0 {
			p.ReadErrors.Add(1)
			if errno == unix.EBADF {
				return
			}
			continue
		}
		for i := 0; i < n; i++ {
			l := int(hdrs[i].Len)
			if hdrs[i].Msg.Flags&unix.MSG_TRUNC != 0 || l > size {
				p.ReadErrors.Add(1) // larger than any frame or GSO frame
				continue
			}
			h, frame, err := parseVnetHdr(bufs[i*size : i*size+l])
			if err == nil {
				err = h.resolve(frame, scratch, p.dispatch)
			}
			if err != nil {
				p.Unfinished.Add(1)
			}
		}
	}
}

// Attach implements Uplink.
func (p *Packet) Attach(port Port) (Attachment, error) {
	mac, err := p.attach(port)
	if err != nil {
		return nil, err
	}
	return &packetAttachment{p: p, mac: mac}, nil
}

// KernelStats are the socket's own counts since it was opened
// (PACKET_STATISTICS): frames queued to it, and frames the kernel dropped
// because the receive buffer was full. After Close, the last reading.
func (p *Packet) KernelStats() (frames, drops uint64, err error) {
	p.kmu.Lock()
	defer p.kmu.Unlock()
	err = p.readKernelLocked()
	return p.kernelFrames, p.kernelDrops, err
}

// readKernelLocked adds what the kernel counted since the last reading;
// p.kmu is held. Once the socket is closed its number may be another
// file's: it is not asked again.
func (p *Packet) readKernelLocked() error {
	if p.fdClosed {
		return nil
	}
	var st unix.TpacketStats
	l := uint32(unsafe.Sizeof(st))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(p.fd), unix.SOL_PACKET, unix.PACKET_STATISTICS,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return fmt.Errorf("packet %s: PACKET_STATISTICS: %w", p.name, e)
	}
	p.kernelFrames += uint64(st.Packets)
	p.kernelDrops += uint64(st.Drops)
	return nil
}

// Counts reads the uplink's counts, the kernel's drops among them (the
// last ones read if the socket is closed by now).
func (p *Packet) Counts() UplinkCounts {
	c := p.UplinkStats.read("packet:" + p.name)
	c.Unfinished = p.Unfinished.Load()
	_, c.KernelDrops, _ = p.KernelStats()
	return c
}

// Close stops the reader and closes the socket, which ends its promiscuous
// membership.
func (p *Packet) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.stop.Stop()
	<-p.done
	unix.Close(p.stop.EFD)
	p.kmu.Lock()
	defer p.kmu.Unlock()
	_ = p.readKernelLocked() // the last reading, for Counts after the run
	p.fdClosed = true
	if err := unix.Close(p.fd); err != nil {
		return fmt.Errorf("packet %s: close: %w", p.name, err)
	}
	return nil
}

type packetAttachment struct {
	p   *Packet
	mac [6]byte
}

// Send writes one frame: a packet socket write is one frame, so concurrent
// senders do not interleave. A full transmit queue (EAGAIN, ENOBUFS) loses
// the frame as a congested wire would, and is counted.
func (a *packetAttachment) Send(frame []byte) error {
	for tries := 0; ; tries++ {
		iov := [2]unix.Iovec{rawfile.IovecFromBytes(a.p.noOffload[:]), rawfile.IovecFromBytes(frame)}
		errno := rawfile.NonBlockingWriteIovec(a.p.fd, iov[:])
		if errno == 0 {
			a.p.TxFrames.Add(1)
			return nil
		}
		if errno == unix.EAGAIN && tries < 3 {
			ev := rawfile.PollEvent{FD: int32(a.p.fd), Events: unix.POLLOUT}
			ts := unix.NsecToTimespec(int64(5e6))
			rawfile.BlockingPoll(&ev, 1, &ts)
			continue
		}
		a.p.WriteErrors.Add(1)
		return fmt.Errorf("packet %s: write: %w", a.p.name, errno)
	}
}

func (a *packetAttachment) Detach() { a.p.detach(a.mac) }

// SetBroadcastFilter implements FilterAware: group frames from the wire go
// only to the ports whose filter passes them (the demux's index).
func (a *packetAttachment) SetBroadcastFilter(f *BroadcastFilter) { a.p.setFilter(a.mac, f) }
