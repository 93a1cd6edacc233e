package scenarios

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/internal/atomicfile"
	"github.com/amtsim/amtsim/nic"
)

// Report is what a run found.
type Report struct {
	Scenario string `json:"scenario"`
	File     string `json:"file"`
	Seed     uint64 `json:"seed"`
	// Shards are the identity shards the groups took, in group order.
	Shards   []int         `json:"shards"`
	Duration time.Duration `json:"duration_ns"`
	Devices  int           `json:"devices"`
	Cases    []Case        `json:"cases"`
	Draws    []Draw        `json:"draws,omitempty"`
	// FaultErrors are faults that could not be applied.
	FaultErrors []string `json:"fault_errors,omitempty"`
	// Stories are each device's events in order, by name (Entry.Name and
	// the call of amt.call): what the same seed reproduces.
	Stories map[string][]string `json:"stories"`
	// Captures are the pcap files written for failed devices.
	Captures []string `json:"captures,omitempty"`
	// Uplink is what the TAP or packet uplink of a run on a real network
	// carried and lost (none on the embedded LAN).
	Uplink *nic.UplinkCounts `json:"uplink,omitempty"`
}

// Case is one expectation on one group: a JUnit test case.
type Case struct {
	Name     string          `json:"name"`
	Group    string          `json:"group"`
	Devices  int             `json:"devices"`
	Failures []DeviceFailure `json:"failures,omitempty"`
}

// Passed reports whether every device met the expectation.
func (c *Case) Passed() bool { return len(c.Failures) == 0 }

// DeviceFailure is why one device failed a case, with its log.
type DeviceFailure struct {
	Device string   `json:"device"`
	Reason string   `json:"reason"`
	Log    []string `json:"log"`
}

// Passed reports whether every case passed and every fault was applied.
func (r *Report) Passed() bool {
	for i := range r.Cases {
		if !r.Cases[i].Passed() {
			return false
		}
	}
	return len(r.FaultErrors) == 0
}

// Failed counts the cases that failed.
func (r *Report) Failed() int {
	n := 0
	for i := range r.Cases {
		if !r.Cases[i].Passed() {
			n++
		}
	}
	return n
}

// judge checks every expectation on every device.
func (r *run) judge(took time.Duration) *Report {
	rep := &Report{Scenario: r.s.Name, File: r.s.File, Seed: r.seed, Shards: r.shards(), Duration: took, Devices: len(r.devices),
		Draws: r.draws, Stories: map[string][]string{}}
	r.mu.Lock()
	rep.FaultErrors = append(rep.FaultErrors, r.faultErr...)
	r.mu.Unlock()
	for _, d := range r.devices {
		rep.Stories[d.id.HostName] = d.log.story()
		if d.storePath != "" {
			d.leftover, _ = atomicfile.Stale(d.storePath)
		}
	}
	for i := range r.s.Expect {
		e := &r.s.Expect[i]
		groups := []string{e.Group}
		if e.Group == "" {
			groups = groups[:0]
			for _, g := range r.s.Groups {
				groups = append(groups, g.Name)
			}
		}
		for _, g := range groups {
			c := Case{Name: e.Name, Group: g}
			for _, d := range r.groups[g] {
				c.Devices++
				if why := r.check(e, d); why != "" {
					c.Failures = append(c.Failures, r.failure(d, why))
				}
			}
			rep.Cases = append(rep.Cases, c)
		}
	}
	// What holds in every scenario: no device provisioned twice, and every
	// store whole.
	for _, g := range r.s.Groups {
		once := Case{Name: "provisioned at most once", Group: g.Name}
		whole := Case{Name: "persisted settings whole", Group: g.Name}
		for _, d := range r.groups[g.Name] {
			once.Devices++
			whole.Devices++
			if n := d.log.count(event.Provisioned); n > 1 {
				once.Failures = append(once.Failures, r.failure(d, fmt.Sprintf("provisioned %d times", n)))
			}
			if why := storeWhole(d); why != "" {
				whole.Failures = append(whole.Failures, r.failure(d, why))
			}
		}
		rep.Cases = append(rep.Cases, once, whole)
	}
	return rep
}

// check says why d fails e, or "".
func (r *run) check(e *Expect, d *device) string {
	var why []string
	if e.State != "" {
		s, err := d.store.Load()
		switch {
		case err != nil:
			why = append(why, fmt.Sprintf("its settings cannot be read: %v", err))
		case groupState(s) != e.State:
			why = append(why, fmt.Sprintf("state %s, want %s", groupState(s), e.State))
		}
		if e.State == StateProvisioned && e.Within > 0 {
			d.log.mu.Lock()
			at, ok := d.log.first[event.Provisioned]
			d.log.mu.Unlock()
			if ok && at > e.Within {
				why = append(why, fmt.Sprintf("provisioned at %.1fs, after %v", at.Seconds(), e.Within))
			}
		}
	}
	if e.MaxHellos > 0 {
		if n := d.log.count(event.HelloSent); n > e.MaxHellos {
			why = append(why, fmt.Sprintf("%d Hellos, want at most %d", n, e.MaxHellos))
		}
	}
	for i := range e.Saw {
		if _, ok := d.log.saw(&e.Saw[i]); !ok {
			why = append(why, "never saw "+e.Saw[i].describe())
		}
	}
	for i := range e.Never {
		if en, ok := d.log.saw(&e.Never[i]); ok {
			why = append(why, fmt.Sprintf("saw %s at %.3fs", e.Never[i].describe(), en.At.Seconds()))
		}
	}
	if e.Recorded != nil {
		if got := r.recorded(d); got != *e.Recorded {
			if got {
				why = append(why, "the SCS holds it as provisioned")
			} else {
				why = append(why, "the SCS does not hold it as provisioned")
			}
		}
	}
	return strings.Join(why, "; ")
}

func (m *Match) describe() string {
	if len(m.Where) == 0 {
		return string(m.Event)
	}
	var parts []string
	for k, v := range m.Where {
		parts = append(parts, k+"="+v)
	}
	return string(m.Event) + " (" + strings.Join(parts, " ") + ")"
}

// storeWhole says what is wrong with d's persisted settings, or "": they
// read and validate, and no temporary file of a write was left beside them
// (looked for before anything loaded the store, which removes them).
func storeWhole(d *device) string {
	s, err := d.store.Load()
	if err != nil {
		return fmt.Sprintf("its settings cannot be read: %v", err)
	}
	if err := s.Validate(); err != nil {
		return fmt.Sprintf("its settings are not valid: %v", err)
	}
	if len(d.leftover) > 0 {
		return fmt.Sprintf("a write left %s behind", filepath.Base(d.leftover[0]))
	}
	return ""
}

func (r *run) failure(d *device, why string) DeviceFailure {
	entries, dropped := d.log.snapshot()
	f := DeviceFailure{Device: d.id.HostName, Reason: why}
	for _, e := range entries {
		f.Log = append(f.Log, e.String())
	}
	if dropped > 0 {
		f.Log = append(f.Log, fmt.Sprintf("(%d more events not kept)", dropped))
	}
	return f
}

// writeCaptures writes the ring capture of every device that failed a
// case.
func (r *run) writeCaptures(rep *Report) error {
	failed := map[string]bool{}
	for _, c := range rep.Cases {
		for _, f := range c.Failures {
			failed[f.Device] = true
		}
	}
	if len(failed) == 0 {
		return nil
	}
	if err := os.MkdirAll(r.o.PcapDir, 0o755); err != nil {
		return fmt.Errorf("scenario: captures: %w", err)
	}
	var errs []error
	for _, d := range r.devices {
		if !failed[d.id.HostName] || d.ring == nil {
			continue
		}
		path := filepath.Join(r.o.PcapDir, d.id.HostName+".pcap")
		var b bytes.Buffer
		if _, err := d.ring.WriteTo(&b); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := atomicfile.Write(path, b.Bytes(), 0o644); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Captures = append(rep.Captures, path)
	}
	return errors.Join(errs...)
}

// JUnit XML, as Jenkins, GitLab and GitHub's test reporters read it: one
// testsuite per scenario, one testcase per expectation and group.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
	Out      string      `xml:"system-out,omitempty"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes reports as one JUnit XML document.
func WriteJUnit(w io.Writer, reps []*Report) error {
	doc := junitSuites{}
	var total time.Duration
	for _, rep := range reps {
		s := junitSuite{Name: rep.Scenario, Time: secs(rep.Duration)}
		for _, c := range rep.Cases {
			jc := junitCase{Name: c.Group + ": " + c.Name, Classname: rep.Scenario + "." + c.Group, Time: "0"}
			if !c.Passed() {
				var b strings.Builder
				for _, f := range c.Failures {
					fmt.Fprintf(&b, "%s: %s\n", f.Device, f.Reason)
					for _, l := range f.Log {
						fmt.Fprintf(&b, "    %s\n", l)
					}
				}
				jc.Failure = &junitFailure{Type: "expectation",
					Message: fmt.Sprintf("%d of %d devices: %s", len(c.Failures), c.Devices, c.Failures[0].Reason), Text: b.String()}
				s.Failures++
			}
			s.Tests++
			s.Cases = append(s.Cases, jc)
		}
		if len(rep.FaultErrors) > 0 {
			s.Errors = len(rep.FaultErrors)
			s.Out = "faults not applied:\n" + strings.Join(rep.FaultErrors, "\n")
		}
		doc.Tests += s.Tests
		doc.Failures += s.Failures
		total += rep.Duration
		doc.Suites = append(doc.Suites, s)
	}
	doc.Time = secs(total)
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
