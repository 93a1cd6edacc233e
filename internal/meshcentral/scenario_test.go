package meshcentral

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/scenarios"
)

// The shipped scenarios that need an SCS under test on a TAP run here,
// against MeshCentral in the lab: as published (1.1.55, with #4901) each
// fails the way its field report says, and with the one-line fix it
// passes. The lab's TAP stands in for tap:NAME and the group trusts the
// lab's activation root.
func TestShippedTAPScenarios(t *testing.T) {
	all, err := scenarios.Shipped("")
	require.NoError(t, err)
	var tapped []*scenarios.Scenario
	for _, s := range all {
		if s.Network != "" {
			tapped = append(tapped, s)
		}
	}
	require.NotEmpty(t, tapped)
	l := newLab(t)
	for _, s := range tapped {
		for i := range s.Groups {
			s.Groups[i].MEBx = append(s.Groups[i].MEBx, scenarios.MEBxEntry(l.chain.hashEntry()))
		}
		t.Run(s.Name+"/fixed", func(t *testing.T) {
			l.meshcentral(t, false, false)
			rep, err := scenarios.Run(context.Background(), s, scenarios.Options{Uplink: l.tap})
			require.NoError(t, err)
			logReport(t, rep)
			assert.True(t, rep.Passed(), "%s passes against a fixed MeshCentral", s.Name)
		})
		t.Run(s.Name+"/as-published", func(t *testing.T) {
			mc := l.meshcentral(t, true, false)
			short := *s
			short.Deadline = s.Deadline / 3
			rep, err := scenarios.Run(context.Background(), &short, scenarios.Options{Uplink: l.tap})
			require.NoError(t, err)
			logReport(t, rep)
			assert.False(t, rep.Passed(), "%s fails against MeshCentral %s as published", s.Name, Version)
			mc.WaitLog(t, "ERR_OSSL_X509_KEY_VALUES_MISMATCH", 5*time.Second)
		})
	}
}

func logReport(t *testing.T, rep *scenarios.Report) {
	t.Helper()
	for _, c := range rep.Cases {
		for _, f := range c.Failures {
			t.Logf("%s/%s: %s: %s", c.Group, c.Name, f.Device, f.Reason)
		}
	}
}
