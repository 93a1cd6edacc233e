package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/internal/gcpolicy"
	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/nic"
)

// BenchmarkDHCPOnTAP boots fleets through a TAP, at 250 power-ons a
// second, and reports this process's CPU per lease at each size, the lease
// rate, and the largest size's CPU per lease over the smallest's, for each
// DHCP server (dhcpServers): dnsmasq answering every message by broadcast
// (--dhcp-broadcast), so that a broadcast offer must cost the devices it is
// not for nothing that grows with their number, and Kea, which answers
// these clients (no broadcast flag) by unicast and keeps up at 10k. Leases
// are counted from dhcp.bound events. The devices have the SCS address
// typed into MEBx, so that their Hellos (to a port where nothing listens)
// leave the server's one thread to DHCP alone, and send one Hello each
// (oneHello), so that a larger fleet, which takes longer to switch on, does
// not send more per device.
func BenchmarkDHCPOnTAP(b *testing.B) {
	if p, err := gcpolicy.Throughput(os.Getenv); err == nil {
		defer p.Restore()
	}
	for _, srv := range dhcpServers {
		b.Run(srv.name, func(b *testing.B) {
			netns.Need(b, srv.peer)
			cpu := map[int]float64{}
			for _, n := range srv.sizes {
				b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
					for range b.N {
						perLease, rate := dhcpBurst(b, srv, n)
						cpu[n] = perLease
						b.ReportMetric(perLease, "cpu-µs/lease")
						b.ReportMetric(rate, "leases/s")
					}
				})
			}
			small, large := srv.sizes[0], srv.sizes[len(srv.sizes)-1]
			if cpu[small] > 0 && cpu[large] > 0 {
				b.Run("ratio", func(b *testing.B) {
					for range b.N {
						b.ReportMetric(cpu[large]/cpu[small], fmt.Sprintf("cpu-%dk/%dk", large/1000, small/1000))
					}
				})
			}
		})
	}
}

// dhcpServer is a site's DHCP server for the DHCP benchmarks, with the
// fleet sizes it is measured at.
type dhcpServer struct {
	name, peer string
	sizes      []int
	run        func(b *testing.B, ns *netns.NS, iface string, n int)
}

// dhcpServers: dnsmasq not at 10k, because dnsmasq 2.90 on this 2-core
// machine stops keeping up near 3,600 leases whoever asks (perfdhcp -R
// 10000 -n 10000 -r 250: 3,615 leases, then drops; 42% of dnsmasq's CPU in
// difftime, walking its leases for each packet), so a 10k leg would
// measure dnsmasq. Kea takes the 10k legs.
var dhcpServers = []dhcpServer{
	{name: "dnsmasq", peer: "dnsmasq", sizes: []int{1000, 2000}, run: dnsmasqFor},
	{name: "kea", peer: "kea-dhcp4", sizes: []int{1000, 10000}, run: keaFor},
}

func dhcpBurst(b *testing.B, srv dhcpServer, n int) (cpuPerLease, leasesPerSecond float64) {
	f, ns, tap, bound := leasingFleet(b, srv, "", n, 93, 250)
	cpu0, start := measure.CPUTime(), time.Now()
	if err := f.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	deadline := start.Add(10 * time.Minute)
	for bound.Load() < int64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d devices leased in 10 minutes: %+v", bound.Load(), n, f.Summary().Counts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wall, used := time.Since(start), measure.CPUTime()-cpu0
	b.ReportMetric(float64(f.Summary().DHCPFailures), "dhcp-failures")
	b.ReportMetric(float64(tap.RxFrames.Load())/float64(n), "rx-frames/lease")
	reportServerDrops(b, ns)
	return float64(used.Microseconds()) / float64(n), float64(n) / wall.Seconds()
}

// BenchmarkDHCPVersusPerfdhcp sets the fleet beside Kea's perfdhcp, the
// DHCP load generator, against the same server configuration (fresh for
// each leg; dnsmasq replies by broadcast), for each DHCP server
// (dhcpServers) at its sizes, clients offered at the same rate: the fleet's
// leases per second (all its devices leased, over the wall time until the
// last) and perfdhcp's own rate of completed 4-way exchanges (it does not
// retransmit: a lost DISCOVER is a drop), and fleet/perfdhcp.
func BenchmarkDHCPVersusPerfdhcp(b *testing.B) {
	if p, err := gcpolicy.Throughput(os.Getenv); err == nil {
		defer p.Restore()
	}
	const rate = 250
	for _, srv := range dhcpServers {
		b.Run(srv.name, func(b *testing.B) {
			netns.Need(b, srv.peer, "perfdhcp")
			for _, n := range srv.sizes {
				b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
					for range b.N {
						fleetRate := dhcpFleetRate(b, srv, n, rate)
						pdRate, pdLeased := perfdhcpRate(b, srv, n, rate)
						b.ReportMetric(fleetRate, "fleet-leases/s")
						b.ReportMetric(pdRate, "perfdhcp-exchanges/s")
						b.ReportMetric(float64(pdLeased), "perfdhcp-completed")
						if pdRate > 0 {
							b.ReportMetric(fleetRate/pdRate, "fleet/perfdhcp")
						}
					}
				})
			}
		})
	}
}

// leasingFleet readies n devices on a TAP in a namespace of their own
// (told apart by role) with srv on its kernel side, and counts their
// leases; the fleet stops with the benchmark.
func leasingFleet(b *testing.B, srv dhcpServer, role string, n int, seed uint64, rate float64) (*Fleet, *netns.NS, *nic.TAP, *atomic.Int64) {
	ns := netns.NewAs(b, role)
	tap := ns.TAP(b, "amt0", "198.18.0.1/16")
	srv.run(b, ns, "amt0", n)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	stacks := nic.NewStacks(nic.StackOptions{})
	bound := &atomic.Int64{}
	f, err := New(ctx, Options{Devices: n, Seed: seed, Password: "Bench-Pass1!", Uplink: tap, Stacks: stacks, Rate: rate,
		MEBx: []string{"scs.address=" + unusedSCS}, Schedule: oneHello, Events: func(e firmware.Event) {
			if e.Name == event.DHCPBound {
				bound.Add(1)
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Stop(); stacks.Close() })
	return f, ns, tap, bound
}

// reportServerDrops reports the datagrams the DHCP server's namespace
// dropped on a full socket buffer (server-rcvbuf-drops): what a server
// that falls behind loses, and its clients then wait out in retransmits.
func reportServerDrops(b *testing.B, ns *netns.NS) {
	b.Helper()
	n, err := ns.UDPRcvbufErrors()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n), "server-rcvbuf-drops")
}

// unusedSCS is the SCS address the DHCP legs' devices are given: on the
// subnet, but no host's. Their Hello ARPs for it and fails, and the
// namespace's kernel never learns a neighbor. A Hello to the kernel's own
// address drew a RST, and with it an ARP entry per device: past Linux's
// default of 1,024 (net.ipv4.neigh.default.gc_thresh3, one table for all
// namespaces) the kernel logged "neighbor table overflow" and dnsmasq,
// woken by each neighbor event, fell behind (2k: 203 datagrams dropped on
// its socket, 896 DHCP failures, where perfdhcp, whose clients never use
// their addresses, dropped none).
const unusedSCS = "198.18.0.9"

// oneHello is a Hello schedule of one Hello, then a day's silence.
var oneHello = hello.Schedule{Round: []hello.Step{{Count: 1, Interval: time.Hour}}, Then: 24 * time.Hour, Window: 24 * time.Hour}

// dnsmasqFor runs the site's DHCP server of both legs on iface.
//
// dnsmasq is told to ignore the clients' host names. A device sends its
// own (option 12), as AMT does, and dnsmasq 2.90's work per named client
// grows with its leases (perf: difftime and memcmp, 35% of its CPU): a 2k
// fleet on this machine leased at 70–76 per second with dnsmasq at 100% CPU
// and 540–835 datagrams dropped on its socket, whether offered at 150, 200
// or 250 per second; with the names ignored, 250 per second and none
// dropped. perfdhcp's clients send no name (2,000 exchanges at 200 per
// second against the same dnsmasq), so both legs give dnsmasq the same
// work; a site's dnsmasq meets the limit with thousands of AMT PCs booting
// at once (README).
func dnsmasqFor(b *testing.B, ns *netns.NS, iface string, n int) {
	b.Helper()
	ns.Dnsmasq(b, netns.DnsmasqOptions{Interface: iface, Range: "198.18.1.0,198.18.255.250,255.255.0.0,1h",
		Domain: "amtsim.bench", Hosts: []string{"ProvisionServer.amtsim.bench,198.18.0.1"},
		Extra: []string{"--dhcp-broadcast", "--leasefile-ro", "--dhcp-ignore-names", fmt.Sprintf("--dhcp-lease-max=%d", n+100)}})
}

// keaFor runs Kea with the same pool, domain and lease time on iface.
func keaFor(b *testing.B, ns *netns.NS, iface string, _ int) {
	ns.Kea(b, netns.KeaOptions{Interface: iface, Subnet: "198.18.0.0/16", Pool: "198.18.1.0 - 198.18.255.250",
		Domain: "amtsim.bench", DNS: "198.18.0.1", Lease: time.Hour})
}

func dhcpFleetRate(b *testing.B, srv dhcpServer, n int, rate float64) float64 {
	f, ns, _, bound := leasingFleet(b, srv, "fleet", n, 95, rate)
	start := time.Now()
	if err := f.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	on := time.Since(start)
	marks := []float64{0.5, 0.9, 0.99}
	var at []string
	for bound.Load() < int64(n) {
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("%d of %d devices leased in 10 minutes", bound.Load(), n)
		}
		if len(marks) > 0 && float64(bound.Load()) >= marks[0]*float64(n) {
			at = append(at, fmt.Sprintf("%g%% at %v", marks[0]*100, time.Since(start).Round(time.Millisecond)))
			marks = marks[1:]
		}
		time.Sleep(20 * time.Millisecond)
	}
	wall := time.Since(start)
	drops, err := ns.UDPRcvbufErrors()
	if err != nil {
		b.Fatal(err)
	}
	leased := strings.Join(at, ", ")
	if leased == "" {
		leased = "each device as it came on" // done before the first look
	}
	b.Logf("fleet leg, %d devices at %g/s: all on at %v, leased %s, all at %v; DHCP failures %d; the server dropped %d datagrams on a full buffer", n, rate, on.Round(time.Millisecond), leased, wall.Round(time.Millisecond), f.Summary().DHCPFailures, drops)
	b.ReportMetric(float64(drops), "fleet-server-rcvbuf-drops")
	return float64(n) / wall.Seconds()
}

// perfdhcpRate runs perfdhcp from a namespace of its own through a veth
// to srv's, and returns its rate line and completed exchanges.
func perfdhcpRate(b *testing.B, srv dhcpServer, n int, rate int) (float64, int) {
	sns, cli := netns.NewAs(b, "dhcpd"), netns.NewAs(b, "perfdhcp")
	sns.Veth(b, "pd1", "pd0", "198.18.0.1/16")
	netns.Run(b, "ip", "-n", sns.Name, "link", "set", "pd1", "netns", cli.Name)
	netns.Run(b, "ip", "-n", cli.Name, "addr", "add", "198.18.0.2/16", "dev", "pd1")
	netns.Run(b, "ip", "-n", cli.Name, "link", "set", "pd1", "up")
	srv.run(b, sns, "pd0", n)
	time.Sleep(500 * time.Millisecond) // the server binds its sockets
	out, err := cli.Exec("perfdhcp", "-4", "-l", "pd1", "-R", strconv.Itoa(n), "-n", strconv.Itoa(n),
		"-r", strconv.Itoa(rate), "-W", "2000000", "198.18.0.1")
	// perfdhcp exits 3 when some exchanges were dropped: a figure, not
	// a failure.
	if ee := (*exec.ExitError)(nil); err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
		b.Fatalf("perfdhcp: %v\n%s", err, out)
	}
	var r float64
	var completed int
	section := ""
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Rate: "); ok {
			if _, err := fmt.Sscanf(v, "%g", &r); err != nil {
				b.Fatalf("perfdhcp rate %q: %v", line, err)
			}
		}
		if strings.HasPrefix(line, "***Statistics for: ") {
			section = line
		}
		if v, ok := strings.CutPrefix(line, "received packets: "); ok && strings.Contains(section, "REQUEST-ACK") {
			completed, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if r == 0 {
		b.Fatalf("no rate in perfdhcp's output:\n%s", out)
	}
	drops, err := sns.UDPRcvbufErrors()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(drops), "perfdhcp-server-rcvbuf-drops")
	return r, completed
}
