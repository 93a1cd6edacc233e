package scenarios

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/scs"
)

// maxEventsPerDevice bounds each device's log: a device that loops (a
// Hello storm against a dead SCS) keeps its first events and a count of
// the rest.
const maxEventsPerDevice = 400

// Entry is one event in a device's log.
type Entry struct {
	At    time.Duration     `json:"at"` // from the start of the run
	Name  event.Name        `json:"name"`
	Attrs map[string]string `json:"attrs,omitempty"`
	// SCS marks the SCS's events about the device.
	SCS bool `json:"scs,omitempty"`
}

func (e Entry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%8.3fs %s", e.At.Seconds(), e.Name)
	keys := make([]string, 0, len(e.Attrs))
	for k := range e.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, e.Attrs[k])
	}
	return b.String()
}

// matches reports whether e is m's event with m's attributes.
func (m *Match) matches(e *Entry) bool {
	if event.Name(m.Event) != e.Name {
		return false
	}
	for k, v := range m.Where {
		if e.Attrs[k] != v {
			return false
		}
	}
	return true
}

// deviceLog is one device's events: its own and the SCS's about it.
type deviceLog struct {
	mu      sync.Mutex
	entries []Entry
	dropped int
	counts  map[event.Name]int
	first   map[event.Name]time.Duration
}

func (l *deviceLog) add(e Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts, l.first = map[event.Name]int{}, map[event.Name]time.Duration{}
	}
	if l.counts[e.Name] == 0 {
		l.first[e.Name] = e.At
	}
	l.counts[e.Name]++
	if len(l.entries) < maxEventsPerDevice {
		l.entries = append(l.entries, e)
	} else {
		l.dropped++
	}
}

func (l *deviceLog) snapshot() ([]Entry, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Entry(nil), l.entries...), l.dropped
}

func (l *deviceLog) count(n event.Name) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[n]
}

// saw reports whether the log holds an event m matches.
func (l *deviceLog) saw(m *Match) (Entry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts[event.Name(m.Event)] == 0 {
		return Entry{}, false
	}
	for i := range l.entries {
		if m.matches(&l.entries[i]) {
			return l.entries[i], true
		}
	}
	return Entry{}, false
}

// noisy events come on timers whose count depends on how long a run
// lasts, not on what happened: they stay in the logs and out of the
// stories that two runs must share.
func noisy(n event.Name) bool {
	switch n {
	case event.DHCPRenewing, event.DHCPRenewed, event.DHCPRebinding, event.ConnAccepted, event.SessionClosed:
		return true
	}
	return false
}

// story is the device's events in order, by name (and the call for
// amt.call), then the SCS's about it, in their order: what two runs of
// one seed must share. The two are kept apart because they come from
// two actors, whose interleaving is the scheduler's (the SCS logs a step
// as the device re-arms its ports).
func (l *deviceLog) story() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var dev, scs []string
	for _, e := range l.entries {
		if noisy(e.Name) {
			continue
		}
		s := string(e.Name)
		if op := e.Attrs["op"]; op != "" {
			s += " " + op
		}
		if e.SCS {
			scs = append(scs, "scs: "+s)
		} else {
			dev = append(dev, s)
		}
	}
	return append(dev, scs...)
}

func attrMap(attrs []slog.Attr) map[string]string {
	if len(attrs) == 0 {
		return nil
	}
	m := make(map[string]string, len(attrs))
	for _, a := range attrs {
		m[a.Key] = a.Value.String()
	}
	return m
}

// recorder files every event under its device and hands it to the
// fault triggers.
type recorder struct {
	start time.Time
	logs  map[string]*deviceLog // device ID → log
	// byPID finds the device an SCS event is about; updated when the SCS
	// gives a device its new PID.
	mu    sync.Mutex
	byPID map[string]string
	on    func(device string, e *Entry)
}

func (r *recorder) device(e firmware.Event) {
	l := r.logs[e.Device]
	if l == nil {
		return
	}
	en := Entry{At: time.Since(r.start), Name: e.Name, Attrs: attrMap(e.Attrs)}
	l.add(en)
	if r.on != nil {
		r.on(e.Device, &en)
	}
}

func (r *recorder) scs(e scs.Event) {
	en := Entry{At: time.Since(r.start), Name: e.Name, Attrs: attrMap(e.Attrs), SCS: true}
	r.mu.Lock()
	dev := r.byPID[e.PID]
	if dev == "" && en.Attrs["old_pid"] != "" {
		dev = r.byPID[en.Attrs["old_pid"]]
	}
	if dev != "" && e.Name == event.SCSProvisioned && e.PID != "" {
		r.byPID[e.PID] = dev
	}
	r.mu.Unlock()
	if dev == "" {
		return
	}
	if en.Attrs == nil {
		en.Attrs = map[string]string{}
	}
	en.Attrs["pid"] = e.PID
	r.logs[dev].add(en)
	if r.on != nil {
		r.on(dev, &en)
	}
}
