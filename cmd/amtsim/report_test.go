package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/fleet"
)

// Two shards run as an Indexed Job's pods would (the shard from
// $JOB_COMPLETION_INDEX) and their reports merge; one alone is missing a
// shard (exit 3); a report from another seed does not merge (exit 2).
func TestFleetShardsMerge(t *testing.T) {
	dir := t.TempDir()
	var devices []fleet.DeviceReport
	for shard, n := range []string{"4", "6"} {
		t.Setenv("JOB_COMPLETION_INDEX", string(rune('0'+shard)))
		rep := filepath.Join(dir, "shard-"+string(rune('0'+shard))+".json")
		list := filepath.Join(dir, "devices-"+string(rune('0'+shard))+".jsonl")
		code, out, errOut := amtsim(t, "fleet", "-n", n, "--shards", "2", "--report", rep, "--report-stdout", "--device-list", list, "--steps=false")
		require.Equal(t, 0, code, "%s\n%s", out, errOut)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last, err := fleet.ParseReport([]byte(lines[len(lines)-1]))
		require.NoError(t, err, "the last line of stdout is the report")
		assert.Equal(t, shard, last.Shard, "the shard came from $JOB_COMPLETION_INDEX")
		b, err := os.ReadFile(list)
		require.NoError(t, err)
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var d fleet.DeviceReport
			require.NoError(t, json.Unmarshal([]byte(l), &d))
			devices = append(devices, d)
		}
	}
	macs, pids := map[string]bool{}, map[string]bool{}
	for _, d := range devices {
		assert.False(t, macs[d.MAC] || pids[d.PID], "%s shared across shards", d.MAC)
		macs[d.MAC], pids[d.PID] = true, true
		assert.Equal(t, fleet.StateProvisioned, d.State)
	}
	assert.Len(t, devices, 10)

	merged := filepath.Join(dir, "fleet.json")
	code, out, errOut := amtsim(t, "report", "merge", "--report", merged, filepath.Join(dir, "shard-0.json"), filepath.Join(dir, "shard-1.json"))
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	assert.Contains(t, out, "10 of 10 devices provisioned")
	b, err := os.ReadFile(merged)
	require.NoError(t, err)
	m, err := fleet.ParseReport(b)
	require.NoError(t, err)
	assert.Equal(t, []int{0, 1}, m.MergedShards)
	assert.Equal(t, int64(10), m.BootToProvisioned.Count)

	code, _, _ = amtsim(t, "report", "merge", filepath.Join(dir, "shard-0.json"))
	assert.Equal(t, exitNotProvisioned, code, "shard 1 is missing")
	other := filepath.Join(dir, "other.json")
	s1, err := os.ReadFile(filepath.Join(dir, "shard-1.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(other, []byte(strings.Replace(string(s1), `"seed": 1,`, `"seed": 2,`, 1)), 0o644))
	code, _, errOut = amtsim(t, "report", "merge", filepath.Join(dir, "shard-0.json"), other)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "not one fleet")
	t.Setenv("JOB_COMPLETION_INDEX", "x")
	code, _, errOut = amtsim(t, "fleet", "-n", "1")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "JOB_COMPLETION_INDEX")
}
