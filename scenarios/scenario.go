package scenarios

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/ptstatus"
	"go.yaml.in/yaml/v3"
)

// Scenario is one scenario file.
type Scenario struct {
	Pos
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Source links the field report a field-bug scenario reproduces.
	Source string `yaml:"source"`
	// Catches are the SCS flaws the scenario exists to catch: with any of
	// them it must fail (the suite's own tests hold it to that).
	Catches []Flaw `yaml:"catches"`
	Seed    uint64 `yaml:"seed"`
	// Deadline bounds the whole run (default 2m): what has not happened by
	// then has failed.
	Deadline time.Duration `yaml:"deadline"`
	// Hold is how long the run goes on once every expectation that waits
	// for something has it, to catch what comes late (a second
	// provisioning, a refused session); default 2s.
	Hold time.Duration `yaml:"hold"`
	// Network is embedded (the default: the embedded LAN, its DHCP and DNS,
	// and the reference SCS), tap:NAME (a TAP into a real network, its
	// DHCP, DNS and SCS: the SCS under test) or packet:IFACE (the same
	// through a packet socket on an existing interface, as in a pod).
	Network string `yaml:"network"`
	// LeaseTime is the embedded DHCP server's lease (default 1h).
	LeaseTime time.Duration `yaml:"lease_time"`
	// TimeScale runs the firmware's schedules (Hello intervals, DHCP
	// timers) this many times faster than real time; default 1.
	TimeScale float64  `yaml:"time_scale"`
	SCS       SCS      `yaml:"scs"`
	Groups    []Group  `yaml:"groups"`
	Faults    []Fault  `yaml:"faults"`
	Expect    []Expect `yaml:"expect"`

	// File is where the scenario was read from.
	File string `yaml:"-"`
}

// SCS is the embedded reference SCS's set-up for the run, or the address
// of the SCS under test.
type SCS struct {
	Pos
	// External is the SCS under test (IP, or IP:port; default port 9971)
	// on a tap: network, typed into MEBx for scs_in_mebx groups (devices
	// otherwise find it by DNS).
	External string `yaml:"external"`
	external netip.AddrPort
	// Flaws are deliberate bugs (scs.Flaws): forget-commit,
	// trust-answers, no-call-timeout, unchecked-profile, ignore-stale,
	// forget-pending.
	Flaws []Flaw `yaml:"flaws"`
	// AdminPassword is the new admin password the SCS sets (its profile's;
	// default the reference profile's).
	AdminPassword string `yaml:"admin_password"`
	// MEBxPassword is the new MEBx password the SCS sets (default the
	// reference profile's).
	MEBxPassword string `yaml:"mebx_password"`
	// MaxAttempts is how often the SCS retries a device (default 5).
	MaxAttempts int `yaml:"max_attempts"`
}

// Flaw names a deliberate SCS bug.
type Flaw string

// The flaws, as scs.Flaws has them.
const (
	FlawForgetCommit  Flaw = "forget-commit"
	FlawTrustAnswers  Flaw = "trust-answers"
	FlawNoCallTimeout Flaw = "no-call-timeout"
	// FlawUncheckedProfile starts the SCS with a profile the devices
	// refuse (a weak password), to show them refusing it.
	FlawUncheckedProfile Flaw = "unchecked-profile"
	FlawIgnoreStale      Flaw = "ignore-stale"
	FlawForgetPending    Flaw = "forget-pending"
)

// Flaws lists the flaws.
var Flaws = []Flaw{FlawForgetCommit, FlawTrustAnswers, FlawNoCallTimeout, FlawUncheckedProfile, FlawIgnoreStale, FlawForgetPending}

func (f *Flaw) decodeYAML(d *decoder, n *yaml.Node) error {
	names := make([]string, len(Flaws))
	for i, fl := range Flaws {
		names[i] = string(fl)
	}
	s, err := d.oneOf(n, "an SCS flaw", names...)
	*f = Flaw(s)
	return err
}

// Group is devices that share their set-up.
type Group struct {
	Pos
	Name  string `yaml:"name"`
	Count int    `yaml:"count"`
	// Firmware is the profile (amt5, amt11); default amt5.
	Firmware Firmware `yaml:"firmware"`
	// BootRate is devices powered on per second; 0 all at once.
	BootRate float64 `yaml:"boot_rate"`
	// Provisioning is psk (PID/PPS entered), pki (factory-fresh, remote
	// configuration with the SCS's root hash) or none (factory-fresh,
	// remote configuration off: no Hello).
	Provisioning string `yaml:"provisioning" choice:"psk,pki,none"`
	// Address is dhcp (default) or static (MEBx settings, one address per
	// device from the LAN's pool).
	Address string `yaml:"address" choice:"dhcp,static"`
	// SCSInMEBx types the SCS's address into MEBx: no DNS lookup.
	SCSInMEBx bool `yaml:"scs_in_mebx"`
	// PPS is right (default) or wrong: the PPS entered is not the one the
	// SCS holds.
	PPS string `yaml:"pps" choice:"right,wrong"`
	// PID is known (default) or unknown: the SCS's database does not hold
	// the group.
	PID string `yaml:"pid" choice:"known,unknown"`
	// Password is the MEBx password's state: changed (from the factory's,
	// as PSK set-up needs; the default for psk) or factory (the default
	// for pki and none).
	Password string `yaml:"password" choice:"changed,factory"`
	// MEBx are more settings, KEY=VALUE as `amtsim mebx set` takes them.
	MEBx   []MEBxEntry `yaml:"mebx"`
	Quirks Quirks      `yaml:"quirks"`
	// FlashWrites is how often the devices' flash has been written before
	// the run (with quirks.flash_write_limit: a worn flash).
	FlashWrites uint64 `yaml:"flash_writes"`
}

// Firmware names a firmware profile (firmware.ProfileByName).
type Firmware string

func (f *Firmware) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return d.errorf(n, "want a firmware profile's name, not %s", describe(n))
	}
	if _, err := firmware.ProfileByName(n.Value); err != nil {
		return d.errorf(n, "%v", err)
	}
	*f = Firmware(n.Value)
	return nil
}

// Quirks are firmware bugs the group's devices have (firmware.Quirks).
type Quirks struct {
	// EmptyDigestResponse is CVE-2017-5689.
	EmptyDigestResponse bool   `yaml:"empty_digest_response"`
	FlashWriteLimit     uint64 `yaml:"flash_write_limit"`
	// CommitDropsConnection: firmware.Quirks.CommitDropsConnection
	// (rpc-go#1463).
	CommitDropsConnection bool `yaml:"commit_drops_connection"`
}

// MEBxEntry is one KEY=VALUE MEBx setting.
type MEBxEntry string

func (m *MEBxEntry) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return d.errorf(n, "want KEY=VALUE, not %s", describe(n))
	}
	p := firmware.AMT5()
	s := p.Factory()
	err := s.Set(n.Value)
	if err != nil && !strings.HasPrefix(strings.ToLower(n.Value), "pid=") && !strings.HasPrefix(strings.ToLower(n.Value), "pps=") {
		return d.errorf(n, "%v", err)
	}
	*m = MEBxEntry(n.Value)
	return nil
}

// Fault is one thing done to the run, at a time or when a step is reached.
type Fault struct {
	Pos
	Name string `yaml:"name"`
	// Group is the group it hits (default every group); Fraction the share
	// of its devices, drawn from the seed (default all), or Count a number
	// of them.
	Group    string  `yaml:"group"`
	Fraction float64 `yaml:"fraction"`
	Count    int     `yaml:"count"`
	// At is the time from the start; When the step that sets it off.
	At   *time.Duration `yaml:"at"`
	When *Trigger       `yaml:"when"`
	// For undoes it after this long (the link back up, the SCS started).
	For time.Duration `yaml:"for"`

	// One of these is the fault.
	Netem *Netem    `yaml:"netem"`
	Link  string    `yaml:"link" choice:"down"`
	DHCP  string    `yaml:"dhcp" choice:"stop,restart"`
	DNS   *DNSFault `yaml:"dns"` // remove or add a record
	SCS   string    `yaml:"scs" choice:"stop,restart"`
	Power string    `yaml:"power" choice:"cycle,off"`
	// ClockSkew moves the devices' real-time clock by this much (may be
	// negative): AMT time, certificate validity, Digest nonce ages.
	ClockSkew *Skew      `yaml:"clock_skew"`
	Call      *CallFault `yaml:"call"`
}

// Skew is a duration that may be negative.
type Skew time.Duration

func (k *Skew) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return d.errorf(n, "want a duration (like 10m, -48h), not %s", describe(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v == 0 {
		return d.errorf(n, "%q is not a duration that moves the clock (like 10m, -48h)", n.Value)
	}
	*k = Skew(v)
	return nil
}

// Trigger sets a fault off when an event is reached: on each chosen device
// as it reaches it (a device fault), or once Devices devices of the group
// have (a fault of the network or the SCS).
type Trigger struct {
	Pos
	Event   EventName         `yaml:"event"`
	Where   map[string]string `yaml:"where"`
	Devices int               `yaml:"devices"`
}

// Netem is netem-style impairment of the chosen devices' frames, both ways.
type Netem struct {
	Pos
	Loss      float64       `yaml:"loss"`
	Delay     time.Duration `yaml:"delay"`
	Jitter    time.Duration `yaml:"jitter"`
	Duplicate float64       `yaml:"duplicate"`
	Reorder   float64       `yaml:"reorder"`
}

// DNSFault removes a record of the embedded DNS server or adds one back.
type DNSFault struct {
	Pos
	// Remove and Add name a host under the LAN's domain: ProvisionServer.
	Remove string `yaml:"remove"`
	Add    string `yaml:"add"`
}

// CallFault changes the chosen devices' answer to one WS-MAN call
// (firmware.CallFault).
type CallFault struct {
	Pos
	Name   string        `yaml:"name"`
	Answer string        `yaml:"answer" choice:"delay,hold,empty,fault,drop"`
	Delay  time.Duration `yaml:"delay"`
	Status int           `yaml:"status"` // for answer: empty
	Times  int           `yaml:"times"`
}

// Expect is one expectation about every device of a group.
type Expect struct {
	Pos
	// Name names the test case (default from what it expects).
	Name  string `yaml:"name"`
	Group string `yaml:"group"`
	// State is the device's persisted state at the end: provisioned, or
	// setup (not provisioned: in setup, or factory-fresh awaiting remote
	// configuration).
	State string `yaml:"state" choice:"provisioned,setup"`
	// Within is when State provisioned must be reached by (default the
	// deadline).
	Within time.Duration `yaml:"within"`
	// MaxHellos bounds the Hellos a device sends.
	MaxHellos int `yaml:"max_hellos"`
	// Saw are events every device must have had; Never events none may.
	Saw   []Match `yaml:"saw"`
	Never []Match `yaml:"never"`
	// Recorded says the embedded SCS must (true) or must not (false) hold
	// the device as provisioned at the end.
	Recorded *bool `yaml:"recorded"`
	// Refused expects each device to refuse the SCS: a call answered with
	// a PT_STATUS, or the TLS handshake with a reason (tls.failed). It
	// implies state: setup.
	Refused *Refusal `yaml:"refused"`
}

// Refusal is where and how a device refuses its SCS.
type Refusal struct {
	Pos
	Call   string `yaml:"call"`   // the call (amt.call op), with Status
	Status Status `yaml:"status"` // a PT_STATUS name or number
	TLS    string `yaml:"tls"`    // a tls.failed reason: certificate_expired, root_hash_not_active, …
}

// Status is a PT_STATUS, written by name or number, kept as the decimal
// that amt.call events carry.
type Status string

func (st *Status) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return d.errorf(n, "want a PT_STATUS name or number, not %s", describe(n))
	}
	c, err := ptstatus.Parse(n.Value)
	if err != nil {
		return d.errorf(n, "%v", err)
	}
	*st = Status(strconv.FormatUint(uint64(c), 10))
	return nil
}

// Match is an event by name, with attributes it must carry.
type Match struct {
	Pos
	Event EventName         `yaml:"event"`
	Where map[string]string `yaml:"where"`
}

// EventName is an event name the simulator reports (event.Known).
type EventName event.Name

func (e *EventName) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return d.errorf(n, "want an event name, not %s", describe(n))
	}
	for _, k := range event.Known() {
		if string(k.Name) == n.Value {
			*e = EventName(n.Value)
			return nil
		}
	}
	return d.errorf(n, "%q is not an event amtsim reports (see the README's list of events)", n.Value)
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// The states an expectation names.
const (
	StateProvisioned = "provisioned"
	StateSetup       = "setup"
)

// Parse reads a scenario from data; file names it in errors.
func Parse(file string, data []byte) (*Scenario, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		return nil, &Error{File: file, Line: 1, Column: 1, Msg: "the file holds no scenario"}
	}
	d := &decoder{file: file}
	var s Scenario
	if err := d.decode(root.Content[0], reflect.ValueOf(&s).Elem()); err != nil {
		return nil, err
	}
	s.File = file
	if err := s.check(d); err != nil {
		return nil, err
	}
	return &s, nil
}

// Load reads the scenario file at path.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	return Parse(path, data)
}

// yamlError gives the YAML parser's own errors the file:line:col form;
// they say "yaml: line N: …".
func yamlError(file string, err error) error {
	msg := err.Error()
	line := 1
	if _, rest, ok := strings.Cut(msg, "line "); ok {
		var n int
		if _, e := fmt.Sscanf(rest, "%d", &n); e == nil {
			line = n
			if _, after, ok := strings.Cut(rest, ": "); ok {
				msg = after
			}
		}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	return &Error{File: file, Line: line, Column: 1, Msg: msg}
}

// at makes an Error at p.
func (d *decoder) at(p Pos, format string, args ...any) error {
	return &Error{File: d.file, Line: p.Line, Column: p.Column, Msg: fmt.Sprintf(format, args...)}
}

// check does what one field alone cannot: names, references, choices
// made once.
func (s *Scenario) check(d *decoder) error {
	if !nameRE.MatchString(s.Name) {
		return d.at(s.Pos, "a scenario needs a name of lower-case letters, digits and dashes (name: %q)", s.Name)
	}
	if len(s.Groups) == 0 {
		return d.at(s.Pos, "a scenario needs at least one group of devices (groups:)")
	}
	if len(s.Expect) == 0 {
		return d.at(s.Pos, "a scenario needs at least one expectation (expect:)")
	}
	if s.Deadline == 0 {
		s.Deadline = 2 * time.Minute
	}
	if s.Hold == 0 {
		s.Hold = 2 * time.Second
	}
	if s.TimeScale == 0 {
		s.TimeScale = 1
	}
	if s.TimeScale < 1 || s.TimeScale > 1000 {
		return d.at(s.Pos, "time_scale %v is not in [1, 1000]", s.TimeScale)
	}
	if err := s.checkNetwork(d); err != nil {
		return err
	}
	groups := map[string]*Group{}
	total := 0
	for i := range s.Groups {
		g := &s.Groups[i]
		if !nameRE.MatchString(g.Name) {
			return d.at(g.Pos, "a group needs a name of lower-case letters, digits and dashes (name: %q)", g.Name)
		}
		if groups[g.Name] != nil {
			return d.at(g.Pos, "group %q is declared twice", g.Name)
		}
		groups[g.Name] = g
		if g.Count < 1 {
			return d.at(g.Pos, "group %q needs a count of at least 1", g.Name)
		}
		total += g.Count
		if g.Firmware == "" {
			g.Firmware = "amt5"
		}
		p, err := firmware.ProfileByName(string(g.Firmware))
		if err != nil {
			return d.at(g.Pos, "group %q: %v", g.Name, err)
		}
		if err := defaultOne(d, g.Pos, "provisioning", &g.Provisioning, "psk", "pki", "none"); err != nil {
			return err
		}
		if g.Provisioning == "psk" && !p.PSK {
			return d.at(g.Pos, "group %q: %s firmware has no TLS-PSK (provisioning: pki)", g.Name, p.Name)
		}
		if err := defaultOne(d, g.Pos, "address", &g.Address, "dhcp", "static"); err != nil {
			return err
		}
		if err := defaultOne(d, g.Pos, "pps", &g.PPS, "right", "wrong"); err != nil {
			return err
		}
		if err := defaultOne(d, g.Pos, "pid", &g.PID, "known", "unknown"); err != nil {
			return err
		}
		if g.Password == "" {
			g.Password = "factory"
			if g.Provisioning == "psk" {
				g.Password = "changed"
			}
		}
		if g.Provisioning == "psk" && g.Password == "factory" {
			return d.at(g.Pos, "group %q: PID/PPS are entered only once the MEBx password is changed (password: changed)", g.Name)
		}
		if g.Provisioning != "psk" && g.PPS == "wrong" {
			return d.at(g.Pos, "group %q: a wrong PPS needs provisioning: psk", g.Name)
		}
		if g.BootRate < 0 {
			return d.at(g.Pos, "group %q: boot_rate must not be negative", g.Name)
		}
	}
	if total > 100000 {
		return d.at(s.Pos, "%d devices: a scenario runs at most 100000", total)
	}
	for i := range s.Faults {
		if err := s.Faults[i].check(d, groups); err != nil {
			return err
		}
	}
	for i := range s.Expect {
		e := &s.Expect[i]
		if e.Group != "" && groups[e.Group] == nil {
			return d.at(e.Pos, "expectation names group %q, which is not declared", e.Group)
		}
		if e.State != "" && !slices.Contains([]string{StateProvisioned, StateSetup}, e.State) {
			return d.at(e.Pos, "state %q is not provisioned or setup", e.State)
		}
		if e.Within > 0 && e.State != StateProvisioned {
			return d.at(e.Pos, "within bounds when the devices are provisioned: it needs state: provisioned")
		}
		if r := e.Refused; r != nil {
			switch {
			case (r.Call != "") != (r.Status != ""):
				return d.at(r.Pos, "a refused call takes both call and status")
			case (r.Call != "") == (r.TLS != ""):
				return d.at(r.Pos, "refused takes a call and its status, or a tls reason")
			case e.State == StateProvisioned:
				return d.at(e.Pos, "a refused device is not provisioned")
			}
			e.State = StateSetup
			if r.Call != "" {
				e.Saw = append(e.Saw, Match{Pos: r.Pos, Event: EventName(event.AMTCall), Where: map[string]string{"op": r.Call, "status": string(r.Status)}})
			} else {
				e.Saw = append(e.Saw, Match{Pos: r.Pos, Event: EventName(event.TLSFailed), Where: map[string]string{"reason": r.TLS}})
			}
		}
		if e.State == "" && e.MaxHellos == 0 && len(e.Saw) == 0 && len(e.Never) == 0 && e.Recorded == nil {
			return d.at(e.Pos, "an expectation expects nothing (state, max_hellos, saw, never, recorded, refused)")
		}
		for _, m := range append(append([]Match(nil), e.Saw...), e.Never...) {
			if m.Event == "" {
				return d.at(m.Pos, "a match needs an event")
			}
		}
		if e.Name == "" {
			e.Name = e.defaultName()
		}
	}
	return nil
}

// real says whether the scenario runs on a real network (tap: or
// packet:), with its DHCP, DNS and SCS.
func (s *Scenario) real() bool { return s.Network != "" }

// uplinkName is the interface of a tap: or packet: network.
func (s *Scenario) uplinkName() string {
	_, name, _ := strings.Cut(s.Network, ":")
	return name
}

// OnNetwork puts the scenario on another network than its file says
// (amtsim scenario run --network, as a Kubernetes pod's interface is known
// only there) and checks it again as Load would.
func (s *Scenario) OnNetwork(network string) error {
	s.Network = network
	d := &decoder{file: "--network " + network}
	return s.checkNetwork(d)
}

// checkNetwork checks the network and the SCS, and what a real network
// (tap: or packet:) rules out:
// on a real network the DHCP server, DNS and SCS are not ours to stop or
// to read.
func (s *Scenario) checkNetwork(d *decoder) error {
	switch {
	case s.Network == "" || s.Network == "embedded":
		s.Network = ""
		if s.SCS.External != "" {
			return d.at(s.SCS.Pos, "an external SCS is reached on a real network: network: tap:NAME or packet:IFACE")
		}
		return nil
	case (strings.HasPrefix(s.Network, "tap:") || strings.HasPrefix(s.Network, "packet:")) && len(s.uplinkName()) >= 1 && len(s.uplinkName()) <= 15:
	default:
		return d.at(s.Pos, "network %q is not embedded, tap:NAME or packet:IFACE (an interface name of 1 to 15 characters)", s.Network)
	}
	if s.LeaseTime > 0 {
		return d.at(s.Pos, "lease_time sets the embedded DHCP server's leases; a real network's DHCP server is its own")
	}
	if s.SCS.External != "" {
		ap, err := netip.ParseAddrPort(s.SCS.External)
		if err != nil {
			a, aerr := netip.ParseAddr(s.SCS.External)
			if aerr != nil || !a.Is4() {
				return d.at(s.SCS.Pos, "external %q is not an IPv4 address or address:port", s.SCS.External)
			}
			ap = netip.AddrPortFrom(a, mebx.DefaultSCSPort)
		}
		s.SCS.external = ap
	}
	if len(s.SCS.Flaws) > 0 || s.SCS.AdminPassword != "" || s.SCS.MEBxPassword != "" || s.SCS.MaxAttempts > 0 {
		return d.at(s.SCS.Pos, "flaws, passwords and max_attempts set up the embedded SCS; on a real network the SCS is the network's")
	}
	for _, g := range s.Groups {
		if g.PID == "unknown" || g.Address == "static" {
			return d.at(g.Pos, "group %q: pid: unknown and address: static need the embedded LAN and SCS (on a real network, type the settings with mebx:)", g.Name)
		}
		if g.SCSInMEBx && !s.SCS.external.IsValid() {
			return d.at(g.Pos, "group %q: scs_in_mebx on a real network types scs.external into MEBx; there is none", g.Name)
		}
	}
	for _, f := range s.Faults {
		if k, _ := f.kind(); k == "dhcp" || k == "dns" || k == "scs" {
			return d.at(f.Pos, "a %s fault needs the embedded LAN: a real network's DHCP, DNS and SCS are its own", k)
		}
	}
	for _, e := range s.Expect {
		if e.Recorded != nil {
			return d.at(e.Pos, "recorded reads the embedded SCS's database; an external SCS's records are its own")
		}
	}
	return nil
}

// defaultOne sets *v to allowed[0] when empty, and checks it otherwise.
func defaultOne(d *decoder, p Pos, key string, v *string, allowed ...string) error {
	if *v == "" {
		*v = allowed[0]
		return nil
	}
	if !slices.Contains(allowed, *v) {
		return d.at(p, "%s %q is not one of %s", key, *v, strings.Join(allowed, ", "))
	}
	return nil
}

func (e *Expect) defaultName() string {
	var parts []string
	if e.State != "" {
		parts = append(parts, e.State)
	}
	if e.MaxHellos > 0 {
		parts = append(parts, fmt.Sprintf("at most %d hellos", e.MaxHellos))
	}
	for _, m := range e.Saw {
		parts = append(parts, "saw "+string(m.Event))
	}
	for _, m := range e.Never {
		parts = append(parts, "never "+string(m.Event))
	}
	if e.Recorded != nil {
		parts = append(parts, fmt.Sprintf("recorded %v", *e.Recorded))
	}
	return strings.Join(parts, ", ")
}

// kind names the fault's one kind, or says what is wrong.
func (f *Fault) kind() (string, error) {
	var kinds []string
	if f.Netem != nil {
		kinds = append(kinds, "netem")
	}
	if f.Link != "" {
		kinds = append(kinds, "link")
	}
	if f.DHCP != "" {
		kinds = append(kinds, "dhcp")
	}
	if f.DNS != nil {
		kinds = append(kinds, "dns")
	}
	if f.SCS != "" {
		kinds = append(kinds, "scs")
	}
	if f.Power != "" {
		kinds = append(kinds, "power")
	}
	if f.Call != nil {
		kinds = append(kinds, "call")
	}
	if f.ClockSkew != nil {
		kinds = append(kinds, "clock_skew")
	}
	switch len(kinds) {
	case 0:
		return "", errors.New("a fault needs one of netem, link, dhcp, dns, scs, power, call, clock_skew")
	case 1:
		return kinds[0], nil
	}
	return "", fmt.Errorf("a fault is one thing; this one has %s", strings.Join(kinds, " and "))
}

// onDevices reports whether a fault kind acts on chosen devices (rather
// than on the network or the SCS).
func onDevices(kind string) bool {
	switch kind {
	case "netem", "link", "power", "call", "clock_skew":
		return true
	}
	return false
}

func (f *Fault) check(d *decoder, groups map[string]*Group) error {
	kind, err := f.kind()
	if err != nil {
		return d.at(f.Pos, "%v", err)
	}
	if f.Group != "" && groups[f.Group] == nil {
		return d.at(f.Pos, "fault names group %q, which is not declared", f.Group)
	}
	if (f.At == nil) == (f.When == nil) {
		return d.at(f.Pos, "a fault needs one of at (a time) or when (a step)")
	}
	if f.Fraction < 0 || f.Fraction > 1 {
		return d.at(f.Pos, "fraction %v is not in (0, 1]", f.Fraction)
	}
	if f.Fraction > 0 && f.Count > 0 {
		return d.at(f.Pos, "a fault takes a fraction or a count of devices, not both")
	}
	if !onDevices(kind) && (f.Fraction > 0 || f.Count > 0) {
		return d.at(f.Pos, "a %s fault hits the whole network or SCS: no fraction or count", kind)
	}
	if f.When != nil {
		if f.When.Event == "" {
			return d.at(f.When.Pos, "when needs an event")
		}
		if onDevices(kind) && f.When.Devices > 0 {
			return d.at(f.When.Pos, "devices counts devices for a fault of the network or SCS; a %s fault acts on each device as it reaches the event", kind)
		}
	}
	switch kind {
	case "netem":
		n := f.Netem.nic(0)
		if err := n.Validate(); err != nil {
			return d.at(f.Netem.Pos, "%v", err)
		}
		if !n.Enabled() {
			return d.at(f.Netem.Pos, "netem impairs nothing")
		}
	case "link":
		if f.Link != "down" {
			return d.at(f.Pos, "link %q: the fault is link: down (with for: to bring it up)", f.Link)
		}
	case "dhcp":
		if f.DHCP != "stop" && f.DHCP != "restart" {
			return d.at(f.Pos, "dhcp %q is not stop or restart", f.DHCP)
		}
	case "scs":
		if f.SCS != "stop" && f.SCS != "restart" {
			return d.at(f.Pos, "scs %q is not stop or restart", f.SCS)
		}
	case "power":
		if f.Power != "cycle" && f.Power != "off" {
			return d.at(f.Pos, "power %q is not cycle or off", f.Power)
		}
	case "dns":
		if (f.DNS.Remove == "") == (f.DNS.Add == "") {
			return d.at(f.DNS.Pos, "dns takes one of remove or add (a host name under the domain)")
		}
	case "call":
		if err := f.Call.firmware().Validate(); err != nil {
			return d.at(f.Call.Pos, "%v", err)
		}
	}
	if f.For > 0 && (kind == "power" || kind == "call" && f.Call.Times > 0) {
		return d.at(f.Pos, "for undoes a lasting fault; a %s fault is over once it has happened", kind)
	}
	if f.Name == "" {
		f.Name = kind
	}
	return nil
}

func (n *Netem) nic(seed uint64) nic.Netem {
	return nic.Netem{Loss: n.Loss, Delay: n.Delay, Jitter: n.Jitter, Duplicate: n.Duplicate, Reorder: n.Reorder, Seed: seed}
}

func (c *CallFault) firmware() firmware.CallFault {
	return firmware.CallFault{Call: c.Name, Answer: firmware.Answer(c.Answer), Delay: c.Delay, Status: c.Status, Times: c.Times}
}

// groupState maps a device's persisted state to an expectation's.
func groupState(s mebx.Settings) string {
	if s.State == mebx.StatePost {
		return StateProvisioned
	}
	return StateSetup
}
