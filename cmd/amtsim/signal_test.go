package main

import (
	"encoding/json"
	"errors"
	"github.com/amtsim/amtsim/fleet"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/internal/race"
	"github.com/amtsim/amtsim/internal/syncbuf"
)

// process is amtsim run as a process of its own (the test binary under
// mainEnv), its output collected.
type process struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
	err  error
}

func start(t *testing.T, args ...string) *process {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	return spawn(t, exec.Command(self, args...))
}

// spawn starts cmd, the test binary as amtsim (under mainEnv, added to
// cmd.Env or to this process's environment), and kills
// it when the test ends, printing its output if the test failed.
func spawn(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	if p.cmd.Env == nil {
		p.cmd.Env = os.Environ()
	}
	p.cmd.Env = append(p.cmd.Env, mainEnv+"=1")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s:\n%s", strings.Join(p.cmd.Args, " "), p.out.String())
		}
	})
	return p
}

// waitFor waits until the output contains s.
func (p *process) waitFor(t *testing.T, s string, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(p.out.String(), s) }, within, 10*time.Millisecond,
		"waiting for %q", s)
}

// stop sends sig and returns the exit code and how long the process took
// to go.
func (p *process) stop(t *testing.T, sig syscall.Signal) (int, time.Duration) {
	t.Helper()
	sent := time.Now()
	require.NoError(t, p.cmd.Process.Signal(sig))
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30 s after %v", sig)
	}
	took := time.Since(sent)
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), took
	}
	require.NoError(t, p.err)
	return 0, took
}

// stopWithin is the bound on a clean stop; the race detector
// (make test) slows the process several times, so the bound it is held to
// under -race is wider.
func stopWithin() time.Duration {
	if race.Enabled {
		return 6 * time.Second
	}
	return 2 * time.Second
}

// interrupt sends sig and checks the clean stop: exit 130 within
// stopWithin, and a report at path that says it was interrupted.
func (p *process) interrupt(t *testing.T, sig syscall.Signal, path string) fleet.Report {
	t.Helper()
	code, took := p.stop(t, sig)
	t.Logf("stopped %v after the signal", took)
	assert.Equal(t, exitInterrupted, code)
	assert.Less(t, took, stopWithin())
	r := readReport(t, path)
	assert.True(t, r.Interrupted)
	return r
}

func readReport(t *testing.T, path string) fleet.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err, "the report is written when interrupted")
	var r fleet.Report
	require.NoError(t, json.Unmarshal(b, &r))
	return r
}

// SIGINT or SIGTERM stops amtsim fleet at every phase: the set-up (a
// database being filled), the boot, and mid-provisioning. Each time the
// process exits 130 promptly and the report says what happened so far.
func TestFleetSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	t.Run("database fill", func(t *testing.T) {
		rep := filepath.Join(t.TempDir(), "report.json")
		p := start(t, "fleet", "-n", "60000", "--report", rep, "--deadline", "10m")
		p.waitFor(t, "setting up: database", 60*time.Second)
		r := p.interrupt(t, syscall.SIGINT, rep)
		assert.Equal(t, "setup", r.Phase)
		assert.Equal(t, 60000, r.Devices)
		assert.Zero(t, r.Provisioned)
		assert.Contains(t, p.out.String(), "INTERRUPTED during setup")
	})
	t.Run("boot", func(t *testing.T) {
		rep := filepath.Join(t.TempDir(), "report.json")
		// 20 devices a second: the boot lasts 20 s.
		p := start(t, "fleet", "-n", "400", "--rate", "20", "--report", rep, "--deadline", "10m")
		p.waitFor(t, "s  off ", 30*time.Second) // a progress line with devices still off
		r := p.interrupt(t, syscall.SIGTERM, rep)
		assert.Equal(t, "boot", r.Phase)
		assert.Less(t, r.States["off"], int64(400), "some devices were on")
		assert.Positive(t, r.States["off"], "some were not yet")
	})
	t.Run("mid-fleet", func(t *testing.T) {
		rep := filepath.Join(t.TempDir(), "report.json")
		p := start(t, "fleet", "-n", "1500", "--report", rep, "--deadline", "10m")
		p.waitFor(t, "provisioned ", 60*time.Second) // a progress line with provisioned devices
		r := p.interrupt(t, syscall.SIGINT, rep)
		assert.Positive(t, r.Provisioned)
		assert.Less(t, r.Provisioned, 1500)
		require.NotNil(t, r.SCS, "the SCS's side is in the report")
		for step, reasons := range r.SCS.Failures {
			for reason := range reasons {
				assert.NotContains(t, reason, "interrupt", "a session the stop cut short is not a failure (%s)", step)
				assert.NotContains(t, reason, "context canceled", "a session the stop cut short is not a failure (%s)", step)
			}
		}
	})
}

// SIGINT stops amtsim run (which otherwise runs on with --until forever)
// with exit 130.
func TestRunSignal(t *testing.T) {
	p := start(t, "run", "--devices", "3", "--until", "forever")
	p.waitFor(t, "msg=hello.sent", 30*time.Second)
	code, took := p.stop(t, syscall.SIGINT)
	assert.Equal(t, exitInterrupted, code)
	assert.Less(t, took, stopWithin())
	assert.Contains(t, p.out.String(), "msg=run.done")
	assert.Contains(t, p.out.String(), "msg=power.off")
}
