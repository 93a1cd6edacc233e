package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Report is what `amtsim fleet --report` writes: one shard's run, or with
// MergedShards set, the sum of several (MergeReports).
type Report struct {
	Seed  uint64 `json:"seed"`
	Shard int    `json:"shard"`
	// Shards is how many shards the whole fleet has (0: not said).
	Shards int `json:"shards,omitempty"`
	// MergedShards are the shards a merged report adds up, and Missing
	// those of the whole fleet it lacks; both empty for one run.
	MergedShards []int `json:"merged_shards,omitempty"`
	Missing      []int `json:"missing_shards,omitempty"`
	// Failed are the merged shards whose own run was not OK.
	Failed []int `json:"failed_shards,omitempty"`
	Summary
	SCS *SCSSummary `json:"scs,omitempty"`
	// PeakRSS is the process's largest resident set over the run, in
	// bytes (0: not measured); a merge adds the shards', each its own
	// process.
	PeakRSS uint64 `json:"peak_rss_bytes,omitempty"`
	OK      bool   `json:"ok"`
	// Interrupted is set when SIGINT or SIGTERM ended the run; Phase says
	// where it was: setup, boot or provisioning.
	Interrupted bool   `json:"interrupted,omitempty"`
	Phase       string `json:"phase"`
}

// Phases of a run, in order.
var phases = []string{"setup", "boot", "provisioning"}

// ParseReport reads a report as Report's JSON, strictly: an unknown
// field, a sketch out of shape or counts that disagree are errors.
func ParseReport(b []byte) (Report, error) {
	var r Report
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Report{}, fmt.Errorf("report: %w", err)
	}
	if dec.More() {
		return Report{}, errors.New("report: more than one JSON value")
	}
	if err := r.validate(); err != nil {
		return Report{}, fmt.Errorf("report: %w", err)
	}
	return r, nil
}

func (r *Report) validate() error {
	if r.Devices < 0 || r.Provisioned < 0 || r.Provisioned > r.Devices {
		return fmt.Errorf("%d of %d devices provisioned", r.Provisioned, r.Devices)
	}
	if r.Shard < 0 || r.Shards < 0 {
		return fmt.Errorf("shard %d of %d", r.Shard, r.Shards)
	}
	if !slices.Contains(phases, r.Phase) {
		return fmt.Errorf("phase %q: want one of %v", r.Phase, phases)
	}
	if err := checkLatency("boot_to_provisioned", r.BootToProvisioned); err != nil {
		return err
	}
	if int64(r.Provisioned) != r.BootToProvisioned.Count {
		return fmt.Errorf("%d provisioned but %d boot → provisioned latencies", r.Provisioned, r.BootToProvisioned.Count)
	}
	if r.Phases != nil {
		for _, ph := range r.Phases.each() {
			if err := checkLatency("phases."+ph.name, *ph.l); err != nil {
				return err
			}
			if ph.l.Count > int64(r.Provisioned) {
				return fmt.Errorf("phases.%s: %d latencies of %d provisioned devices", ph.name, ph.l.Count, r.Provisioned)
			}
		}
	}
	if r.SCS != nil {
		return checkLatency("scs.session", r.SCS.Session)
	}
	return nil
}

func checkLatency(name string, l Latency) error {
	if l.Count < 0 {
		return fmt.Errorf("%s: count %d", name, l.Count)
	}
	if l.Count == 0 {
		return nil
	}
	if l.Sketch == nil {
		return fmt.Errorf("%s: %d latencies and no sketch to merge them by (a report from before sketches?)", name, l.Count)
	}
	if err := l.Sketch.Validate(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if n := l.Sketch.Count(); n != l.Count {
		return fmt.Errorf("%s: count %d but the sketch holds %d", name, l.Count, n)
	}
	return nil
}

// shards are the shards r covers.
func (r *Report) shards() []int {
	if len(r.MergedShards) > 0 {
		return r.MergedShards
	}
	return []int{r.Shard}
}

// MergeReports adds reports of one fleet's shards: counts add, elapsed
// time is the longest, and percentiles are read from the merged sketch
// (within SketchAccuracy of the union's). The shards must be distinct and
// of one seed. The merge is OK when no shard's run failed and, where the
// whole fleet's shard count is known, none is missing.
func MergeReports(rs []Report) (Report, error) {
	if len(rs) == 0 {
		return Report{}, errors.New("merge: no reports")
	}
	out := Report{Seed: rs[0].Seed, Shards: rs[0].Shards, Phase: phases[len(phases)-1],
		Summary: Summary{States: map[string]int64{}}}
	seen := map[int]int{}
	var boot, session []Latency
	var phaseLat [4][]Latency
	scs, phased := true, true
	for k, r := range rs {
		if err := r.validate(); err != nil {
			return Report{}, fmt.Errorf("merge: report %d: %w", k+1, err)
		}
		if r.Seed != out.Seed {
			return Report{}, fmt.Errorf("merge: report %d has seed %d, report 1 seed %d: not one fleet", k+1, r.Seed, out.Seed)
		}
		if r.Shards != out.Shards {
			return Report{}, fmt.Errorf("merge: report %d says %d shards, report 1 says %d", k+1, r.Shards, out.Shards)
		}
		for _, s := range r.shards() {
			if j, dup := seen[s]; dup {
				return Report{}, fmt.Errorf("merge: shard %d is in reports %d and %d", s, j, k+1)
			}
			seen[s] = k + 1
			out.MergedShards = append(out.MergedShards, s)
		}
		out.Devices += r.Devices
		out.Provisioned += r.Provisioned
		out.PeakRSS += r.PeakRSS
		out.ElapsedMS = max(out.ElapsedMS, r.ElapsedMS)
		for s, n := range r.States {
			out.States[s] += n
		}
		out.Counts = addCounts(out.Counts, r.Counts)
		switch {
		case r.Uplink == nil:
		case out.Uplink == nil:
			u := *r.Uplink
			out.Uplink = &u
		default:
			u := out.Uplink.Add(*r.Uplink)
			out.Uplink = &u
		}
		for _, u := range r.Unprovisioned {
			if len(out.Unprovisioned) < 20 {
				out.Unprovisioned = append(out.Unprovisioned, u)
			}
		}
		boot = append(boot, r.BootToProvisioned)
		if r.Phases == nil {
			phased = false
		} else {
			for k, ph := range r.Phases.each() {
				phaseLat[k] = append(phaseLat[k], *ph.l)
			}
		}
		if r.SCS == nil {
			scs = false
		} else {
			session = append(session, r.SCS.Session)
		}
		switch {
		case len(r.MergedShards) > 0:
			out.Failed = append(out.Failed, r.Failed...)
		case !r.OK:
			out.Failed = append(out.Failed, r.Shard)
		}
		out.Interrupted = out.Interrupted || r.Interrupted
		if slices.Index(phases, r.Phase) < slices.Index(phases, out.Phase) {
			out.Phase = r.Phase
		}
	}
	slices.Sort(out.MergedShards)
	out.Shard = out.MergedShards[0]
	for s := 0; s < out.Shards; s++ {
		if _, ok := seen[s]; !ok {
			out.Missing = append(out.Missing, s)
		}
	}
	slices.Sort(out.Failed)
	out.OK = len(out.Failed) == 0 && len(out.Missing) == 0
	if out.ElapsedMS > 0 {
		out.PerSecond = math.Round(float64(out.Provisioned)/(out.ElapsedMS/1000)*10) / 10
	}
	var err error
	if out.BootToProvisioned, err = mergeLatency(boot); err != nil {
		return Report{}, fmt.Errorf("merge: boot_to_provisioned: %w", err)
	}
	// Phases only when every shard measured them (a report from before
	// them has none).
	if phased {
		out.Phases = &Phases{}
		for k, ph := range out.Phases.each() {
			if *ph.l, err = mergeLatency(phaseLat[k]); err != nil {
				return Report{}, fmt.Errorf("merge: phases.%s: %w", ph.name, err)
			}
		}
	}
	if scs {
		s := SCSSummary{Failures: map[string]map[string]int{}}
		for _, r := range rs {
			s.add(r.SCS)
		}
		if s.Session, err = mergeLatency(session); err != nil {
			return Report{}, fmt.Errorf("merge: scs.session: %w", err)
		}
		out.SCS = &s
	}
	return out, nil
}

func addCounts(a, b Counts) Counts {
	return Counts{HellosSent: a.HellosSent + b.HellosSent, HellosFailed: a.HellosFailed + b.HellosFailed,
		DHCPFailures: a.DHCPFailures + b.DHCPFailures, DNSFailures: a.DNSFailures + b.DNSFailures,
		DNSQueries:  a.DNSQueries + b.DNSQueries,
		TLSFailures: a.TLSFailures + b.TLSFailures, AuthFailures: a.AuthFailures + b.AuthFailures,
		NegotiateFailures: a.NegotiateFailures + b.NegotiateFailures, BadRequests: a.BadRequests + b.BadRequests}
}

func (s *SCSSummary) add(o *SCSSummary) {
	s.Hellos += o.Hellos
	s.Unknown += o.Unknown
	s.Duplicates += o.Duplicates
	s.Dropped += o.Dropped
	s.Refused += o.Refused
	s.Sessions += o.Sessions
	s.Provisioned += o.Provisioned
	s.Failed += o.Failed
	s.Aborted += o.Aborted
	s.Redrawn += o.Redrawn
	for step, m := range o.Failures {
		if s.Failures[step] == nil {
			s.Failures[step] = map[string]int{}
		}
		for reason, n := range m {
			s.Failures[step][reason] += n
		}
	}
}

// mergeLatency merges latencies by their sketches.
func mergeLatency(ls []Latency) (Latency, error) {
	var out Latency
	for _, l := range ls {
		if l.Count == 0 {
			continue
		}
		out.Count += l.Count
		out.Max = max(out.Max, l.Max)
		if out.Sketch == nil {
			c := *l.Sketch
			c.Bins = slices.Clone(c.Bins)
			out.Sketch = &c
		} else if err := out.Sketch.Merge(l.Sketch); err != nil {
			return Latency{}, err
		}
	}
	if out.Count == 0 {
		return out, nil
	}
	for _, p := range []struct {
		q float64
		v *float64
	}{{0.50, &out.P50}, {0.95, &out.P95}, {0.99, &out.P99}} {
		v, err := out.Sketch.Quantile(p.q)
		if err != nil {
			return Latency{}, err
		}
		// No quantile is above the largest value seen.
		*p.v = min(math.Round(v*100)/100, out.Max)
	}
	return out, nil
}

// DeviceReport is one device's line in `amtsim fleet --device-list`.
type DeviceReport struct {
	Index int    `json:"index"`
	Shard int    `json:"shard"`
	Host  string `json:"host"`
	MAC   string `json:"mac"`
	UUID  string `json:"uuid"`
	PID   string `json:"pid"` // the factory PID the device was readied with
	State string `json:"state"`
	// BootToProvisionedMS is set once the device is provisioned; the
	// milestones before it, from power-on too, once reached: the first
	// address, the first Hello, the start of the last session.
	BootToProvisionedMS float64 `json:"boot_to_provisioned_ms,omitempty"`
	BootToAddressMS     float64 `json:"boot_to_address_ms,omitempty"`
	BootToHelloMS       float64 `json:"boot_to_hello_ms,omitempty"`
	BootToSessionMS     float64 `json:"boot_to_session_ms,omitempty"`
}

// DeviceReports lists every device as it stands now.
func (f *Fleet) DeviceReports() []DeviceReport {
	out := make([]DeviceReport, len(f.devs))
	for i, id := range f.ids {
		t := &f.track[i]
		t.mu.Lock()
		out[i] = DeviceReport{Index: id.Index, Shard: id.Shard, Host: id.HostName, MAC: id.MAC.String(), UUID: id.UUID.String(), PID: id.PID, State: t.state}
		if t.booted > 0 {
			from := func(at time.Duration) float64 {
				if at < t.booted {
					return 0
				}
				return ms(at - t.booted)
			}
			out[i].BootToAddressMS, out[i].BootToHelloMS, out[i].BootToSessionMS = from(t.addressed), from(t.hello), from(t.session)
			out[i].BootToProvisionedMS = from(t.provisioned)
		}
		t.mu.Unlock()
	}
	return out
}
