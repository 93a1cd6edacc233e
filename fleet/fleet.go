// Package fleet runs many simulated devices as one: identities from (seed,
// shard, index), power-on at a set rate, every device on the same code path
// as one alone (firmware.Device), progress counted from the devices' own
// events, and a summary with boot → provisioned latencies.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/workers"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// Options configure a fleet.
type Options struct {
	Devices int
	Seed    uint64
	Shard   int
	// Rate is how many devices power on per second; 0 powers them on as
	// fast as they boot, in batches of 100.
	Rate float64
	// Uplink and Stacks carry the devices (the embedded LAN's segment, or
	// a TAP).
	Uplink nic.Uplink
	Stacks *nic.Stacks
	// Password is the MEBx password devices are readied with (the IT
	// department's USB key: password changed, PID/PPS entered).
	Password string
	// KeyPool is how many RSA keys GenerateKeyPair hands out across the
	// fleet (firmware.KeyPool; default 2), made when the fleet is; -1 makes
	// a fresh key each time, as one real device does.
	KeyPool int
	// Clock is every device's (default clock.Fleet(1): real time, the long
	// waits of all devices on one timer wheel). A clock of the caller's
	// should be a clock.Fleet too, for the same reason.
	Clock clock.Clock
	// Schedule is the Hello schedule (zero: the firmware default).
	Schedule hello.Schedule
	// HelloTurns is how many devices' Hellos (each a DNS lookup and a
	// connection) run at once; more that are due wait their turn, first
	// come first served (default DefaultHelloTurns; -1: no limit).
	HelloTurns int
	// Events also receives every device event (nil: none).
	Events firmware.Sink

	// Store gives device i its MEBx store; nil, or a nil store, means an
	// in-memory one. An empty store is readied as ReadyStore does; one that
	// holds settings boots with them.
	Store func(i int) mebx.Store
	// Factory readies empty stores factory-fresh (no PID/PPS: with remote
	// configuration on, as from the factory, the PKI Hello) instead of with
	// PID/PPS for a PSK SCS.
	Factory bool
	// MEBx are KEY=VALUE entries (mebx.Settings.Set) typed into every
	// readied store after that: a custom root hash, a PKI DNS suffix.
	MEBx []string
	// Profile is the devices' firmware generation; zero value firmware.AMT5.
	Profile firmware.Profile
	// Preset changes device i's readied settings after MEBx, for what
	// differs per device: a static address, a PID/PPS entered wrong.
	Preset func(i int, id identity.Identity, s *mebx.Settings) error
	// Quirks are every device's firmware bugs (firmware.Quirks).
	Quirks firmware.Quirks
	// Capture gives device i a capture of its frames; nil, or a nil
	// capture, records nothing. The fleet closes what it is given at Stop.
	Capture func(i int, id identity.Identity) (*nic.Capture, error)
	// Metrics, when set, gets the fleet's Prometheus collectors, labelled
	// with the shard (see metrics.go).
	Metrics prometheus.Registerer
	// Setup hears the progress of the work before power-on: stage
	// "database" (the embedded SCS's records) and "devices", with the
	// count done so far of total.
	Setup func(stage string, done, total int)
}

// setupEvery is how often (in devices) Setup hears of progress.
const setupEvery = 10000

// PeakBytesPerDevice is what one device of a provisioning fleet costs at
// the peak of a run, rounded up from measurement (15.9 GB peak RSS for
// 100,000 devices, 2.0 GB for 10,000). MaxDevices sizes fleets by it.
const PeakBytesPerDevice = 160 << 10

// MinBytesPerDevice is the least memory budget per device a run may be
// held to (gcpolicy.ThroughputWithin): a provisioning fleet's live heap
// peaks at 34–36 KB per device at 100,000 (collected heap, the floating
// garbage of a long mark included), and a limit at it leaves the
// collector nothing to work with.
const MinBytesPerDevice = 40 << 10

// MaxDevices is the largest fleet that fits in memory bytes at perDevice
// bytes each (0: PeakBytesPerDevice, what a run takes under the default
// policy), and never more than one shard's identities
// (identity.MaxIndex). The fleet must fit under three quarters of it, the
// garbage collector's soft limit (internal/gcpolicy): a 150,000-device run
// on 24 GiB reached 16.7 GB with 131,000 devices on and then crawled, the
// collector running without pause, at 20 provisionings a second.
func MaxDevices(memory, perDevice int64) int {
	if perDevice <= 0 {
		perDevice = PeakBytesPerDevice
	}
	return int(min(memory/4*3/perDevice, identity.MaxIndex))
}

// States a device moves through, as the fleet counts them.
const (
	StateOff         = "off"
	StateBooting     = "booting"
	StateAddressed   = "addressed"
	StateHelloing    = "helloing"
	StateInSession   = "in-session"
	StateProvisioned = "provisioned"
)

// States lists the states in order.
var States = []string{StateOff, StateBooting, StateAddressed, StateHelloing, StateInSession, StateProvisioned}

// DefaultHelloTurns is how many Hellos a fleet runs at once unless told
// otherwise. A Hello on the embedded LAN takes about a millisecond from
// lookup to close, so 256 at once is far more than two cores send; it
// caps what a burst of due Hellos puts on the scheduler at once (see
// workers.Gate), and leaves room for an SCS some milliseconds away.
const DefaultHelloTurns = 256

// Fleet is many devices.
type Fleet struct {
	o         Options
	helloGate *workers.Gate // nil: no limit
	devs      []*firmware.Device
	ids       []identity.Identity
	track     []tracker
	counts    sync.Map // state → *atomic.Int64
	done      atomic.Int64
	// start is when Start began (nil before): Progress reads it from the
	// metrics handler while Start runs.
	start   atomic.Pointer[time.Time]
	allDone chan struct{}
	// finished is how long the whole fleet took to be provisioned, once
	// it has been: what Progress reports as Elapsed from then on.
	finished atomic.Int64
	once     sync.Once

	helloed     atomic.Int64
	allHelloed  chan struct{}
	helloedOnce sync.Once
	captures    []*nic.Capture
	stopOnce    sync.Once

	dhcpFailures atomic.Uint64
	// lastCall is when a device last took a connection or answered a
	// call (UnixNano, real time), for WaitQuiet.
	lastCall atomic.Int64
	// latency observes each device's boot → provisioned for /metrics
	// (nil without Options.Metrics).
	latency prometheus.Observer
	// phaseLatency observe its phases, in Phases.each's order (set with
	// latency).
	phaseLatency [4]prometheus.Observer
	// epoch is when the fleet was made: the trackers' milestones count
	// from it (on the monotonic clock).
	epoch time.Time
	// built is set once New has made every device: a scrape of /metrics
	// during set-up must not read devs while New appends to it.
	built atomic.Bool
}

type tracker struct {
	mu      sync.Mutex
	helloed bool // sent a Hello, or said it sends none
	state   string
	// The device's milestones, as time since the fleet was made (0: not
	// reached): power-on, its first address, its first Hello, the start
	// of its last session before it was provisioned, provisioned.
	booted, addressed, hello, session, provisioned time.Duration
}

// New makes the fleet's devices (powered off). When ctx ends first, New
// stops and returns its error.
func New(ctx context.Context, o Options) (*Fleet, error) {
	if o.Devices <= 0 {
		return nil, errors.New("fleet: no devices")
	}
	if o.Devices > identity.MaxIndex {
		return nil, fmt.Errorf("fleet: %d devices: one shard holds at most %d", o.Devices, identity.MaxIndex)
	}
	if o.Uplink == nil || o.Stacks == nil {
		return nil, errors.New("fleet: an Uplink and Stacks are required")
	}
	if o.KeyPool == 0 {
		o.KeyPool = 2
	}
	if o.HelloTurns == 0 {
		o.HelloTurns = DefaultHelloTurns
	}
	if o.Clock == nil {
		o.Clock = clock.Fleet(1)
	}
	if err := mebx.CheckPassword(o.Password); err != nil && !o.Factory {
		return nil, fmt.Errorf("fleet: MEBx password: %w", err)
	}
	if o.Profile.Name == "" {
		o.Profile = firmware.AMT5()
	}
	if len(o.MEBx) > 0 {
		s := o.Profile.Factory()
		if err := s.Set(o.MEBx...); err != nil {
			return nil, fmt.Errorf("fleet: MEBx settings: %w", err)
		}
	}
	f := &Fleet{o: o, track: make([]tracker, o.Devices), allDone: make(chan struct{}), allHelloed: make(chan struct{}), epoch: time.Now()}
	if o.HelloTurns > 0 {
		f.helloGate = workers.NewGate(o.HelloTurns)
	}
	for _, s := range States {
		f.counts.Store(s, new(atomic.Int64))
	}
	f.count(StateOff).Store(int64(o.Devices))
	if o.Metrics != nil {
		if err := f.register(o.Metrics); err != nil {
			return nil, fmt.Errorf("fleet: metrics: %w", err)
		}
	}
	pool := firmware.KeyPool(max(o.KeyPool, 1))
	if o.KeyPool > 0 {
		// Made now, in parallel: key generation is the fleet's set-up, not
		// a cost of any one provisioning.
		var wg sync.WaitGroup
		for range o.KeyPool {
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = pool() }()
		}
		wg.Wait()
	}
	for i := range o.Devices {
		if err := f.add(ctx, i, pool); err != nil {
			f.closeCaptures()
			return nil, err
		}
	}
	f.built.Store(true)
	if o.Setup != nil {
		o.Setup("devices", o.Devices, o.Devices)
	}
	return f, nil
}

// add makes device i: its identity, readied store, capture and firmware.
func (f *Fleet) add(ctx context.Context, i int, pool func() (*firmware.GeneratedKey, error)) error {
	o := &f.o
	if i%setupEvery == 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		if o.Setup != nil && i > 0 {
			o.Setup("devices", i, o.Devices)
		}
	}
	id, err := identity.Of(o.Seed, o.Shard, i)
	if err != nil {
		return err
	}
	var st mebx.Store
	if o.Store != nil {
		st = o.Store(i)
	}
	if st == nil {
		st = mebx.NewMemStore()
	}
	ro := ReadyOptions{Password: o.Password, Factory: o.Factory, Profile: o.Profile, MEBx: o.MEBx}
	if o.Preset != nil {
		ro.Preset = func(s *mebx.Settings) error { return o.Preset(i, id, s) }
	}
	if err := ReadyStore(st, id, ro); err != nil {
		return fmt.Errorf("fleet: device %d: %w", i, err)
	}
	var capture *nic.Capture
	if o.Capture != nil {
		if capture, err = o.Capture(i, id); err != nil {
			return fmt.Errorf("fleet: device %d: %w", i, err)
		}
		if capture != nil {
			f.captures = append(f.captures, capture)
		}
	}
	fo := firmware.Options{Identity: id, Store: st, Uplink: o.Uplink, Stacks: o.Stacks, Clock: o.Clock, Profile: o.Profile,
		Schedule: o.Schedule, Events: f.sink(i), Capture: capture, Quirks: o.Quirks, HelloGate: f.helloGate}
	if o.KeyPool > 0 {
		fo.KeyPairs = pool
	}
	d, err := firmware.New(fo)
	if err != nil {
		return err
	}
	f.devs, f.ids = append(f.devs, d), append(f.ids, id)
	f.track[i].state = StateOff
	return nil
}

func (f *Fleet) count(state string) *atomic.Int64 {
	v, _ := f.counts.Load(state)
	return v.(*atomic.Int64)
}

// sink follows device i's events into its state.
func (f *Fleet) sink(i int) firmware.Sink {
	return func(e firmware.Event) {
		next := ""
		switch e.Name {
		case event.PowerOn:
			next = StateBooting
		case event.DHCPBound, event.AddressStatic:
			next = StateAddressed
		case event.HelloSent:
			next = StateHelloing
		case event.SessionLogin:
			next = StateInSession
		case event.SessionDiscard:
			next = StateHelloing
		case event.Provisioned:
			next = StateProvisioned
		case event.DHCPNak, event.DHCPLost, event.DHCPNoAnswer, event.DHCPMalformed, event.DHCPError:
			f.dhcpFailures.Add(1)
		}
		switch e.Name {
		case event.ConnAccepted, event.SessionLogin, event.AMTCall, event.SessionClosed:
			f.lastCall.Store(time.Now().UnixNano())
		}
		if next != "" {
			f.move(i, next)
		}
		if e.Name == event.HelloSent || e.Name == event.HelloOff {
			f.heard(i)
		}
		if f.o.Events != nil {
			f.o.Events(e)
		}
	}
}

func (f *Fleet) move(i int, next string) {
	t := &f.track[i]
	t.mu.Lock()
	prev := t.state
	if prev == next || prev == StateProvisioned {
		t.mu.Unlock()
		return
	}
	t.state = next
	now := max(time.Since(f.epoch), 1)
	switch next {
	case StateBooting:
		if t.booted == 0 {
			t.booted = now
		}
	case StateAddressed:
		if t.addressed == 0 {
			t.addressed = now
		}
	case StateHelloing:
		if t.hello == 0 {
			t.hello = now
		}
	case StateInSession:
		t.session = now
	case StateProvisioned:
		t.provisioned = now
		if f.latency != nil {
			f.latency.Observe((now - t.booted).Seconds())
			d, ok := t.phases()
			for k := range d {
				if ok[k] {
					f.phaseLatency[k].Observe(d[k].Seconds())
				}
			}
		}
	}
	t.mu.Unlock()
	f.count(prev).Add(-1)
	f.count(next).Add(1)
	if next == StateProvisioned && f.done.Add(1) == int64(len(f.devs)) {
		f.once.Do(func() {
			f.finished.Store(int64(f.elapsed()))
			close(f.allDone)
		})
	}
}

// heard marks device i as one that sent its first Hello, or said it sends
// none.
func (f *Fleet) heard(i int) {
	t := &f.track[i]
	t.mu.Lock()
	first := !t.helloed
	t.helloed = true
	t.mu.Unlock()
	if first && f.helloed.Add(1) == int64(len(f.devs)) {
		f.helloedOnce.Do(func() { close(f.allHelloed) })
	}
}

// WaitHellos returns nil once every device has sent a Hello or said it
// sends none (factory mode, provisioned, small business), or ctx's error.
func (f *Fleet) WaitHellos(ctx context.Context) error {
	select {
	case <-f.allHelloed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Helloed counts the devices that have sent a Hello or said they send
// none.
func (f *Fleet) Helloed() int { return int(f.helloed.Load()) }

// Silent lists the devices that have not yet sent a Hello (first 20).
func (f *Fleet) Silent() []string {
	var out []string
	for i := range f.track {
		t := &f.track[i]
		t.mu.Lock()
		h := t.helloed
		t.mu.Unlock()
		if !h && len(out) < 20 {
			out = append(out, f.devs[i].ID())
		}
	}
	return out
}

// ReadyOptions say how ReadyStore readies a store.
type ReadyOptions struct {
	// Password is the MEBx password set when not Factory.
	Password string
	// Factory leaves the settings factory-fresh.
	Factory bool
	// Profile gives the factory settings (its root hash table).
	Profile firmware.Profile
	// MEBx are entries typed in afterwards.
	MEBx []string
	// Preset changes the settings last; they are validated after it.
	Preset func(*mebx.Settings) error
}

// ReadyStore gives an empty store the settings of a device an IT
// department has readied for the SCS, as its USB setup key would: MEBx
// password changed and the identity's PID/PPS entered (setup mode).
// o.Factory leaves it factory-fresh. o.MEBx entries follow. A store that
// holds settings is left as it is.
func ReadyStore(st mebx.Store, id identity.Identity, o ReadyOptions) error {
	_, err := st.Load()
	if !errors.Is(err, mebx.ErrNoSettings) {
		return err // existing settings (or a store that cannot be read)
	}
	if o.Profile.Name == "" {
		o.Profile = firmware.AMT5()
	}
	s := o.Profile.Factory()
	if !o.Factory {
		if err := s.SetPassword(o.Password); err != nil {
			return err
		}
		if err := s.SetPIDPPS(id.PID, id.PPS); err != nil {
			return err
		}
	}
	if err := s.Set(o.MEBx...); err != nil {
		return err
	}
	if o.Preset != nil {
		if err := o.Preset(&s); err != nil {
			return err
		}
		if err := s.Validate(); err != nil {
			return err
		}
	}
	return st.Save(s)
}

// Devices are the fleet's devices, in index order.
func (f *Fleet) Devices() []*firmware.Device { return f.devs }

// Identities are the devices' identities, in index order.
func (f *Fleet) Identities() []identity.Identity { return f.ids }

// Start powers the devices on at the fleet's rate and returns; the devices
// stay on until ctx ends or Stop.
func (f *Fleet) Start(ctx context.Context) error {
	now := time.Now()
	f.start.Store(&now)
	var tick time.Duration
	if f.o.Rate > 0 {
		tick = time.Duration(float64(time.Second) / f.o.Rate)
	}
	for i, d := range f.devs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := d.PowerOn(ctx); err != nil {
			return fmt.Errorf("fleet: device %d: %w", i, err)
		}
		switch {
		case tick > 0:
			// Paced against the schedule, not by a pause after each
			// power-on: a pause adds the power-on's own cost to every
			// tick (at --rate 250, 1k devices came on at about 100/s).
			wait := time.Until(now.Add(time.Duration(i+1) * tick))
			if wait <= 0 {
				continue
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		case (i+1)%100 == 0:
			// Batches: a fleet switched on in one instant floods the LAN's
			// queues with DHCP; let each batch get its addresses first.
			f.waitAddressed(ctx, i+1)
		}
	}
	return nil
}

// waitAddressed waits (a little) until n devices have left booting.
func (f *Fleet) waitAddressed(ctx context.Context, n int) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		booting := f.count(StateOff).Load() + f.count(StateBooting).Load()
		if int64(len(f.devs))-booting >= int64(n) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Wait returns nil when every device is provisioned, or ctx's error.
func (f *Fleet) Wait(ctx context.Context) error {
	select {
	case <-f.allDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitQuiet returns once no device has taken a connection or answered a
// call for quiet, or when ctx ends. A device is provisioned at its commit,
// but an SCS has more to say after it (the reference SCS logs in again
// over TLS to check the new credentials; others read settings back): a
// fleet that powered off at its last commit would leave those records
// unsettled on an external SCS, which a real desktop, still on, never
// does.
func (f *Fleet) WaitQuiet(ctx context.Context, quiet time.Duration) error {
	for {
		since := time.Since(time.Unix(0, f.lastCall.Load()))
		if since >= quiet {
			return nil
		}
		t := time.NewTimer(quiet - since)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// stopWorkersPerCore bounds the goroutines that power a fleet off. A
// power-off is mostly its shared stack's lock (gVisor removes one NIC at a
// time per stack), so more workers only queue: stopping 24,000 booted
// devices of a 100,000-device fleet on 2 cores took 1.1–1.6 s with 8
// workers and 1.5–2.0 s with 64 (SIGINT to exit, amtsim fleet).
const stopWorkersPerCore = 4

// Stop powers every device off and closes the captures; it returns when
// all are off. Calls after the first return at once.
func (f *Fleet) Stop() {
	f.stopOnce.Do(func() {
		next := make(chan *firmware.Device)
		var wg sync.WaitGroup
		for range min(stopWorkersPerCore*runtime.GOMAXPROCS(0), len(f.devs)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for d := range next {
					d.PowerOff()
				}
			}()
		}
		for _, d := range f.devs {
			next <- d
		}
		close(next)
		wg.Wait()
		f.closeCaptures()
	})
}

func (f *Fleet) closeCaptures() {
	for _, c := range f.captures {
		_ = c.Close()
	}
	f.captures = nil
}

// Progress is a snapshot of the fleet.
type Progress struct {
	Elapsed     time.Duration
	States      map[string]int64
	Provisioned int64
	// PerSecond is provisionings per second since the start.
	PerSecond float64
}

// elapsed is the time since Start began (zero before).
func (f *Fleet) elapsed() time.Duration {
	if t := f.start.Load(); t != nil {
		return time.Since(*t)
	}
	return 0
}

// Progress counts the devices per state now.
func (f *Fleet) Progress() Progress {
	p := Progress{Elapsed: f.elapsed(), States: map[string]int64{}}
	if d := f.finished.Load(); d > 0 {
		p.Elapsed = time.Duration(d)
	}
	for _, s := range States {
		p.States[s] = f.count(s).Load()
	}
	p.Provisioned = f.done.Load()
	if p.Elapsed > 0 {
		p.PerSecond = float64(p.Provisioned) / p.Elapsed.Seconds()
	}
	return p
}

// Summary is the fleet's result.
type Summary struct {
	Devices     int              `json:"devices"`
	Provisioned int              `json:"provisioned"`
	ElapsedMS   float64          `json:"elapsed_ms"`
	PerSecond   float64          `json:"provisioned_per_second"`
	States      map[string]int64 `json:"states"`
	// BootToProvisioned is per device, from its power-on.
	BootToProvisioned Latency `json:"boot_to_provisioned"`
	// Phases splits BootToProvisioned at the devices' milestones.
	Phases *Phases `json:"phases,omitempty"`
	Counts
	// Unprovisioned lists the devices that did not make it (first 20).
	Unprovisioned []string `json:"unprovisioned,omitempty"`
	// Uplink is what the uplink onto a real interface counted (a TAP, a
	// packet socket); none on the embedded LAN.
	Uplink *nic.UplinkCounts `json:"uplink,omitempty"`
}

// Phases split boot → provisioned at the milestones of the provisioned
// devices, so that a slow tail can be placed: getting an address,
// finding the SCS and sending the first Hello, waiting for the SCS's
// session (its queue, and any session that failed before the last), and
// the session that provisioned the device (its commit; the SCS's check
// after it is not in it). A device that skipped a milestone (an SCS that
// came without a Hello) is left out of the phases around it.
type Phases struct {
	BootToAddress        Latency `json:"boot_to_address"`
	AddressToHello       Latency `json:"address_to_hello"`
	HelloToSession       Latency `json:"hello_to_session"`
	SessionToProvisioned Latency `json:"session_to_provisioned"`
}

// each lists the phases by name, in order.
func (p *Phases) each() [4]struct {
	name string
	l    *Latency
} {
	return [4]struct {
		name string
		l    *Latency
	}{{"boot_to_address", &p.BootToAddress}, {"address_to_hello", &p.AddressToHello},
		{"hello_to_session", &p.HelloToSession}, {"session_to_provisioned", &p.SessionToProvisioned}}
}

// phases are t's phases (t is provisioned); ok is false for a phase
// whose start the device skipped.
func (t *tracker) phases() (d [4]time.Duration, ok [4]bool) {
	at := [...]time.Duration{t.booted, t.addressed, t.hello, t.session, t.provisioned}
	for k := range d {
		if at[k] > 0 && at[k+1] >= at[k] {
			d[k], ok[k] = at[k+1]-at[k], true
		}
	}
	return d, ok
}

// Counts are the devices' own counts of what went wrong on their side,
// summed over the fleet.
type Counts struct {
	HellosSent   uint64 `json:"hellos_sent"`
	HellosFailed uint64 `json:"hellos_failed"`
	// DHCPFailures: NAKs, leases lost, DISCOVERs long unanswered, answers
	// that could not be read.
	DHCPFailures uint64 `json:"dhcp_failures"`
	// DNSFailures: SCS names that did not resolve, answers that could not
	// be read.
	DNSFailures uint64 `json:"dns_failures"`
	// DNSQueries: every query sent, retries included; over HellosSent,
	// how often a Hello's lookup had to ask again.
	DNSQueries   uint64 `json:"dns_queries"`
	TLSFailures  uint64 `json:"tls_failures"`
	AuthFailures uint64 `json:"auth_failures"`
	// NegotiateFailures are the AuthFailures of Kerberos tickets.
	NegotiateFailures uint64 `json:"negotiate_failures,omitempty"`
	BadRequests       uint64 `json:"bad_requests"`
}

// Summary reports the fleet now.
func (f *Fleet) Summary() Summary {
	p := f.Progress()
	s := Summary{Devices: len(f.devs), Provisioned: int(p.Provisioned), ElapsedMS: ms(p.Elapsed), PerSecond: p.PerSecond, States: p.States}
	var lat []time.Duration
	var phases [4][]time.Duration
	for i := range f.track {
		t := &f.track[i]
		t.mu.Lock()
		if t.provisioned > 0 {
			lat = append(lat, t.provisioned-t.booted)
			d, ok := t.phases()
			for k := range d {
				if ok[k] {
					phases[k] = append(phases[k], d[k])
				}
			}
		} else if len(s.Unprovisioned) < 20 {
			s.Unprovisioned = append(s.Unprovisioned, f.devs[i].ID()+" ("+t.state+")")
		}
		t.mu.Unlock()
	}
	s.BootToProvisioned = Percentiles(lat)
	if len(lat) > 0 {
		s.Phases = &Phases{BootToAddress: Percentiles(phases[0]), AddressToHello: Percentiles(phases[1]),
			HelloToSession: Percentiles(phases[2]), SessionToProvisioned: Percentiles(phases[3])}
	}
	s.Counts = f.tally()
	if u, ok := f.o.Uplink.(nic.CountingUplink); ok {
		c := u.Counts()
		s.Uplink = &c
	}
	return s
}

func (f *Fleet) tally() Counts {
	c := Counts{DHCPFailures: f.dhcpFailures.Load()}
	if !f.built.Load() {
		return c // in set-up: the devices are still off
	}
	for _, d := range f.devs {
		c.HellosSent += d.Stats.HellosSent.Load()
		c.HellosFailed += d.Stats.HellosFailed.Load()
		c.DNSFailures += d.Stats.DNSFailures.Load() + d.Stats.DNSMalformed.Load()
		c.DNSQueries += d.Stats.DNSQueries.Load()
		c.TLSFailures += d.Stats.TLSFailures.Load()
		c.AuthFailures += d.Stats.AuthFailures.Load()
		c.NegotiateFailures += d.Stats.NegotiateFailures.Load()
		c.BadRequests += d.Stats.BadRequests.Load()
	}
	return c
}
