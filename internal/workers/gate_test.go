package workers

import (
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Functions beyond the gate's size wait, and run in the order they came,
// on the goroutines of those that end, as places free.
func TestGateOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGate(2)
		release := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
		for i := range 2 {
			go g.Do(func() { <-release[i] })
		}
		synctest.Wait()
		assert.Equal(t, 2, g.Running())

		var mu sync.Mutex
		var order []int
		for i := range 5 {
			g.Do(func() { mu.Lock(); order = append(order, i); mu.Unlock() })
		}
		assert.Equal(t, 5, g.Waiting(), "Do returned at once, its function queued")
		assert.Empty(t, order)

		close(release[0])
		synctest.Wait()
		assert.Equal(t, []int{0, 1, 2, 3, 4}, order, "first come, first served")
		assert.Zero(t, g.Waiting())
		assert.Equal(t, 1, g.Running(), "the other place is still held")
		close(release[1])
		synctest.Wait()
		assert.Zero(t, g.Running())

		ran := false
		g.Do(func() { ran = true })
		assert.True(t, ran, "a free place runs the function before Do returns")
	})
}

// A queue that never quite empties (each function queues another as it
// runs) keeps reusing its array instead of growing it with every push.
func TestGateQueueReusesItsArray(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGate(1)
		hold := make(chan struct{})
		go g.Do(func() { <-hold })
		synctest.Wait()
		const runs, depth = 100000, 100
		ran := 0
		var step func()
		step = func() {
			ran++
			if ran+depth <= runs {
				g.Do(step) // queued: the one place is this goroutine's
			}
		}
		for range depth {
			g.Do(step)
		}
		close(hold)
		synctest.Wait()
		assert.Equal(t, runs, ran)
		assert.Zero(t, g.Waiting())
		assert.Less(t, cap(g.queue), 8192, "the array of a queue %d deep after %d pushes", depth, runs)
	})
}

// A nil gate runs everything at once; a size below 1 is 1.
func TestGateNilAndSize(t *testing.T) {
	var g *Gate
	n := 0
	for range 3 {
		g.Do(func() { n++ })
	}
	assert.Equal(t, 3, n)
	assert.Zero(t, g.Waiting())
	assert.Zero(t, g.Running())

	synctest.Test(t, func(t *testing.T) {
		one := NewGate(0)
		hold := make(chan struct{})
		go one.Do(func() { <-hold })
		synctest.Wait()
		one.Do(func() {})
		require.Equal(t, 1, one.Waiting(), "the one place is taken")
		close(hold)
		synctest.Wait()
		assert.Zero(t, one.Waiting())
	})
}
