// Package firmware is the Intel AMT 5 firmware of one simulated Dell
// OptiPlex 960: power-on, the 82566DM's link, an address from DHCP (or the
// static settings in MEBx), the search for the Setup and Configuration
// Server (SCS), the setup-mode Hello loop, and the AMT ports 16992 and 16993.
//
// A device has no goroutine of its own. Timers from its clock (the Hello
// schedule, DHCP retransmission and lease times) and its NIC's inbound
// frames drive it; a goroutine exists only while the device is doing
// something (a DNS query, a Hello on the wire, an accepted connection). That
// is what lets one process carry a hundred thousand of them.
//
// Where docs/protocol.md marks a fact as unconfirmed, the behaviour is a field of
// Options with the MED reading as default: the Hello schedule and its 24 h
// window (hello.DefaultSchedule), and the bare "ProvisionServer" query after
// the domain-qualified ones (NoBareName turns it off).
package firmware

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/dhcp"
	"github.com/amtsim/amtsim/digest"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/workers"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/negotiate"
	"github.com/amtsim/amtsim/nic"
)

// AMT's web service ports (docs/protocol.md §1).
const (
	PortHTTP  = 16992
	PortHTTPS = 16993
)

// Options configure a Device.
type Options struct {
	// ID names the device in events; default its identity's host name.
	ID       string
	Identity identity.Identity
	// Store holds the MEBx settings; read at every power-on. Required.
	Store mebx.Store

	Uplink  nic.Uplink  // required
	Stacks  *nic.Stacks // required; shared by a fleet
	Capture *nic.Capture
	// Egress and Ingress impair the NIC's frames.
	Egress, Ingress nic.Netem

	// Clock runs every schedule; default real time. A scaled clock runs the
	// device faster with the same sequence of events.
	Clock clock.Clock
	// NetFloor is the least real time any wait for a network answer lasts
	// (DHCP retransmission, DNS, TCP connect), however fast Clock runs:
	// peers answer in real time. Default 200 ms.
	NetFloor time.Duration
	// Events receives the device's events; nil discards them.
	Events Sink

	// Schedule is the Hello schedule; zero value means
	// hello.DefaultSchedule.
	Schedule hello.Schedule
	// DNSTimeout is the wait for the first DNS answer (default 2 s; each
	// later try waits twice as long as the one before) and DNSAttempts the
	// tries per server and name (default 3: 2 s, 4 s, 8 s).
	DNSTimeout  time.Duration
	DNSAttempts int
	// NoBareName leaves out the query for "ProvisionServer" with no domain
	// that by default follows the domain-qualified names (docs/protocol.md
	// §2).
	NoBareName bool
	// ConnectTimeout bounds the TCP connect of a Hello; default 5 s.
	ConnectTimeout time.Duration
	// HelloGate, shared by a fleet, has its devices' due Hellos take turns
	// (workers.Gate says why); nil sends each Hello when it is due.
	HelloGate *workers.Gate
	// KeyPairs hands out the key pairs GenerateKeyPair makes; nil makes a
	// fresh RSA-2048 key each time (tens of milliseconds). A fleet may pass
	// a pool of keys made once per run: a fidelity trade, since devices
	// then share keys.
	KeyPairs func() (*GeneratedKey, error)
	// Profile is the firmware generation (AMT5, AMT11); zero value AMT5.
	Profile Profile
	// TLSMinVersion and TLSMaxVersion bound the certificate TLS on 16993;
	// default the profile's (TLS 1.0 only on AMT 5).
	TLSMinVersion, TLSMaxVersion uint16
	// KeepMEOnHostReset keeps the device running through a RemoteControl
	// power cycle or reset of the host; by default such a command restarts
	// the device's boot sequence too.
	KeepMEOnHostReset bool
	// Quirks reproduce firmware bugs on demand; all off by default.
	Quirks Quirks
	// Seed makes the device's random choices (DHCP transaction ids, jitter,
	// DNS ids) repeatable; default derived from the identity's MAC.
	Seed uint64
}

// Quirks are firmware bugs a device can reproduce.
type Quirks struct {
	// EmptyDigestResponse accepts a Digest response of "" for any known
	// user, as AMT did before CVE-2017-5689 was fixed.
	EmptyDigestResponse bool
	// FlashWriteLimit refuses persisted changes once the flash has been
	// written this many times (FLASH_WRITE_LIMIT_EXCEEDED); 0 is no limit.
	FlashWriteLimit uint64
	// CommitDropsConnection closes the connection instead of answering a
	// CommitChanges that took: the commit restarts the port stack with
	// the answer still in flight, as reported of TLS-enforced AMT 19 and
	// later (device-management-toolkit/rpc-go#1463).
	CommitDropsConnection bool
}

// Stats count what the device did. They only grow.
type Stats struct {
	PowerOns      atomic.Uint64
	HellosSent    atomic.Uint64
	HellosFailed  atomic.Uint64
	DNSQueries    atomic.Uint64
	DNSMalformed  atomic.Uint64 // answers that could not be read
	DNSFailures   atomic.Uint64 // names that did not resolve
	ConnsAccepted atomic.Uint64
	TLSFailures   atomic.Uint64 // handshakes that failed on 16993
	CertRefusals  atomic.Uint64 // of which provisioning certificate chains refused
	AuthFailures  atomic.Uint64 // requests with bad Digest or Negotiate credentials
	// NegotiateFailures are the AuthFailures of Negotiate: tickets
	// refused (bad, expired, replayed, skewed, or not in the ACL).
	NegotiateFailures atomic.Uint64
	BadRequests       atomic.Uint64 // HTTP that could not be read
}

// Device is one simulated AMT device.
type Device struct {
	o     Options
	id    string
	clock clock.Clock
	sched hello.Schedule
	Stats Stats

	// work counts the slots in progress (a Hello on the wire, a DNS query,
	// a connection being served) so that PowerOff returns only when the
	// device has gone quiet. Add only
	// under mu while on.
	work sync.WaitGroup
	// power serializes PowerOn and PowerOff, so that a second PowerOff
	// returns only once the first has finished.
	power    sync.Mutex
	powerCtx context.Context // PowerOn's, for a power cycle
	// arming makes the ports and the Hello loop follow one settings change
	// at a time, each with the settings current when it starts: two arms
	// that overlapped (a commit's, then an unprovision's on the ports the
	// first had just opened) let the first one's stopHello land after the
	// second's startHello, and the unprovisioned device sent no Hello.
	arming sync.Mutex

	mu        sync.Mutex
	on        bool
	ctx       context.Context // this power cycle's: PowerOn's, ended at power-off
	cancel    context.CancelFunc
	settings  mebx.Settings
	nic       *nic.NIC
	host      *nic.Host
	dhcp      *dhcp.Client
	lease     dhcp.Lease
	bound     bool
	listeners []*nic.Listener
	conns     map[net.Conn]struct{} // open AMT connections and DNS queries, closed by PowerOff; nil when none
	ready     bool                  // has had an address this power cycle
	rand      *rand.Rand

	helloOn     bool
	helloHeld   bool // a slot came due during a session; sent when it ends
	sessions    int  // admin sessions in setup, which hold the Hello loop
	helloTimer  clock.Timer
	helloLoop   uint64 // counts startHello calls: a slot belongs to one loop
	helloK      int    // number of the next Hello
	helloStart  time.Time
	helloOffset time.Duration // offset of the next Hello from helloStart
	lastSCS     netip.AddrPort

	realm  string
	digest *digest.Server
	// kerberos accepts Negotiate tickets; its replay cache is the
	// device's own.
	kerberos negotiate.Acceptor

	cableOut   atomic.Bool                  // SetLink(false)
	live       atomic.Pointer[nic.NIC]      // this power cycle's NIC, for CutPower
	skew       atomic.Int64                 // SkewClock: the RTC's jump, in ns
	netem      atomic.Pointer[[2]nic.Netem] // SetNetem: egress, ingress
	callFault  atomic.Pointer[armedFault]   // SetCallFault
	hostPower  atomic.Uint32                // the simulated host's power state (2 on, 8 off)
	sessionIDs atomic.Uint64
	tlsCert    *tls.Certificate
	tlsCertID  string
	setupCert  *tls.Certificate // served in PKI setup (setupCertificate)

	prof   Profile
	server string // the Server header
}

// New checks o and returns a powered-off device.
func New(o Options) (*Device, error) {
	if o.Store == nil || o.Uplink == nil || o.Stacks == nil {
		return nil, errors.New("firmware: a device needs a Store, an Uplink and Stacks")
	}
	if len(o.Identity.MAC) != 6 {
		return nil, errors.New("firmware: the identity has no MAC")
	}
	if o.ID == "" {
		o.ID = o.Identity.HostName
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.NetFloor <= 0 {
		o.NetFloor = 200 * time.Millisecond
	}
	if o.Schedule.RoundLen() == 0 {
		o.Schedule = hello.DefaultSchedule()
	}
	if err := o.Schedule.Validate(); err != nil {
		return nil, fmt.Errorf("firmware: %w", err)
	}
	if o.DNSTimeout <= 0 {
		o.DNSTimeout = 2 * time.Second
	}
	if o.DNSAttempts <= 0 {
		o.DNSAttempts = 3
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.Seed == 0 {
		for _, b := range o.Identity.MAC {
			o.Seed = o.Seed<<8 | uint64(b)
		}
	}
	if o.Profile.Name == "" {
		o.Profile = AMT5()
	}
	if o.TLSMinVersion == 0 {
		o.TLSMinVersion = o.Profile.TLSMin
	}
	if o.TLSMaxVersion == 0 {
		o.TLSMaxVersion = o.Profile.TLSMax
	}
	d := &Device{o: o, id: o.ID, clock: o.Clock, sched: o.Schedule, realm: realmFor([16]byte(o.Identity.UUID)),
		prof: o.Profile, server: o.Profile.ServerHeader()}
	d.hostPower.Store(hostPowerOn)
	d.digest = digest.NewServer(digest.ServerOptions{Realm: d.realm, AllowEmptyResponse: o.Quirks.EmptyDigestResponse, Now: d.rtc})
	return d, nil
}

// ID is the device's name in events.
func (d *Device) ID() string { return d.id }

// Addr is the device's IPv4 address, if it has one.
func (d *Device) Addr() netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.host == nil {
		return netip.Addr{}
	}
	return d.host.Prefix().Addr()
}

func (d *Device) emit(name event.Name, args ...any) {
	if d.o.Events == nil {
		return
	}
	r := slog.NewRecord(time.Time{}, 0, "", 0)
	r.Add(args...)
	attrs := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
	d.o.Events(Event{Time: d.clock.Now(), Device: d.id, Name: name, Attrs: attrs})
}

// PowerOn boots the device: it reads the MEBx store, brings up the NIC and
// then runs on timers until PowerOff. It returns once the boot is under
// way; everything after (address, Hellos) is reported as events.
//
// ctx is the owner's: the power cycle's context derives from it, so that
// when it ends every DNS query, connect and TLS handshake in progress ends
// and no new Hello goes out. The device stays on until its owner calls
// PowerOff (a fleet does so through a bounded pool: a context that powered
// each device off by itself started a goroutine per device at once, and
// 20,000 of them contending for the shared stacks took 33 s to stop).
func (d *Device) PowerOn(ctx context.Context) error {
	d.power.Lock()
	defer d.power.Unlock()
	s, err := d.o.Store.Load()
	if errors.Is(err, mebx.ErrNoSettings) {
		s, err = d.prof.Factory(), nil
	}
	if err != nil {
		d.emit(event.BootFailed, "err", err.Error())
		return fmt.Errorf("firmware %s: %w", d.id, err)
	}
	egress, ingress := d.impairments()
	n, err := nic.New(nic.Options{MAC: d.o.Identity.MAC, Uplink: d.o.Uplink, Capture: d.o.Capture,
		Egress: egress, Ingress: ingress, Down: true, MEFilter: true, OwnARP: true})
	if err != nil {
		return fmt.Errorf("firmware %s: %w", d.id, err)
	}
	h, err := d.o.Stacks.Attach(n)
	if err != nil {
		n.Close()
		return fmt.Errorf("firmware %s: %w", d.id, err)
	}

	d.mu.Lock()
	if d.on {
		d.mu.Unlock()
		h.Close()
		return fmt.Errorf("firmware %s: already powered on", d.id)
	}
	d.on, d.settings, d.nic, d.host = true, s, n, h
	d.live.Store(n)
	d.ready, d.bound, d.helloOn, d.helloK, d.lastSCS = false, false, false, 0, netip.AddrPort{}
	d.rand = rand.New(rand.NewPCG(d.o.Seed, d.Stats.PowerOns.Add(1)))
	d.ctx, d.cancel = context.WithCancel(ctx)
	d.mu.Unlock()
	d.powerCtx = ctx

	vendor, device := n.PCIID()
	d.emit(event.PowerOn, "uuid", d.o.Identity.UUID.String(), "service_tag", d.o.Identity.ServiceTag,
		"mac", d.o.Identity.MAC.String(), "pci", fmt.Sprintf("%04x:%04x", vendor, device), "nic", nic.Model)
	d.emit(event.State, "provisioning_state", s.State.String(), "mode", s.Mode.String(),
		"amt_enabled", s.AMTEnabled, "hello", d.helloName(&s), "firmware", d.prof.Name)
	if d.cableOut.Load() {
		d.emit(event.LinkDown)
	} else {
		n.SetLink(true)
		d.emit(event.LinkUp)
	}
	if !s.AMTEnabled {
		return nil // the ME stays off the network
	}

	if !s.DHCP {
		p, err := s.Prefix()
		if err == nil {
			err = h.SetAddress(p, s.Gateway)
		}
		if err != nil {
			d.emit(event.BootFailed, "err", err.Error())
			return fmt.Errorf("firmware %s: static address: %w", d.id, err)
		}
		d.emit(event.AddressStatic, "ip", p.String(), "gateway", s.Gateway.String(), "dns", addrList(s.DNS1, s.DNS2))
		d.addressReady()
		return nil
	}
	hostName := s.HostName
	if hostName == "" {
		hostName = d.o.Identity.HostName
	}
	cl := dhcp.NewClient(dhcp.ClientOptions{
		Link: n, HostName: hostName, Clock: d.clock, MinWait: d.o.NetFloor,
		Rand:    rand.New(rand.NewPCG(d.o.Seed, 0x64686370)),
		OnBound: d.onBound, OnLost: d.onLost, OnEvent: d.emit,
	})
	d.mu.Lock()
	d.dhcp = cl
	d.mu.Unlock()
	n.SetRawHandler(cl.HandleFrame)
	cl.Start()
	return nil
}

// helloName names the Hello settings s make the device send: psk, pki or
// none.
func (d *Device) helloName(s *mebx.Settings) string {
	switch d.prof.helloVersion(s) {
	case hello.VersionPSK:
		return "psk"
	case hello.VersionPKI:
		return "pki"
	}
	return "none"
}

// sendsPSKHello reports whether settings put the device in PSK setup mode
// with the Enterprise (SCS) model: PID/PPS entered, not yet provisioned.
func sendsPSKHello(s mebx.Settings) bool {
	return s.AMTEnabled && s.State == mebx.StateIn && s.Mode == mebx.ModeEnterprise && s.PID != ""
}

func (d *Device) onBound(l dhcp.Lease, renewed bool) {
	d.mu.Lock()
	if !d.on {
		d.mu.Unlock()
		return
	}
	h := d.host
	changed := !d.bound || d.lease.Addr != l.Addr || d.lease.Gateway() != l.Gateway()
	d.lease, d.bound = l, true
	d.mu.Unlock()
	if changed {
		if err := h.SetAddress(l.Addr, l.Gateway()); err != nil {
			d.emit(event.BootFailed, "err", err.Error())
			return
		}
	}
	if renewed {
		d.emit(event.DHCPRenewed, "ip", l.Addr.String(), "lease", l.Duration.String())
		return
	}
	d.emit(event.DHCPBound, "ip", l.Addr.String(), "gateway", l.Gateway().String(), "dns", addrList(l.DNS...),
		"domain", l.Domain, "lease", l.Duration.String(), "server", l.ServerID.String())
	d.addressReady()
}

func (d *Device) onLost(err error) {
	d.mu.Lock()
	if !d.on {
		d.mu.Unlock()
		return
	}
	d.bound = false
	h := d.host
	d.mu.Unlock()
	h.ClearAddress()
	d.emit(event.DHCPLost, "reason", err.Error())
}

// addressReady runs once per power cycle, at the first address: the AMT
// ports open and, in setup mode, the Hello loop starts.
func (d *Device) addressReady() {
	d.arming.Lock()
	defer d.arming.Unlock()
	d.mu.Lock()
	if !d.on || d.ready {
		d.mu.Unlock()
		return
	}
	d.ready = true
	h, s := d.host, d.settings
	d.mu.Unlock()

	d.arm(h, s)
}

// ports are the AMT ports settings s open: both in setup and factory;
// once provisioned, 16993 only with TLS (and 16992 too when non-secure
// connections are accepted), 16992 only without.
func ports(s mebx.Settings) []uint16 {
	if s.State != mebx.StatePost {
		return []uint16{PortHTTP, PortHTTPS}
	}
	switch {
	case !s.AMT.TLSEnabled:
		return []uint16{PortHTTP}
	case s.AMT.TLSAcceptNonSecure:
		return []uint16{PortHTTP, PortHTTPS}
	}
	return []uint16{PortHTTPS}
}

// arm opens the AMT ports settings s call for and starts or stops the
// Hello loop to match.
func (d *Device) arm(h *nic.Host, s mebx.Settings) {
	// The old ports close first: the new listeners bind the same numbers.
	// Connections already accepted stay open.
	d.mu.Lock()
	old := d.listeners
	d.listeners = nil
	d.mu.Unlock()
	for _, l := range old {
		l.Close()
	}
	var ls []*nic.Listener
	for _, port := range ports(s) {
		l, err := h.Listen(port, func(c net.Conn) { d.accept(port, c) })
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			d.emit(event.BootFailed, "err", err.Error())
			return
		}
		ls = append(ls, l)
	}
	d.mu.Lock()
	d.listeners = ls
	d.mu.Unlock()
	list := make([]string, len(ls))
	for i, p := range ports(s) {
		list[i] = fmt.Sprint(p)
	}
	d.emit(event.AMTListening, "ports", strings.Join(list, ","))

	if d.prof.helloVersion(&s) != 0 {
		d.startHello()
		return
	}
	d.stopHello()
	reason := "provisioned"
	switch {
	case s.State == mebx.StatePre && d.prof.PSK:
		reason = "factory mode: change the MEBx password and enter PID/PPS, or turn remote configuration on with an active certificate hash"
	case s.State == mebx.StatePre:
		reason = "factory mode: turn remote configuration on with an active certificate hash"
	case s.State == mebx.StateIn && s.Mode != mebx.ModeEnterprise:
		reason = "small business mode: no SCS"
	case s.State == mebx.StateIn:
		reason = "no PID in MEBx"
	}
	d.emit(event.HelloOff, "reason", reason)
}

// current is the device's committed settings.
func (d *Device) current() mebx.Settings {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.settings
}

// persist writes settings to the store and makes them the device's.
func (d *Device) persist(next mebx.Settings) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if lim := d.o.Quirks.FlashWriteLimit; lim > 0 && d.settings.FlashWrites >= lim {
		return errFlashWorn
	}
	next.FlashWrites = d.settings.FlashWrites + 1
	if err := d.o.Store.Save(next); err != nil {
		return fmt.Errorf("firmware %s: persist: %w", d.id, err)
	}
	d.settings = next
	return nil
}

// rearm applies committed settings to the running device: the ports and
// the Hello loop. It runs after a commit or an unprovision, once the
// answer is out.
func (d *Device) rearm() {
	d.arming.Lock()
	defer d.arming.Unlock()
	d.mu.Lock()
	if !d.on || !d.ready {
		d.mu.Unlock()
		return
	}
	h, s := d.host, d.settings
	if d.tlsCertID != s.AMT.TLSCert || !s.AMT.TLSEnabled {
		d.tlsCert, d.tlsCertID = nil, ""
	}
	d.mu.Unlock()
	d.emit(event.State, "provisioning_state", s.State.String(), "mode", s.Mode.String(),
		"amt_enabled", s.AMTEnabled, "hello", d.helloName(&s), "firmware", d.prof.Name)
	d.arm(h, s)
}

// PowerCycle turns the device off and on again, as pulling the plug
// would: the MEBx and AMT settings persist, and the boot sequence (link,
// DHCP, ports, Hellos in setup) starts over under the context PowerOn had.
// A device whose owner's context has ended is only powered off.
func (d *Device) PowerCycle() error {
	d.power.Lock()
	ctx := d.powerCtx
	d.power.Unlock()
	d.PowerOff()
	if ctx == nil {
		return fmt.Errorf("firmware %s: power cycle: never powered on", d.id)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("firmware %s: power cycle: its owner has stopped it: %w", d.id, err)
	}
	d.emit(event.PowerCycle)
	return d.PowerOn(ctx)
}

// PowerOff stops every timer, closes the ports and unplugs the NIC. The
// MEBx settings stay in the store.
func (d *Device) PowerOff() {
	d.power.Lock()
	defer d.power.Unlock()
	d.mu.Lock()
	if !d.on {
		d.mu.Unlock()
		return
	}
	d.on = false
	d.live.Store(nil)
	d.cancel()
	if d.helloTimer != nil {
		d.helloTimer.Stop()
	}
	cl, ls, h, conns := d.dhcp, d.listeners, d.host, d.conns
	d.dhcp, d.listeners, d.conns = nil, nil, nil
	d.mu.Unlock()
	if cl != nil {
		cl.Stop()
	}
	for _, l := range ls {
		l.Close()
	}
	for c := range conns {
		c.Close()
	}
	// The cancelled context ends any DNS wait or connect at once, and the
	// closed connections end their sessions.
	d.work.Wait()
	h.Close()
	d.emit(event.PowerOff)
}

func addrList(as ...netip.Addr) string {
	out := ""
	for _, a := range as {
		if !a.IsValid() {
			continue
		}
		if out != "" {
			out += ","
		}
		out += a.String()
	}
	return out
}

// Settings are the device's committed settings (what its store holds).
func (d *Device) Settings() (mebx.Settings, error) {
	return d.o.Store.Load()
}
