package nic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Netem describes impairments in the vocabulary of Linux netem. Probabilities
// are fractions in [0,1]. The zero value impairs nothing.
type Netem struct {
	Loss      float64       // drop this fraction of frames
	Delay     time.Duration // hold every frame this long…
	Jitter    time.Duration // …plus or minus up to this much, uniformly
	Duplicate float64       // send this fraction of frames twice
	Reorder   float64       // send this fraction at once, ahead of delayed ones (needs Delay)
	// Seed makes the decisions repeatable: the same seed, MAC and frame
	// sequence give the same drops, copies and delays.
	Seed uint64
}

// Enabled reports whether any impairment is configured.
func (m Netem) Enabled() bool {
	return m.Loss > 0 || m.Delay > 0 || m.Jitter > 0 || m.Duplicate > 0 || m.Reorder > 0
}

// Validate checks the ranges netem itself would refuse.
func (m Netem) Validate() error {
	for name, p := range map[string]float64{"loss": m.Loss, "duplicate": m.Duplicate, "reorder": m.Reorder} {
		if p < 0 || p > 1 || p != p {
			return fmt.Errorf("netem: %s %v is not a fraction in [0,1]", name, p)
		}
	}
	if m.Delay < 0 || m.Jitter < 0 {
		return errors.New("netem: delay and jitter must not be negative")
	}
	if m.Jitter > 0 && m.Delay == 0 {
		return errors.New("netem: jitter needs a delay")
	}
	if m.Reorder > 0 && m.Delay == 0 {
		return errors.New("netem: reorder needs a delay (frames sent at once overtake delayed ones)")
	}
	return nil
}

// impairer applies one direction's Netem. It is nil for a perfect link so
// that the common case costs a pointer test.
type impairer struct {
	cfg Netem
	mu  sync.Mutex
	rng *rand.Rand
}

func newImpairer(cfg Netem, mac net.HardwareAddr, direction uint64) (*impairer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, nil
	}
	// One stream per (seed, MAC, direction): devices on one seed do not
	// drop in lockstep, and every run of the same seed drops the same frames.
	var m [8]byte
	copy(m[2:], mac)
	stream := binary.BigEndian.Uint64(m[:])<<1 | direction
	return &impairer{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, stream))}, nil
}

// decide draws the fate of the next frame: how many copies go out (0, 1 or
// 2) and after what delay. Every frame consumes the same number of draws, so
// one decision never shifts the ones after it.
func (im *impairer) decide() (copies int, delay time.Duration) {
	im.mu.Lock()
	loss, dup, reorder, jit := im.rng.Float64(), im.rng.Float64(), im.rng.Float64(), im.rng.Float64()
	im.mu.Unlock()
	c := im.cfg
	if loss < c.Loss {
		return 0, 0
	}
	copies = 1
	if dup < c.Duplicate {
		copies = 2
	}
	if c.Delay == 0 || reorder < c.Reorder {
		return copies, 0
	}
	delay = c.Delay
	if c.Jitter > 0 {
		delay += time.Duration((jit*2 - 1) * float64(c.Jitter))
	}
	return copies, max(delay, 0)
}

// after runs f after d; at once when d is zero. Waiting frames sit on
// runtime timers, not goroutines.
func (im *impairer) after(d time.Duration, f func()) {
	if d <= 0 {
		f()
		return
	}
	time.AfterFunc(d, f)
}
