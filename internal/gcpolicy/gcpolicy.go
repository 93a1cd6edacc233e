// Package gcpolicy sets the garbage collector for amtsim's long runs.
//
// A fleet or an SCS under load allocates a little per packet and per
// message and keeps a large, steady heap (the devices). Go's default
// (GOGC=100) then spends a quarter of the process's CPU collecting
// (BenchmarkFleetProvisioning measured "other" at ~3,000 µs per
// provisioning with it, ~2,200 with 400). Throughput trades memory for that
// CPU and bounds the memory with a soft limit, so that a 100,000-device
// fleet still collects before it outgrows the machine.
package gcpolicy

import (
	"fmt"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
)

// ThroughputPercent is the GOGC that Throughput sets.
const ThroughputPercent = 400

// Policy is what Throughput set, and what it replaced.
type Policy struct {
	Percent int   // the GC percent in force
	Limit   int64 // the soft memory limit in force, bytes (math.MaxInt64: none)
	// FromEnv is true for a setting the environment gave (GOGC,
	// GOMEMLIMIT), which Throughput leaves as it is.
	PercentFromEnv, LimitFromEnv bool

	prevPercent int
	prevLimit   int64
}

// Throughput raises the GC percent to ThroughputPercent and sets a soft
// memory limit of three quarters of the memory the process may use (the
// smaller of the machine's RAM and its cgroup's limit), unless GOGC or
// GOMEMLIMIT say otherwise: what a user set is kept. getenv is os.Getenv
// outside tests.
func Throughput(getenv func(string) string) (*Policy, error) {
	return ThroughputWithin(getenv, 0)
}

// ThroughputWithin is Throughput with the soft limit lowered to budget
// bytes (0: no lower than Throughput's), for a run that must stay within
// a memory budget. The collector then runs more often as the heap nears
// it: BenchmarkFleetProvisioning at 100,000 devices under 6,000 MiB (63
// KB of peak RSS per device) spent 1,083 µs of CPU per provisioning
// collecting against 171–206 µs under Throughput's limit, 20–30% more
// CPU in all. GOMEMLIMIT in the environment still wins.
func ThroughputWithin(getenv func(string) string, budget int64) (*Policy, error) {
	p := &Policy{PercentFromEnv: getenv("GOGC") != "", LimitFromEnv: getenv("GOMEMLIMIT") != ""}
	var limit int64 = -1 // -1 reads the limit without changing it
	if !p.LimitFromEnv {
		// Without a bound on memory a higher GOGC is not safe: nothing is
		// changed when the size of memory is unknown.
		avail, err := Available()
		if err != nil {
			return nil, fmt.Errorf("gcpolicy: %w", err)
		}
		limit = avail / 4 * 3
		if budget > 0 {
			limit = min(limit, budget)
		}
	}
	p.prevLimit = debug.SetMemoryLimit(limit)
	p.Limit = debug.SetMemoryLimit(-1)
	if p.PercentFromEnv {
		p.prevPercent = debug.SetGCPercent(-1)
		debug.SetGCPercent(p.prevPercent)
		p.Percent = p.prevPercent
	} else {
		p.prevPercent = debug.SetGCPercent(ThroughputPercent)
		p.Percent = ThroughputPercent
	}
	return p, nil
}

// Restore puts back the settings Throughput replaced.
func (p *Policy) Restore() {
	debug.SetGCPercent(p.prevPercent)
	debug.SetMemoryLimit(p.prevLimit)
}

// String is the policy in GOGC/GOMEMLIMIT terms, for logs.
func (p *Policy) String() string {
	if p.Limit == math.MaxInt64 {
		return fmt.Sprintf("GOGC=%d GOMEMLIMIT=off", p.Percent)
	}
	return fmt.Sprintf("GOGC=%d GOMEMLIMIT=%dMiB", p.Percent, p.Limit>>20)
}

// parseCgroupMax reads a cgroup v2 memory.max: a byte count, or "max" for
// no limit (ok false).
func parseCgroupMax(b []byte) (n int64, ok bool, err error) {
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false, nil
	}
	n, err = strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, false, fmt.Errorf("want a positive byte count or \"max\", have %q", s)
	}
	return n, true, nil
}
