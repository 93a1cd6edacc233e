package fleet

import (
	"context"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/internal/gcpolicy"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/scs"
)

// BenchmarkSoak is a day of a 5,000-device fleet on the embedded LAN in
// about three minutes: the devices' clocks run 480 times faster (DHCP
// renewals of one-hour leases every half hour of theirs, Hello schedules
// for those not yet provisioned), 5% of every frame each way is lost, and
// the SCS is stopped and started again every simulated hour. It reports
// the devices provisioned (all), provisioned twice (0), records left
// unsettled (0), and heap and goroutines once every device is provisioned
// and at the end of the day (flat within 10%).
func BenchmarkSoak(b *testing.B) {
	const (
		n     = 5000
		scale = 480
		day   = 24 * time.Hour / scale
		hour  = time.Hour / scale
	)
	p, err := gcpolicy.Throughput(os.Getenv)
	if err == nil {
		defer p.Restore()
	}
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), day+10*time.Minute)
		var mu sync.Mutex
		provisioned := map[string]int{}
		e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: b.TempDir(), LAN: lan.NetworkOptions{LeaseTime: time.Hour},
			Fleet: Options{Devices: n, Seed: 86, Password: "Bench-Pass1!", Clock: clock.Scaled(scale),
				Events: func(ev firmware.Event) {
					if ev.Name == event.Provisioned {
						mu.Lock()
						provisioned[ev.Device]++
						mu.Unlock()
					}
				}}})
		if err != nil {
			b.Fatal(err)
		}
		loss := nic.Netem{Loss: 0.05, Seed: 86}
		for _, d := range e.Fleet.Devices() {
			if err := d.SetNetem(loss, loss); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		if err := e.Fleet.Start(ctx); err != nil {
			b.Fatal(err)
		}
		restarts := 0
		restart := time.NewTicker(hour)
		done := make(chan error, 1)
		go func() { done <- e.Wait(ctx) }()
		var heap0 uint64
		var gr0 int
		// The day ends a day after the start, and not before half a day
		// of the fleet provisioned (renewals, restarts and loss going on),
		// over which heap and goroutines must stay flat.
		end := time.After(day)
		var half <-chan time.Time
		dayOver := false
	loop:
		for {
			select {
			case err := <-done:
				if err != nil {
					b.Fatalf("not all provisioned: %v (%+v)", err, e.SCSSummary())
				}
				heap0, gr0 = liveHeap(), runtime.NumGoroutine()
				b.ReportMetric(time.Since(start).Seconds(), "s-to-all-provisioned")
				half = time.After(day / 2)
				done = nil
			case <-half:
				half = nil
				if dayOver {
					break loop
				}
			case <-restart.C:
				e.StopSCS()
				if err := e.StartSCS(ctx); err != nil {
					b.Fatal(err)
				}
				restarts++
			case <-end:
				dayOver = true
				if heap0 != 0 && half == nil {
					break loop
				}
				if heap0 == 0 && done == nil {
					break loop
				}
			}
		}
		restart.Stop()
		if heap0 == 0 {
			b.Fatalf("not all provisioned within the day: %+v", e.Fleet.Summary())
		}
		heap1, gr1 := liveHeap(), runtime.NumGoroutine()
		mu.Lock()
		twice := 0
		for _, c := range provisioned {
			if c > 1 {
				twice++
			}
		}
		all := len(provisioned)
		mu.Unlock()
		unsettled := 0
		for _, r := range e.DB.All() {
			if r.NewPID != "" || r.State != scs.StateProvisioned {
				unsettled++
			}
		}
		b.ReportMetric(float64(all), "provisioned")
		b.ReportMetric(float64(twice), "provisioned-twice")
		b.ReportMetric(float64(unsettled), "unsettled-records")
		b.ReportMetric(float64(restarts), "scs-restarts")
		b.ReportMetric(float64(heap0)/(1<<20), "heap-MiB-provisioned")
		b.ReportMetric(float64(heap1)/(1<<20), "heap-MiB-end")
		b.ReportMetric(float64(gr0), "goroutines-provisioned")
		b.ReportMetric(float64(gr1), "goroutines-end")
		b.ReportMetric(100*(float64(heap1)/float64(heap0)-1), "heap-growth-%")
		e.Close()
		cancel()
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
