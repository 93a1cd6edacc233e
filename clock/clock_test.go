package clock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestScaledRunsFaster(t *testing.T) {
	c := Scaled(1000)
	start := c.Now()
	fired := make(chan time.Time, 1)
	realStart := time.Now()
	c.AfterFunc(20*time.Second, func() { fired <- c.Now() })
	select {
	case at := <-fired:
		assert.Less(t, time.Since(realStart), 5*time.Second, "20 s at ×1000 is 20 ms of real time")
		assert.GreaterOrEqual(t, at.Sub(start), 20*time.Second, "the clock's own time has moved the full 20 s")
	case <-time.After(10 * time.Second):
		t.Fatal("timer never fired")
	}
}

func TestStopPreventsTheCall(t *testing.T) {
	c := Scaled(1000)
	called := make(chan struct{}, 1)
	tm := c.AfterFunc(time.Hour, func() { called <- struct{}{} })
	require.True(t, tm.Stop())
	select {
	case <-called:
		t.Fatal("stopped timer fired")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestAtLeastReal(t *testing.T) {
	c := Scaled(1000)
	// 2 s of the clock is 2 ms of real time: raised to a 250 ms real floor.
	assert.Equal(t, 250*time.Second, AtLeastReal(c, 2*time.Second, 250*time.Millisecond))
	assert.Equal(t, 500*time.Second, AtLeastReal(c, 500*time.Second, 250*time.Millisecond))
	assert.Equal(t, 2*time.Second, AtLeastReal(Real(), 2*time.Second, 250*time.Millisecond))
	assert.Equal(t, time.Millisecond, RealDuration(c, time.Second))
}

func TestNonPositiveScaleIsReal(t *testing.T) {
	assert.Equal(t, 1.0, Scaled(0).Scale())
	assert.Equal(t, 1.0, Scaled(-3).Scale())
}
