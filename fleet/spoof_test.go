package fleet

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/scs"
)

// PIDs are public: a host on the segment that sends the device's Hello
// every 3 s, from before the device boots, does not keep the SCS from
// provisioning the device within its normal time, nor move the record's
// address to itself; the SCS reports the conflict.
func TestSpoofedHellosDoNotStarveTheDevice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: t.TempDir(),
		Fleet: Options{Devices: 1, Seed: 41, Password: testPassword}})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	victim := e.Fleet.Identities()[0]

	spoofer, err := e.Net.AddHost(net.HardwareAddr{0x02, 0xa0, 0, 0, 0, 0x66}, netip.MustParsePrefix("198.18.0.66/15"), nil)
	require.NoError(t, err)
	m := hello.Message{AdminSet: true, Version: hello.VersionPSK, UUID: victim.UUID, PID: victim.PID}
	b, err := m.Marshal()
	require.NoError(t, err)
	scsAddr := netip.AddrPortFrom(e.Net.SCS(), mebx.DefaultSCSPort).String()
	spoof := func() {
		c, err := spoofer.DialContext(ctx, "tcp", scsAddr)
		if err != nil {
			return
		}
		_, _ = c.Write(b)
		c.Close()
	}
	spoof()
	go func() {
		t := time.NewTicker(3 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				spoof()
			}
		}
	}()
	// The spoofer's claim is in first.
	require.Eventually(t, func() bool { return e.srv.Stats.Hellos.Load() >= 1 }, 5*time.Second, 5*time.Millisecond)
	start := time.Now()
	require.NoError(t, e.Fleet.Start(ctx))
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	require.NoError(t, e.Wait(wctx), "the device is provisioned despite the spoofer: %+v", e.SCSSummary())
	t.Logf("provisioned %v after boot", time.Since(start))
	rec, ok := e.DB.ByUUID(victim.UUID.String())
	require.True(t, ok)
	dev := e.Fleet.Devices()[0]
	assert.Equal(t, dev.Addr().String(), rec.Addr, "the record keeps the device's address, not the spoofer's")
	assert.NotZero(t, e.srv.Stats.Conflicts.Load(), "the conflict is counted")

}

// The embedded default's SCS directory (the CA's key, the PPS database)
// is gone while the fleet runs, so no exit, kill -9 included, leaves it.
func TestEmbeddedLeavesNoSecretOnDisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := StartEmbedded(ctx, EmbeddedOptions{Fleet: Options{Devices: 3, Seed: 42, Password: testPassword}})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	require.NotEmpty(t, e.tmp)
	_, err = os.Stat(e.tmp)
	assert.ErrorIs(t, err, os.ErrNotExist, "the temporary SCS directory is gone once open")
	require.NoError(t, e.Fleet.Start(ctx))
	require.NoError(t, e.Wait(ctx), "and the fleet is provisioned all the same")
	e.StopSCS()
	require.NoError(t, e.StartSCS(ctx), "a restarted SCS uses what is in memory")
}

// A device that commits and then vanishes (its cable out the moment it
// commits, so the answer is lost, past the SCS's verify window and
// retries) is settled by the SCS's
// background scan once it is back, with no restart of the SCS and no
// Hello from the device (a provisioned device sends none).
func TestVanishedAfterCommitIsSettled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var devs []*firmware.Device
	var cut atomic.Bool
	reg := prometheus.NewRegistry()
	e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: t.TempDir(),
		SCS: func(o *scs.ServerOptions) {
			o.VerifyWindow, o.MaxAttempts, o.SettleEvery, o.CallTimeout = 300*time.Millisecond, 1, 200*time.Millisecond, time.Second
			o.Metrics = reg
		},
		Fleet: Options{Devices: 1, Seed: 43, Password: testPassword, Events: func(ev firmware.Event) {
			if ev.Name == event.Provisioned && !cut.Swap(true) {
				devs[0].SetLink(false) // gone the moment it commits
			}
		}}})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	devs = e.Fleet.Devices()
	require.NoError(t, e.Fleet.Start(ctx))
	require.NoError(t, e.Fleet.Wait(ctx), "the device commits")
	id := e.Fleet.Identities()[0]
	require.Eventually(t, func() bool { return e.srv.Stats.Failed.Load() >= 1 }, 10*time.Second, 20*time.Millisecond,
		"the SCS's session and its settling retry fail while the device is away")
	// One attempt: the session's failure released the device, and only
	// the background scan is left to find it; /metrics counts it.
	require.Eventually(t, func() bool { return unsettledGauge(t, reg) == 1 }, 5*time.Second, 20*time.Millisecond)
	devs[0].SetLink(true)
	require.Eventually(t, func() bool {
		rec, _ := e.DB.ByUUID(id.UUID.String())
		return rec.State == scs.StateProvisioned && rec.NewPID == ""
	}, 10*time.Second, 50*time.Millisecond, "settled in the background once the device is back")
	require.Eventually(t, func() bool { return unsettledGauge(t, reg) == 0 }, 5*time.Second, 20*time.Millisecond)
}

func unsettledGauge(t *testing.T, reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "amtsim_scs_unsettled_records" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no amtsim_scs_unsettled_records")
	return 0
}
