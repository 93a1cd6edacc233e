package measure

import (
	"bytes"
	"runtime/metrics"
	"runtime/pprof"
	"time"
)

// Peaks is the largest each of the runtime's memory classes came to while
// a run went on: what its peak RSS is made of. Live is the heap the last
// collection found reachable; Objects adds what is unswept or not yet
// collected; Stacks is goroutine stacks; Mapped is all the runtime holds
// from the OS less what it gave back, the runtime's share of RSS.
type Peaks struct {
	Live, Objects, Stacks, Mapped uint64
	// Profile is the heap profile taken when Live was last a tenth above
	// the one before, when asked for: what the peak live heap holds.
	Profile []byte
}

// PeakWatch samples the memory classes at a fixed period until stopped.
type PeakWatch struct {
	stop, done chan struct{}
	samples    []metrics.Sample
	profile    bool
	profiled   uint64 // the live heap of the kept profile
	p          Peaks  // the goroutine's until done is closed
}

var peakMetrics = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
}

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
	go func() {
		defer close(w.done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			w.sample()
			select {
			case <-w.stop:
				w.sample()
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *PeakWatch) sample() {
	metrics.Read(w.samples)
	v := func(i int) uint64 {
		if w.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return w.samples[i].Value.Uint64()
	}
	live := v(0)
	w.p.Live, w.p.Objects, w.p.Stacks = max(w.p.Live, live), max(w.p.Objects, v(1)), max(w.p.Stacks, v(2))
	w.p.Mapped = max(w.p.Mapped, v(3)-min(v(3), v(4)))
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
