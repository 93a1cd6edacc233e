package scenarios

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/mebx"
)

func logFailures(t *testing.T, rep *Report) {
	t.Helper()
	for _, c := range rep.Cases {
		for _, f := range c.Failures {
			t.Logf("%s: %s/%s: %s: %s", rep.Scenario, c.Group, c.Name, f.Device, f.Reason)
		}
	}
	for _, e := range rep.FaultErrors {
		t.Logf("%s: fault not applied: %s", rep.Scenario, e)
	}
}

const drawScenario = `name: draws
seed: 1
deadline: 30s
groups:
  - name: desks
    count: 10
faults:
  - name: cable
    group: desks
    fraction: 0.3
    when: {event: amt.call, where: {op: SetAdminAclEntryEx}}
    for: 1s
    link: down
  - name: slow
    group: desks
    count: 2
    at: 0s
    call: {name: CommitChanges, answer: delay, delay: 300ms, times: 1}
expect:
  - group: desks
    state: provisioned
    recorded: true
`

// The same file and seed give the same fault draws, the same verdicts and
// the same story on every device; another seed draws other devices.
func TestSameSeedSameRun(t *testing.T) {
	s, err := Parse("draws.yaml", []byte(drawScenario))
	require.NoError(t, err)
	run := func(seed uint64) *Report {
		rep, err := Run(context.Background(), s, Options{Seed: &seed})
		require.NoError(t, err)
		logFailures(t, rep)
		return rep
	}
	a, b := run(1), run(1)
	require.True(t, a.Passed())
	require.Len(t, a.Draws, 2)
	assert.Len(t, a.Draws[0].Devices, 3, "30% of 10")
	assert.Len(t, a.Draws[1].Devices, 2)
	assert.Equal(t, a.Draws, b.Draws)
	assert.Equal(t, a.Cases, b.Cases)
	require.Len(t, a.Stories, 10)
	for dev, story := range a.Stories {
		assert.Equal(t, story, b.Stories[dev], "%s's story", dev)
	}
	for _, dev := range a.Draws[0].Devices {
		assert.Contains(t, a.Stories[dev], "link.down", "%s had its cable pulled", dev)
	}
	c := run(2)
	assert.NotEqual(t, a.Draws[0].Indexes, c.Draws[0].Indexes, "another seed, other devices")
}

// A device that fails an expectation gets its capture written; one that
// passes does not.
func TestCapturesOfFailedDevices(t *testing.T) {
	s, err := Parse("caps.yaml", []byte(`name: caps
deadline: 6s
groups:
  - name: good
    count: 1
  - name: bad
    count: 1
    pps: wrong
expect:
  - state: provisioned
`))
	require.NoError(t, err)
	dir := t.TempDir()
	rep, err := Run(context.Background(), s, Options{PcapDir: dir})
	require.NoError(t, err)
	assert.False(t, rep.Passed())
	require.Len(t, rep.Captures, 1, "only the failed device")
	assert.Contains(t, rep.Captures[0], rep.Cases[1].Failures[0].Device)
	assert.Less(t, rep.Duration, 20*time.Second)
}

// A device whose store has a write's temp file beside it at the end fails
// "persisted settings whole", though loading the store would remove it.
func TestLeftoverTempFileFails(t *testing.T) {
	s, err := Parse("tmp.yaml", []byte("name: tmp\ndeadline: 10s\ngroups:\n  - name: desks\n    count: 1\nexpect:\n  - state: provisioned\n"))
	require.NoError(t, err)
	dir := t.TempDir()
	var rep *Report
	done := make(chan error, 1)
	go func() {
		var err error
		rep, err = Run(context.Background(), s, Options{Dir: dir})
		done <- err
	}()
	// A crash's leftover, beside the store, once the device has committed
	// (it loads its store only at power-on, which would remove it).
	stores := filepath.Join(dir, "mebx", "desks")
	require.Eventually(t, func() bool {
		// Read, not Load: a Load would remove the device's own temp file.
		b, err := os.ReadFile(filepath.Join(stores, "0.json"))
		if err != nil {
			return false
		}
		st, err := mebx.Decode(b)
		return err == nil && st.State == mebx.StatePost
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, os.WriteFile(filepath.Join(stores, ".0.json.tmp-1"), []byte("{}"), 0o600))
	require.NoError(t, <-done)
	var whole *Case
	for i := range rep.Cases {
		if rep.Cases[i].Name == "persisted settings whole" {
			whole = &rep.Cases[i]
		}
	}
	require.NotNil(t, whole)
	require.Len(t, whole.Failures, 1)
	assert.Contains(t, whole.Failures[0].Reason, ".0.json.tmp-1")
}
