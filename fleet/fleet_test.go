package fleet

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/identity"
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
	assert.Nil(t, sum.Uplink, "the embedded LAN is no uplink onto an interface")

	recs := map[string]scs.Record{}
	for _, r := range e.DB.All() {
		recs[r.PID] = r
	}
	require.Len(t, recs, n)
	for i, d := range e.Fleet.Devices() {
		st, err := d.Settings()
		require.NoError(t, err)
		assert.Equal(t, mebx.StatePost, st.State, "device %d", i)
		r, ok := recs[st.PID]
		require.True(t, ok, "device %d's new PID %s is in the SCS database", i, st.PID)
		assert.NotEqual(t, e.Fleet.Identities()[i].PID, st.PID, "a new PID")
		assert.Equal(t, st.PPS, r.PPS)
		assert.Equal(t, scs.StateProvisioned, r.State)
		assert.True(t, st.AMT.TLSEnabled)
		assert.Equal(t, servedSerial(t, st), r.CertSerial, "the SCS recorded the certificate it issued")
		assert.Equal(t, "Amtsim-Mebx5!", st.Password, "the SCS set a new MEBx password")
		assert.Equal(t, st.Password, r.Password, "and recorded it")
		require.Len(t, st.AMT.Users, 2)
		assert.Equal(t, "AQUAAAAAAAUVAAAA3PTcO4M9K0aCi6YoAAIAAA==", st.AMT.Users[1].KerberosSID)
	}
	ss := e.SCSSummary()
	assert.Equal(t, uint64(n), ss.Provisioned)
	assert.Zero(t, ss.Unknown)

	// The phases place every device's boot → provisioned: each milestone
	// reached, in order, and the session that provisioned the device
	// within the SCS's own, which goes on to check the commit after it.
	require.NotNil(t, sum.Phases)
	for _, ph := range sum.Phases.each() {
		assert.Equal(t, int64(n), ph.l.Count, ph.name)
	}
	assert.LessOrEqual(t, sum.Phases.SessionToProvisioned.Max, ss.Session.Max)
	for _, d := range e.Fleet.DeviceReports() {
		assert.True(t, 0 < d.BootToAddressMS && d.BootToAddressMS <= d.BootToHelloMS &&
			d.BootToHelloMS <= d.BootToSessionMS && d.BootToSessionMS <= d.BootToProvisionedMS, "milestones out of order: %+v", d)
	}
}

// Hellos one at a time (HelloTurns 1): the fleet is provisioned all the
// same, every Hello took one lookup, and none is left waiting.
func TestFleetHellosTakeTurns(t *testing.T) {
	const n = 40
	e := startEmbeddedWith(t, EmbeddedOptions{Fleet: Options{Devices: n, Seed: 13, Password: testPassword, HelloTurns: 1}})
	require.NotNil(t, e.Fleet.helloGate)
	require.NoError(t, e.Fleet.Start(t.Context()))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := e.Wait(ctx); err != nil {
		t.Fatalf("not all provisioned: %+v", e.Fleet.Summary())
	}
	c := e.Fleet.Summary().Counts
	assert.GreaterOrEqual(t, c.HellosSent, uint64(n))
	assert.Equal(t, c.HellosSent, c.DNSQueries, "one lookup per Hello")
	assert.Zero(t, e.Fleet.helloGate.Waiting())

	none := startEmbeddedWith(t, EmbeddedOptions{Fleet: Options{Devices: 1, Seed: 14, Password: testPassword, HelloTurns: -1}})
	assert.Nil(t, none.Fleet.helloGate, "-1: no limit")
}

// The SCS stops halfway through a fleet and starts again: every device
// ends provisioned, none twice, and the summary counts the sessions the
// stop cut.
func TestSCSRestartMidFleet(t *testing.T) {
	const n = 200
	var mu sync.Mutex
	commits := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: t.TempDir(),
		// Hello slots 0.6 s apart rather than 12 s; slow sessions, so
		// that the stop finds many in progress.
		SCS: func(o *scs.ServerOptions) { o.Workers = 8 },
		Fleet: Options{Devices: n, Seed: 12, Password: testPassword, Clock: clock.Scaled(20),
			Events: func(ev firmware.Event) {
				if ev.Name == "provisioned" {
					mu.Lock()
					commits[ev.Device]++
					mu.Unlock()
				}
			}}})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	require.NoError(t, e.Fleet.Start(ctx))
	require.Eventually(t, func() bool { return e.SCSSummary().Provisioned >= n/4 }, time.Minute, 5*time.Millisecond)
	e.StopSCS()
	stoppedAt := e.SCSSummary().Provisioned
	time.Sleep(300 * time.Millisecond) // Hellos meanwhile find no SCS
	require.NoError(t, e.StartSCS(ctx))

	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer wcancel()
	if err := e.Wait(wctx); err != nil {
		t.Fatalf("not all provisioned: %+v\nSCS: %+v", e.Fleet.Summary(), e.SCSSummary())
	}
	assert.Less(t, stoppedAt, uint64(n), "the stop came before the end")
	ss := e.SCSSummary()
	t.Logf("SCS: %+v", ss)
	assert.Positive(t, ss.Aborted, "the stop cut sessions, and the summary counts them as aborted")
	for step, reasons := range ss.Failures {
		for reason := range reasons {
			assert.NotContains(t, reason, "context canceled", "a cut session is not a failure (%s)", step)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, commits, n)
	for dev, c := range commits {
		assert.Equal(t, 1, c, "%s committed %d times", dev, c)
	}
	for i, d := range e.Fleet.Devices() {
		st, err := d.Settings()
		require.NoError(t, err)
		r, ok := e.DB.Get(st.PID)
		require.True(t, ok, "device %d", i)
		assert.Equal(t, scs.StateProvisioned, r.State)
	}
}

// A device whose commit went through but whose verifying login failed
// (its certificate port unreachable for a while) is settled by logging in
// again with the new credentials. It is never sent back through TLS-PSK,
// which a provisioned device refuses, and it sends no Hello to be found by.
func TestVerifyFailureSettles(t *testing.T) {
	var failing atomic.Bool
	e := provisionOne(t, 13, func(o *scs.ServerOptions) {
		o.VerifyWindow, o.RetryBase = 200*time.Millisecond, 50*time.Millisecond
		dial := o.Dial
		o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if failing.Load() && strings.HasSuffix(addr, ":16993") {
				return nil, errors.New("test: 16993 unreachable")
			}
			return dial(ctx, network, addr)
		}
		// From the commit's answer until the verification has failed
		// once, the certificate port cannot be reached.
		o.Events = func(ev scs.Event) {
			switch {
			case ev.Name == "scs.step" && attr(ev, "step") == "commit" && attr(ev, "ok") == "true":
				failing.Store(true)
			case ev.Name == "scs.failed" && attr(ev, "step") == "verify":
				failing.Store(false)
			}
		}
	})
	ss := e.SCSSummary()
	assert.Equal(t, uint64(1), ss.Provisioned)
	assert.Equal(t, uint64(1), ss.Failed)
	assert.Equal(t, 1, ss.Failures["verify"]["16993 unreachable"], "%+v", ss.Failures)
	assert.Zero(t, e.Fleet.Summary().TLSFailures, "no TLS-PSK login against the provisioned device")
	st, err := e.Fleet.Devices()[0].Settings()
	require.NoError(t, err)
	r, ok := e.DB.Get(st.PID)
	require.True(t, ok, "the record has the device's new PID")
	assert.Equal(t, scs.StateProvisioned, r.State)
	assert.Empty(t, r.NewPID)
	assert.Equal(t, servedSerial(t, st), r.CertSerial, "settling records the certificate the device serves")
}

// servedSerial is the serial (hex, as the SCS records it) of the
// certificate st's 16993 serves.
func servedSerial(t *testing.T, st mebx.Settings) string {
	t.Helper()
	for _, c := range st.AMT.Certs {
		if c.ID == st.AMT.TLSCert {
			cert, err := x509.ParseCertificate(c.DER)
			require.NoError(t, err)
			return cert.SerialNumber.Text(16)
		}
	}
	t.Fatalf("no certificate %q among the device's %d", st.AMT.TLSCert, len(st.AMT.Certs))
	return ""
}

// provisionOne runs a one-device embedded fleet with the SCS adjusted by
// adjust, and waits until the device is provisioned and the SCS has
// recorded and counted it.
func provisionOne(t *testing.T, seed uint64, adjust func(*scs.ServerOptions)) *Embedded {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: t.TempDir(), SCS: adjust,
		Fleet: Options{Devices: 1, Seed: seed, Password: testPassword}})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	require.NoError(t, e.Fleet.Start(ctx))
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := e.Wait(wctx); err != nil {
		t.Fatalf("not provisioned and recorded: %+v\nSCS: %+v", e.Fleet.Summary(), e.SCSSummary())
	}
	return e
}

func attr(ev scs.Event, key string) string {
	for _, a := range ev.Attrs {
		if a.Key == key {
			return a.Value.String()
		}
	}
	return ""
}

// Right after the commit, until the device re-arms its ports, a login over
// the certificate may meet the old TLS-PSK port, which answers an RSA
// ClientHello with an alert. The verification tries again rather than
// taking the alert for a device that never committed.
func TestVerifyRetriesAlertsAfterCommit(t *testing.T) {
	var alerts atomic.Int32
	var committed atomic.Bool
	e := provisionOne(t, 14, func(o *scs.ServerOptions) {
		dial := o.Dial
		o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if committed.Load() && strings.HasSuffix(addr, ":16993") && alerts.Add(1) <= 3 {
				// A TLS-PSK port refusing the RSA suites: a fatal
				// handshake_failure alert, then the close.
				c, peer := net.Pipe()
				go func() {
					defer peer.Close()
					_, _ = peer.Read(make([]byte, 4096))
					_, _ = peer.Write([]byte{21, 3, 1, 0, 2, 2, 40})
				}()
				return c, nil
			}
			return dial(ctx, network, addr)
		}
		o.Events = func(ev scs.Event) {
			if ev.Name == "scs.step" && attr(ev, "step") == "commit" && attr(ev, "ok") == "true" {
				committed.Store(true)
			}
		}
	})
	assert.GreaterOrEqual(t, alerts.Load(), int32(4), "three alerts, then the real port")
	ss := e.SCSSummary()
	assert.Zero(t, ss.Failed, "%+v", ss.Failures)
	assert.Equal(t, uint64(1), ss.Provisioned)
}

// Remote configuration end to end: factory-fresh devices of both
// generations that trust the SCS's CA send the PKI Hello, and the SCS
// provisions them with its provisioning certificate; the same transaction
// follows the login as on the PSK path, the devices keep no PID, and the
// SCS's record is found by UUID.
func TestEmbeddedFleetPKI(t *testing.T) {
	for _, p := range []firmware.Profile{firmware.AMT5(), firmware.AMT11()} {
		t.Run(p.Name, func(t *testing.T) {
			const n = 40
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: t.TempDir(), PKI: true,
				Fleet: Options{Devices: n, Seed: 14, Password: testPassword, Profile: p}})
			require.NoError(t, err)
			t.Cleanup(e.Close)
			require.NoError(t, e.Fleet.Start(ctx))
			if err := e.Wait(ctx); err != nil {
				t.Fatalf("not all provisioned: %+v\nSCS: %+v", e.Fleet.Summary(), e.SCSSummary())
			}
			for i, d := range e.Fleet.Devices() {
				st, err := d.Settings()
				require.NoError(t, err)
				assert.Equal(t, mebx.StatePost, st.State, "device %d", i)
				require.NotNil(t, st.AMT.Audit)
				assert.Equal(t, "pki", st.AMT.Audit.Method)
				assert.Equal(t, "ProvisionServer."+e.Net.Domain(), st.AMT.Audit.CertCN)
				assert.Empty(t, st.PID, "remote configuration gives no PID/PPS")
				assert.True(t, st.AMT.TLSEnabled)
				assert.Equal(t, "Amtsim-Mebx5!", st.Password, "the SCS set the MEBx password")
				r, ok := e.DB.ByUUID(e.Fleet.Identities()[i].UUID.String())
				require.True(t, ok)
				assert.Equal(t, scs.StateProvisioned, r.State)
				assert.Equal(t, e.Fleet.Identities()[i].PID, r.PID, "the record keeps its key")
			}
			ss := e.SCSSummary()
			assert.Equal(t, uint64(n), ss.Provisioned)
			assert.Zero(t, ss.Unknown)
		})
	}
}

// A PSK-only SCS hears PKI Hellos and leaves them: counted as unknown,
// no session.
func TestPSKSCSLeavesPKIHellos(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: t.TempDir(), Fleet: Options{Devices: 3, Seed: 15, Factory: true}})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	require.NoError(t, e.Fleet.Start(ctx))
	require.Eventually(t, func() bool { return e.SCSSummary().Unknown >= 3 }, 30*time.Second, 10*time.Millisecond)
	ss := e.SCSSummary()
	assert.Zero(t, ss.Sessions)
	assert.Zero(t, ss.Provisioned)
}

// A kept directory whose database holds a device's factory PID as
// another device's PID (given out by an SCS before new PIDs were kept off
// factory PIDs): that device would Hello until the run timed out, so the
// fleet does not start, and says which device and why.
func TestEmbeddedRefusesADatabaseHoldingAFactoryPID(t *testing.T) {
	dir := t.TempDir()
	db, err := scs.OpenDB(filepath.Join(dir, "scs.db"))
	require.NoError(t, err)
	_, err = db.Generate(context.Background(), 31, []int{1}, 1, "", nil)
	require.NoError(t, err)
	victim, _ := identity.Of(31, 0, 1)
	holder, _ := identity.Of(31, 1, 0)
	r, ok := db.Get(holder.PID)
	require.True(t, ok)
	r.PID, r.State = victim.PID, scs.StateProvisioned
	require.NoError(t, db.Put(r))
	require.NoError(t, db.Close())

	_, err = StartEmbedded(context.Background(), EmbeddedOptions{Dir: dir, Fleet: Options{Devices: 2, Seed: 31, Password: testPassword}})
	require.ErrorIs(t, err, scs.ErrFactoryPIDHeld)
	assert.Contains(t, err.Error(), victim.HostName)
	assert.Contains(t, err.Error(), "1 device(s)")

	// The holder is kept, and the device left out was not added.
	db, err = scs.OpenDB(filepath.Join(dir, "scs.db"))
	require.NoError(t, err)
	defer db.Close()
	got, ok := db.Get(victim.PID)
	require.True(t, ok)
	assert.Equal(t, holder.UUID.String(), got.UUID)
	_, ok = db.ByUUID(victim.UUID.String())
	assert.False(t, ok)
}

// A device that skipped a milestone (an SCS that came without a Hello)
// is left out of the phases on either side of it, and its other phases
// still count.
func TestTrackerPhasesSkipAMilestone(t *testing.T) {
	ms := time.Millisecond
	all := tracker{booted: 1 * ms, addressed: 3 * ms, hello: 4 * ms, session: 10 * ms, provisioned: 30 * ms}
	d, ok := all.phases()
	assert.Equal(t, [4]time.Duration{2 * ms, ms, 6 * ms, 20 * ms}, d)
	assert.Equal(t, [4]bool{true, true, true, true}, ok)

	noHello := tracker{booted: 1 * ms, addressed: 3 * ms, session: 10 * ms, provisioned: 30 * ms}
	d, ok = noHello.phases()
	assert.Equal(t, [4]bool{true, false, false, true}, ok)
	assert.Equal(t, 2*ms, d[0])
	assert.Equal(t, 20*ms, d[3])
}
