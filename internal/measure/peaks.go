package measure

import (
	"bytes"
	"math"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"time"
)

// Peaks is the largest each of the runtime's memory classes came to while
// a run went on: what its peak RSS is made of. Live is the heap the last
// collection found reachable; Objects adds what is unswept or not yet
// collected; Stacks is goroutine stacks; Mapped is all the runtime holds
// from the OS less what it gave back, the runtime's share of RSS.
type Peaks struct {
	Live, Objects, Stacks, Mapped uint64
	// What the run cost the collector, from WatchPeaks to Stop: the heap
	// it allocated, the collections, and the CPU they took (marking,
	// assists, idle marking and sweeping, from runtime/metrics' estimate).
	Allocated, Cycles uint64
	GCCPU             time.Duration
	// Profile is the heap profile taken when Live was last a tenth above
	// the one before, when asked for: what the peak live heap holds.
	Profile []byte
	// How long goroutines waited to run, from WatchPeaks to Stop: the
	// scheduler's latency at the 99th percentile and at its largest (the
	// upper bound of the histogram's highest bucket hit), the most
	// goroutines runnable at one sample, and the longest stop-the-world
	// pause for the collector. A wait for a network answer that times out
	// under load shows here as a long scheduling latency first.
	SchedP99, SchedMax, GCPauseMax time.Duration
	Runnable                       uint64
}

// PeakWatch samples the memory classes at a fixed period until stopped.
type PeakWatch struct {
	stop, done chan struct{}
	samples    []metrics.Sample
	profile    bool
	profiled   uint64           // the live heap of the kept profile
	first      []metrics.Sample // the totals at WatchPeaks
	p          Peaks            // the goroutine's until done is closed
}

var peakMetrics = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	// Totals, read at the start and the end.
	"/gc/heap/allocs:bytes",
	"/gc/cycles/total:gc-cycles",
	"/cpu/classes/gc/total:cpu-seconds",
	// Histograms since the process began, read at the start and the end.
	"/sched/latencies:seconds",
	"/sched/pauses/total/gc:seconds",
	// Sampled for its peak, like the memory classes.
	"/sched/goroutines/runnable:goroutines",
}

// Where the totals, the histograms and the runnable count are in
// peakMetrics.
const (
	totalsFrom   = 5
	schedLatency = 8
	gcPauses     = 9
	runnable     = 10
)

// WatchPeaks samples every period (a read of runtime/metrics, a few µs)
// until Stop. With profile set it also keeps a heap profile of the largest
// live heap, retaken each time that grows by a tenth, so at most a few
// dozen times in a run.
func WatchPeaks(period time.Duration, profile bool) *PeakWatch {
	w := &PeakWatch{stop: make(chan struct{}), done: make(chan struct{}), profile: profile,
		samples: make([]metrics.Sample, len(peakMetrics))}
	for i, name := range peakMetrics {
		w.samples[i].Name = name
	}
	// A read of its own: Read refills a histogram in place, so a clone of
	// w.samples would change with it.
	w.first = slices.Clone(w.samples)
	metrics.Read(w.first)
	go func() {
		defer close(w.done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			w.sample()
			select {
			case <-w.stop:
				w.sample()
				w.p.Allocated = uintOf(w.samples[totalsFrom]) - uintOf(w.first[totalsFrom])
				w.p.Cycles = uintOf(w.samples[totalsFrom+1]) - uintOf(w.first[totalsFrom+1])
				w.p.GCCPU = time.Duration((floatOf(w.samples[totalsFrom+2]) - floatOf(w.first[totalsFrom+2])) * float64(time.Second))
				lat := histDelta(w.first[schedLatency], w.samples[schedLatency])
				w.p.SchedP99, w.p.SchedMax = lat.quantile(0.99), lat.quantile(1)
				w.p.GCPauseMax = histDelta(w.first[gcPauses], w.samples[gcPauses]).quantile(1)
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func uintOf(s metrics.Sample) uint64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}

func floatOf(s metrics.Sample) float64 {
	if s.Value.Kind() != metrics.KindFloat64 {
		return 0
	}
	return s.Value.Float64()
}

// hist is a runtime/metrics histogram's counts over an interval.
type hist struct {
	counts  []uint64
	buckets []float64 // len(counts)+1 boundaries, in seconds
}

// histDelta is what a cumulative histogram counted between two reads of
// it (an empty hist if either is not a histogram). The two must not share
// a histogram: metrics.Read refills one in place.
func histDelta(from, to metrics.Sample) hist {
	if from.Value.Kind() != metrics.KindFloat64Histogram || to.Value.Kind() != metrics.KindFloat64Histogram {
		return hist{}
	}
	a, b := from.Value.Float64Histogram(), to.Value.Float64Histogram()
	if len(a.Counts) != len(b.Counts) {
		return hist{}
	}
	h := hist{counts: make([]uint64, len(b.Counts)), buckets: b.Buckets}
	for i := range b.Counts {
		h.counts[i] = b.Counts[i] - a.Counts[i]
	}
	return h
}

// quantile is the upper bound of the bucket that holds the q-th quantile
// (0 < q <= 1) of what h counted, so never below the value; for the
// bucket open to infinity it is that bucket's lower bound.
func (h hist) quantile(q float64) time.Duration {
	var total uint64
	for _, c := range h.counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank && c > 0 {
			hi := h.buckets[i+1]
			if math.IsInf(hi, 1) {
				hi = h.buckets[i]
			}
			return time.Duration(hi * float64(time.Second))
		}
	}
	return 0
}

func (w *PeakWatch) sample() {
	metrics.Read(w.samples)
	v := func(i int) uint64 { return uintOf(w.samples[i]) }
	live := v(0)
	w.p.Live, w.p.Objects, w.p.Stacks = max(w.p.Live, live), max(w.p.Objects, v(1)), max(w.p.Stacks, v(2))
	w.p.Mapped = max(w.p.Mapped, v(3)-min(v(3), v(4)))
	w.p.Runnable = max(w.p.Runnable, v(runnable))
	if w.profile && live > w.profiled+w.profiled/10 {
		var b bytes.Buffer
		if err := pprof.Lookup("heap").WriteTo(&b, 0); err == nil {
			w.p.Profile, w.profiled = b.Bytes(), live
		}
	}
}

// Stop ends the sampling and returns the peaks, the last sample included.
func (w *PeakWatch) Stop() Peaks {
	close(w.stop)
	<-w.done
	return w.p
}
