package hello

import (
	"fmt"
	"time"
)

// Step is a run of Hellos sent Interval apart. The first Hello of the first
// step goes at once; the first Hello of a later step goes Interval after the
// last Hello of the step before.
type Step struct {
	Count    int
	Interval time.Duration
}

// Schedule is when a device in setup mode sends its Hellos, counted from
// power-on (or from the moment it has an address and enters setup).
//
// Intel has not published the exact intervals (docs/protocol.md §3, MED). The
// default reads the description "at once, then 5 × every 12 s, 5 × every
// 2 min, 5 × every 20 min" as one round of 15 Hellos whose retry field runs
// 0–14, the first of the 12-second Hellos being the one sent at once. When
// the counter runs out the device goes on every 36 minutes with the counter
// starting again at 0, and falls silent 24 hours after power-on until the
// next power-up (Intel/Altiris field notes: "hello packets will only be
// transmitted during a 24 hour period"; a PSK device starts again at every
// power-up until provisioned). Every figure is a field here, so a user
// whose firmware behaves otherwise can say so.
type Schedule struct {
	// Round is one pass of the retry counter, 0 to (total Count − 1).
	Round []Step
	// Then is the interval between Hellos after the first round.
	Then time.Duration
	// Window is how long after the first Hello the device keeps sending;
	// zero means forever.
	Window time.Duration
}

// DefaultSchedule is the MED reading described on Schedule.
func DefaultSchedule() Schedule {
	return Schedule{
		Round: []Step{
			{Count: 5, Interval: 12 * time.Second},
			{Count: 5, Interval: 2 * time.Minute},
			{Count: 5, Interval: 20 * time.Minute},
		},
		Then:   36 * time.Minute,
		Window: 24 * time.Hour,
	}
}

// RoundLen is the number of Hellos in one round.
func (s Schedule) RoundLen() int {
	n := 0
	for _, st := range s.Round {
		n += st.Count
	}
	return n
}

// Validate checks that the schedule can run: a round of 1 to MaxRetry+1
// Hellos and positive intervals.
func (s Schedule) Validate() error {
	n := s.RoundLen()
	if n < 1 || n > MaxRetry+1 {
		return fmt.Errorf("hello: schedule round of %d Hellos (want 1 to %d, the retry field's range)", n, MaxRetry+1)
	}
	for i, st := range s.Round {
		if st.Count < 0 || st.Interval <= 0 {
			return fmt.Errorf("hello: schedule step %d: %d × %v", i, st.Count, st.Interval)
		}
	}
	if s.Then <= 0 || s.Window < 0 {
		return fmt.Errorf("hello: schedule then %v, window %v", s.Then, s.Window)
	}
	return nil
}

// Retry is the retry field of Hello number k (0 is the first).
func (s Schedule) Retry(k int) uint32 { return uint32(k % s.RoundLen()) }

// Delay is the wait before Hello number k (k ≥ 1) after Hello k−1.
func (s Schedule) Delay(k int) time.Duration {
	if k <= 0 {
		return 0
	}
	i := 0
	for _, st := range s.Round {
		if k < i+st.Count {
			return st.Interval
		}
		i += st.Count
	}
	return s.Then
}

// Offset is when Hello number k is due, measured from Hello 0.
func (s Schedule) Offset(k int) time.Duration {
	var t time.Duration
	for i := 1; i <= k; i++ {
		t += s.Delay(i)
	}
	return t
}

// Open reports whether a Hello due at offset t from the first is still
// inside the window.
func (s Schedule) Open(t time.Duration) bool { return s.Window == 0 || t < s.Window }
