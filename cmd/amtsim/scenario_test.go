package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestScenarioList(t *testing.T) {
	code, out, _ := amtsim(t, "scenario", "list")
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "psk-happy-path")
	assert.Contains(t, out, "post-commit-connection-drop")
	code, out, _ = amtsim(t, "scenario", "list", "--suite", "fieldbugs")
	require.Equal(t, exitOK, code)
	assert.NotContains(t, out, "psk-happy-path")
}

// A bad file exits 2 with one line that names file, line and column;
// nothing runs.
func TestScenarioBadFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("name: bad\ngroups:\n  - name: a\n    count: 1\n    colour: red\nexpect:\n  - state: setup\n"), 0o644))
	for _, verb := range []string{"validate", "run"} {
		code, out, errOut := amtsim(t, "scenario", verb, bad)
		assert.Equal(t, exitUsage, code, verb)
		assert.Empty(t, out)
		assert.Equal(t, "amtsim scenario: "+bad+`:5:5: unknown key "colour" (keys here: name, count, firmware, boot_rate, provisioning, address, scs_in_mebx, pps, pid, password, mebx, quirks, flash_writes)`+"\n", errOut)
	}
	code, _, errOut := amtsim(t, "scenario", "validate", "no-such-scenario")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "no shipped scenario of that name")
	code, _, _ = amtsim(t, "scenario", "frobnicate")
	assert.Equal(t, exitUsage, code)
	code, _, _ = amtsim(t, "scenario", "run")
	assert.Equal(t, exitUsage, code, "nothing named")
}

// A run whose expectation fails exits 4 and says which devices and why;
// the JUnit and JSON files say the same.
func TestScenarioRunFails(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "fails.yaml")
	require.NoError(t, os.WriteFile(f, []byte(`name: fails
deadline: 5s
groups:
  - name: mistyped
    count: 2
    pps: wrong
expect:
  - group: mistyped
    state: provisioned
`), 0o644))
	junit, js := filepath.Join(dir, "j.xml"), filepath.Join(dir, "r.json")
	code, out, errOut := amtsim(t, "scenario", "run", "--junit", junit, "--json", js, "--seed", "77", f)
	assert.Equal(t, exitExpectations, code, errOut)
	assert.Contains(t, out, "FAIL fails (seed 77, 2 devices")
	assert.Contains(t, out, "state setup, want provisioned")
	assert.Contains(t, errOut, "1 of 1 scenarios failed")
	var doc struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
	}
	b, err := os.ReadFile(junit)
	require.NoError(t, err)
	require.NoError(t, xml.Unmarshal(b, &doc))
	assert.Equal(t, 3, doc.Tests)
	assert.Equal(t, 1, doc.Failures)
	var reps []map[string]any
	b, err = os.ReadFile(js)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &reps))
	require.Len(t, reps, 1)
	assert.EqualValues(t, 77, reps[0]["seed"])
	assert.True(t, strings.Contains(string(b), "tls.failed"), "the failing devices' logs are in the report")
}
