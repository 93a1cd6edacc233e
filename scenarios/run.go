package scenarios

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/scs"
)

// Options configure a run.
type Options struct {
	// Seed, when set, replaces the file's seed.
	Seed *uint64
	// PcapDir receives a capture of every device that failed an
	// expectation (<device>.pcap); "" writes none.
	PcapDir string
	// RingBytes is each device's capture ring (default 64 KiB).
	RingBytes int
	// Dir keeps the run's files (MEBx stores, the SCS database); "" uses
	// a temporary directory removed after the run.
	Dir string
	// Uplink, when set, carries a tap: or packet: scenario's devices
	// instead of the interface it names (tests open theirs in a
	// namespace).
	Uplink nic.Uplink
	// Shard sets the devices' identities apart from other runs of the same
	// scenario and seed against one SCS (a Kubernetes Indexed Job's pods):
	// group i takes identity shard Shard·len(groups)+i.
	Shard int
}

// The embedded LAN's fixed plan, so that MEBx presets (a static address,
// the SCS typed in) can be made before it starts.
var (
	lanSubnet = netip.MustParsePrefix("198.18.0.0/15")
	lanDomain = "amtsim.example"
	lanSCS    = netip.MustParseAddr("198.18.0.2")
)

// mebxPassword is what PSK devices are readied with.
const mebxPassword = "Amtsim-5!"

// device is one device of the run.
type device struct {
	group *Group
	gi    int // group index
	dev   *firmware.Device
	id    identity.Identity
	store mebx.Store
	// storePath is the store's file, for checking that no write was left
	// half-done beside it.
	storePath string
	leftover  []string // temp files of a crashed write, found at the end
	ring      *nic.Capture
	log       *deviceLog
}

// run is one scenario's run.
type run struct {
	s       *Scenario
	o       Options
	seed    uint64
	emb     *fleet.Embedded
	rec     *recorder
	devices []*device
	byID    map[string]*device
	groups  map[string][]*device
	draws   []Draw

	ctx context.Context
	mu  sync.Mutex
	// triggers waiting for events, and the timed faults' last moment
	triggers []*armed
	lastAt   time.Duration
	faultErr []string
	// onBuilt picks up each group's devices once the fleets are made.
	onBuilt []func(*fleet.Fleet)
	fleets  []*fleet.Fleet // one per group, in order
	uplink  nic.Uplink     // on a real network: the TAP or packet socket
	closers []func()
}

// armed is a fault waiting for its event.
type armed struct {
	f       *Fault
	targets map[string]bool // device faults: the chosen devices not yet hit
	members map[string]bool // network faults: the group's devices
	reached map[string]bool
	fired   bool
}

// Draw is which devices a fault chose.
type Draw struct {
	Fault   string   `json:"fault"`
	Devices []string `json:"devices"`
	// Indexes are the devices' places in their groups ("group/index").
	Indexes []string `json:"indexes"`
}

// Run runs s on the embedded LAN with the embedded SCS and returns its
// report. An error means the run could not be made (not that an
// expectation failed: that is in the report).
func Run(ctx context.Context, s *Scenario, o Options) (*Report, error) {
	r := &run{s: s, o: o, seed: s.Seed, byID: map[string]*device{}, groups: map[string][]*device{}}
	if o.Seed != nil {
		r.seed = *o.Seed
	}
	if r.o.RingBytes == 0 {
		r.o.RingBytes = 64 << 10
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "amtsim-scenario-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	ctx, cancel := context.WithTimeout(ctx, s.Deadline+30*time.Second)
	defer cancel()
	r.ctx = ctx
	if err := r.build(ctx, dir); err != nil {
		return nil, err
	}
	defer r.close()
	started := time.Now()
	r.rec.start = started
	r.schedule()
	var wg sync.WaitGroup
	for _, f := range r.fleets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Start(ctx); err != nil && ctx.Err() == nil {
				r.faultError("power-on: %v", err)
			}
		}()
	}
	r.wait(ctx, started)
	wg.Wait()
	// Stop before judging: the stores are read with no device writing.
	for _, f := range r.fleets {
		f.Stop()
	}
	rep := r.judge(time.Since(started))
	if u, ok := r.uplink.(nic.CountingUplink); ok {
		c := u.Counts()
		rep.Uplink = &c
	}
	if o.PcapDir != "" {
		if err := r.writeCaptures(rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// shard is group gi's identity shard.
func (r *run) shard(gi int) int { return r.o.Shard*len(r.s.Groups) + gi }

func (r *run) shards() []int {
	s := make([]int, len(r.s.Groups))
	for gi := range s {
		s[gi] = r.shard(gi)
	}
	return s
}

// build makes the LAN, the SCS and a fleet per group.
func (r *run) build(ctx context.Context, dir string) error {
	r.rec = &recorder{logs: map[string]*deviceLog{}, byPID: map[string]string{}, on: r.onEvent}
	eo := fleet.EmbeddedOptions{Dir: filepath.Join(dir, "scs"),
		LAN: lan.NetworkOptions{Subnet: lanSubnet, Domain: lanDomain, SCS: lanSCS, LeaseTime: r.s.LeaseTime}}
	if err := os.MkdirAll(eo.Dir, 0o755); err != nil {
		return err
	}
	eo.SCS = func(so *scs.ServerOptions) {
		so.Events = r.rec.scs
		so.Flaws.ForgetCommit = slices.Contains(r.s.SCS.Flaws, FlawForgetCommit)
		so.Flaws.TrustAnswers = slices.Contains(r.s.SCS.Flaws, FlawTrustAnswers)
		so.Flaws.NoCallTimeout = slices.Contains(r.s.SCS.Flaws, FlawNoCallTimeout)
		so.Flaws.UncheckedProfile = slices.Contains(r.s.SCS.Flaws, FlawUncheckedProfile)
		so.Flaws.IgnoreStale = slices.Contains(r.s.SCS.Flaws, FlawIgnoreStale)
		so.Flaws.ForgetPending = slices.Contains(r.s.SCS.Flaws, FlawForgetPending)
		if r.s.SCS.MaxAttempts > 0 {
			so.MaxAttempts = r.s.SCS.MaxAttempts
		}
		if r.s.SCS.AdminPassword != "" {
			so.Profile.AdminPassword = r.s.SCS.AdminPassword
		}
		if r.s.SCS.MEBxPassword != "" {
			so.Profile.NewMEBxPassword = r.s.SCS.MEBxPassword
		}
	}
	static := 0
	for gi := range r.s.Groups {
		g := &r.s.Groups[gi]
		prof, err := firmware.ProfileByName(string(g.Firmware))
		if err != nil {
			return err
		}
		fo := fleet.Options{Devices: g.Count, Seed: r.seed, Shard: r.shard(gi), Rate: g.BootRate, Password: mebxPassword,
			Profile: prof, Clock: clock.Fleet(r.s.TimeScale), KeyPool: 2,
			Quirks: firmware.Quirks{EmptyDigestResponse: g.Quirks.EmptyDigestResponse, FlashWriteLimit: g.Quirks.FlashWriteLimit,
				CommitDropsConnection: g.Quirks.CommitDropsConnection},
			Events: r.rec.device,
		}
		for _, m := range g.MEBx {
			fo.MEBx = append(fo.MEBx, string(m))
		}
		if g.Provisioning == "none" {
			fo.Factory = true
			fo.MEBx = append(fo.MEBx, "pki.remote_config=false")
		}
		gdir := filepath.Join(dir, "mebx", g.Name)
		if err := os.MkdirAll(gdir, 0o755); err != nil {
			return err
		}
		stores := make([]mebx.Store, g.Count)
		storePath := func(i int) string { return filepath.Join(gdir, fmt.Sprintf("%d.json", i)) }
		fo.Store = func(i int) mebx.Store {
			stores[i] = mebx.NewFileStore(storePath(i))
			return stores[i]
		}
		rings := make([]*nic.Capture, g.Count)
		fo.Capture = func(i int, _ identity.Identity) (*nic.Capture, error) {
			rings[i] = nic.NewRingCapture(r.o.RingBytes)
			return rings[i], nil
		}
		first := static
		if g.Address == "static" {
			static += g.Count
		}
		fo.Preset = func(i int, id identity.Identity, s *mebx.Settings) error {
			return r.preset(g, gi, first+i, id, s)
		}
		grp := fleet.Group{Fleet: fo, PKI: g.Provisioning == "pki", Unlisted: g.PID == "unknown"}
		if gi == 0 {
			eo.Fleet, eo.PKI = grp.Fleet, grp.PKI
			if grp.Unlisted {
				return errors.New("the first group must be known to the SCS (pid: known)")
			}
		} else {
			eo.Groups = append(eo.Groups, grp)
		}
		// Identities are known before the fleet is made: the logs are
		// keyed by device ID (the host name) before any event comes.
		for i := range g.Count {
			id, err := identity.Of(r.seed, r.shard(gi), i)
			if err != nil {
				return err
			}
			d := &device{group: g, gi: gi, id: id, log: &deviceLog{}}
			r.devices = append(r.devices, d)
			r.byID[id.HostName] = d
			r.groups[g.Name] = append(r.groups[g.Name], d)
			r.rec.logs[id.HostName] = d.log
			r.rec.byPID[id.PID] = id.HostName
		}
		r.onBuilt = append(r.onBuilt, func(f *fleet.Fleet) {
			for i, fd := range f.Devices() {
				d := r.byID[f.Identities()[i].HostName]
				d.dev, d.store, d.ring, d.storePath = fd, stores[i], rings[i], storePath(i)
			}
		})
	}
	if !r.s.real() {
		emb, err := fleet.StartEmbedded(ctx, eo)
		if err != nil {
			return err
		}
		r.emb = emb
		r.closers = append(r.closers, emb.Close)
		r.fleets = append([]*fleet.Fleet{emb.Fleet}, emb.Groups...)
	} else if err := r.buildTAP(ctx, append([]fleet.Group{{Fleet: eo.Fleet, PKI: eo.PKI}}, eo.Groups...)); err != nil {
		return err
	}
	for i, f := range r.fleets {
		r.onBuilt[i](f)
	}
	return nil
}

// buildTAP puts the groups on a real network (a TAP, or a packet socket
// on an interface), with the network's DHCP, DNS and SCS (the SCS under
// test) and none of ours.
func (r *run) buildTAP(ctx context.Context, groups []fleet.Group) error {
	up := r.o.Uplink
	if up == nil {
		var (
			c   io.Closer
			err error
		)
		if strings.HasPrefix(r.s.Network, "packet:") {
			var p *nic.Packet
			p, err = nic.OpenPacket(nic.PacketOptions{Name: r.s.uplinkName()})
			up, c = p, p
		} else {
			var t *nic.TAP
			t, err = nic.OpenTAP(nic.TAPOptions{Name: r.s.uplinkName()})
			up, c = t, t
		}
		if err != nil {
			return err
		}
		r.closers = append(r.closers, func() { _ = c.Close() })
	}
	r.uplink = up
	stacks := nic.NewStacks(nic.StackOptions{})
	r.closers = append(r.closers, stacks.Close)
	for _, g := range groups {
		fo := g.Fleet
		fo.Uplink, fo.Stacks = up, stacks
		if g.PKI {
			// The SCS under test's root hash is the group's to give
			// (mebx: pki.hash=…).
			fo.Factory = true
		}
		f, err := fleet.New(ctx, fo)
		if err != nil {
			return err
		}
		r.closers = append(r.closers, f.Stop)
		r.fleets = append(r.fleets, f)
	}
	return nil
}

// close stops what build made, the last made first.
func (r *run) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// preset gives device k (k-th static device of the run) its group's MEBx
// settings.
func (r *run) preset(g *Group, gi, k int, id identity.Identity, s *mebx.Settings) error {
	if g.PPS == "wrong" {
		other, err := identity.Of(r.seed^0x5ca1ab1e, r.shard(gi), k)
		if err != nil {
			return err
		}
		if err := s.SetPIDPPS(id.PID, other.PPS); err != nil {
			return err
		}
	}
	if g.Password == "changed" && g.Provisioning != "psk" {
		if err := s.SetPassword(mebxPassword); err != nil {
			return err
		}
	}
	if g.SCSInMEBx {
		s.SCSAddress = lanSCS
		if ext := r.s.SCS.external; ext.IsValid() {
			s.SCSAddress, s.SCSPort = ext.Addr(), ext.Port()
		}
	}
	s.FlashWrites = g.FlashWrites
	if g.Address == "static" {
		// From the top of the subnet down, away from the DHCP pool that
		// leases from the bottom up.
		a := lanSubnet.Addr().As4()
		top := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		top += 1<<(32-lanSubnet.Bits()) - 2 - uint32(k)
		ip := netip.AddrFrom4([4]byte{byte(top >> 24), byte(top >> 16), byte(top >> 8), byte(top)})
		mask := netip.MustParseAddr("255.254.0.0")
		gw := lanSubnet.Addr().Next()
		s.DHCP, s.IP, s.Netmask, s.Gateway, s.DNS1, s.DomainName = false, ip, mask, gw, gw, lanDomain
	}
	return nil
}

// pick draws a fault's devices from the seed: the same file and seed
// choose the same devices.
func (r *run) pick(fi int, f *Fault) []*device {
	var pool []*device
	if f.Group != "" {
		pool = append(pool, r.groups[f.Group]...)
	} else {
		pool = append(pool, r.devices...)
	}
	n := len(pool)
	switch {
	case f.Count > 0:
		n = min(f.Count, n)
	case f.Fraction > 0:
		n = int(math.Ceil(f.Fraction * float64(n)))
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", fi, f.Name)
	rng := rand.New(rand.NewPCG(r.seed, h.Sum64()))
	rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	chosen := pool[:n]
	slices.SortFunc(chosen, func(a, b *device) int {
		if a.gi != b.gi {
			return a.gi - b.gi
		}
		return int(a.id.Index) - int(b.id.Index)
	})
	return chosen
}

// schedule arms every fault: timers for those at a time, triggers for
// those at a step.
func (r *run) schedule() {
	for fi := range r.s.Faults {
		f := &r.s.Faults[fi]
		kind, _ := f.kind()
		var targets []*device
		if onDevices(kind) {
			targets = r.pick(fi, f)
			d := Draw{Fault: f.Name}
			for _, t := range targets {
				d.Devices = append(d.Devices, t.id.HostName)
				d.Indexes = append(d.Indexes, fmt.Sprintf("%s/%d", t.group.Name, t.id.Index))
			}
			r.draws = append(r.draws, d)
		}
		if f.At != nil {
			at := *f.At
			r.mu.Lock()
			r.lastAt = max(r.lastAt, at+f.For)
			r.mu.Unlock()
			time.AfterFunc(at, func() { r.apply(f, kind, targets) })
			continue
		}
		a := &armed{f: f, reached: map[string]bool{}}
		if onDevices(kind) {
			a.targets = map[string]bool{}
			for _, t := range targets {
				a.targets[t.id.HostName] = true
			}
		} else {
			a.members = map[string]bool{}
			pool := r.devices
			if f.Group != "" {
				pool = r.groups[f.Group]
			}
			for _, t := range pool {
				a.members[t.id.HostName] = true
			}
		}
		r.mu.Lock()
		r.triggers = append(r.triggers, a)
		r.mu.Unlock()
	}
}

// onEvent sets off the faults waiting for e.
func (r *run) onEvent(dev string, e *Entry) {
	r.mu.Lock()
	var now, later []func()
	for _, a := range r.triggers {
		m := Match{Event: a.f.When.Event, Where: a.f.When.Where}
		if !m.matches(e) {
			continue
		}
		kind, _ := a.f.kind()
		if a.targets != nil {
			if a.targets[dev] {
				delete(a.targets, dev)
				d := []*device{r.byID[dev]}
				// A device fault takes hold here, on the device's own
				// goroutine, before its next frame: the same run of
				// events meets it at the same point every time. A power
				// cycle pulls the plug now; the power-off, which waits
				// for this very goroutine's work, follows off it.
				if kind == "power" {
					now = append(now, d[0].dev.CutPower)
					later = append(later, func() { r.apply(a.f, kind, d) })
				} else {
					now = append(now, func() { r.apply(a.f, kind, d) })
				}
			}
			continue
		}
		if a.fired || !a.members[dev] || a.reached[dev] {
			continue
		}
		a.reached[dev] = true
		if len(a.reached) >= max(a.f.When.Devices, 1) {
			a.fired = true
			// The network's and the SCS's faults wait for sessions that
			// wait for this device: off its goroutine.
			later = append(later, func() { r.apply(a.f, kind, nil) })
		}
	}
	r.mu.Unlock()
	for _, f := range now {
		f()
	}
	for _, f := range later {
		go f()
	}
}

func (r *run) faultError(format string, args ...any) {
	r.mu.Lock()
	r.faultErr = append(r.faultErr, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// apply does fault f (to targets, for a device fault), and undoes it
// after f.For.
func (r *run) apply(f *Fault, kind string, targets []*device) {
	if r.ctx.Err() != nil {
		return
	}
	var undo func()
	switch kind {
	case "netem":
		for _, d := range targets {
			n := f.Netem.nic(r.seed)
			if err := d.dev.SetNetem(n, n); err != nil {
				r.faultError("%s: %v", f.Name, err)
			}
		}
		undo = func() {
			for _, d := range targets {
				_ = d.dev.SetNetem(nic.Netem{}, nic.Netem{})
			}
		}
	case "link":
		for _, d := range targets {
			d.dev.SetLink(false)
		}
		undo = func() {
			for _, d := range targets {
				d.dev.SetLink(true)
			}
		}
	case "power":
		for _, d := range targets {
			d.dev.PowerOff()
			if f.Power == "cycle" {
				if err := d.dev.PowerOn(r.ctx); err != nil {
					r.faultError("%s: %v", f.Name, err)
				}
			}
		}
	case "clock_skew":
		by := time.Duration(*f.ClockSkew)
		for _, d := range targets {
			d.dev.SkewClock(by)
		}
		undo = func() {
			for _, d := range targets {
				d.dev.SkewClock(-by)
			}
		}
	case "call":
		for _, d := range targets {
			if err := d.dev.SetCallFault(f.Call.firmware()); err != nil {
				r.faultError("%s: %v", f.Name, err)
			}
		}
		undo = func() {
			for _, d := range targets {
				_ = d.dev.SetCallFault(firmware.CallFault{})
			}
		}
	case "dhcp":
		r.emb.Net.DHCP.Stop()
		if f.DHCP == "restart" {
			r.emb.Net.DHCP.Resume()
		}
		undo = r.emb.Net.DHCP.Resume
	case "dns":
		name := f.DNS.Remove + f.DNS.Add + "." + lanDomain
		if f.DNS.Remove != "" {
			r.emb.Net.DNS.Delete(name)
			undo = func() { r.emb.Net.DNS.Set(name, lanSCS) }
		} else {
			r.emb.Net.DNS.Set(name, lanSCS)
			undo = func() { r.emb.Net.DNS.Delete(name) }
		}
	case "scs":
		r.emb.StopSCS()
		start := func() {
			if err := r.emb.StartSCS(r.ctx); err != nil && r.ctx.Err() == nil {
				r.faultError("%s: %v", f.Name, err)
			}
		}
		if f.SCS == "restart" {
			start()
		}
		undo = start
	}
	if f.For > 0 && undo != nil {
		time.AfterFunc(f.For, func() {
			if r.ctx.Err() == nil {
				undo()
			}
		})
	}
}

// wait returns at the deadline, or once every expectation that waits for
// something has it and the hold has passed.
func (r *run) wait(ctx context.Context, started time.Time) {
	deadline := time.NewTimer(r.s.Deadline)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
		r.mu.Lock()
		last := r.lastAt
		r.mu.Unlock()
		if time.Since(started) >= last && r.satisfied() {
			hold := time.NewTimer(r.s.Hold)
			select {
			case <-ctx.Done():
			case <-deadline.C:
			case <-hold.C:
			}
			hold.Stop()
			return
		}
	}
}

// satisfied reports whether everything the expectations wait for has
// happened: devices provisioned and recorded, events seen.
func (r *run) satisfied() bool {
	for i := range r.s.Expect {
		e := &r.s.Expect[i]
		for _, d := range r.members(e.Group) {
			if e.State == StateProvisioned && d.log.count(event.Provisioned) == 0 {
				return false
			}
			if e.Recorded != nil && *e.Recorded && !r.recorded(d) {
				return false
			}
			for j := range e.Saw {
				if _, ok := d.log.saw(&e.Saw[j]); !ok {
					return false
				}
			}
		}
	}
	return true
}

func (r *run) members(group string) []*device {
	if group == "" {
		return r.devices
	}
	return r.groups[group]
}

// recorded reports whether the SCS's database holds d as provisioned.
func (r *run) recorded(d *device) bool {
	if r.emb == nil {
		return false
	}
	rec, ok := r.emb.DB.ByUUID(d.id.UUID.String())
	return ok && rec.State == scs.StateProvisioned
}
