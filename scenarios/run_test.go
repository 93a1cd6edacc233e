package scenarios

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runShipped(t *testing.T, name string) *Report {
	t.Helper()
	s, ok := Named(name)
	require.True(t, ok, name)
	rep, err := Run(context.Background(), s, Options{})
	require.NoError(t, err)
	for _, c := range rep.Cases {
		for _, f := range c.Failures {
			t.Logf("%s/%s: %s: %s", c.Group, c.Name, f.Device, f.Reason)
		}
	}
	return rep
}

func TestPSKHappyPath(t *testing.T) {
	rep := runShipped(t, "psk-happy-path")
	assert.True(t, rep.Passed())
}

func TestCommitAnswerLost(t *testing.T) {
	rep := runShipped(t, "commit-answer-lost")
	assert.True(t, rep.Passed())
	for d, s := range rep.Stories {
		t.Logf("%s: %v", d, s)
		break
	}
	t.Logf("draws %v", rep.Draws)

	s, _ := Named("commit-answer-lost")
	s.SCS.Flaws = []Flaw{FlawForgetCommit}
	// It never settles: the deadline ends the run.
	s.Deadline = 8 * time.Second
	rep, err := Run(context.Background(), s, Options{})
	require.NoError(t, err)
	assert.False(t, rep.Passed(), "an SCS that forgets the commit fails it")
	for d, s := range rep.Stories {
		t.Logf("flawed %s: %v", d, s)
	}
	for _, c := range rep.Cases {
		for _, f := range c.Failures {
			t.Logf("flawed %s/%s: %s: %s", c.Group, c.Name, f.Device, f.Reason)
		}
	}
}
