package fleet

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/amtsim/amtsim/internal/gcpolicy"
	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/scs"
)

// BenchmarkUplinks provisions the same fleet through the two uplinks onto
// a real segment, in the same run: a TAP on a bridge, and a packet socket
// on a veth whose other end is on that bridge. dnsmasq serves DHCP and DNS
// on the bridge; the reference SCS runs in this process on the bridge's
// address, with kernel sockets, so that both legs pay the same SCS and
// kernel TCP. Each leg reports its process CPU per provisioning and the
// frames per second its uplink carried; packet/tap-cpu is their ratio.
// Wall time, and so frames/s, is bounded by the power-on rate.
func BenchmarkUplinks(b *testing.B) {
	netns.Need(b, "dnsmasq")
	if p, err := gcpolicy.Throughput(os.Getenv); err == nil {
		defer p.Restore()
	}
	const (
		n = 1000
		// Powered on at a pace dnsmasq keeps up with: a burst of 1,000
		// DISCOVERs loses some to its single thread, and each lost one
		// waits out the client's 4 s retransmit (issue 18), which would
		// make wall time a measure of dnsmasq.
		rate   = 200
		router = "198.18.0.1"
		domain = "amtsim.bench"
	)
	ns := netns.New(b)
	netns.Run(b, "ip", "-n", ns.Name, "link", "add", "br0", "type", "bridge")
	netns.Run(b, "ip", "-n", ns.Name, "addr", "add", router+"/16", "dev", "br0")
	netns.Run(b, "ip", "-n", ns.Name, "link", "set", "br0", "up")
	tap := ns.TAP(b, "amt0")
	netns.Run(b, "ip", "-n", ns.Name, "link", "set", "amt0", "master", "br0")
	netns.Run(b, "ip", "-n", ns.Name, "link", "add", "vamt0b", "type", "veth", "peer", "name", "vamt0")
	netns.Run(b, "ip", "-n", ns.Name, "link", "set", "vamt0b", "master", "br0")
	netns.Run(b, "ip", "-n", ns.Name, "link", "set", "vamt0b", "up")
	netns.Run(b, "ip", "-n", ns.Name, "link", "set", "vamt0", "up")
	pkt := ns.Packet(b, "vamt0")
	// Leases of an hour: every leg's devices are new, so the range holds
	// them all.
	ns.Dnsmasq(b, netns.DnsmasqOptions{Interface: "br0", Range: "198.18.1.0,198.18.255.250,255.255.0.0,1h",
		Domain: domain, Hosts: []string{"ProvisionServer." + domain + "," + router}, Extra: []string{"--dhcp-lease-max=70000"}})

	dir := b.TempDir()
	db, err := scs.OpenDB(dir + "/scs.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ca, err := scs.LoadOrCreateCA(dir)
	if err != nil {
		b.Fatal(err)
	}
	const password = "Bench-Pass1!"
	srv, err := scs.NewServer(scs.ServerOptions{DB: db, CA: ca, Password: password, Profile: scs.DefaultProfile(domain), Queue: n,
		Dial: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = ns.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv.Start(ctx)
	defer srv.Stop()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", router+":9971"); return err }); err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ctx, ln) }()

	legs := []struct {
		name  string
		up    nic.Uplink
		stats *nic.UplinkStats
	}{{"tap", tap, &tap.UplinkStats}, {"packet", pkt, &pkt.UplinkStats}}
	shard := 0
	for range b.N {
		cpu := map[string]float64{}
		for _, leg := range legs {
			shard++
			if _, err := db.Generate(ctx, 91, []int{shard}, n, password, nil); err != nil {
				b.Fatal(err)
			}
			stacks := nic.NewStacks(nic.StackOptions{})
			f, err := New(ctx, Options{Devices: n, Seed: 91, Shard: shard, Password: password, Uplink: leg.up, Stacks: stacks, Rate: rate})
			if err != nil {
				b.Fatal(err)
			}
			frames0 := leg.stats.RxFrames.Load() + leg.stats.TxFrames.Load()
			cpu0, start := measure.CPUTime(), time.Now()
			if err := f.Start(ctx); err != nil {
				b.Fatal(err)
			}
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
			err = f.Wait(wctx)
			wall := time.Since(start)
			if err == nil {
				// The SCS's verifying logins after the last commits.
				err = f.WaitQuiet(wctx, 500*time.Millisecond)
			}
			wcancel()
			used := measure.CPUTime() - cpu0
			frames := leg.stats.RxFrames.Load() + leg.stats.TxFrames.Load() - frames0
			if err != nil {
				b.Fatalf("%s: not all provisioned: %+v", leg.name, f.Summary())
			}
			f.Stop()
			stacks.Close()
			cpu[leg.name] = float64(used.Microseconds()) / n
			b.ReportMetric(cpu[leg.name], leg.name+"-cpu-µs/prov")
			b.ReportMetric(float64(frames)/wall.Seconds(), leg.name+"-frames/s")
			b.ReportMetric(float64(n)/wall.Seconds(), leg.name+"-prov/s")
			b.ReportMetric(float64(frames)/n, leg.name+"-frames/prov")
		}
		b.ReportMetric(cpu["packet"]/cpu["tap"], "packet/tap-cpu")
	}
	if _, drops, err := pkt.KernelStats(); err == nil {
		b.ReportMetric(float64(drops), "packet-kernel-drops")
	}
}
