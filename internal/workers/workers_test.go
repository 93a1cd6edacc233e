package workers

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitIdle waits until n workers wait for work.
func waitIdle(t *testing.T, p *Pool, n int32) {
	t.Helper()
	require.Eventually(t, func() bool { return p.idle.Load() == n }, 5*time.Second, time.Millisecond, "idle workers: %d, want %d", p.idle.Load(), n)
}

// Functions one after another run on a kept worker: its stack is kept.
// A worker counts itself idle just before it waits for work, so a Go in
// that instant starts another (Go never waits): a few may start, not one
// per function.
func TestWorkerIsReused(t *testing.T) {
	p := New(Options{IdleFor: time.Minute})
	defer p.Close()
	ran := make(chan int)
	for i := range 100 {
		p.Go(func() { ran <- i })
		assert.Equal(t, i, <-ran)
		require.Eventually(t, func() bool { return p.idle.Load() >= 1 }, 5*time.Second, time.Millisecond)
	}
	assert.Less(t, p.Started(), uint64(10), "100 functions in turn, on a few workers")
}

// A function that blocks holds up no other: Go never waits for a worker.
func TestSlowFunctionHoldsNoOneUp(t *testing.T) {
	p := New(Options{MaxIdle: 1})
	defer p.Close()
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	for range 3 {
		p.Go(func() { defer wg.Done(); <-release })
	}
	done := make(chan struct{})
	p.Go(func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a function waited behind blocked ones")
	}
	assert.Equal(t, uint64(4), p.Started(), "a worker each, none idle to take the fourth")
	close(release)
	wg.Wait()
	waitIdle(t, p, 1) // MaxIdle: the others ended
}

// More idle workers than MaxIdle end, and idle ones end after IdleFor:
// an idle pool leaves no goroutine behind.
func TestIdleWorkersEnd(t *testing.T) {
	g0 := runtime.NumGoroutine()
	p := New(Options{MaxIdle: 3, IdleFor: 50 * time.Millisecond})
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(10)
	for range 10 {
		p.Go(func() { defer wg.Done(); <-release })
	}
	// Ten blocked functions, a worker each. (Counting goroutines against
	// g0 here was flaky: another test's idle worker may end meanwhile.)
	assert.Equal(t, uint64(10), p.Started())
	close(release)
	wg.Wait()
	assert.LessOrEqual(t, p.idle.Load(), int32(3))
	assert.Eventually(t, func() bool { return p.idle.Load() == 0 && runtime.NumGoroutine() <= g0+1 }, 5*time.Second, 5*time.Millisecond)
}

// Close ends the idle workers at once; after it, Go still runs each
// function, on a goroutine of its own that does not stay.
func TestClose(t *testing.T) {
	p := New(Options{IdleFor: time.Hour})
	ran := make(chan struct{})
	p.Go(func() { ran <- struct{}{} })
	<-ran
	waitIdle(t, p, 1)
	p.Close()
	waitIdle(t, p, 0)
	p.Close() // twice is fine
	p.Go(func() { ran <- struct{}{} })
	<-ran
	waitIdle(t, p, 0)
	assert.Equal(t, uint64(2), p.Started())
}
