package fleet

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amtsim/amtsim/nic"
)

// The fleet's /metrics. The counts are read from the devices at scrape
// time, the same sums as Summary's, so a scrape after the run equals the
// report; only the latency histogram is kept as devices get provisioned
// (one Observe each). Every series carries the shard as a label, so the
// scrapes of a sharded fleet's pods add up.
type collector struct {
	f                            *Fleet
	devices                      *prometheus.Desc
	hellosSent, hellosFailed     *prometheus.Desc
	failures                     *prometheus.Desc
	provisionedTotal, deviceSize *prometheus.Desc
	hellosWaiting                *prometheus.Desc
	// The uplink's, when it counts (nic.CountingUplink).
	uplinkFrames, uplinkOther, uplinkErrors, uplinkDuplicates *prometheus.Desc
}

// latencyBuckets are the histogram's bounds in seconds: 50 ms to about
// 9 minutes, each 1.5 times the one before.
var latencyBuckets = prometheus.ExponentialBuckets(0.05, 1.5, 24)

// phaseBuckets are the phases': 1 ms to about 9 minutes, doubling (a
// phase is often a millisecond or less).
var phaseBuckets = prometheus.ExponentialBuckets(0.001, 2, 20)

func (f *Fleet) register(reg prometheus.Registerer) error {
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"shard": strconv.Itoa(f.o.Shard)}, reg)
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("amtsim_fleet_"+name, help, labels, nil)
	}
	c := &collector{f: f,
		devices:          d("devices", "Devices by the state the fleet counts them in.", "state"),
		deviceSize:       d("devices_total", "Devices in the fleet."),
		provisionedTotal: d("provisioned_total", "Devices that reached provisioned."),
		hellosSent:       d("hellos_sent_total", "Hellos the devices sent."),
		hellosFailed:     d("hellos_failed_total", "Hellos that could not be sent (no connection to the SCS)."),
		hellosWaiting:    d("hellos_waiting", "Due Hellos waiting their turn (the fleet's limit on Hellos at once)."),
		failures:         d("failures_total", "What went wrong on the devices' side, by kind: dhcp, dns, tls, auth (of which negotiate: Kerberos tickets), request.", "kind"),
		uplinkFrames: d("uplink_frames_total", "Frames through the uplink onto a real interface (TAP or packet socket), by direction: "+
			"rx (from the wire), tx (from the devices).", "uplink", "direction"),
		uplinkOther: d("uplink_rx_other_frames_total", "Frames of rx for none of the devices (unicast to another MAC, runts).", "uplink"),
		uplinkErrors: d("uplink_errors_total", "What the uplink lost, by kind: read, write (a full transmit queue), "+
			"unfinished (a packet uplink's frames it could not finish), kernel_drop (dropped before a packet uplink read them).", "uplink", "kind"),
		uplinkDuplicates: d("uplink_duplicate_mac_frames_total", "Frames from another host on the wire with one of the devices' MACs.", "uplink"),
	}
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "amtsim", Subsystem: "fleet", Name: "boot_to_provisioned_seconds",
		Help: "Each device's time from power-on to provisioned.", Buckets: latencyBuckets})
	ph := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "amtsim", Subsystem: "fleet", Name: "phase_seconds",
		Help: "Each provisioned device's boot → provisioned in phases: boot_to_address, address_to_hello (the first Hello), " +
			"hello_to_session (waiting for the SCS's session), session_to_provisioned (the session, to its commit).",
		Buckets: phaseBuckets}, []string{"phase"})
	// The histograms first: a scrape that sees the fleet's counters (the
	// collector) then sees every series the fleet exports.
	if err := reg.Register(h); err != nil {
		return err
	}
	if err := reg.Register(ph); err != nil {
		reg.Unregister(h)
		return err
	}
	if err := reg.Register(c); err != nil {
		reg.Unregister(h)
		reg.Unregister(ph)
		return err
	}
	for k, p := range (&Phases{}).each() {
		f.phaseLatency[k] = ph.WithLabelValues(p.name)
	}
	f.latency = h
	return nil
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.devices, c.deviceSize, c.provisionedTotal, c.hellosSent, c.hellosFailed, c.hellosWaiting, c.failures,
		c.uplinkFrames, c.uplinkOther, c.uplinkErrors, c.uplinkDuplicates} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	p := c.f.Progress()
	for _, s := range States {
		ch <- prometheus.MustNewConstMetric(c.devices, prometheus.GaugeValue, float64(p.States[s]), s)
	}
	ch <- prometheus.MustNewConstMetric(c.deviceSize, prometheus.GaugeValue, float64(len(c.f.track)))
	ch <- prometheus.MustNewConstMetric(c.provisionedTotal, prometheus.CounterValue, float64(p.Provisioned))
	n := c.f.tally()
	ch <- prometheus.MustNewConstMetric(c.hellosSent, prometheus.CounterValue, float64(n.HellosSent))
	ch <- prometheus.MustNewConstMetric(c.hellosFailed, prometheus.CounterValue, float64(n.HellosFailed))
	ch <- prometheus.MustNewConstMetric(c.hellosWaiting, prometheus.GaugeValue, float64(c.f.helloGate.Waiting()))
	for _, k := range []struct {
		kind string
		v    uint64
	}{{"dhcp", n.DHCPFailures}, {"dns", n.DNSFailures}, {"tls", n.TLSFailures}, {"auth", n.AuthFailures}, {"negotiate", n.NegotiateFailures}, {"request", n.BadRequests}} {
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(k.v), k.kind)
	}
	if u, ok := c.f.o.Uplink.(nic.CountingUplink); ok {
		n := u.Counts()
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{n.Uplink}, labels...)...)
		}
		counter(c.uplinkFrames, n.RxFrames, "rx")
		counter(c.uplinkFrames, n.TxFrames, "tx")
		counter(c.uplinkOther, n.RxOther)
		counter(c.uplinkErrors, n.ReadErrors, "read")
		counter(c.uplinkErrors, n.WriteErrors, "write")
		counter(c.uplinkErrors, n.Unfinished, "unfinished")
		counter(c.uplinkErrors, n.KernelDrops, "kernel_drop")
		counter(c.uplinkDuplicates, n.DuplicateMACs)
	}
}
