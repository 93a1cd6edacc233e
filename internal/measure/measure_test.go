package measure

import (
	"bytes"
	"context"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A child that spins for a while has used about that much CPU; one that
// sleeps has used almost none.
func TestProcessCPUTime(t *testing.T) {
	spin := exec.Command("sh", "-c", "while :; do :; done")
	require.NoError(t, spin.Start())
	defer func() { _ = spin.Process.Kill(); _ = spin.Wait() }()
	sleep := exec.Command("sleep", "5")
	require.NoError(t, sleep.Start())
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()

	time.Sleep(600 * time.Millisecond)
	busy, err := ProcessCPUTime(spin.Process.Pid)
	require.NoError(t, err)
	idle, err := ProcessCPUTime(sleep.Process.Pid)
	require.NoError(t, err)
	assert.Greater(t, busy, 200*time.Millisecond, "a spinning shell")
	assert.Less(t, busy, 2*time.Second)
	assert.Less(t, idle, 100*time.Millisecond, "a sleeping process")

	_, err = ProcessCPUTime(os.Getpid() + 1<<22)
	assert.Error(t, err, "no such process")
}

// burn runs spin in a frame of its own, for CPUByLabel's within.
//
//go:noinline
func burn(spin func(int), n int) { spin(n) }

// Work done under a label is counted under it, apart from the rest. The
// work is counted in steps, not in wall time, so that a busy machine
// (CI runs packages side by side) changes how long it takes but not the
// shares.
func TestCPUByLabel(t *testing.T) {
	var sink uint64
	spin := func(n int) {
		x := uint64(88172645463325252)
		for range n { // xorshift: registers only, nothing for the race detector
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
		sink += x
	}
	const unit = 40_000_000 // a few tens of milliseconds of CPU
	var buf bytes.Buffer
	require.NoError(t, pprof.StartCPUProfile(&buf))
	pprof.Do(context.Background(), pprof.Labels("side", "a"), func(context.Context) {
		spin(unit)
		burn(spin, 3*unit)
	})
	spin(unit)
	pprof.StopCPUProfile()
	by, err := CPUByLabel(buf.Bytes(), "side", "")
	require.NoError(t, err)
	require.Greater(t, by["a"], 50*time.Millisecond, "enough samples to compare")
	assert.Greater(t, by["a"], 2*by[""], "four times the work under the label")
	in, err := CPUByLabel(buf.Bytes(), "side", "measure.burn")
	require.NoError(t, err)
	assert.Greater(t, in["a"], by["a"]/2, "burn's share of the label is three quarters")
	assert.Less(t, in["a"], by["a"], "the label's spin outside burn is left out")
	assert.Zero(t, in[""], "no burn outside the label")
	assert.NotZero(t, sink)
	_, err = CPUByLabel([]byte("not a profile"), "side", "")
	assert.Error(t, err)
}

// The watch sees a heap that grew and was let go again: its peak live heap
// is at least what was held, although the heap after is far smaller.
func TestWatchPeaks(t *testing.T) {
	runtime.GC()
	w := WatchPeaks(time.Millisecond, true)
	const held = 64 << 20
	hold := make([][]byte, 0, held>>16)
	for range held >> 16 {
		hold = append(hold, make([]byte, 1<<16))
	}
	runtime.GC() // the live heap is what a finished collection found
	runtime.GC()
	p := w.Stop()
	runtime.KeepAlive(hold)
	hold = nil
	assert.GreaterOrEqual(t, p.Live, uint64(held))
	// Objects include the live heap, give or take the runtime's rounding
	// between two metrics of one read (CI once saw 288 bytes less).
	assert.GreaterOrEqual(t, p.Objects+64<<10, p.Live)
	assert.GreaterOrEqual(t, p.Mapped, p.Objects)
	assert.Positive(t, p.Stacks)
	assert.NotEmpty(t, p.Profile, "a heap profile at the peak")
	// The totals are the watch's own: what it saw allocated and collected.
	assert.GreaterOrEqual(t, p.Allocated, uint64(held))
	assert.Less(t, p.Allocated, uint64(4*held))
	assert.GreaterOrEqual(t, p.Cycles, uint64(2))
	assert.Positive(t, p.GCCPU)
	assert.Less(t, HeapAfterGC(), uint64(held/2), "the heap after is small: the peak is the watch's")
}

// Goroutines that outnumber the processors wait to run: spinning ones on
// one processor wait out each other's time slices (the scheduler preempts
// at 10 ms), so the watch sees a long scheduling latency and runnable
// goroutines at its samples, and the latency is the watch's own: one that
// ended before it began is not counted.
func TestWatchPeaksSchedulingLatency(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	spin := func(n int, d time.Duration) {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				for end := time.Now().Add(d); time.Now().Before(end); {
				}
			})
		}
		wg.Wait()
	}
	// Before the watch, twenty spinners wait about 200 ms each time: not
	// the watch's to count.
	spin(20, 400*time.Millisecond)
	w := WatchPeaks(time.Millisecond, false)
	quiet := w.Stop()
	assert.Less(t, quiet.SchedMax, 50*time.Millisecond, "a watch over nothing saw %v", quiet.SchedMax)

	w = WatchPeaks(time.Millisecond, false)
	spin(4, 300*time.Millisecond)
	p := w.Stop()
	assert.GreaterOrEqual(t, p.SchedMax, 10*time.Millisecond, "spinners wait out each other's slices")
	assert.GreaterOrEqual(t, p.SchedMax, p.SchedP99)
	assert.Positive(t, p.SchedP99)
	assert.GreaterOrEqual(t, p.Runnable, uint64(2), "spinners waiting at a sample")
}

// A quantile is the upper bound of the bucket it falls in; the open last
// bucket gives its lower bound.
func TestHistQuantile(t *testing.T) {
	b := []float64{0, 0.001, 0.01, 0.1, 1, math.Inf(1)}
	h := hist{counts: []uint64{0, 98, 1, 1, 0}, buckets: b}
	assert.Equal(t, 10*time.Millisecond, h.quantile(0.5))
	assert.Equal(t, 10*time.Millisecond, h.quantile(0.98))
	assert.Equal(t, 100*time.Millisecond, h.quantile(0.99))
	assert.Equal(t, time.Second, h.quantile(1))
	open := hist{counts: []uint64{1, 0, 0, 0, 1}, buckets: b}
	assert.Equal(t, time.Second, open.quantile(1), "the open bucket's lower bound")
	assert.Zero(t, hist{}.quantile(0.99))
}
