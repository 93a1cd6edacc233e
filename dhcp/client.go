package dhcp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/event"
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

// Gateway is the first router, or the zero address.
func (l Lease) Gateway() netip.Addr {
	if len(l.Routers) > 0 {
		return l.Routers[0]
	}
	return netip.Addr{}
}

// Link is what the client needs from a NIC: raw frames both ways.
type Link interface {
	HardwareAddr() net.HardwareAddr
	WriteRaw(frame []byte) error
}

// State is the client's RFC 2131 §4.4 state.
type State int

const (
	StateStopped State = iota
	StateSelecting
	StateRequesting
	StateBound
	StateRenewing
	StateRebinding
)

func (s State) String() string {
	return [...]string{"stopped", "selecting", "requesting", "bound", "renewing", "rebinding"}[s]
}

// ErrNak means the server refused the request.
var ErrNak = errors.New("server answered DHCPNAK")

// ErrLeaseExpired means neither renewal nor rebinding got an answer in time.
var ErrLeaseExpired = errors.New("lease expired")

// ClientOptions configure a Client.
type ClientOptions struct {
	Link     Link
	HostName string // sent as option 12
	// Retransmit is the first retransmission timeout; it doubles up to
	// MaxRetransmit, each wait randomized by ±1/4 (RFC 2131 §4.1: 4 s,
	// 8 s, … 64 s, ±1 s). Defaults 4 s and 64 s.
	Retransmit    time.Duration
	MaxRetransmit time.Duration
	// RequestAttempts is how many REQUESTs go unanswered before the client
	// starts over with a DISCOVER; default 4.
	RequestAttempts int
	// Clock runs the timers; default real time. Under a scaled clock the
	// lease times and retransmissions shrink with it, but a wait for an
	// answer never lasts less than MinWait of real time (default 200 ms):
	// servers answer in real time.
	Clock   clock.Clock
	MinWait time.Duration
	// Rand draws transaction ids and jitter; default a fresh PCG.
	Rand *rand.Rand

	// OnBound hears every ACK: the first lease, and each renewal or
	// rebinding (renewed true).
	OnBound func(l Lease, renewed bool)
	// OnLost hears that the lease is gone (NAK while renewing, or expiry);
	// the client starts over at once.
	OnLost func(err error)
	// OnEvent hears the steps in between (discover, offer, request,
	// renewing, rebinding, malformed) with slog-style key/value pairs.
	OnEvent func(name event.Name, args ...any)
	// NoAnswerAfter is how many DISCOVERs go unanswered before the client
	// says so once (dhcp.no_answer, a warning) while it goes on asking, as
	// a real client does; default 4 (about a minute of RFC 2131 backoff).
	NoAnswerAfter int
}

// ClientStats count what the client did.
type ClientStats struct {
	Sent      atomic.Uint64
	Malformed atomic.Uint64 // DHCP frames for this client that could not be used
	Naks      atomic.Uint64
	Lost      atomic.Uint64
}

// Client runs DHCP for one link: selecting, requesting, bound, renewing at
// T1, rebinding at T2 and starting over when the lease is lost. It has no
// goroutine of its own: timers and inbound frames (HandleFrame, from the
// NIC's raw handler) drive it.
type Client struct {
	o     ClientOptions
	Stats ClientStats

	mu       sync.Mutex
	state    State
	gen      uint64 // bumped on every state change; stale timers check it
	leaseGen uint64 // bumped on every bind and loss; stale lease timers check it
	xid      uint32
	attempt  int
	selected time.Time // when the current SELECTING began
	wait     time.Duration
	timer    clock.Timer // retransmission
	// leaseTimer is the lease's next event: T1, then T2, then expiry. One
	// timer armed at a time rather than three: a fleet's devices hold a
	// runtime timer each for the lease, and every runtime timer is work
	// for the scheduler's timer heap.
	leaseTimer clock.Timer
	boundAt    time.Time // the clock's time at the bind, from which T1, T2 and expiry count
	offered    netip.Addr
	server     netip.Addr
	serverMAC  net.HardwareAddr
	lease      Lease
	bound      bool
	waiters    []chan Lease
}

// NewClient returns a stopped client for o.Link.
func NewClient(o ClientOptions) *Client {
	if o.Retransmit <= 0 {
		o.Retransmit = 4 * time.Second
	}
	if o.MaxRetransmit < o.Retransmit {
		o.MaxRetransmit = max(64*time.Second, o.Retransmit)
	}
	if o.RequestAttempts <= 0 {
		o.RequestAttempts = 4
	}
	if o.NoAnswerAfter <= 0 {
		o.NoAnswerAfter = 4
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.MinWait <= 0 {
		o.MinWait = 200 * time.Millisecond
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Client{o: o}
}

// Start begins with a DISCOVER. Starting a running client does nothing.
func (c *Client) Start() {
	c.mu.Lock()
	if c.state != StateStopped {
		c.mu.Unlock()
		return
	}
	do := c.discoverLocked()
	c.mu.Unlock()
	do()
}

// Stop cancels every timer; the client forgets its lease (a powered-off
// device sends no RELEASE).
func (c *Client) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enterLocked(StateStopped)
	c.stopLeaseTimersLocked()
	c.bound = false
}

// State returns the client's state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Lease returns the current lease, if bound (or renewing or rebinding).
func (c *Client) Lease() (Lease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lease, c.bound
}

// Acquire runs the client until it is bound and returns the lease, leaving
// the client stopped (no renewal): a one-shot for tests and tools.
func (c *Client) Acquire(ctx context.Context) (Lease, error) {
	ch := make(chan Lease, 1)
	c.mu.Lock()
	c.waiters = append(c.waiters, ch)
	c.mu.Unlock()
	c.Start()
	defer c.Stop()
	select {
	case l := <-ch:
		return l, nil
	case <-ctx.Done():
		return Lease{}, fmt.Errorf("dhcp: no lease: %w", ctx.Err())
	}
}

// enterLocked moves to state s, invalidating timers armed in the old one.
func (c *Client) enterLocked(s State) {
	c.state = s
	c.gen++
	c.attempt = 0
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

func (c *Client) stopLeaseTimersLocked() {
	c.leaseGen++
	if c.leaseTimer != nil {
		c.leaseTimer.Stop()
		c.leaseTimer = nil
	}
}

// after arms f for d (at least MinWait of real time) in the current state.
func (c *Client) afterLocked(d time.Duration, f func()) clock.Timer {
	gen := c.gen
	return c.o.Clock.AfterFunc(clock.AtLeastReal(c.o.Clock, d, c.o.MinWait), func() {
		c.mu.Lock()
		if c.gen != gen {
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		f()
	})
}

func (c *Client) event(name event.Name, args ...any) {
	if c.o.OnEvent != nil {
		c.o.OnEvent(name, args...)
	}
}

// discoverLocked enters SELECTING and returns the send to do unlocked.
func (c *Client) discoverLocked() func() {
	c.enterLocked(StateSelecting)
	c.selected = c.o.Clock.Now()
	c.xid = c.o.Rand.Uint32()
	c.wait = c.o.Retransmit
	return c.transmitLocked()
}

// transmitLocked sends (after unlocking) the message of the current state
// and arms its retransmission.
func (c *Client) transmitLocked() func() {
	c.attempt++
	var (
		m        *layers.DHCPv4
		dstMAC   = broadcastMAC
		src, dst = netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})
		wait     time.Duration
		name     event.Name
		args     []any
	)
	switch c.state {
	case StateSelecting:
		m = c.message(layers.DHCPMsgTypeDiscover)
		name = event.DHCPDiscover
	case StateRequesting:
		m = c.message(layers.DHCPMsgTypeRequest)
		AddOption(m, layers.DHCPOptRequestIP, c.offered.AsSlice())
		AddOption(m, layers.DHCPOptServerID, c.server.AsSlice())
		name, args = event.DHCPRequest, []any{"ip", c.offered.String(), "server", c.server.String()}
	case StateRenewing, StateRebinding:
		m = c.message(layers.DHCPMsgTypeRequest)
		m.ClientIP = c.lease.Addr.Addr().AsSlice()
		src = c.lease.Addr.Addr()
		if c.state == StateRenewing {
			dst, dstMAC = c.lease.ServerID, c.serverMAC
		}
		// RFC 2131 §4.4.5: wait half the time left to T2 (or to expiry),
		// at least 60 s.
		end := c.lease.Rebind
		if c.state == StateRebinding {
			end = c.lease.Duration
		}
		left := c.lease.AcquiredAt.Add(end).Sub(c.o.Clock.Now())
		wait = max(left/2, 60*time.Second)
		name = event.DHCPRenewing
		if c.state == StateRebinding {
			name = event.DHCPRebinding
		}
		args = []any{"ip", c.lease.Addr.Addr().String()}
	default:
		return func() {}
	}
	if wait == 0 {
		// ±1/4 of the timeout (±1 s of 4 s), as RFC 2131 randomizes.
		jitter := time.Duration((c.o.Rand.Float64()*2 - 1) * float64(c.wait) / 4)
		wait = c.wait + jitter
		c.wait = min(c.wait*2, c.o.MaxRetransmit)
	}
	attempt := c.attempt
	state := c.state
	// The DISCOVER after NoAnswerAfter unanswered ones: no server heard.
	silent := state == StateSelecting && attempt == c.o.NoAnswerAfter+1
	waited := c.o.Clock.Now().Sub(c.selected)
	c.timer = c.afterLocked(wait, c.retransmit)
	frame, err := Encode(Packet{
		SrcMAC: c.o.Link.HardwareAddr(), DstMAC: dstMAC,
		SrcIP: src, DstIP: dst,
		SrcPort: ClientPort, DstPort: ServerPort, Msg: m,
	})
	return func() {
		if err != nil {
			c.event(event.DHCPError, "state", state.String(), "err", err.Error())
			return
		}
		if silent {
			c.event(event.DHCPNoAnswer, "discovers", attempt-1, "waited", waited.Round(time.Second).String(),
				"why", "no DHCP server answered: is the uplink on a network with one? (the client keeps asking)")
		}
		c.Stats.Sent.Add(1)
		c.event(name, append(args, "attempt", attempt)...)
		_ = c.o.Link.WriteRaw(frame) // a down link loses it, as the wire would
	}
}

// retransmit runs when the current state's wait ran out.
func (c *Client) retransmit() {
	c.mu.Lock()
	var do func()
	switch c.state {
	case StateRequesting:
		if c.attempt >= c.o.RequestAttempts {
			do = c.discoverLocked()
			break
		}
		do = c.transmitLocked()
	case StateSelecting, StateRenewing, StateRebinding:
		do = c.transmitLocked()
	default:
		do = func() {}
	}
	c.mu.Unlock()
	do()
}

func (c *Client) message(t layers.DHCPMsgType) *layers.DHCPv4 {
	m := NewMessage(layers.DHCPOpRequest, t, c.xid, c.o.Link.HardwareAddr())
	AddOption(m, layers.DHCPOptParamsRequest, []byte{
		byte(layers.DHCPOptSubnetMask), byte(layers.DHCPOptRouter), byte(layers.DHCPOptDNS),
		byte(layers.DHCPOptHostname), byte(layers.DHCPOptDomainName),
	})
	if c.o.HostName != "" {
		AddOption(m, layers.DHCPOptHostname, []byte(c.o.HostName))
	}
	return m
}

// HandleFrame takes frames addressed to the DHCP client port and reports
// whether it consumed the frame.
func (c *Client) HandleFrame(frame []byte) bool {
	p, err := Decode(frame)
	if errors.Is(err, ErrNotDHCP) || (err == nil && p.DstPort != ClientPort) {
		return false
	}
	if err != nil {
		if c.forMe(frame) {
			c.malformed(err)
		}
		return true
	}
	if p.Msg.Operation != layers.DHCPOpReply || !equalMAC(p.Msg.ClientHWAddr, c.o.Link.HardwareAddr()) {
		return true // another client's reply, broadcast on the segment
	}
	c.mu.Lock()
	do := c.handleLocked(p)
	c.mu.Unlock()
	do()
	return true
}

// forMe guesses whether an unreadable DHCP frame was meant for this client:
// addressed to its MAC, or carrying its MAC where chaddr sits.
func (c *Client) forMe(frame []byte) bool {
	hw := c.o.Link.HardwareAddr()
	if len(frame) >= 6 && equalMAC(frame[:6], hw) {
		return true
	}
	const chaddr = 14 + 20 + 8 + 28 // Ethernet, IPv4 without options, UDP, BOOTP fields before chaddr
	return len(frame) >= chaddr+6 && equalMAC(frame[chaddr:], hw)
}

func (c *Client) malformed(err error) {
	c.Stats.Malformed.Add(1)
	c.event(event.DHCPMalformed, "err", err.Error())
}

func (c *Client) handleLocked(p Packet) func() {
	if p.Msg.Xid != c.xid {
		return func() {}
	}
	mt, _ := MessageType(p.Msg)
	switch {
	case c.state == StateSelecting && mt == layers.DHCPMsgTypeOffer:
		server, ok := OptionAddr(p.Msg, layers.DHCPOptServerID)
		yi, ok2 := netip.AddrFromSlice(p.Msg.YourClientIP.To4())
		if !ok || !ok2 || yi.IsUnspecified() {
			return func() {
				c.malformed(fmt.Errorf("%w: offer without server identifier or address", ErrMalformed))
			}
		}
		c.enterLocked(StateRequesting)
		c.offered, c.server = yi, server
		c.wait = c.o.Retransmit
		send := c.transmitLocked()
		return func() {
			c.event(event.DHCPOffer, "ip", yi.String(), "server", server.String())
			send()
		}

	case (c.state == StateRequesting || c.state == StateRenewing || c.state == StateRebinding) && mt == layers.DHCPMsgTypeAck:
		l, err := leaseFrom(p.Msg, c.o.Clock.Now())
		if err != nil {
			return func() { c.malformed(err) }
		}
		renewed := c.state != StateRequesting
		if renewed && l.Addr.Addr() != c.lease.Addr.Addr() {
			// A server may not move a renewing client; treat it as lost.
			return c.loseLocked(fmt.Errorf("%w: renewal gave %s for %s", ErrNak, l.Addr.Addr(), c.lease.Addr.Addr()))
		}
		c.bindLocked(l, p.SrcMAC)
		waiters := c.waiters
		c.waiters = nil
		return func() {
			for _, w := range waiters {
				w <- l
			}
			if c.o.OnBound != nil {
				c.o.OnBound(l, renewed)
			}
		}

	case mt == layers.DHCPMsgTypeNak && c.state != StateBound && c.state != StateStopped:
		c.Stats.Naks.Add(1)
		if c.state == StateRequesting {
			// Start over, after a moment, as clients do to avoid a NAK loop.
			c.enterLocked(StateSelecting)
			c.xid = c.o.Rand.Uint32()
			c.wait = c.o.Retransmit
			c.timer = c.afterLocked(c.o.Retransmit, c.retransmit)
			return func() { c.event(event.DHCPNak, "server", p.SrcIP.String()) }
		}
		return c.loseLocked(ErrNak)
	}
	return func() {}
}

func (c *Client) bindLocked(l Lease, serverMAC net.HardwareAddr) {
	c.enterLocked(StateBound)
	c.stopLeaseTimersLocked()
	c.lease, c.bound = l, true
	c.serverMAC = append(c.serverMAC[:0], serverMAC...)
	c.boundAt = c.o.Clock.Now()
	c.armLeaseLocked(atT1)
}

// leaseStep is a lease event: T1, T2 or the end.
type leaseStep int

const (
	atT1 leaseStep = iota
	atT2
	atEnd
)

// armLeaseLocked arms the lease event at, counted from the bind. Lease
// timers fire at the lease's own times, not floored like waits for an
// answer.
func (c *Client) armLeaseLocked(at leaseStep) {
	since := [...]time.Duration{atT1: c.lease.Renew, atT2: c.lease.Rebind, atEnd: c.lease.Duration}[at]
	gen := c.leaseGen
	d := max(c.boundAt.Add(since).Sub(c.o.Clock.Now()), 0)
	c.leaseTimer = c.o.Clock.AfterFunc(d, func() { c.leaseEvent(gen, at) })
}

// leaseEvent moves a bound client on to renewing at T1 or rebinding at
// T2, arming the event after, or ends its lease.
func (c *Client) leaseEvent(gen uint64, at leaseStep) {
	c.mu.Lock()
	if c.state == StateStopped || !c.bound || c.leaseGen != gen {
		c.mu.Unlock()
		return
	}
	if at == atEnd {
		do := c.loseLocked(ErrLeaseExpired)
		c.mu.Unlock()
		do()
		return
	}
	to := [...]State{atT1: StateRenewing, atT2: StateRebinding}[at]
	do := func() {}
	if c.state < to {
		c.enterLocked(to)
		c.xid = c.o.Rand.Uint32()
		do = c.transmitLocked()
	}
	c.armLeaseLocked(at + 1)
	c.mu.Unlock()
	do()
}

// loseLocked drops the lease and starts over.
func (c *Client) loseLocked(err error) func() {
	c.Stats.Lost.Add(1)
	c.stopLeaseTimersLocked()
	c.bound = false
	c.lease = Lease{}
	send := c.discoverLocked()
	return func() {
		if c.o.OnLost != nil {
			c.o.OnLost(err)
		}
		send()
	}
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
	if secs == 0xFFFFFFFF {
		secs = 1 << 30 // "infinite": far enough that no timer fires
	}
	l.Duration = time.Duration(secs) * time.Second
	l.Renew, l.Rebind = l.Duration/2, l.Duration*7/8
	if t1, ok := OptionUint32(m, layers.DHCPOptT1); ok {
		l.Renew = time.Duration(t1) * time.Second
	}
	if t2, ok := OptionUint32(m, layers.DHCPOptT2); ok {
		l.Rebind = time.Duration(t2) * time.Second
	}
	if l.Rebind > l.Duration || l.Renew > l.Rebind {
		// Nonsense T1/T2 (RFC 2131 wants T1 < T2 < lease): use the defaults.
		l.Renew, l.Rebind = l.Duration/2, l.Duration*7/8
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
