package meshcentral

import (
	"bytes"
	"context"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/internal/measure"
)

// BenchmarkMeshCentralActivation measures one activation on both sides in
// the same run: MeshCentral's CPU (its process tree, from /proc/PID/stat)
// and the device side's (the amtsim=device profile label: TLS, WS-MAN, the
// Hello; and the whole test process, netstack and TAP included), for 40
// amt11 devices booted together, from power-on until MeshCentral's
// management has logged in to each. The budget is the device side at most
// 2% of MeshCentral's (docs/architecture.md), which its RSA alone exceeds:
// the connections per activation and the RSA time are reported so that
// the floor is measured in the same run. The profile samples at
// 100 Hz: 40 devices make the device figure good to about 0.25 ms. With
// AMTSIM_PROFILE set the profile is written there.
func BenchmarkMeshCentralActivation(b *testing.B) {
	const n = 40
	l := newLab(b)
	mc := l.meshcentral(b, false, false)
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / n }
	for i := 0; b.Loop(); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		// The fleet's set-up (identities, stores, its pool of RSA keys) is
		// outside the window.
		f, rec := l.newFleet(b, ctx, n, 10+i, firmware.AMT11(), nil)
		var prof bytes.Buffer
		if err := pprof.StartCPUProfile(&prof); err != nil {
			b.Fatal(err)
		}
		mc0, _ := mc.CPU()
		self0 := measure.CPUTime()
		if err := f.Start(ctx); err != nil {
			b.Fatal(err)
		}
		if err := f.Wait(ctx); err != nil {
			b.Fatalf("not all provisioned: %v", err)
		}
		for _, d := range f.Devices() {
			for !rec.loggedInAfterCommit(d.ID()) {
				if ctx.Err() != nil {
					b.Fatalf("%s: no management login", d.ID())
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		mc1, _ := mc.CPU()
		self1 := measure.CPUTime()
		pprof.StopCPUProfile()
		f.Stop()
		cancel()
		if p := measure.ProfilePath(b.Name()); p != "" {
			_ = os.WriteFile(p, prof.Bytes(), 0o644)
		}
		by, err := measure.CPUByLabel(prof.Bytes(), "amtsim", "")
		if err != nil {
			b.Fatal(err)
		}
		rsa, err := measure.CPUByLabel(prof.Bytes(), "amtsim", "crypto/rsa.")
		if err != nil {
			b.Fatal(err)
		}
		var conns uint64
		for _, d := range f.Devices() {
			conns += d.Stats.ConnsAccepted.Load()
		}
		// Each connection is a full handshake (MeshCentral resumes none):
		// one RSA decryption on the device, the floor of its side.
		b.ReportMetric(float64(conns)/n, "device-conns/activation")
		b.ReportMetric(per(rsa["device"]), "device-rsa-ms/activation")
		b.ReportMetric(per(mc1-mc0), "meshcentral-ms/activation")
		b.ReportMetric(per(by["device"]), "device-ms/activation")
		b.ReportMetric(per(self1-self0), "process-ms/activation")
		b.ReportMetric(100*float64(by["device"])/float64(mc1-mc0), "device/meshcentral-%")
		b.ReportMetric(100*float64(self1-self0)/float64(mc1-mc0), "process/meshcentral-%")
	}
}
