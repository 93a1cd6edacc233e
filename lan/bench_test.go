package lan

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/nic"
)

// BenchmarkIdleDevice measures what an idle booted device costs: NIC on the
// embedded segment, a place on a gVisor stack, a static address with routes,
// and listeners on 16992 and 16993. It reports heap bytes and goroutines per
// device: stacks shared by up to nic.DefaultNICsPerStack NICs (the default),
// one stack for every NIC, and a stack per device. Device NICs filter
// broadcasts and do their own ARP, as firmware.Device makes them.
func BenchmarkIdleDevice(b *testing.B) {
	for _, mode := range []struct {
		name     string
		perStack int
	}{{"shared", 0}, {"one-stack", 1 << 30}, {"stack-per-device", 1}} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s/%dk", mode.name, n/1000), func(b *testing.B) {
				for range b.N {
					bytes, gor := idleFleet(b, n, mode.perStack)
					b.ReportMetric(bytes, "B/device")
					b.ReportMetric(gor, "goroutines/device")
				}
			})
		}
	}
}

func idleFleet(b *testing.B, n, perStack int) (bytesPerDevice, goroutinesPerDevice float64) {
	b.Helper()
	seg := NewSegment(SegmentOptions{})
	defer seg.Close()
	stacks := nic.NewStacks(nic.StackOptions{NICsPerStack: perStack})
	defer stacks.Close()

	before := measure.HeapAfterGC()
	g0 := runtime.NumGoroutine()
	hosts := make([]*nic.Host, 0, n)
	base := netip.MustParseAddr("198.18.1.0")
	addr := base
	noop := func(c net.Conn) { c.Close() }
	for i := range n {
		id, err := identity.Of(1, 0, i)
		if err != nil {
			b.Fatal(err)
		}
		c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: seg, MEFilter: true, OwnARP: true})
		if err != nil {
			b.Fatal(err)
		}
		h, err := stacks.Attach(c)
		if err != nil {
			b.Fatal(err)
		}
		addr = addr.Next()
		if err := h.SetAddress(netip.PrefixFrom(addr, 15), netip.MustParseAddr("198.18.0.1")); err != nil {
			b.Fatal(err)
		}
		for _, port := range []uint16{16992, 16993} {
			if _, err := h.Listen(port, noop); err != nil {
				b.Fatal(err)
			}
		}
		hosts = append(hosts, h)
	}
	after := measure.HeapAfterGC()
	g1 := runtime.NumGoroutine()
	runtime.KeepAlive(hosts)
	return float64(after-before) / float64(n), float64(g1-g0) / float64(n)
}

// BenchmarkSegmentUnicast measures the switch: one NIC sends frames to
// another through the learning table and a delivery worker.
func BenchmarkSegmentUnicast(b *testing.B) {
	seg := NewSegment(SegmentOptions{})
	defer seg.Close()
	mk := func(i int) *nic.NIC {
		id, err := identity.Of(2, 0, i)
		if err != nil {
			b.Fatal(err)
		}
		c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: seg})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	a, z := mk(0), mk(1)
	got := make(chan struct{}, 1024)
	z.SetRawHandler(func([]byte) bool { got <- struct{}{}; return true })
	a.SetRawHandler(func([]byte) bool { return true })
	frame := make([]byte, 128)
	copy(frame, z.HardwareAddr())
	copy(frame[6:], a.HardwareAddr())
	frame[12], frame[13] = 0x88, 0xb5
	// Teach the switch where a is.
	learn := append([]byte(nil), frame...)
	copy(learn, a.HardwareAddr())
	copy(learn[6:], z.HardwareAddr())
	_ = z.WriteRaw(learn)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := a.WriteRaw(frame); err != nil {
			b.Fatal(err)
		}
		<-got
	}
	b.StopTimer()
	if d := seg.Stats.Dropped.Load(); d != 0 {
		b.Fatalf("%d frames dropped", d)
	}
}
