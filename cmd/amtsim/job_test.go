package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/internal/scrape"
	"github.com/amtsim/amtsim/nic"
)

// What deploy/k8s's Indexed Job does, on one machine: four pods, each a
// network namespace with its own veth (net1) into one bridge, each running
// `amtsim fleet` with JOB_COMPLETION_INDEX 0–3 on packet:net1; dnsmasq on
// the bridge for DHCP and DNS, and one `amtsim scs` holding all four
// shards' identities. Every device is provisioned, no MAC, UUID or PID is
// shared across shards, the SCS has settled every record, each pod's /metrics (scraped during the run and
// after it, while it lingers) parses and its counters equal its report,
// and the merged report is the sum of the four, its p50/p99 those of all
// the devices' latencies.
func TestIndexedJobOnPacketUplinks(t *testing.T) {
	const (
		shards   = 4
		perShard = 20 // the lab's dnsmasq leases 100 addresses
		seed     = "7"
	)
	l := newBareLab(t)
	dir := t.TempDir()
	scs := l.amtsim(t, "scs", "--db", filepath.Join(dir, "scs.db"), "--generate", fmt.Sprintf("%s:0-%d:%d", seed, shards-1, perShard),
		"--listen", labRouter+":9971")
	scs.waitFor(t, "msg=scs.listening", 30*time.Second)

	type pod struct {
		ns             *netns.NS
		p              *process
		report, list   string
		client         *http.Client
		during, at_end scrape.Families
	}
	pods := make([]*pod, shards)
	for i := range pods {
		ns := netns.NewAs(t, fmt.Sprintf("pod%d", i))
		l.port(t, fmt.Sprintf("vpod%d", i), "net1", ns)
		pd := &pod{ns: ns, report: filepath.Join(dir, fmt.Sprintf("shard-%d.json", i)), list: filepath.Join(dir, fmt.Sprintf("devices-%d.jsonl", i))}
		pd.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
				// The pod's loopback: the socket is made inside its namespace.
				err = ns.Do(func() (err error) {
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			}}}
		self, err := os.Executable()
		require.NoError(t, err)
		cmd := ns.Command(self, "fleet", "-n", fmt.Sprint(perShard), "--seed", seed, "--shards", fmt.Sprint(shards),
			"--uplink", "packet:net1", "--rate", "20", "--deadline", "120s", "--steps=false",
			"--metrics", "127.0.0.1:9100", "--metrics-linger", "2m",
			"--report", pd.report, "--report-stdout", "--device-list", pd.list)
		cmd.Env = append(os.Environ(), fmt.Sprintf("JOB_COMPLETION_INDEX=%d", i))
		pd.p = spawn(t, cmd)
		pods[i] = pd
	}
	for i, pd := range pods {
		pd.p.waitFor(t, "msg=metrics.serving", 30*time.Second)
		// Served from before the fleet is made: scraped until its series
		// are there.
		require.Eventually(t, func() bool {
			mfs, err := scrape.Get(pd.client, "http://127.0.0.1:9100/metrics")
			require.NoError(t, err, "pod %d, during the run", i)
			pd.during = mfs
			_, ok := mfs["amtsim_fleet_provisioned_total"]
			return ok
		}, 30*time.Second, 5*time.Millisecond, "pod %d exports the fleet's series", i)
	}
	for i, pd := range pods {
		pd.p.waitFor(t, "msg=metrics.lingering", 150*time.Second)
		var err error
		pd.at_end, err = scrape.Get(pd.client, "http://127.0.0.1:9100/metrics")
		require.NoError(t, err, "pod %d, after the run", i)
		code, _ := pd.p.stop(t, syscall.SIGTERM)
		assert.Equal(t, exitOK, code, "pod %d: the run succeeded; a signal only ends the lingering", i)
	}

	var reports []string
	var all []fleet.DeviceReport
	for i, pd := range pods {
		out := pd.p.out.String()
		assert.Contains(t, out, "msg=packet.opened packet=net1", "pod %d", i)
		assert.NotContains(t, out, "mac.duplicate", "pod %d", i)
		b, err := os.ReadFile(pd.report)
		require.NoError(t, err)
		rep, err := fleet.ParseReport(b)
		require.NoError(t, err, "pod %d's report", i)
		assert.Equal(t, i, rep.Shard, "pod %d: the shard is $JOB_COMPLETION_INDEX", i)
		assert.Equal(t, perShard, rep.Provisioned, "pod %d", i)
		assert.True(t, rep.OK, "pod %d", i)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last, err := fleet.ParseReport([]byte(lines[len(lines)-2])) // the lingering line follows it
		if assert.NoError(t, err, "pod %d: the report line on stdout", i) {
			assert.Equal(t, rep.Summary.Counts, last.Summary.Counts)
		}
		reports = append(reports, pd.report)

		// The pod's own metrics: during the run, partway; after it, the
		// report's counts.
		for _, mfs := range []scrape.Families{pd.during, pd.at_end} {
			for _, m := range mfs["amtsim_fleet_provisioned_total"].GetMetric() {
				assert.Equal(t, fmt.Sprint(i), scrape.Labels(m)["shard"], "pod %d: the shard label", i)
			}
		}
		v := func(mfs scrape.Families, name string, labels map[string]string) float64 {
			x, ok := mfs.Value(name, labels)
			require.True(t, ok, "pod %d exports %s %v", i, name, labels)
			return x
		}
		assert.Less(t, v(pd.during, "amtsim_fleet_provisioned_total", nil), float64(perShard), "pod %d was scraped during its run", i)
		c := rep.Summary.Counts
		for name, want := range map[string]float64{
			"amtsim_fleet_provisioned_total":           float64(rep.Provisioned),
			"amtsim_fleet_hellos_sent_total":           float64(c.HellosSent),
			"amtsim_fleet_hellos_failed_total":         float64(c.HellosFailed),
			"amtsim_fleet_boot_to_provisioned_seconds": float64(rep.BootToProvisioned.Count),
		} {
			assert.Equal(t, want, v(pd.at_end, name, nil), "pod %d: %s", i, name)
			assert.LessOrEqual(t, v(pd.during, name, nil), want, "pod %d: %s only grows", i, name)
		}
		for kind, want := range map[string]uint64{"dhcp": c.DHCPFailures, "dns": c.DNSFailures, "tls": c.TLSFailures, "auth": c.AuthFailures, "negotiate": c.NegotiateFailures, "request": c.BadRequests} {
			assert.Equal(t, float64(want), v(pd.at_end, "amtsim_fleet_failures_total", map[string]string{"kind": kind}), "pod %d: %s failures", i, kind)
		}
		assert.Equal(t, float64(perShard), v(pd.at_end, "amtsim_fleet_devices", map[string]string{"state": fleet.StateProvisioned}), "pod %d", i)

		// The packet uplink's own counts: in the report, on the summary's
		// line and in /metrics (read at scrape time, after the report: no
		// fewer). Every frame the kernel left to offload was finished.
		if u := rep.Uplink; assert.NotNil(t, u, "pod %d: the report has the uplink's counts", i) {
			assert.Equal(t, "packet:net1", u.Uplink)
			assert.Positive(t, u.RxFrames, "pod %d", i)
			assert.Greater(t, u.TxFrames, uint64(perShard*20), "pod %d: frames of %d provisionings", i, perShard)
			assert.LessOrEqual(t, u.RxOther, u.RxFrames, "pod %d", i)
			assert.Zero(t, u.ReadErrors+u.WriteErrors+u.Unfinished+u.KernelDrops+u.DuplicateMACs, "pod %d: %+v", i, *u)
			assert.Contains(t, out, fmt.Sprintf("packet:net1: %d frames in (%d for no device), %d out; lost: 0 read, 0 write errors, 0 dropped by the kernel, 0 unfinished\n",
				u.RxFrames, u.RxOther, u.TxFrames), "pod %d: the summary's line", i)
			for direction, want := range map[string]uint64{"rx": u.RxFrames, "tx": u.TxFrames} {
				assert.GreaterOrEqual(t, v(pd.at_end, "amtsim_fleet_uplink_frames_total", map[string]string{"uplink": "packet:net1", "direction": direction}), float64(want), "pod %d: %s", i, direction)
			}
			for _, kind := range []string{"read", "write", "unfinished", "kernel_drop"} {
				assert.Zero(t, v(pd.at_end, "amtsim_fleet_uplink_errors_total", map[string]string{"uplink": "packet:net1", "kind": kind}), "pod %d: %s", i, kind)
			}
		}

		b, err = os.ReadFile(pd.list)
		require.NoError(t, err)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var d fleet.DeviceReport
			require.NoError(t, json.Unmarshal([]byte(line), &d))
			all = append(all, d)
		}
	}

	// The SCS's side: every record provisioned, its checks after each
	// commit answered before the pods powered their devices off (--quiet).
	assert.Equal(t, shards*perShard, strings.Count(scs.out.String(), "msg=scs.provisioned "), "records the SCS provisioned")
	assert.NotContains(t, scs.out.String(), "msg=scs.failed")

	require.Len(t, all, shards*perShard)
	seen := map[string]int{}
	var lat []float64
	for _, d := range all {
		for _, k := range []string{"mac " + d.MAC, "uuid " + d.UUID, "pid " + d.PID} {
			if s, dup := seen[k]; dup {
				t.Errorf("%s in shards %d and %d", k, s, d.Shard)
			}
			seen[k] = d.Shard
		}
		assert.Equal(t, fleet.StateProvisioned, d.State, d.Host)
		lat = append(lat, d.BootToProvisionedMS)
	}

	merged := filepath.Join(dir, "fleet.json")
	code, out, errOut := amtsim(t, append([]string{"report", "merge", "--report", merged}, reports...)...)
	require.Equal(t, exitOK, code, "%s\n%s", out, errOut)
	assert.Contains(t, out, fmt.Sprintf("%d of %d devices provisioned", shards*perShard, shards*perShard))
	b, err := os.ReadFile(merged)
	require.NoError(t, err)
	m, err := fleet.ParseReport(b)
	require.NoError(t, err)
	assert.Equal(t, []int{0, 1, 2, 3}, m.MergedShards)
	assert.Empty(t, m.Missing)
	var sum fleet.Counts
	uplinks := nic.UplinkCounts{Uplink: "packet:net1"}
	devices, provisioned := 0, 0
	for _, path := range reports {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		r, err := fleet.ParseReport(b)
		require.NoError(t, err)
		devices, provisioned = devices+r.Devices, provisioned+r.Provisioned
		c := r.Summary.Counts
		sum.HellosSent += c.HellosSent
		sum.HellosFailed += c.HellosFailed
		sum.DHCPFailures += c.DHCPFailures
		sum.DNSFailures += c.DNSFailures
		sum.DNSQueries += c.DNSQueries
		sum.TLSFailures += c.TLSFailures
		sum.AuthFailures += c.AuthFailures
		sum.BadRequests += c.BadRequests
		require.NotNil(t, r.Uplink)
		uplinks = uplinks.Add(*r.Uplink)
	}
	assert.Equal(t, sum, m.Summary.Counts, "counts add")
	if assert.NotNil(t, m.Uplink) {
		assert.Equal(t, uplinks, *m.Uplink, "the uplinks' counts add")
		assert.Equal(t, "packet:net1", m.Uplink.Uplink, "every pod's uplink has the one name")
	}
	assert.Equal(t, devices, m.Devices)
	assert.Equal(t, provisioned, m.Provisioned)
	assert.Equal(t, int64(len(lat)), m.BootToProvisioned.Count)

	// The union's percentiles, by nearest rank over every device's latency
	// (device lines are rounded to 1 µs): the merged sketch is within its
	// relative accuracy of them.
	sort.Float64s(lat)
	rank := func(q float64) float64 { return lat[int(math.Ceil(q*float64(len(lat))))-1] }
	for _, c := range []struct {
		q   float64
		got float64
	}{{0.50, m.BootToProvisioned.P50}, {0.99, m.BootToProvisioned.P99}} {
		assert.InEpsilon(t, rank(c.q), c.got, 2*fleet.SketchAccuracy, "p%.0f of the union", c.q*100)
	}
	assert.Equal(t, lat[len(lat)-1], m.BootToProvisioned.Max)
}

// A scenario as the Job's pods run it (deploy/k8s/overlays/scenario): two
// pods, each `amtsim scenario run FILE --network packet:net1` with
// JOB_COMPLETION_INDEX 0 and 1, against one external amtsim scs holding
// the identities of all four group shards. Each pod's groups take their own
// shards (0-1 and 2-3), every expectation holds, and the SCS provisions
// every device once.
func TestScenarioJobOnPacketUplinks(t *testing.T) {
	l := newBareLab(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "pair.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`name: pair
description: Two groups of desktops provisioned by the SCS under test.
seed: 5
deadline: 60s
groups:
  - name: left
    count: 2
  - name: right
    count: 3
expect:
  - state: provisioned
    max_hellos: 2
`), 0o644))
	scs := l.amtsim(t, "scs", "--db", filepath.Join(dir, "scs.db"), "--generate", "5:0-3:3", "--listen", labRouter+":9971")
	scs.waitFor(t, "msg=scs.listening", 30*time.Second)
	self, err := os.Executable()
	require.NoError(t, err)
	pods := make([]*process, 2)
	for i := range pods {
		ns := netns.NewAs(t, fmt.Sprintf("pod%d", i))
		l.port(t, fmt.Sprintf("vpod%d", i), "net1", ns)
		cmd := ns.Command(self, "scenario", "run", file, "--network", "packet:net1",
			"--junit", filepath.Join(dir, fmt.Sprintf("junit-%d.xml", i)), "--json", filepath.Join(dir, fmt.Sprintf("scenario-%d.json", i)))
		cmd.Env = append(os.Environ(), fmt.Sprintf("JOB_COMPLETION_INDEX=%d", i))
		pods[i] = spawn(t, cmd)
	}
	for i, p := range pods {
		require.Equal(t, exitOK, p.wait(t, 120*time.Second), "pod %d", i)
		assert.Contains(t, p.out.String(), fmt.Sprintf("PASS pair (seed 5%s, 5 devices", map[int]string{0: "", 1: ", shards 2,3"}[i]), "pod %d", i)
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("scenario-%d.json", i)))
		require.NoError(t, err)
		var reps []struct {
			Shards []int             `json:"shards"`
			Uplink *nic.UplinkCounts `json:"uplink"`
		}
		require.NoError(t, json.Unmarshal(b, &reps))
		require.Len(t, reps, 1)
		assert.Equal(t, []int{2 * i, 2*i + 1}, reps[0].Shards, "pod %d's groups take shards of their own", i)
		if u := reps[0].Uplink; assert.NotNil(t, u, "pod %d: the report has the uplink's counts", i) {
			assert.Equal(t, "packet:net1", u.Uplink)
			assert.Greater(t, u.TxFrames, uint64(5*20), "pod %d: frames of 5 provisionings", i)
			assert.Positive(t, u.RxFrames, "pod %d", i)
			assert.Zero(t, u.ReadErrors+u.WriteErrors+u.Unfinished+u.KernelDrops, "pod %d: %+v", i, *u)
			assert.Contains(t, p.out.String(), fmt.Sprintf("  packet:net1: %d frames in (%d for no device), %d out;", u.RxFrames, u.RxOther, u.TxFrames), "pod %d", i)
		}
		junit, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("junit-%d.xml", i)))
		require.NoError(t, err)
		assert.Contains(t, string(junit), "<testsuite")
		assert.NotContains(t, string(junit), "<failure")
	}
	assert.Equal(t, 10, strings.Count(scs.out.String(), "msg=scs.provisioned "), "each of the 10 devices provisioned once")
	assert.NotContains(t, scs.out.String(), "msg=hello.unknown", "every device's PID is one the SCS generated")
}
