package hello

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultSchedule(t *testing.T) {
	s := DefaultSchedule()
	require.NoError(t, s.Validate())
	require.Equal(t, 15, s.RoundLen(), "the retry field runs 0–14")

	want := []time.Duration{0, 12, 24, 36, 48}
	for k, sec := range want {
		assert.Equal(t, sec*time.Second, s.Offset(k), "Hello %d", k)
	}
	assert.Equal(t, 48*time.Second+2*time.Minute, s.Offset(5), "the 2-minute Hellos follow the fifth")
	assert.Equal(t, 48*time.Second+10*time.Minute+20*time.Minute, s.Offset(10))
	assert.Equal(t, 48*time.Second+10*time.Minute+100*time.Minute, s.Offset(14))
	assert.Equal(t, 36*time.Minute, s.Delay(15), "after the round, every 36 minutes")
	for k := range 15 {
		assert.Equal(t, uint32(k), s.Retry(k))
	}
	assert.Equal(t, uint32(0), s.Retry(15), "the counter starts again")
	assert.Equal(t, uint32(3), s.Retry(18))

	// Window: Hellos stop 24 h after the first.
	assert.True(t, s.Open(s.Offset(14)))
	last := 0
	for k := 0; s.Open(s.Offset(k)); k++ {
		last = k
	}
	assert.Less(t, s.Offset(last), 24*time.Hour)
	assert.GreaterOrEqual(t, s.Offset(last+1), 24*time.Hour)
}

func TestScheduleValidate(t *testing.T) {
	bad := DefaultSchedule()
	bad.Round = append(bad.Round, Step{Count: 1, Interval: time.Hour})
	assert.Error(t, bad.Validate(), "16 Hellos overflow the retry field")
	assert.Error(t, Schedule{Then: time.Minute}.Validate(), "an empty round")
	assert.Error(t, Schedule{Round: []Step{{Count: 1, Interval: time.Second}}}.Validate(), "no interval after the round")
}
