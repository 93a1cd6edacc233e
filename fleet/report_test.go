package fleet

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/internal/scrape"
)

// shardReport is a report of n latencies drawn log-normally around
// median, as one shard's run would write it.
func shardReport(t *testing.T, shard, n int, median time.Duration, rng *rand.Rand) (Report, []time.Duration) {
	t.Helper()
	lat := make([]time.Duration, n)
	for i := range lat {
		lat[i] = time.Duration(float64(median) * math.Exp(rng.NormFloat64()*0.6))
	}
	r := Report{Seed: 7, Shard: shard, Shards: 4, OK: true, Phase: "provisioning",
		Summary: Summary{Devices: n, Provisioned: n, ElapsedMS: float64(1000 + shard), States: map[string]int64{StateProvisioned: int64(n)},
			Counts: Counts{HellosSent: uint64(n + shard), DHCPFailures: uint64(shard), DNSQueries: uint64(2*n + shard)}},
		PeakRSS: uint64(n) << 16}
	r.BootToProvisioned = Percentiles(append([]time.Duration(nil), lat...))
	// Through the JSON, as a merge reads reports from files.
	b, err := json.Marshal(r)
	require.NoError(t, err)
	back, err := ParseReport(b)
	require.NoError(t, err)
	return back, lat
}

// nearRank reports whether v is within the sketch's accuracy of a value
// of the union whose rank is that of quantile q, give or take one.
func nearRank(all []time.Duration, q, v float64) bool {
	r := q * float64(len(all)-1)
	for _, i := range []int{int(math.Floor(r)) - 1, int(math.Floor(r)), int(math.Ceil(r)), int(math.Ceil(r)) + 1} {
		if i < 0 || i >= len(all) {
			continue
		}
		x := float64(all[i]) / float64(time.Millisecond)
		if math.Abs(v-x) <= SketchAccuracy*x+0.01 {
			return true
		}
	}
	return false
}

func TestMergeReportsAddUp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var rs []Report
	var all []time.Duration
	for shard, median := range []time.Duration{300 * time.Millisecond, 800 * time.Millisecond, 2 * time.Second, 5 * time.Second} {
		r, lat := shardReport(t, shard, 500+100*shard, median, rng)
		rs = append(rs, r)
		all = append(all, lat...)
	}
	m, err := MergeReports(rs)
	require.NoError(t, err)
	assert.Equal(t, []int{0, 1, 2, 3}, m.MergedShards)
	assert.Empty(t, m.Missing)
	assert.True(t, m.OK)
	assert.Equal(t, 2600, m.Devices)
	assert.Equal(t, 2600, m.Provisioned)
	assert.Equal(t, int64(2600), m.States[StateProvisioned])
	assert.Equal(t, uint64(2606), m.HellosSent)
	assert.Equal(t, uint64(6), m.DHCPFailures)
	assert.Equal(t, uint64(5206), m.DNSQueries)
	assert.Equal(t, 1003.0, m.ElapsedMS, "the longest shard")
	assert.Equal(t, uint64(2600)<<16, m.PeakRSS, "each shard's process's own: they add up")
	assert.Equal(t, int64(2600), m.BootToProvisioned.Count)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	for _, p := range []struct {
		q float64
		v float64
	}{{0.50, m.BootToProvisioned.P50}, {0.95, m.BootToProvisioned.P95}, {0.99, m.BootToProvisioned.P99}} {
		assert.True(t, nearRank(all, p.q, p.v), "p%v of the merge %.2f ms is that of the union", p.q*100, p.v)
	}
	// The merged p50 lies between the shards' own, far from any one.
	assert.Greater(t, m.BootToProvisioned.P50, rs[0].BootToProvisioned.P50*1.5)
	assert.Less(t, m.BootToProvisioned.P50, rs[3].BootToProvisioned.P50/1.5)
	assert.Equal(t, float64(all[len(all)-1].Microseconds()/10)/100, math.Floor(m.BootToProvisioned.Max*100)/100)

	// A merged report is a report: it parses, and merges again.
	b, err := json.Marshal(m)
	require.NoError(t, err)
	back, err := ParseReport(b)
	require.NoError(t, err)
	assert.Equal(t, m.BootToProvisioned, back.BootToProvisioned)
	assert.Equal(t, m.PeakRSS, back.PeakRSS)
	half1, err := MergeReports(rs[:2])
	require.NoError(t, err)
	half2, err := MergeReports(rs[2:])
	require.NoError(t, err)
	assert.False(t, half1.OK, "two of four shards is not the fleet")
	assert.Equal(t, []int{2, 3}, half1.Missing)
	again, err := MergeReports([]Report{half1, half2})
	require.NoError(t, err)
	assert.Equal(t, m.BootToProvisioned, again.BootToProvisioned, "merging is associative")
	assert.True(t, again.OK)
}

// Phases merge like boot → provisioned, phase by phase; a shard's
// report from before phases leaves the merge without them rather than
// with some shards' alone.
func TestMergeReportsPhases(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var rs []Report
	var queue []time.Duration
	for shard, wait := range []time.Duration{10 * time.Millisecond, 3 * time.Second} {
		r, _ := shardReport(t, shard, 300, time.Second, rng)
		var ph [4][]time.Duration
		for range r.Provisioned {
			for k, median := range []time.Duration{5 * time.Millisecond, time.Millisecond, wait, 90 * time.Millisecond} {
				ph[k] = append(ph[k], time.Duration(float64(median)*math.Exp(rng.NormFloat64()*0.3)))
			}
		}
		queue = append(queue, ph[2]...)
		r.Phases = &Phases{BootToAddress: Percentiles(ph[0]), AddressToHello: Percentiles(ph[1]),
			HelloToSession: Percentiles(ph[2]), SessionToProvisioned: Percentiles(ph[3])}
		b, err := json.Marshal(r)
		require.NoError(t, err)
		back, err := ParseReport(b)
		require.NoError(t, err)
		rs = append(rs, back)
	}
	m, err := MergeReports(rs)
	require.NoError(t, err)
	require.NotNil(t, m.Phases)
	for _, ph := range m.Phases.each() {
		assert.Equal(t, int64(600), ph.l.Count, ph.name)
	}
	sort.Slice(queue, func(i, j int) bool { return queue[i] < queue[j] })
	assert.True(t, nearRank(queue, 0.99, m.Phases.HelloToSession.P99), "the merged queue p99 %.1f ms is the union's", m.Phases.HelloToSession.P99)
	assert.Greater(t, m.Phases.HelloToSession.P99, 1000.0, "the slow shard's queue is the fleet's tail")

	old := rs[1]
	old.Phases = nil
	m, err = MergeReports([]Report{rs[0], old})
	require.NoError(t, err)
	assert.Nil(t, m.Phases)

	bad := rs[1]
	ph := *bad.Phases
	ph.SessionToProvisioned = Percentiles(make([]time.Duration, 301))
	bad.Phases = &ph
	_, err = MergeReports([]Report{rs[0], bad})
	assert.ErrorContains(t, err, "phases.session_to_provisioned: 301 latencies of 300 provisioned devices")
}

func TestMergeReportsRefuses(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	a, _ := shardReport(t, 0, 10, time.Second, rng)
	b, _ := shardReport(t, 1, 10, time.Second, rng)
	_, err := MergeReports([]Report{a, a})
	assert.ErrorContains(t, err, "shard 0 is in reports 1 and 2")
	c := b
	c.Seed = 8
	_, err = MergeReports([]Report{a, c})
	assert.ErrorContains(t, err, "seed 8")
	d := b
	d.BootToProvisioned.Sketch = &Sketch{RelativeAccuracy: 0.02, Bins: b.BootToProvisioned.Sketch.Bins}
	_, err = MergeReports([]Report{a, d})
	assert.ErrorContains(t, err, "accuracies")
	f := b
	f.OK = false
	m, err := MergeReports([]Report{a, f})
	require.NoError(t, err)
	assert.False(t, m.OK)
	assert.Equal(t, []int{1}, m.Failed)
	_, err = MergeReports(nil)
	assert.Error(t, err)
}

func TestParseReportRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"unknown field":     `{"seed":1,"shard":0,"devices":1,"provisioned":0,"phase":"boot","ok":false,"extra":1}`,
		"two values":        `{"phase":"boot"} {}`,
		"no sketch":         `{"devices":1,"provisioned":1,"phase":"provisioning","boot_to_provisioned":{"count":1,"p50_ms":1}}`,
		"count disagrees":   `{"devices":2,"provisioned":2,"phase":"provisioning","boot_to_provisioned":{"count":2,"sketch":{"relative_accuracy":0.01,"bins":[[10,1]]}}}`,
		"index bomb":        `{"devices":2,"provisioned":2,"phase":"provisioning","boot_to_provisioned":{"count":2,"sketch":{"relative_accuracy":0.01,"bins":[[-2000000000,1],[2000000000,1]]}}}`,
		"bins out of order": `{"devices":2,"provisioned":2,"phase":"provisioning","boot_to_provisioned":{"count":2,"sketch":{"relative_accuracy":0.01,"bins":[[11,1],[10,1]]}}}`,
		"more provisioned":  `{"devices":1,"provisioned":2,"phase":"provisioning"}`,
		"bad phase":         `{"phase":"later"}`,
	} {
		_, err := ParseReport([]byte(in))
		assert.Error(t, err, name)
	}
}

// FuzzParseReport: whatever a report file holds, parsing returns a report
// or an error, and a report that parses merges with itself shifted to
// another shard without error and with its counts doubled.
func FuzzParseReport(f *testing.F) {
	r := Report{Seed: 1, Shard: 0, Phase: "provisioning", OK: true,
		Summary: Summary{Devices: 3, Provisioned: 3, States: map[string]int64{StateProvisioned: 3}}}
	r.BootToProvisioned = Percentiles([]time.Duration{time.Second, 2 * time.Second, 0})
	b, _ := json.Marshal(r)
	f.Add(b)
	f.Add([]byte(`{"phase":"boot"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReport(b)
		if err != nil {
			return
		}
		o := r
		o.MergedShards = nil
		o.Shard = r.Shard + 1
		if len(r.MergedShards) > 0 || r.Shards > 0 {
			return // shard bookkeeping of its own: covered above
		}
		m, err := MergeReports([]Report{r, o})
		if err != nil {
			t.Fatalf("a parsed report does not merge: %v", err)
		}
		if m.Devices != 2*r.Devices || m.BootToProvisioned.Count != 2*r.BootToProvisioned.Count {
			t.Fatalf("counts do not add: %+v", m.Summary)
		}
	})
}

// The fleet's /metrics, scraped while it runs and after, parse with the
// Prometheus text parser; at the end the counters are the summary's.
func TestFleetMetricsMatchSummary(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := startEmbeddedWith(t, EmbeddedOptions{Fleet: Options{Devices: 20, Seed: 21, Shard: 3, Password: testPassword, Metrics: reg}})
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	scrapeNow := func() scrape.Families {
		mfs, err := scrape.Get(srv.Client(), srv.URL)
		require.NoError(t, err)
		return mfs
	}
	during := scrapeNow()
	require.Contains(t, during, "amtsim_fleet_devices")
	require.NoError(t, e.Fleet.Start(t.Context()))
	require.NoError(t, e.Wait(t.Context()))
	sum := e.Fleet.Summary()
	mfs := scrapeNow()
	value := func(name string, labels map[string]string) float64 {
		for _, m := range mfs[name].GetMetric() {
			require.Equal(t, "3", scrape.Labels(m)["shard"], "%s carries the shard", name)
		}
		v, ok := mfs.Value(name, labels)
		require.True(t, ok, "%s %v is exported", name, labels)
		return v
	}
	assert.Equal(t, float64(sum.Provisioned), value("amtsim_fleet_provisioned_total", nil))
	assert.Equal(t, float64(20), value("amtsim_fleet_devices", map[string]string{"state": StateProvisioned}))
	assert.Equal(t, float64(sum.HellosSent), value("amtsim_fleet_hellos_sent_total", nil))
	assert.Positive(t, sum.HellosSent)
	assert.Equal(t, float64(sum.HellosFailed), value("amtsim_fleet_hellos_failed_total", nil))
	assert.Zero(t, value("amtsim_fleet_hellos_waiting", nil), "no Hello waits in a provisioned fleet")
	assert.Equal(t, float64(sum.TLSFailures), value("amtsim_fleet_failures_total", map[string]string{"kind": "tls"}))
	assert.Equal(t, float64(sum.DHCPFailures), value("amtsim_fleet_failures_total", map[string]string{"kind": "dhcp"}))
	assert.Equal(t, float64(sum.BootToProvisioned.Count), value("amtsim_fleet_boot_to_provisioned_seconds", nil))
	h := mfs["amtsim_fleet_boot_to_provisioned_seconds"].GetMetric()[0].GetHistogram()
	var total float64
	for _, d := range e.Fleet.DeviceReports() {
		total += d.BootToProvisionedMS / 1000
	}
	assert.InEpsilon(t, total, h.GetSampleSum(), 0.01, "the histogram's sum is of the devices' latencies")
	// The phases' histograms count what the summary's phases do, and the
	// waits for the SCS's session add up to the devices' own.
	require.NotNil(t, sum.Phases)
	for _, ph := range sum.Phases.each() {
		assert.Equal(t, float64(ph.l.Count), value("amtsim_fleet_phase_seconds", map[string]string{"phase": ph.name}), ph.name)
	}
	var wait float64
	for _, d := range e.Fleet.DeviceReports() {
		wait += (d.BootToSessionMS - d.BootToHelloMS) / 1000
	}
	for _, m := range mfs["amtsim_fleet_phase_seconds"].GetMetric() {
		if scrape.Labels(m)["phase"] == "hello_to_session" {
			assert.InEpsilon(t, wait, m.GetHistogram().GetSampleSum(), 0.01)
		}
	}
}

func startEmbeddedWith(t *testing.T, o EmbeddedOptions) *Embedded {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	e, err := StartEmbedded(t.Context(), o)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e
}

// A sketch's quantiles are by nearest rank, as a report's own: p99 of 80
// values is the largest, p50 the 40th.
func TestSketchQuantileIsNearestRank(t *testing.T) {
	d := make([]time.Duration, 80)
	for i := range d {
		d[i] = time.Duration(i+1) * 10 * time.Millisecond
	}
	l := Percentiles(d)
	for _, c := range []struct{ q, want, exact float64 }{{0, 10, 10}, {0.5, 400, l.P50}, {0.95, 760, l.P95}, {0.99, 800, l.P99}, {1, 800, l.Max}} {
		got, err := l.Sketch.Quantile(c.q)
		require.NoError(t, err)
		assert.InEpsilon(t, c.want, got, SketchAccuracy, "q=%v", c.q)
		assert.Equal(t, c.want, c.exact, "q=%v exact", c.q)
	}
}

// Every count of the SCS summary adds up in a merge, whatever fields the
// summary gains: each shard's counts are set through reflection, so a
// count that add leaves out (refused Hellos and PID redraws were) shows.
func TestMergeReportsAddUpSCSCounts(t *testing.T) {
	var rs []Report
	counts := 0
	for shard := range 2 {
		r, _ := shardReport(t, shard, 10, time.Second, rand.New(rand.NewPCG(3, uint64(shard))))
		s := SCSSummary{Failures: map[string]map[string]int{"login": {"401": shard + 1}}}
		s.Session = r.BootToProvisioned
		v := reflect.ValueOf(&s).Elem()
		counts = 0
		for i := range v.NumField() {
			if f := v.Field(i); f.Kind() == reflect.Uint64 {
				counts++
				f.SetUint(uint64((i + 1) * (shard + 1)))
			}
		}
		r.SCS = &s
		rs = append(rs, r)
	}
	require.Greater(t, counts, 8)
	m, err := MergeReports(rs)
	require.NoError(t, err)
	require.NotNil(t, m.SCS)
	v := reflect.ValueOf(m.SCS).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Uint64 {
			assert.Equal(t, uint64(3*(i+1)), f.Uint(), "scs.%s", v.Type().Field(i).Name)
		}
	}
	assert.Equal(t, 3, m.SCS.Failures["login"]["401"])
}

// /metrics is served from the start, so it may be scraped while the
// embedded fleet is still making its devices: the scrape must read
// nothing set-up writes (run with -race, as make test does), and it
// counts the whole fleet.
func TestMetricsScrapedDuringSetUp(t *testing.T) {
	reg := prometheus.NewRegistry()
	stop, done := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			if mfs, err := reg.Gather(); assert.NoError(t, err) && len(mfs) > 0 {
				n++
			}
		}
	}()
	e := startEmbeddedWith(t, EmbeddedOptions{Fleet: Options{Devices: 300, Seed: 23, Password: testPassword, Metrics: reg}})
	close(stop)
	assert.Positive(t, <-done, "scrapes while the fleet was made")
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "amtsim_fleet_devices_total" {
			assert.Equal(t, 300.0, mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	require.NotNil(t, e.Fleet)
}
