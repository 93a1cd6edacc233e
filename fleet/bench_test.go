package fleet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/amtsim/amtsim/internal/floor"
	"github.com/amtsim/amtsim/internal/gcpolicy"
	"github.com/amtsim/amtsim/internal/measure"
)

// BenchmarkFleetProvisioning runs the embedded default at 1k devices:
// power-on, DHCP, DNS, Hello, and provisioning by the reference SCS (TLS-PSK,
// the whole transaction, a CA-signed certificate for a device-generated key
// from the fleet's key pool, commit, verification over certificate TLS).
// It reports provisionings/s (wall, from the first power-on to the last
// record) and CPU per provisioning split by profile labels: "device" (the
// devices' AMT connections and Hello slots), "scs" (the SCS's workers and
// Hello intake), and "other" (the shared netstack, the LAN with its DHCP and
// DNS servers, the devices' DHCP clients, the Go runtime).
//
// The garbage collector is set as `amtsim fleet` sets it
// (gcpolicy.Throughput), so that the figures are the command's.
func BenchmarkFleetProvisioning(b *testing.B) {
	p, err := gcpolicy.Throughput(os.Getenv)
	if err != nil {
		b.Logf("garbage collector at Go's defaults: %v", err)
	} else {
		defer p.Restore()
	}
	for _, n := range []int{1000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			for range b.N {
				fleetRun(b, n)
			}
		})
	}
}

func fleetRun(b *testing.B, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: b.TempDir(), Fleet: Options{Devices: n, Seed: 77, Password: "Bench-Pass1!"}})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	var prof bytes.Buffer
	if err := pprof.StartCPUProfile(&prof); err != nil {
		b.Skipf("CPU profile unavailable (is -cpuprofile set?): %v", err)
	}
	cpu0 := measure.CPUTime()
	start := time.Now()
	if err := e.Fleet.Start(ctx); err != nil {
		b.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer wcancel()
	err = e.Wait(wctx)
	wall := time.Since(start)
	cpu := measure.CPUTime() - cpu0
	pprof.StopCPUProfile()
	if err != nil {
		b.Fatalf("not all provisioned: %+v\nSCS: %+v", e.Fleet.Summary(), e.SCSSummary())
	}
	perProv, devicePerProv := measure.ReportCPUSplit(b, prof.Bytes(), n, "provisionings/s", "prov", wall, cpu)
	floor.Report(b, "prov", perProv, devicePerProv)
	s := e.Fleet.Summary()
	b.ReportMetric(s.BootToProvisioned.P99, "boot→prov-p99-ms")
}
