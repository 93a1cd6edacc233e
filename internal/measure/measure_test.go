package measure

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A child that spins for a while has used about that much CPU; one that
// sleeps has used almost none.
func TestProcessCPUTime(t *testing.T) {
	spin := exec.Command("sh", "-c", "while :; do :; done")
	require.NoError(t, spin.Start())
	defer func() { _ = spin.Process.Kill(); _ = spin.Wait() }()
	sleep := exec.Command("sleep", "5")
	require.NoError(t, sleep.Start())
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()

	time.Sleep(600 * time.Millisecond)
	busy, err := ProcessCPUTime(spin.Process.Pid)
	require.NoError(t, err)
	idle, err := ProcessCPUTime(sleep.Process.Pid)
	require.NoError(t, err)
	assert.Greater(t, busy, 200*time.Millisecond, "a spinning shell")
	assert.Less(t, busy, 2*time.Second)
	assert.Less(t, idle, 100*time.Millisecond, "a sleeping process")

	_, err = ProcessCPUTime(os.Getpid() + 1<<22)
	assert.Error(t, err, "no such process")
}
