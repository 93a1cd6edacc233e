package clock

import (
	"sync"
	"time"
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
// The wheel holds 1<<wheelBits slots of Tick each; a wait longer than a
// turn of the wheel stays in its slot and is passed over until its turn
// comes, so a tick visits one slot's waits, due or not. The tick runs only
// while waits are armed: an idle wheel has no timer and no goroutine.
type Wheel struct {
	tick, long time.Duration
	start      time.Time // the monotonic origin of tick numbers

	mu      sync.Mutex
	slots   [wheelSlots]*WheelTimer // each a circular doubly-linked list
	done    uint64                  // ticks whose slots have been served
	armed   int                     // waits on the wheel
	driver  *time.Timer             // the tick, while armed > 0
	driving bool
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
	return &Wheel{tick: o.Tick, long: o.LongWait, start: time.Now()}
}

// WheelTimer is a wait armed by Wheel.AfterFunc: on the wheel, or on a
// runtime timer when shorter than LongWait. It implements Timer, and Reset
// as gVisor's tcpip.Timer has it.
type WheelTimer struct {
	w *Wheel
	f func()
	// Guarded by w.mu:
	rt         *time.Timer // the runtime timer of a short wait (kept for reuse)
	onRuntime  bool        // armed on rt
	at         uint64      // the tick a wait on the wheel fires at
	prev, next *WheelTimer // its slot's list, while on the wheel
}

// AfterFunc runs f on its own goroutine once d of real time has passed.
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
			t.rt = time.AfterFunc(d, t.f)
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

func (w *Wheel) unlink(t *WheelTimer) {
	head := &w.slots[t.at%wheelSlots]
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

// link puts t at the end of its tick's slot.
func (w *Wheel) link(t *WheelTimer) {
	head := &w.slots[t.at%wheelSlots]
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
		from = now - wheelSlots + 1 // late by a whole turn: each slot once
	}
	for n := from; n <= now; n++ {
		// Take the slot's list whole; what is not due yet goes back.
		head := &w.slots[n%wheelSlots]
		t := *head
		if t == nil {
			continue
		}
		*head = nil
		t.prev.next = nil
		for t != nil {
			next := t.next
			t.prev, t.next = nil, nil
			w.armed--
			if t.at <= now {
				due = append(due, t.f)
			} else {
				w.link(t)
			}
			t = next
		}
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
		go f()
	}
}
