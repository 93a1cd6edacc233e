package scs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the SCS's Prometheus collectors. With no registerer they are
// made but not registered, so the code paths are the same.
type metrics struct {
	hellos    *prometheus.CounterVec
	sessions  *prometheus.CounterVec
	steps     *prometheus.HistogramVec
	total     prometheus.Histogram
	queue     prometheus.Gauge
	unsettled prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 16) // 0.5 ms … 16 s
	m := &metrics{
		hellos: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "amtsim", Subsystem: "scs", Name: "hellos_total",
			Help: "Hellos received, by what became of them."}, []string{"result"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "amtsim", Subsystem: "scs", Name: "sessions_total",
			Help: "Provisioning sessions by outcome and, for failures, the step that failed."}, []string{"outcome", "step"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "amtsim", Subsystem: "scs", Name: "step_duration_seconds",
			Help: "Duration of each provisioning step.", Buckets: buckets}, []string{"step"}),
		total: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "amtsim", Subsystem: "scs", Name: "provisioning_duration_seconds",
			Help: "Duration of successful provisioning sessions, verification included.", Buckets: buckets}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "amtsim", Subsystem: "scs", Name: "queue_depth",
			Help: "Hellos waiting for a worker."}),
		unsettled: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "amtsim", Subsystem: "scs", Name: "unsettled_records",
			Help: "Records left with a pending new PID/PPS and no session, at the last settling scan."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.hellos, m.sessions, m.steps, m.total, m.queue, m.unsettled} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) hello(result string) { m.hellos.WithLabelValues(result).Inc() }

func (m *metrics) session(outcome, step string) { m.sessions.WithLabelValues(outcome, step).Inc() }

func (m *metrics) step(step string, d time.Duration) {
	m.steps.WithLabelValues(step).Observe(d.Seconds())
}
