package dhcp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/google/gopacket/layers"
)

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Lease is what an ACK granted.
type Lease struct {
	Addr       netip.Prefix // address and subnet mask (option 1)
	Routers    []netip.Addr // option 3
	DNS        []netip.Addr // option 6
	HostName   string       // option 12 as the server echoed or set it
	Domain     string       // option 15
	ServerID   netip.Addr   // option 54
	Duration   time.Duration
	Renew      time.Duration // T1 (option 58, else half the lease)
	Rebind     time.Duration // T2 (option 59, else 7/8 of the lease)
	AcquiredAt time.Time
}

// Link is what the client needs from a NIC: raw frames both ways.
type Link interface {
	HardwareAddr() net.HardwareAddr
	WriteRaw(frame []byte) error
}

// ClientOptions configure a Client.
type ClientOptions struct {
	Link     Link
	HostName string // sent as option 12
	// Retransmit is the first retransmission timeout; it doubles up to 64
	// times its base ratio, RFC 2131 §4.1 (4 s, 8 s, … 64 s, each ±1 s).
	// Default 4 s; a time-scaled run passes less.
	Retransmit time.Duration
	// Attempts caps the messages sent per phase; default 5.
	Attempts int
	// Rand draws transaction ids and jitter; default a fresh PCG.
	Rand *rand.Rand
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Client runs the DHCP exchange for one link. Feed it inbound frames with
// HandleFrame (from the NIC's raw handler).
type Client struct {
	o     ClientOptions
	inbox chan Packet
	// Malformed counts DHCP frames that could not be read.
	Malformed atomic.Uint64
}

// NewClient returns a client for o.Link.
func NewClient(o ClientOptions) *Client {
	if o.Retransmit <= 0 {
		o.Retransmit = 4 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Client{o: o, inbox: make(chan Packet, 8)}
}

// HandleFrame takes frames addressed to the DHCP client port and reports
// whether it consumed the frame.
func (c *Client) HandleFrame(frame []byte) bool {
	p, err := Decode(frame)
	if errors.Is(err, ErrNotDHCP) || (err == nil && p.DstPort != ClientPort) {
		return false
	}
	if err != nil {
		c.Malformed.Add(1)
		return true
	}
	select {
	case c.inbox <- p:
	default: // a client not waiting drops, as a socket with a full buffer would
	}
	return true
}

// Acquire runs DISCOVER → OFFER → REQUEST → ACK and returns the lease.
func (c *Client) Acquire(ctx context.Context) (Lease, error) {
	xid := c.o.Rand.Uint32()
	discover := c.message(layers.DHCPMsgTypeDiscover, xid)
	offer, err := c.exchange(ctx, discover, xid, layers.DHCPMsgTypeOffer)
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp: discover: %w", err)
	}
	server, ok := OptionAddr(offer.Msg, layers.DHCPOptServerID)
	if !ok {
		return Lease{}, fmt.Errorf("dhcp: offer without server identifier: %w", ErrMalformed)
	}
	yiaddr, _ := netip.AddrFromSlice(offer.Msg.YourClientIP.To4())
	req := c.message(layers.DHCPMsgTypeRequest, xid)
	AddOption(req, layers.DHCPOptRequestIP, yiaddr.AsSlice())
	AddOption(req, layers.DHCPOptServerID, server.AsSlice())
	ack, err := c.exchange(ctx, req, xid, layers.DHCPMsgTypeAck)
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp: request %s: %w", yiaddr, err)
	}
	return leaseFrom(ack.Msg, c.o.Now())
}

// ErrNak means the server refused the request.
var ErrNak = errors.New("server answered DHCPNAK")

func (c *Client) message(t layers.DHCPMsgType, xid uint32) *layers.DHCPv4 {
	m := NewMessage(layers.DHCPOpRequest, t, xid, c.o.Link.HardwareAddr())
	AddOption(m, layers.DHCPOptParamsRequest, []byte{
		byte(layers.DHCPOptSubnetMask), byte(layers.DHCPOptRouter), byte(layers.DHCPOptDNS),
		byte(layers.DHCPOptHostname), byte(layers.DHCPOptDomainName),
	})
	if c.o.HostName != "" {
		AddOption(m, layers.DHCPOptHostname, []byte(c.o.HostName))
	}
	return m
}

// exchange broadcasts m until a reply of type want (or a NAK) with the same
// xid arrives, with RFC 2131 backoff.
func (c *Client) exchange(ctx context.Context, m *layers.DHCPv4, xid uint32, want layers.DHCPMsgType) (Packet, error) {
	frame, err := Encode(Packet{
		SrcMAC: c.o.Link.HardwareAddr(), DstMAC: broadcastMAC,
		SrcIP: netip.IPv4Unspecified(), DstIP: netip.AddrFrom4([4]byte{255, 255, 255, 255}),
		SrcPort: ClientPort, DstPort: ServerPort, Msg: m,
	})
	if err != nil {
		return Packet{}, err
	}
	timeout := c.o.Retransmit
	for attempt := 0; attempt < c.o.Attempts; attempt++ {
		if err := c.o.Link.WriteRaw(append([]byte(nil), frame...)); err != nil {
			return Packet{}, err
		}
		// ±1/4 of the timeout (±1 s of 4 s), as RFC 2131 randomizes.
		jitter := time.Duration((c.o.Rand.Float64()*2 - 1) * float64(timeout) / 4)
		t := time.NewTimer(timeout + jitter)
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return Packet{}, ctx.Err()
			case <-t.C:
				break wait
			case p := <-c.inbox:
				if p.Msg.Xid != xid || p.Msg.Operation != layers.DHCPOpReply ||
					!equalMAC(p.Msg.ClientHWAddr, c.o.Link.HardwareAddr()) {
					continue
				}
				mt, _ := MessageType(p.Msg)
				switch mt {
				case want:
					t.Stop()
					return p, nil
				case layers.DHCPMsgTypeNak:
					t.Stop()
					return Packet{}, ErrNak
				}
			}
		}
		timeout = min(timeout*2, c.o.Retransmit*16)
	}
	return Packet{}, fmt.Errorf("no %s after %d attempts", want, c.o.Attempts)
}

func leaseFrom(m *layers.DHCPv4, now time.Time) (Lease, error) {
	yi, ok := netip.AddrFromSlice(m.YourClientIP.To4())
	if !ok || yi.IsUnspecified() {
		return Lease{}, fmt.Errorf("dhcp: ack without an address: %w", ErrMalformed)
	}
	bits := 32
	if mask, ok := Option(m, layers.DHCPOptSubnetMask); ok && len(mask) == 4 {
		ones, total := net.IPMask(mask).Size()
		if total != 32 {
			return Lease{}, fmt.Errorf("dhcp: subnet mask %v is not contiguous: %w", net.IP(mask), ErrMalformed)
		}
		bits = ones
	}
	l := Lease{
		Addr:       netip.PrefixFrom(yi, bits),
		Routers:    OptionAddrs(m, layers.DHCPOptRouter),
		DNS:        OptionAddrs(m, layers.DHCPOptDNS),
		AcquiredAt: now,
	}
	l.ServerID, _ = OptionAddr(m, layers.DHCPOptServerID)
	if d, ok := Option(m, layers.DHCPOptDomainName); ok {
		l.Domain = string(trimNUL(d))
	}
	if h, ok := Option(m, layers.DHCPOptHostname); ok {
		l.HostName = string(trimNUL(h))
	}
	secs, ok := OptionUint32(m, layers.DHCPOptLeaseTime)
	if !ok {
		return Lease{}, fmt.Errorf("dhcp: ack without a lease time: %w", ErrMalformed)
	}
	l.Duration = time.Duration(secs) * time.Second
	l.Renew, l.Rebind = l.Duration/2, l.Duration*7/8
	if t1, ok := OptionUint32(m, layers.DHCPOptT1); ok {
		l.Renew = time.Duration(t1) * time.Second
	}
	if t2, ok := OptionUint32(m, layers.DHCPOptT2); ok {
		l.Rebind = time.Duration(t2) * time.Second
	}
	return l, nil
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

func equalMAC(a, b net.HardwareAddr) bool {
	return len(a) >= 6 && len(b) >= 6 && [6]byte(a[:6]) == [6]byte(b[:6])
}
