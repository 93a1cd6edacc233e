// Package workers runs short-lived functions on goroutines that are kept
// for the next one.
//
// A new goroutine starts with a small stack and grows it by copying
// (runtime.newstack, copystack) as it goes down gVisor's call chain or a
// TLS handshake: a device's Hello slot, an accepted connection's handler.
// Started afresh for each, that growth was 90 µs of CPU per provisioning
// in a 1k BenchmarkFleetProvisioning and 200 µs at 100k. A worker kept
// between functions keeps its grown stack (until the collector shrinks an
// idle one).
//
// Go never waits: a function for which no worker is idle gets a new
// goroutine, so a slow or blocked function holds up only itself.
package workers

import (
	"context"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Pool.
type Options struct {
	// MaxIdle is how many workers may wait for work; one more ends when
	// its function returns. Default DefaultMaxIdle.
	MaxIdle int
	// IdleFor is how long a worker waits for work before it ends, so an
	// idle pool holds no goroutine for long. Default DefaultIdleFor.
	IdleFor time.Duration
}

const (
	DefaultMaxIdle = 128
	DefaultIdleFor = time.Second
)

// Pool hands functions to idle workers. The zero Pool is not usable; make
// one with New.
type Pool struct {
	work    chan func()
	done    chan struct{}
	idleFor time.Duration
	maxIdle int32

	idle    atomic.Int32 // workers waiting for work
	started atomic.Uint64
	closing sync.Once
}

// New returns a pool with no worker yet.
func New(o Options) *Pool {
	if o.MaxIdle <= 0 {
		o.MaxIdle = DefaultMaxIdle
	}
	if o.IdleFor <= 0 {
		o.IdleFor = DefaultIdleFor
	}
	return &Pool{work: make(chan func()), done: make(chan struct{}), idleFor: o.IdleFor, maxIdle: int32(o.MaxIdle)}
}

// Go runs f on an idle worker, or on a new one if none is idle. It never
// blocks. After Close it starts a goroutine for each f, as go f() would.
func (p *Pool) Go(f func()) {
	select {
	case p.work <- f:
	default:
		p.started.Add(1)
		go p.run(f)
	}
}

// Started is how many workers the pool has started, for tests and
// figures: fewer than the functions run is the pool at work.
func (p *Pool) Started() uint64 { return p.started.Load() }

// Close ends the idle workers; busy ones end when their function returns.
func (p *Pool) Close() { p.closing.Do(func() { close(p.done) }) }

func (p *Pool) run(f func()) {
	// A worker runs functions for many callers: it carries no caller's
	// profiler labels (a go statement would have inherited its
	// creator's); a function that wants labels sets them, as before.
	pprof.SetGoroutineLabels(context.Background())
	var t *time.Timer
	for {
		f()
		f = nil // not kept alive while idle
		if p.idle.Add(1) > p.maxIdle {
			p.idle.Add(-1)
			return
		}
		if t == nil {
			t = time.NewTimer(p.idleFor)
		} else {
			t.Reset(p.idleFor)
		}
		select {
		case f = <-p.work:
			p.idle.Add(-1)
			t.Stop()
		case <-t.C:
			p.idle.Add(-1)
			return
		case <-p.done:
			p.idle.Add(-1)
			t.Stop()
			return
		}
	}
}
