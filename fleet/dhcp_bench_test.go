package fleet

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/internal/gcpolicy"
	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/nic"
)

// BenchmarkDHCPOnTAP boots fleets of 1k and 10k devices at once through a
// TAP, with dnsmasq answering every DHCP message by broadcast
// (--dhcp-broadcast), and reports this process's CPU per lease at each
// size, the lease rate, and cpu-10k/1k: a broadcast offer must cost the
// devices it is not for nothing that grows with their number. Leases are
// counted from dhcp.bound events; the devices then find no SCS and wait.
func BenchmarkDHCPOnTAP(b *testing.B) {
	netns.Need(b, "dnsmasq")
	if p, err := gcpolicy.Throughput(os.Getenv); err == nil {
		defer p.Restore()
	}
	cpu := map[int]float64{}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			for range b.N {
				perLease, rate := dhcpBurst(b, n)
				cpu[n] = perLease
				b.ReportMetric(perLease, "cpu-µs/lease")
				b.ReportMetric(rate, "leases/s")
			}
		})
	}
	if cpu[1000] > 0 && cpu[10000] > 0 {
		b.Run("ratio", func(b *testing.B) {
			for range b.N {
				b.ReportMetric(cpu[10000]/cpu[1000], "cpu-10k/1k")
			}
		})
	}
}

func dhcpBurst(b *testing.B, n int) (cpuPerLease, leasesPerSecond float64) {
	ns := netns.New(b)
	tap := ns.TAP(b, "amt0", "198.18.0.1/16")
	ns.Dnsmasq(b, netns.DnsmasqOptions{Interface: "amt0", Range: "198.18.1.0,198.18.255.250,255.255.0.0,1h",
		Domain: "amtsim.bench", Extra: []string{"--dhcp-broadcast", fmt.Sprintf("--dhcp-lease-max=%d", n+100)}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stacks := nic.NewStacks(nic.StackOptions{})
	defer stacks.Close()
	var bound atomic.Int64
	f, err := New(ctx, Options{Devices: n, Seed: 93, Password: "Bench-Pass1!", Uplink: tap, Stacks: stacks,
		Events: func(e firmware.Event) {
			if e.Name == event.DHCPBound {
				bound.Add(1)
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Stop()
	cpu0, start := measure.CPUTime(), time.Now()
	if err := f.Start(ctx); err != nil {
		b.Fatal(err)
	}
	deadline := start.Add(5 * time.Minute)
	for bound.Load() < int64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d devices leased in 5 minutes: %+v", bound.Load(), n, f.Summary().Counts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wall, used := time.Since(start), measure.CPUTime()-cpu0
	b.ReportMetric(float64(f.Summary().DHCPFailures), "dhcp-failures")
	b.ReportMetric(float64(tap.RxFrames.Load())/float64(n), "rx-frames/lease")
	return float64(used.Microseconds()) / float64(n), float64(n) / wall.Seconds()
}
