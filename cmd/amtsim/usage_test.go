package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every usage error exits 2 with one line naming the problem and then the
// command's usage; nothing runs.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the first line
	}{
		{[]string{"fleet", "--frobnicate"}, "flag provided but not defined"},
		{[]string{"fleet", "-n", "abc"}, `invalid value "abc" for flag -n`},
		{[]string{"fleet", "-n", "0"}, "-n 0"},
		{[]string{"fleet", "-n", "99999999"}, "one shard holds at most"},
		{[]string{"fleet", "-n", "1000000"}, "memory holds about"},
		{[]string{"fleet", "--deadline", "garbage"}, "invalid value"},
		{[]string{"fleet", "--deadline", "-1s"}, "--deadline"},
		{[]string{"fleet", "--time-scale", "NaN"}, "--time-scale NaN"},
		{[]string{"fleet", "--time-scale", "Inf"}, "--time-scale +Inf"},
		{[]string{"fleet", "--time-scale", "1e-9"}, "--time-scale 1e-09"},
		{[]string{"fleet", "--rate", "-1"}, "--rate -1"},
		{[]string{"fleet", "--rate", "NaN"}, "--rate NaN"},
		{[]string{"fleet", "--shard", "128"}, "--shard 128"},
		{[]string{"fleet", "stray"}, `unexpected argument "stray"`},
		{[]string{"fleet", "--uplink", "eth0"}, "--uplink"},
		{[]string{"fleet", "--create"}, "--create goes with --uplink tap:NAME"},
		{[]string{"fleet", "--log-format", "xml"}, "--log-format"},
		{[]string{"fleet", "--mebx-password", "weak"}, "--mebx-password"},
		{[]string{"fleet", "--memory-per-device", "8KiB"}, "--memory-per-device 8KiB: want at least 40KiB"},
		{[]string{"fleet", "--memory-per-device", "64XB"}, `unit "XB"`},
		{[]string{"fleet", "--memory-per-device", "-64KiB"}, "want a byte count"},
		// At 40 KiB each 24 GiB holds more devices than a shard; at 1 GiB
		// each, not a million.
		{[]string{"fleet", "-n", "1000000", "--memory-per-device", "1GiB"}, "memory holds about"},
		{[]string{"run", "--devices", "-3"}, "--devices -3"},
		{[]string{"run", "--time-scale", "0"}, "--time-scale 0"},
		{[]string{"run", "--until", "never"}, "--until"},
		{[]string{"run", "--timeout", "soon"}, "invalid value"},
		{[]string{"run", "extra", "args"}, `unexpected argument "extra"`},
		{[]string{"scs"}, "--db is required"},
		{[]string{"scs", "--db", "x", "--workers", "-1"}, "--workers -1"},
		{[]string{"scs", "--db", "x", "--generate", "1:0:0"}, "--generate"},
		{[]string{"scs", "--db", "x", "--generate", "1:0-200:5"}, "shard"},
		{[]string{"scs", "--db", "x", "--generate", "1:0:99999999"}, "count"},
		{[]string{"scs", "--db", "x", "stray"}, `unexpected argument "stray"`},
		{[]string{"mebx", "show"}, "--store FILE is required"},
		{[]string{"mebx", "frobnicate"}, "unknown verb"},
		{[]string{"mebx", "show", "--store", "x", "extra"}, `unexpected argument "extra"`},
		{[]string{"frobnicate"}, "unknown command"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := amtsim(t, tc.args...)
			assert.Equal(t, exitUsage, code, "stderr: %s", stderr)
			assert.Empty(t, stdout)
			first, rest, _ := strings.Cut(stderr, "\n")
			assert.Contains(t, first, tc.want)
			assert.Contains(t, rest, "Usage", "the usage follows the one line")
		})
	}
}

// -h and --help print the usage to stdout and exit 0, for every command
// and for mebx.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"fleet", "-h"}, {"run", "--help"}, {"scs", "-h"}, {"mebx", "--help"}, {"mebx", "set", "-h"}} {
		code, stdout, stderr := amtsim(t, args...)
		assert.Equal(t, exitOK, code, "%v: %s", args, stderr)
		assert.Contains(t, stdout, "Usage", "%v", args)
		assert.Empty(t, stderr, "%v", args)
	}
}

// amtsim run and amtsim fleet with their defaults boot devices with
// different MACs, UUIDs and PIDs, so the two side by side on one network
// never collide.
func TestRunAndFleetDefaultsDoNotCollide(t *testing.T) {
	idsOf := func(args ...string) map[string]bool {
		code, out, stderr := amtsim(t, args...)
		require.Equal(t, exitOK, code, stderr)
		ids := map[string]bool{}
		for _, line := range strings.Split(out, "\n") {
			if !strings.Contains(line, "msg=power.on") && !strings.Contains(line, "msg=hello.sent") {
				continue
			}
			for _, f := range strings.Fields(line) {
				for _, k := range []string{"mac=", "uuid=", "pid="} {
					if strings.HasPrefix(f, k) {
						ids[f] = true
					}
				}
			}
		}
		return ids
	}
	run := idsOf("run", "--devices", "3")
	fleet := idsOf("fleet", "-n", "3", "--events")
	require.Len(t, run, 9, "3 MACs, UUIDs and PIDs: %v", run)
	require.GreaterOrEqual(t, len(fleet), 9)
	for id := range run {
		assert.False(t, fleet[id], "%s is in both", id)
	}
}
