package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/scs"
)

const testPassword = "Fleet-Pass1!"

func startEmbedded(t *testing.T, n int, seed uint64, tweak func(*scs.ServerOptions)) *Embedded {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: t.TempDir(), SCS: tweak,
		Fleet: Options{Devices: n, Seed: seed, Password: testPassword}})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	require.NoError(t, e.Fleet.Start(ctx))
	return e
}

// A fleet on the embedded LAN is provisioned end to end by the reference
// SCS: every device's persisted state is POST with the new PID/PPS the SCS
// recorded, and each has a certificate the SCS issued.
func TestEmbeddedFleetProvisioned(t *testing.T) {
	const n = 200
	e := startEmbedded(t, n, 11, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := e.Wait(ctx); err != nil {
		t.Fatalf("not all provisioned: %+v\nSCS: %+v", e.Fleet.Summary(), e.SCSSummary())
	}
	sum := e.Fleet.Summary()
	assert.Equal(t, n, sum.Provisioned)
	assert.Equal(t, int64(n), sum.States[StateProvisioned])
	assert.Greater(t, sum.BootToProvisioned.P50, 0.0)
	assert.GreaterOrEqual(t, sum.BootToProvisioned.Max, sum.BootToProvisioned.P99)

	recs := map[string]scs.Record{}
	for _, r := range e.DB.All() {
		recs[r.PID] = r
	}
	require.Len(t, recs, n)
	for i, d := range e.Fleet.Devices() {
		st, err := deviceSettings(d)
		require.NoError(t, err)
		assert.Equal(t, mebx.StatePost, st.State, "device %d", i)
		r, ok := recs[st.PID]
		require.True(t, ok, "device %d's new PID %s is in the SCS database", i, st.PID)
		assert.NotEqual(t, e.Fleet.Identities()[i].PID, st.PID, "a new PID")
		assert.Equal(t, st.PPS, r.PPS)
		assert.Equal(t, scs.StateProvisioned, r.State)
		assert.NotEmpty(t, r.CertSerial, "a certificate was issued")
		assert.True(t, st.AMT.TLSEnabled)
		require.NotEmpty(t, st.AMT.Certs)
	}
	ss := e.SCSSummary()
	assert.Equal(t, uint64(n), ss.Provisioned)
	assert.Zero(t, ss.Unknown)
}

func deviceSettings(d *firmware.Device) (mebx.Settings, error) { return d.Settings() }
