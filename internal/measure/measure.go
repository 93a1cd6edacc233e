// Package measure holds what the benchmarks share to report memory and CPU
// per device.
package measure

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// HeapAfterGC returns the live heap once garbage has been collected.
func HeapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// CPUTime is the process's user plus system CPU time so far.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcessCPUTime is another process's user plus system CPU time so far, all
// its threads included, from /proc/PID/stat (in USER_HZ ticks, 100 per
// second on Linux: measure over seconds, not milliseconds).
func ProcessCPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("measure: cpu time of process %d: %w", pid, err)
	}
	// The command name in field 2 may hold spaces; fields count from the
	// closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("measure: /proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("measure: /proc/%d/stat: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("measure: /proc/%d/stat: %w", pid, err)
	}
	const userHZ = 100
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// CPUByLabel sums a CPU profile's samples (pprof format, as
// runtime/pprof.StartCPUProfile writes) by the value of one label; samples
// without it add up under "". With within set, only samples whose stack runs
// a function whose name contains it count: how much of each side's CPU went
// to, say, "crypto/rsa.".
func CPUByLabel(prof []byte, key, within string) (map[string]time.Duration, error) {
	p, err := profile.ParseData(prof)
	if err != nil {
		return nil, fmt.Errorf("measure: parse CPU profile: %w", err)
	}
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			idx = i
		}
	}
	if idx < 0 {
		return nil, errors.New("measure: CPU profile without a cpu sample type")
	}
	out := map[string]time.Duration{}
	for _, s := range p.Sample {
		if within != "" && !runs(s, within) {
			continue
		}
		v := ""
		if l := s.Label[key]; len(l) > 0 {
			v = l[0]
		}
		out[v] += time.Duration(s.Value[idx])
	}
	return out, nil
}

// runs reports whether any frame of s is in a function whose name contains
// name.
func runs(s *profile.Sample, name string) bool {
	for _, loc := range s.Location {
		for _, line := range loc.Line {
			if line.Function != nil && strings.Contains(line.Function.Name, name) {
				return true
			}
		}
	}
	return false
}

// ReportCPUSplit reports what a benchmark measured for n operations (say
// provisionings): the rate over wall as rate (say "provisionings/s"),
// process CPU per operation, and that CPU split by the "amtsim" profile
// label of prof (device, scs, and other for samples without it: the shared
// netstack, the LAN, the runtime), with the device's share of the SCS's;
// per-operation metrics end in "/"+op (say "prov"). With AMTSIM_PROFILE
// set, the profile is written there too, for go tool pprof; a "{}" in that
// path is replaced by the benchmark's name, so that every size of one run
// keeps its own profile. It returns the
// CPU per operation, all and the device's.
func ReportCPUSplit(b *testing.B, prof []byte, n int, rate, op string, wall, cpu time.Duration) (perOp, devicePerOp time.Duration) {
	b.Helper()
	if path := ProfilePath(b.Name()); path != "" {
		if err := os.WriteFile(path, prof, 0o644); err != nil {
			b.Error(err)
		}
	}
	by, err := CPUByLabel(prof, "amtsim", "")
	if err != nil {
		b.Fatal(err)
	}
	// RSA private-key work is the floor of both sides: the device decrypts
	// the verification handshake's premaster secret, the SCS's CA signs the
	// certificate. Reported apart so the rest can be compared.
	rsa, err := CPUByLabel(prof, "amtsim", "crypto/rsa.")
	if err != nil {
		b.Fatal(err)
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	perOp, devicePerOp = cpu/time.Duration(n), by["device"]/time.Duration(n)
	b.ReportMetric(float64(n)/wall.Seconds(), rate)
	b.ReportMetric(per(cpu), "cpu-µs/"+op)
	b.ReportMetric(per(by["device"]), "device-cpu-µs/"+op)
	b.ReportMetric(per(by["scs"]), "scs-cpu-µs/"+op)
	b.ReportMetric(per(by[""]), "other-cpu-µs/"+op)
	if by["scs"] > 0 {
		b.ReportMetric(float64(by["device"])/float64(by["scs"])*100, "device/scs-%")
	}
	if rsa["device"]+rsa["scs"] == 0 {
		return perOp, devicePerOp
	}
	b.ReportMetric(per(rsa["device"]), "device-rsa-cpu-µs/"+op)
	b.ReportMetric(per(rsa["scs"]), "scs-rsa-cpu-µs/"+op)
	if rest := by["scs"] - rsa["scs"]; rest > 0 {
		b.ReportMetric(float64(by["device"]-rsa["device"])/float64(rest)*100, "device/scs-without-rsa-%")
	}
	return perOp, devicePerOp
}

// PeakRSS is the process's largest resident set so far, in bytes
// (getrusage's ru_maxrss, which Linux gives in KiB).
func PeakRSS() (uint64, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("measure: peak RSS: %w", err)
	}
	return uint64(ru.Maxrss) * 1024, nil
}

// ProfilePath is where AMTSIM_PROFILE asks a benchmark named name to write
// its CPU profile, "" when unset; "{}" in it stands for the name, with the
// slashes of sub-benchmarks made dashes.
func ProfilePath(name string) string { return profilePath("AMTSIM_PROFILE", name) }

// HeapProfilePath is ProfilePath for AMTSIM_HEAP_PROFILE, where a
// benchmark writes the heap profile of what it keeps live.
func HeapProfilePath(name string) string { return profilePath("AMTSIM_HEAP_PROFILE", name) }

func profilePath(env, name string) string {
	return strings.ReplaceAll(os.Getenv(env), "{}", strings.ReplaceAll(name, "/", "-"))
}
