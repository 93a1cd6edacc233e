// Package clock is the firmware's sense of time. Devices read the time and
// arm timers through a Clock, so that tests and fleets can run the
// firmware's schedules (Hello retries, DHCP renewal, …) faster than real time
// with the same sequence of events, and so that no device needs a goroutine
// to wait: every wait is a timer.
package clock

import "time"

// Clock tells the time and runs functions later.
type Clock interface {
	// Now is the clock's time.
	Now() time.Time
	// AfterFunc runs f on its own goroutine once d of the clock's time has
	// passed.
	AfterFunc(d time.Duration, f func()) Timer
	// Scale is how many seconds of the clock's time pass per real second.
	Scale() float64
}

// Timer is an armed AfterFunc.
type Timer interface {
	// Stop disarms the timer; it reports whether that prevented f.
	Stop() bool
}

// Real is wall-clock time.
func Real() Clock { return Scaled(1) }

// Scaled returns a clock that runs scale times faster than real time from
// now on: Now advances scale seconds per real second and AfterFunc(d) fires
// after d/scale of real time. A scale ≤ 0 means 1.
func Scaled(scale float64) Clock {
	if scale <= 0 {
		scale = 1
	}
	now := time.Now()
	return &scaled{scale: scale, epoch: now, realEpoch: now}
}

// Fleet returns a clock like Scaled(scale) for the devices of a fleet to
// share: its waits of LongWait or more of real time go on one Wheel, so
// that a hundred thousand Hello and renewal timers are not a hundred
// thousand runtime timers. They fire up to DefaultTick late.
func Fleet(scale float64) Clock {
	c := Scaled(scale).(*scaled)
	c.wheel = NewWheel(WheelOptions{})
	return c
}

type scaled struct {
	wheel     *Wheel // nil: runtime timers only
	scale     float64
	epoch     time.Time // the clock's time at realEpoch
	realEpoch time.Time
}

func (c *scaled) Now() time.Time {
	if c.scale == 1 {
		return time.Now()
	}
	return c.epoch.Add(time.Duration(float64(time.Since(c.realEpoch)) * c.scale))
}

func (c *scaled) AfterFunc(d time.Duration, f func()) Timer {
	if c.wheel != nil {
		return c.wheel.AfterFunc(RealDuration(c, d), f)
	}
	return time.AfterFunc(RealDuration(c, d), f)
}

func (c *scaled) Scale() float64 { return c.scale }

// RealDuration is how much real time d of c's time lasts.
func RealDuration(c Clock, d time.Duration) time.Duration {
	return time.Duration(float64(d) / c.Scale())
}

// AtLeastReal returns d, or more when d of c's time would last less than
// floor of real time. Waits for a network peer use it: the peer answers in
// real time however fast the firmware's clock runs.
func AtLeastReal(c Clock, d, floor time.Duration) time.Duration {
	if min := time.Duration(float64(floor) * c.Scale()); d < min {
		return min
	}
	return d
}
