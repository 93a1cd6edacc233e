//go:build !race

// The shipped suites run without the race detector (make test runs this
// file on its own): the Hello storm's 5,000 devices take 45 s as it is.

package scenarios

import (
	"bytes"
	"context"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/amtsim/amtsim/internal/peer"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every shipped scenario of the embedded LAN passes against the reference
// SCS, and each one
// that names the flaws it catches fails against an SCS with them. The
// verdicts, written as JUnit, are read back by junitparser (Debian's),
// whose counts must match ours.
func TestShippedScenarios(t *testing.T) {
	all, err := Shipped("")
	require.NoError(t, err)
	var mu sync.Mutex
	var reps []*Report
	keep := func(r *Report) {
		mu.Lock()
		reps = append(reps, r)
		mu.Unlock()
	}
	t.Run("suite", func(t *testing.T) {
		for _, s := range all {
			if s.Network != "" {
				// An SCS under test on a TAP: internal/meshcentral runs
				// these against MeshCentral (TestShippedTAPScenarios).
				continue
			}
			t.Run(s.Name, func(t *testing.T) {
				t.Parallel()
				rep, err := Run(context.Background(), s, Options{})
				require.NoError(t, err)
				logFailures(t, rep)
				assert.True(t, rep.Passed(), "%s passes against the reference SCS", s.Name)
				keep(rep)
				if len(s.Catches) == 0 {
					return
				}
				flawed := *s
				flawed.SCS.Flaws = append(slices.Clone(s.SCS.Flaws), s.Catches...)
				// It fails by its deadline; a short one will do.
				flawed.Deadline = 15 * time.Second
				rep, err = Run(context.Background(), &flawed, Options{})
				require.NoError(t, err)
				assert.False(t, rep.Passed(), "%s fails against an SCS with %v", s.Name, s.Catches)
				rep.Scenario += "-flawed"
				keep(rep)
			})
		}
	})

	peer.Need(t, "junitparser")
	dir := t.TempDir()
	in, out := filepath.Join(dir, "amtsim.xml"), filepath.Join(dir, "merged.xml")
	var b bytes.Buffer
	require.NoError(t, WriteJUnit(&b, reps))
	require.NoError(t, os.WriteFile(in, b.Bytes(), 0o644))
	// merge recounts tests and failures from the test cases themselves.
	cmd := exec.Command("junitparser", "merge", in, out)
	o, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", o)
	var merged struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Suites   []struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
		} `xml:"testsuite"`
	}
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	require.NoError(t, xml.Unmarshal(data, &merged))
	tests, failures := 0, 0
	for _, r := range reps {
		tests += len(r.Cases)
		failures += r.Failed()
	}
	assert.Equal(t, tests, merged.Tests)
	assert.Equal(t, failures, merged.Failures)
	assert.NotZero(t, failures, "the flawed runs failed")
	assert.Len(t, merged.Suites, len(reps))
	err = exec.Command("junitparser", "verify", in).Run()
	assert.Error(t, err, "verify fails a file with failures")
}
