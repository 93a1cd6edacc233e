package firmware

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// BenchmarkHelloingDevices measures a fleet of devices in setup mode on the
// embedded LAN, each booted by DHCP, its SCS found by DNS, sending Hellos to
// a listener on the segment. It reports, per device:
//
//   - boot-ms: wall time from the first power-on until every device's first
//     Hello was read, per 1,000 devices;
//   - B/device and goroutines/device with every device idle between Hellos
//     (leased, listening on 16992/16993, Hello timer armed);
//   - cpu-µs/hello: process CPU (user + system) for one more round of
//     Hellos, divided by the Hellos read. The listener and the LAN run in
//     the same process, so this is the whole cost of a Hello, both ends;
//   - alloc-B/hello: the bytes that round allocated, per Hello (what a
//     fleet's collector pays for its waiting devices' Hellos).
func BenchmarkHelloingDevices(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			for range b.N {
				helloFleet(b, n)
			}
		})
	}
}

func helloFleet(b *testing.B, n int) {
	b.Helper()
	bn := benchLAN(b)

	before := measure.HeapAfterGC()
	g0 := runtime.NumGoroutine()
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	devs, _ := bootSetupFleet(ctx, b, bn, 3, n)
	boot := time.Since(start)

	after := measure.HeapAfterGC()
	g1 := runtime.NumGoroutine()
	b.ReportMetric(float64(boot.Milliseconds())/float64(n)*1000, "boot-ms/1k")
	b.ReportMetric(float64(after-before)/float64(n), "B/device")
	b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/device")

	// Bring the next Hello forward: one round more, measured (and
	// profiled, as profileRound says).
	stopProfile := profileRound(b)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := measure.CPUTime()
	for _, d := range devs {
		d.mu.Lock()
		if d.helloTimer != nil && d.helloTimer.Stop() {
			d.helloTimer = d.clock.AfterFunc(0, d.helloSlot)
		}
		d.mu.Unlock()
	}
	bn.waitFor(b, int64(2*n), time.Minute, devs)
	b.ReportMetric(float64((measure.CPUTime()-cpu0).Microseconds())/float64(n), "cpu-µs/hello")
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(n), "alloc-B/hello")
	stopProfile()

	var failed uint64
	for _, d := range devs {
		failed += d.Stats.HellosFailed.Load()
		d.PowerOff()
	}
	if failed > 0 {
		b.Errorf("%d Hellos failed", failed)
	}
}

const bootBatch = 500

// profileRound profiles from now until the returned func is called: a CPU
// profile where AMTSIM_PROFILE asks for b's, and where AMTSIM_HEAP_PROFILE
// does, the allocs profile at both ends (PATH.base at the start), so that
// `go tool pprof -sample_index=alloc_space -diff_base PATH.base PATH` is
// what the round allocated.
func profileRound(b *testing.B) (stop func()) {
	b.Helper()
	var stops []func()
	if path := measure.HeapProfilePath(b.Name()); path != "" {
		writeAllocs(b, path+".base")
		stops = append(stops, func() { writeAllocs(b, path) })
	}
	if path := measure.ProfilePath(b.Name()); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			b.Fatal(err)
		}
		stops = append(stops, func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				b.Error(err)
			}
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}

// writeAllocs writes the allocs profile to path, after a collection: the
// profile shows allocations as of the last one.
func writeAllocs(b *testing.B, path string) {
	b.Helper()
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// benchNet is a benchmark's LAN: a Hello counter at the SCS address (srv),
// stacks for the devices, and what waitFor reports when Hellos are late.
type benchNet struct {
	netw   *lan.Network
	srv    *nic.Host
	stacks *nic.Stacks
	hellos atomic.Int64
	ln     *nic.Listener
	rx     *hello.Receiver
	first  atomic.Value // the first failed Hello's reason
}

// benchLAN starts the embedded LAN; all of it stops with b.
func benchLAN(b *testing.B) *benchNet {
	b.Helper()
	bn := &benchNet{}
	netw, err := lan.StartNetwork(lan.NetworkOptions{LeaseTime: 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(netw.Close)
	bn.netw = netw
	// As many connections at once as the round brings: the receiver's
	// default bound (1,024) is a guard against peers that connect and say
	// nothing, and here it closed ~22,000 of a 30k round's connections
	// unread, which this benchmark would count against the LAN.
	bn.rx = hello.NewReceiver(hello.ReceiverOptions{Handle: func(hello.Received) { bn.hellos.Add(1) }, MaxConns: 1 << 20})
	srv, err := netw.AddHost(net.HardwareAddr{0x02, 0xa0, 0, 0, 0, 0x02}, netip.PrefixFrom(netw.SCS(), netw.Subnet().Bits()), nil)
	if err != nil {
		b.Fatal(err)
	}
	bn.srv = srv
	if bn.ln, err = srv.Listen(mebx.DefaultSCSPort, bn.rx.ServeConn); err != nil {
		b.Fatal(err)
	}
	bn.stacks = nic.NewStacks(nic.StackOptions{})
	b.Cleanup(bn.stacks.Close)
	return bn
}

// noteFailure keeps the first failed Hello's reason for waitFor's report.
func (bn *benchNet) noteFailure(e Event) {
	if e.Name == "hello.failed" {
		if v, ok := e.Attr("err"); ok {
			bn.first.CompareAndSwap(nil, v.String())
		}
	}
}

// bootSetupFleet powers on n devices in setup mode with identities from
// (seed, 0, i), in batches of bootBatch, each batch once its Hellos have
// arrived (bn.hellos counts them). The schedule sends one Hello at once
// and the next a long interval later: time to measure the fleet in
// between.
func bootSetupFleet(ctx context.Context, b *testing.B, bn *benchNet, seed uint64, n int) ([]*Device, []identity.Identity) {
	b.Helper()
	const gap = 5 * time.Minute
	sched := hello.Schedule{Round: []hello.Step{{Count: 15, Interval: gap}}, Then: gap}
	clk := clock.Fleet(1) // as fleet.New gives its devices: one wheel for their long waits
	devs := make([]*Device, 0, n)
	ids := make([]identity.Identity, 0, n)
	for i := range n {
		id, err := identity.Of(seed, 0, i)
		if err != nil {
			b.Fatal(err)
		}
		s := mebx.Defaults()
		if err := s.SetPassword("Bench-Pass1!"); err != nil {
			b.Fatal(err)
		}
		if err := s.SetPIDPPS(id.PID, id.PPS); err != nil {
			b.Fatal(err)
		}
		st := mebx.NewMemStore()
		if err := st.Save(s); err != nil {
			b.Fatal(err)
		}
		d, err := New(Options{Identity: id, Store: st, Uplink: bn.netw.Segment, Stacks: bn.stacks, Clock: clk, Schedule: sched, Events: bn.noteFailure})
		if err != nil {
			b.Fatal(err)
		}
		if err := d.PowerOn(ctx); err != nil {
			b.Fatal(err)
		}
		devs, ids = append(devs, d), append(ids, id)
		// Power on in batches, as a fleet with a boot rate does: a whole
		// fleet switched on in one instant floods the LAN's queues.
		if len(devs)%bootBatch == 0 || len(devs) == n {
			bn.waitFor(b, int64(len(devs)), time.Minute, devs)
		}
	}
	return devs, ids
}

// waitFor waits until want Hellos have arrived, or fails b with what
// the devices, the receiver and the LAN counted.
func (bn *benchNet) waitFor(b *testing.B, want int64, within time.Duration, devs []*Device) {
	b.Helper()
	v, netw := &bn.hellos, bn.netw
	deadline := time.Now().Add(within)
	for v.Load() < want {
		if time.Now().After(deadline) {
			var sent, failed, dnsFail uint64
			for _, d := range devs {
				sent += d.Stats.HellosSent.Load()
				failed += d.Stats.HellosFailed.Load()
				dnsFail += d.Stats.DNSFailures.Load()
			}
			accepted, refused := bn.ln.Accepted.Load(), bn.rx.Stats.Refused.Load()
			b.Fatalf("%d of %d Hellos after %v (%d sent by the devices, %d connections accepted, %d closed unread by the receiver); %d failed (%d DNS; first: %v); segment dropped %d frames; DNS server: %d queries, %d answered, %d NXDOMAIN",
				v.Load(), want, within, sent, accepted, refused, failed, dnsFail, bn.first.Load(), netw.Segment.Stats.Dropped.Load(),
				netw.DNS.Stats.Queries.Load(), netw.DNS.Stats.Answered.Load(), netw.DNS.Stats.NXDomain.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var benchSizes = []int{1000, 10000, 30000}
