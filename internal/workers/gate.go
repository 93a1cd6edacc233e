package workers

import "sync"

// Gate runs at most a fixed number of functions at once; the rest wait in
// a queue, first come first served, and run on the goroutine of a function
// that has ended. A waiting function costs its closure, not a goroutine.
//
// A fleet's due Hellos go through one. On 2 cores a 100,000-device fleet
// switched on at once has thousands of Hello slots due within the same
// second; run side by side they share the processors, so each slot's own
// waits (a DNS answer within 2 s, a connect within 5 s) stretch with all
// the others', and the lookups time out and are asked again: 1.62–1.90
// DNS queries per Hello, up to 32,380 goroutines runnable at once and one
// waiting 3.2 s for a processor (docs/architecture.md has the runs). In
// turn, each slot runs at the pace of one device on its own hardware.
//
// A nil *Gate runs every function at once.
type Gate struct {
	size int

	mu     sync.Mutex
	inside int
	queue  []func() // waiting, from head on
	head   int
}

// NewGate returns a gate for n functions at once (n < 1 is 1).
func NewGate(n int) *Gate { return &Gate{size: max(n, 1)} }

// Do runs f now if fewer than the gate's size are running, and otherwise
// queues it and returns at once. A caller whose f runs goes on to run the
// queued functions in order until none is left, so Do may return long
// after f has.
func (g *Gate) Do(f func()) {
	if g == nil {
		f()
		return
	}
	g.mu.Lock()
	if g.inside >= g.size {
		g.queue = append(g.queue, f)
		g.mu.Unlock()
		return
	}
	g.inside++
	g.mu.Unlock()
	for f != nil {
		f()
		f = g.next()
	}
}

// next is the longest-waiting function, or nil (and one place fewer taken)
// when none waits.
func (g *Gate) next() func() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.head == len(g.queue) {
		g.inside--
		g.queue, g.head = g.queue[:0], 0
		return nil
	}
	f := g.queue[g.head]
	g.queue[g.head] = nil
	g.head++
	if g.head >= 1024 && g.head*2 >= len(g.queue) {
		// Slide the waiting half down so the array does not grow without
		// end while the queue never quite empties.
		n := copy(g.queue, g.queue[g.head:])
		clear(g.queue[n:])
		g.queue, g.head = g.queue[:n], 0
	}
	return f
}

// Waiting is how many functions wait for their turn now.
func (g *Gate) Waiting() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue) - g.head
}

// Running is how many functions run now.
func (g *Gate) Running() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inside
}
