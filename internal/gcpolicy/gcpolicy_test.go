package gcpolicy

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// current reads the GC settings without changing them.
func current() (percent int, limit int64) {
	percent = debug.SetGCPercent(-1)
	debug.SetGCPercent(percent)
	return percent, debug.SetMemoryLimit(-1)
}

func TestThroughputSetsAndRestores(t *testing.T) {
	percent0, limit0 := current()
	p, err := Throughput(env(nil))
	require.NoError(t, err)
	percent, limit := current()
	assert.Equal(t, ThroughputPercent, percent)
	assert.Equal(t, p.Percent, percent)
	assert.Equal(t, p.Limit, limit)
	avail, err := Available()
	require.NoError(t, err)
	assert.Equal(t, avail/4*3, limit)
	assert.Less(t, limit, int64(math.MaxInt64))
	assert.Contains(t, p.String(), "GOGC=400 ")

	p.Restore()
	percent, limit = current()
	assert.Equal(t, percent0, percent)
	assert.Equal(t, limit0, limit)
}

// A budget lowers the limit, never raises it, and GOMEMLIMIT still wins.
func TestThroughputWithin(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	_, limit0 := current()
	avail, err := Available()
	require.NoError(t, err)
	for _, c := range []struct {
		budget, want int64
	}{{256 << 20, 256 << 20}, {0, avail / 4 * 3}, {avail, avail / 4 * 3}} {
		p, err := ThroughputWithin(env(nil), c.budget)
		require.NoError(t, err)
		_, limit := current()
		assert.Equal(t, c.want, limit, "budget %d", c.budget)
		assert.Equal(t, c.want, p.Limit)
		p.Restore()
	}
	p, err := ThroughputWithin(env(map[string]string{"GOMEMLIMIT": "1GiB"}), 256<<20)
	require.NoError(t, err)
	_, limit := current()
	assert.Equal(t, limit0, limit, "GOMEMLIMIT from the environment stays")
	p.Restore()

	p, err = ThroughputWithin(env(nil), 256<<20)
	require.NoError(t, err)
	assert.Equal(t, "GOGC=400 GOMEMLIMIT=256MiB", p.String())
	p.Restore()
}

// What the user set in the environment is kept.
func TestThroughputKeepsEnvironment(t *testing.T) {
	percent0, limit0 := current()
	p, err := Throughput(env(map[string]string{"GOGC": "150", "GOMEMLIMIT": "1GiB"}))
	require.NoError(t, err)
	defer p.Restore()
	percent, limit := current()
	assert.Equal(t, percent0, percent, "GOGC from the environment stays")
	assert.Equal(t, limit0, limit, "GOMEMLIMIT from the environment stays")
	assert.True(t, p.PercentFromEnv)
	assert.True(t, p.LimitFromEnv)
	if limit0 == math.MaxInt64 {
		assert.Contains(t, p.String(), "GOMEMLIMIT=off")
	}
}

func TestParseCgroupMax(t *testing.T) {
	n, ok, err := parseCgroupMax([]byte("25769803776\n"))
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int64(24<<30), n)

	_, ok, err = parseCgroupMax([]byte("max\n"))
	require.NoError(t, err)
	assert.False(t, ok)

	for _, bad := range []string{"", "0", "-5", "12k", "max max", "99999999999999999999"} {
		_, _, err := parseCgroupMax([]byte(bad))
		assert.Error(t, err, "%q", bad)
	}
}

func FuzzParseCgroupMax(f *testing.F) {
	for _, s := range []string{"max\n", "25769803776\n", "0", "", "-1", " 42 "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok, err := parseCgroupMax(b)
		if err != nil && (ok || n != 0) {
			t.Fatalf("error with a value: %d %v", n, ok)
		}
		if ok && n <= 0 {
			t.Fatalf("limit %d accepted", n)
		}
	})
}
