// Package scrape reads a Prometheus /metrics page the way Prometheus does
// (the text format, through prometheus/common's parser) for tests that
// hold the exported series to a report.
package scrape

import (
	"fmt"
	"io"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are one scrape's metric families by name.
type Families map[string]*dto.MetricFamily

// Parse parses a page in the text exposition format.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	return mfs, nil
}

// Get scrapes url with c.
func Get(c *http.Client, url string) (Families, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return Parse(resp.Body)
}

// Value is the value of the first series of name whose labels include
// labels: a counter's or gauge's value, a histogram's sample count. ok is
// false when there is none.
func (fs Families) Value(name string, labels map[string]string) (v float64, ok bool) {
	m := fs.Metric(name, labels)
	switch {
	case m == nil:
		return 0, false
	case m.Counter != nil:
		return m.GetCounter().GetValue(), true
	case m.Gauge != nil:
		return m.GetGauge().GetValue(), true
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount()), true
	}
	return 0, false
}

// Metric is the first series of name whose labels include labels, or nil.
func (fs Families) Metric(name string, labels map[string]string) *dto.Metric {
	mf, ok := fs[name]
	if !ok {
		return nil
	}
next:
	for _, m := range mf.GetMetric() {
		got := Labels(m)
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// Labels are a series' labels as a map.
func Labels(m *dto.Metric) map[string]string {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	return got
}
