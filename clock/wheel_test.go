package clock

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A fast wheel for tests: 100 µs ticks, so that a turn is 0.41 s and a
// 1 s wait goes round more than twice; waits from 10 ms are on it.
func testWheel() *Wheel {
	return NewWheel(WheelOptions{Tick: 100 * time.Microsecond, LongWait: 10 * time.Millisecond})
}

func (w *Wheel) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.armed == 0 && !w.driving
}

// Every wait fires once, none before its time, whether on the wheel (for
// one or more turns) or, when short, on a runtime timer; the wheel goes
// idle once nothing waits.
func TestWheelFiresEachWaitOnceNeverEarly(t *testing.T) {
	w := testWheel()
	waits := []time.Duration{0, time.Millisecond, 9 * time.Millisecond, // runtime timers
		10 * time.Millisecond, 37 * time.Millisecond, 200 * time.Millisecond, // within a turn
		409 * time.Millisecond, 410 * time.Millisecond, 1100 * time.Millisecond} // a turn and more
	type fire struct {
		i  int
		at time.Duration
	}
	fired := make(chan fire, 2*len(waits))
	start := time.Now()
	for i, d := range waits {
		w.AfterFunc(d, func() { fired <- fire{i, time.Since(start)} })
	}
	seen := map[int]bool{}
	for range waits {
		select {
		case f := <-fired:
			assert.False(t, seen[f.i], "wait %d fired twice", f.i)
			seen[f.i] = true
			assert.GreaterOrEqual(t, f.at, waits[f.i], "wait %d (%v) fired early", f.i, waits[f.i])
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d waits fired", len(seen), len(waits))
		}
	}
	require.Eventually(t, w.idle, 5*time.Second, time.Millisecond, "the wheel stops ticking when nothing waits")
	select {
	case f := <-fired:
		t.Fatalf("wait %d fired again", f.i)
	case <-time.After(50 * time.Millisecond):
	}
}

// Stop prevents the call and says so once; after the call it says false.
// Reset rearms a stopped or fired wait, moving it between the wheel and a
// runtime timer.
func TestWheelStopAndReset(t *testing.T) {
	w := testWheel()
	calls := make(chan string, 8)
	long := w.AfterFunc(50*time.Millisecond, func() { calls <- "long" })
	short := w.AfterFunc(time.Millisecond, func() { calls <- "short" })
	assert.True(t, long.Stop())
	assert.False(t, long.Stop(), "already stopped")
	assert.Equal(t, "short", <-calls)
	assert.False(t, short.Stop(), "already fired")
	require.Eventually(t, w.idle, 5*time.Second, time.Millisecond)

	// The short wait goes on the wheel, the long one on a runtime timer.
	start := time.Now()
	short.Reset(30 * time.Millisecond)
	long.Reset(2 * time.Millisecond)
	assert.Equal(t, "long", <-calls)
	assert.Equal(t, "short", <-calls)
	assert.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)

	// A Reset of an armed wait replaces it: one call, at the new time.
	start = time.Now()
	short.Reset(20 * time.Millisecond)
	short.Reset(60 * time.Millisecond)
	assert.Equal(t, "short", <-calls)
	assert.GreaterOrEqual(t, time.Since(start), 60*time.Millisecond)
	select {
	case c := <-calls:
		t.Fatalf("%s called again", c)
	case <-time.After(100 * time.Millisecond):
	}
	require.Eventually(t, w.idle, 5*time.Second, time.Millisecond)
}

// Under the race detector: many goroutines arm, stop and reset waits on
// one wheel at once; each call happens exactly when the wait was not
// stopped last.
func TestWheelConcurrentUse(t *testing.T) {
	w := testWheel()
	const workers, each = 8, 200
	var fired, kept atomic.Int64
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range each {
				tm := w.AfterFunc(time.Duration(5+r.IntN(40))*time.Millisecond, func() { fired.Add(1) })
				switch r.IntN(3) {
				case 0:
					if !tm.Stop() {
						kept.Add(1) // it had fired already
					}
				case 1:
					tm.Reset(time.Duration(10+r.IntN(30)) * time.Millisecond)
					kept.Add(1)
				default:
					kept.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool { return fired.Load() == kept.Load() && w.idle() }, 10*time.Second, time.Millisecond,
		"fired %d, want %d", fired.Load(), kept.Load())
}

func TestFleetClockIsScaledOnAWheel(t *testing.T) {
	c := Fleet(1000)
	assert.Equal(t, 1000.0, c.Scale())
	start := c.Now()
	fired := make(chan time.Time, 1)
	// 20 min at ×1000 is 1.2 s of real time: on the wheel.
	c.AfterFunc(20*time.Minute, func() { fired <- c.Now() })
	select {
	case at := <-fired:
		assert.GreaterOrEqual(t, at.Sub(start), 20*time.Minute)
	case <-time.After(20 * time.Second):
		t.Fatal("timer never fired")
	}
	tm := c.AfterFunc(time.Hour, func() { t.Error("stopped timer fired") })
	assert.True(t, tm.Stop())
}

// A wait more than a turn away waits on the coarse wheel and is visited
// once, when it is due, not once a turn: 200 waits of 2.5 s (six turns of
// the test wheel) are never passed over, and fire, none early.
func TestWheelFarWaitsAreNotVisitedEachTurn(t *testing.T) {
	w := testWheel()
	const n, wait = 200, 2500 * time.Millisecond
	var fired atomic.Int64
	var early atomic.Int64
	start := time.Now()
	for range n {
		w.AfterFunc(wait, func() {
			if time.Since(start) < wait {
				early.Add(1)
			}
			fired.Add(1)
		})
	}
	// Something near keeps the wheel ticking through every turn.
	var tick func()
	ticker := w.AfterFunc(20*time.Millisecond, func() { tick() })
	tick = func() { ticker.Reset(20 * time.Millisecond) }
	require.Eventually(t, func() bool { return fired.Load() == n }, 10*time.Second, 5*time.Millisecond)
	ticker.Stop()
	assert.Zero(t, early.Load(), "fired early")
	w.mu.Lock()
	passed := w.passed
	w.mu.Unlock()
	assert.Zero(t, passed, "far waits visited before their turn (one fine wheel would visit each once a turn: %d)", n*int(wait/(wheelSlots*100*time.Microsecond)))
}

// A wheel that falls behind by more than a turn (a stalled process) fires
// what came due in the gap and keeps the rest, coarse or fine, for their
// time: the gap is made by moving the wheel's origin back 3 s.
func TestWheelLateByTurns(t *testing.T) {
	w := testWheel()
	fired := make(chan string, 4)
	w.AfterFunc(time.Second, func() { fired <- "1s" })
	armed := time.Now() // the 4 s wait is due at or after this + 4 s of wheel time
	w.AfterFunc(4*time.Second, func() { fired <- "4s" })
	w.AfterFunc(50*time.Millisecond, func() { fired <- "50ms" })
	assert.Equal(t, "50ms", <-fired)
	w.mu.Lock()
	w.start = w.start.Add(-3 * time.Second)
	w.mu.Unlock()
	select {
	case f := <-fired:
		assert.Equal(t, "1s", f, "due in the gap: fired at the next tick")
	case <-time.After(5 * time.Second):
		t.Fatal("the wait due in the gap did not fire")
	}
	select {
	case f := <-fired:
		assert.Equal(t, "4s", f)
		// 3 s of its 4 went by in the shift: the last second is real time.
		assert.GreaterOrEqual(t, time.Since(armed), time.Second, "the 4 s wait fired early")
	case <-time.After(5 * time.Second):
		t.Fatal("the 4 s wait never fired")
	}
}
