package clock

import (
	"sync"
	"time"

	"github.com/amtsim/amtsim/internal/workers"
)

// Wheel is a coarse timer wheel for the long waits of many devices: a
// Hello a minute away, a DHCP renewal hours away, a TCP TIME_WAIT or
// keepalive. Each such wait on a runtime timer is one entry in the
// scheduler's timer heap, and the runtime walks that whole heap whenever a
// timer that was moved comes due ((*timers).adjust: 21% of all CPU, 4.7 ms
// per provisioning, in a 100,000-device BenchmarkFleetProvisioning). On the
// wheel they cost the heap one timer, the wheel's own tick.
//
// Waits of at least LongWait (by default) go on the wheel and fire at its
// first tick at or after their time: never early, at most Tick late (0.5%
// of a LongWait by default). Shorter ones keep runtime timers, whose
// precision they need (a retransmission, a scaled clock's quick schedule).
//
// The wheel holds 1<<wheelBits slots of Tick each, a turn (20.5 s at the
// default Tick). A wait more than a turn away waits instead on a coarse
// wheel of 1<<farBits slots of a turn each (87 minutes at the default),
// and moves to the fine one when its turn begins, so a tick visits only
// the waits due in it. A wait farther than the coarse wheel's round is
// visited once a round (a 12-hour lease's renewal: 8 times). At 100,000
// devices the waits of minutes passed over once a turn were 1.4% of all
// CPU (BenchmarkFleetSustainedRate, clock.(*Wheel).advance), each visit a
// cache miss. The tick runs only while waits are armed: an idle wheel has
// no timer and no goroutine.
type Wheel struct {
	tick, long time.Duration
	start      time.Time // the monotonic origin of tick numbers

	mu      sync.Mutex
	slots   [wheelSlots]*WheelTimer // each a circular doubly-linked list
	far     [farSlots]*WheelTimer   // waits of later turns, by turn
	passed  uint64                  // waits visited before they were due (a test reads it)
	done    uint64                  // ticks whose slots have been served
	armed   int                     // waits on the wheel
	driver  *time.Timer             // the tick, while armed > 0
	driving bool

	// workers run what comes due, each on a goroutine kept for the next
	// (a Hello slot grows its stack down gVisor's call chain).
	workers *workers.Pool
}

// WheelOptions configure a Wheel.
type WheelOptions struct {
	// Tick is the wheel's resolution; default DefaultTick.
	Tick time.Duration
	// LongWait is the shortest wait put on the wheel; default LongWait.
	// Keep it at least 100 ticks, so that the wheel's lateness stays a
	// small part of every wait on it.
	LongWait time.Duration
}

const (
	wheelBits  = 12
	wheelSlots = 1 << wheelBits
	farBits    = 8
	farSlots   = 1 << farBits
	// DefaultTick is a Wheel's resolution unless set: 5 ms, 200 ticks a
	// second while anything waits (a few microseconds each).
	DefaultTick = 5 * time.Millisecond
	// LongWait is the shortest wait put on a wheel unless set.
	LongWait = time.Second
)

// NewWheel returns an idle wheel.
func NewWheel(o WheelOptions) *Wheel {
	if o.Tick <= 0 {
		o.Tick = DefaultTick
	}
	if o.LongWait <= 0 {
		o.LongWait = LongWait
	}
	return &Wheel{tick: o.Tick, long: o.LongWait, start: time.Now(), workers: workers.New(workers.Options{})}
}

// Close lets the wheel's idle workers go at once rather than after their
// idle second. Waits still armed fire all the same, each on a goroutine
// of its own.
func (w *Wheel) Close() { w.workers.Close() }

// WheelTimer is a wait armed by Wheel.AfterFunc: on the wheel, or on a
// runtime timer when shorter than LongWait. It implements Timer, and Reset
// as gVisor's tcpip.Timer has it.
type WheelTimer struct {
	w *Wheel
	f func()
	// Guarded by w.mu:
	rt         *time.Timer // the runtime timer of a short wait (kept for reuse)
	onRuntime  bool        // armed on rt
	onFar      bool        // on the coarse wheel (else the fine one)
	at         uint64      // the tick a wait on the wheel fires at
	prev, next *WheelTimer // its slot's list, while on the wheel
}

// AfterFunc runs f once d of real time has passed, on a goroutine of its
// own or one kept from an earlier wait (never waiting for one).
func (w *Wheel) AfterFunc(d time.Duration, f func()) *WheelTimer {
	t := &WheelTimer{w: w, f: f}
	w.mu.Lock()
	w.arm(t, d)
	w.mu.Unlock()
	return t
}

// Stop disarms t; it reports whether that prevented f.
func (t *WheelTimer) Stop() bool {
	w := t.w
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.disarm(t)
}

// Reset arms t again to fire d from now, whether or not it had fired or
// been stopped.
func (t *WheelTimer) Reset(d time.Duration) {
	w := t.w
	w.mu.Lock()
	w.disarm(t)
	w.arm(t, d)
	w.mu.Unlock()
}

func (w *Wheel) arm(t *WheelTimer, d time.Duration) {
	if d < w.long {
		if t.rt == nil {
			// The runtime's goroutine only hands f to a worker.
			t.rt = time.AfterFunc(d, func() { w.workers.Go(t.f) })
		} else {
			t.rt.Reset(d)
		}
		t.onRuntime = true
		return
	}
	// The first tick at or after now+d, and after every tick served.
	elapsed := time.Since(w.start) + d
	at := uint64((elapsed + w.tick - 1) / w.tick)
	if at <= w.done {
		at = w.done + 1
	}
	t.at = at
	w.link(t)
	if !w.driving {
		w.driving = true
		wait := w.untilTick(w.done + 1)
		if w.driver == nil {
			w.driver = time.AfterFunc(wait, w.advance)
		} else {
			w.driver.Reset(wait)
		}
	}
}

// disarm reports whether t was armed (and now is not).
func (w *Wheel) disarm(t *WheelTimer) bool {
	if t.onRuntime {
		t.onRuntime = false
		return t.rt.Stop()
	}
	if t.next == nil {
		return false
	}
	w.unlink(t)
	return true
}

// slot is the list t is on, or goes on: the fine wheel within a turn of
// the last tick served, else the coarse one.
func (w *Wheel) slot(t *WheelTimer) **WheelTimer {
	if t.onFar {
		return &w.far[(t.at/wheelSlots)%farSlots]
	}
	return &w.slots[t.at%wheelSlots]
}

func (w *Wheel) unlink(t *WheelTimer) {
	head := w.slot(t)
	if t.next == t {
		*head = nil
	} else {
		t.prev.next, t.next.prev = t.next, t.prev
		if *head == t {
			*head = t.next
		}
	}
	t.prev, t.next = nil, nil
	w.armed--
}

// link puts t at the end of its tick's slot: on the fine wheel if its tick
// comes within a turn, so that no fine slot holds a wait of a later turn.
func (w *Wheel) link(t *WheelTimer) {
	t.onFar = t.at > w.done+wheelSlots
	head := w.slot(t)
	if *head == nil {
		t.prev, t.next = t, t
		*head = t
	} else {
		last := (*head).prev
		t.prev, t.next = last, *head
		last.next, (*head).prev = t, t
	}
	w.armed++
}

// untilTick is the real time left until tick n begins.
func (w *Wheel) untilTick(n uint64) time.Duration {
	return max(0, w.start.Add(time.Duration(n)*w.tick).Sub(time.Now()))
}

// advance serves every slot whose tick has begun and starts what is due.
func (w *Wheel) advance() {
	var due []func()
	w.mu.Lock()
	now := uint64(time.Since(w.start) / w.tick)
	from := w.done + 1
	if now >= from+wheelSlots {
		// Late by a whole turn: each fine slot once, and every coarse one
		// for the turns skipped (what is not due goes back to the coarse
		// wheel, and down again as the loop passes its turn's start).
		from = now - wheelSlots + 1
		w.done = from - 1
		for i := range w.far {
			w.cascade(&w.far[i], now, &due)
		}
	}
	for n := from; n <= now; n++ {
		// Tick n is served: a wait linked now goes on the fine wheel if
		// its tick comes before slot n%wheelSlots is visited again.
		w.done = n
		if n%wheelSlots == 0 {
			// A turn begins: its waits come down to the fine wheel.
			w.cascade(&w.far[(n/wheelSlots)%farSlots], now, &due)
		}
		w.cascade(&w.slots[n%wheelSlots], now, &due)
	}
	if now > w.done {
		w.done = now
	}
	if w.armed > 0 {
		w.driver.Reset(w.untilTick(w.done + 1))
	} else {
		w.driving = false
	}
	w.mu.Unlock()
	for _, f := range due {
		w.workers.Go(f)
	}
}

// cascade takes the list at head whole: what is due by tick now is added
// to due, the rest linked again where it now belongs. A wait visited and
// put back where it was (a fine slot a turn early, a coarse slot a round
// early) is counted as passed over.
func (w *Wheel) cascade(head **WheelTimer, now uint64, due *[]func()) {
	t := *head
	if t == nil {
		return
	}
	*head = nil
	t.prev.next = nil
	for t != nil {
		next := t.next
		t.prev, t.next = nil, nil
		w.armed--
		if t.at <= now {
			*due = append(*due, t.f)
		} else {
			wasFar := t.onFar
			w.link(t)
			if wasFar == t.onFar {
				w.passed++
			}
		}
		t = next
	}
}
