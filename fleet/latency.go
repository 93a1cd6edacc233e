package fleet

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// Latency is a distribution summary in milliseconds, with the sketch it
// can be merged by. Of one run the percentiles are exact (nearest rank);
// of merged runs they are read from the merged sketch, within its
// relative accuracy.
type Latency struct {
	Count  int64   `json:"count"`
	P50    float64 `json:"p50_ms"`
	P95    float64 `json:"p95_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
	Sketch *Sketch `json:"sketch,omitempty"`
}

// SketchAccuracy is the relative accuracy of the sketches the fleet
// writes: a quantile read from one is within 1% of a value of that rank.
const SketchAccuracy = 0.01

// Limits on a sketch read from a file: with 1% accuracy, 1 µs to 30 years
// in milliseconds spans indices −346 to 1,500, so anything far outside is
// not a latency sketch, and a dense store over it would be a memory bomb.
const (
	maxSketchIndex = 4096
	maxSketchBins  = 2 * maxSketchIndex
)

// Sketch is a DDSketch of latencies in milliseconds (DataDog's
// sketches-go, logarithmic mapping): bin i counts the values in
// (γ^(i-1), γ^i] with γ = (1+α)/(1-α) and α the relative accuracy; Zero
// counts values too small for any bin. Two sketches of one accuracy add
// bin by bin, so shards' reports add up to the fleet's.
type Sketch struct {
	RelativeAccuracy float64 `json:"relative_accuracy"`
	Zero             int64   `json:"zero,omitempty"`
	// Bins are [index, count] pairs, by index.
	Bins [][2]int64 `json:"bins"`
}

// Percentiles summarizes durations: exact nearest-rank percentiles, and
// their sketch.
func Percentiles(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(d)))) - 1
		return ms(d[max(i, 0)])
	}
	return Latency{Count: int64(len(d)), P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: ms(d[len(d)-1]), Sketch: sketchOf(d)}
}

func sketchOf(d []time.Duration) *Sketch {
	m, _ := mapping.NewLogarithmicMapping(SketchAccuracy)
	bins := map[int]int64{}
	s := &Sketch{RelativeAccuracy: SketchAccuracy}
	for _, v := range d {
		x := float64(v) / float64(time.Millisecond)
		if x < m.MinIndexableValue() {
			s.Zero++
			continue
		}
		bins[m.Index(x)]++
	}
	s.setBins(bins)
	return s
}

func (s *Sketch) setBins(bins map[int]int64) {
	s.Bins = make([][2]int64, 0, len(bins))
	for i, n := range bins {
		s.Bins = append(s.Bins, [2]int64{int64(i), n})
	}
	sort.Slice(s.Bins, func(a, b int) bool { return s.Bins[a][0] < s.Bins[b][0] })
}

// Count is how many values the sketch holds.
func (s *Sketch) Count() int64 {
	n := s.Zero
	for _, b := range s.Bins {
		n += b[1]
	}
	return n
}

// Validate checks a sketch read from a file.
func (s *Sketch) Validate() error {
	if !(s.RelativeAccuracy > 0 && s.RelativeAccuracy < 1) {
		return fmt.Errorf("sketch: relative accuracy %v: want between 0 and 1", s.RelativeAccuracy)
	}
	if s.Zero < 0 {
		return fmt.Errorf("sketch: zero count %d", s.Zero)
	}
	if len(s.Bins) > maxSketchBins {
		return fmt.Errorf("sketch: %d bins: at most %d", len(s.Bins), maxSketchBins)
	}
	for k, b := range s.Bins {
		if b[0] < -maxSketchIndex || b[0] > maxSketchIndex {
			return fmt.Errorf("sketch: bin %d: index %d outside ±%d", k, b[0], maxSketchIndex)
		}
		if b[1] <= 0 {
			return fmt.Errorf("sketch: bin %d: count %d", k, b[1])
		}
		if k > 0 && b[0] <= s.Bins[k-1][0] {
			return fmt.Errorf("sketch: bin %d: index %d not after %d", k, b[0], s.Bins[k-1][0])
		}
	}
	return nil
}

// Merge adds o's values into s. Both must have the same accuracy.
func (s *Sketch) Merge(o *Sketch) error {
	if s.RelativeAccuracy != o.RelativeAccuracy {
		return fmt.Errorf("sketch: accuracies %v and %v do not merge", s.RelativeAccuracy, o.RelativeAccuracy)
	}
	bins := make(map[int]int64, len(s.Bins)+len(o.Bins))
	for _, b := range s.Bins {
		bins[int(b[0])] += b[1]
	}
	for _, b := range o.Bins {
		bins[int(b[0])] += b[1]
	}
	s.Zero += o.Zero
	s.setBins(bins)
	return nil
}

// Quantile is the value at quantile q (0 to 1), within the sketch's
// relative accuracy. The rank is the nearest rank, as in Percentiles (the
// ceil(q·n)-th smallest), so that a report merged alone reads as itself;
// sketches-go's own rank is q·(n−1), which at p99 of 80 values is the
// 79th, not the 80th.
func (s *Sketch) Quantile(q float64) (float64, error) {
	if err := s.Validate(); err != nil {
		return 0, err
	}
	if s.Count() == 0 {
		return 0, errors.New("sketch: empty")
	}
	m, err := mapping.NewLogarithmicMapping(s.RelativeAccuracy)
	if err != nil {
		return 0, fmt.Errorf("sketch: %w", err)
	}
	pos := store.NewDenseStore()
	for _, b := range s.Bins {
		pos.AddWithCount(int(b[0]), float64(b[1]))
	}
	dd := ddsketch.NewDDSketch(m, pos, store.NewDenseStore())
	if s.Zero > 0 {
		if err := dd.AddWithCount(0, float64(s.Zero)); err != nil {
			return 0, fmt.Errorf("sketch: %w", err)
		}
	}
	if n := float64(s.Count()); n > 1 {
		// GetValueAtQuantile takes the value of rank q·(n−1) (0-based);
		// aim at the middle of the nearest rank's slot.
		i := math.Max(math.Ceil(q*n)-1, 0)
		q = math.Min((i+0.5)/(n-1), 1)
	}
	v, err := dd.GetValueAtQuantile(q)
	if err != nil {
		return 0, fmt.Errorf("sketch: %w", err)
	}
	return v, nil
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/10) / 100 }
