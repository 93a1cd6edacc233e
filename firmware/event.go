package firmware

import (
	"context"
	"log/slog"
	"time"

	"github.com/amtsim/amtsim/event"
)

// Event is one step of a device's life, as the device saw it: power.on,
// link.up, dhcp.bound, scs.resolved, hello.sent, conn.accepted, …
type Event struct {
	Time   time.Time // the device clock's time
	Device string
	Name   event.Name
	Attrs  []slog.Attr
}

// Attr returns the value of the named attribute, if present.
func (e Event) Attr(key string) (slog.Value, bool) {
	for _, a := range e.Attrs {
		if a.Key == key {
			return a.Value, true
		}
	}
	return slog.Value{}, false
}

// Sink receives events. It is called from the device's timers and network
// callbacks, possibly from several goroutines at once, and must not block
// for long.
type Sink func(Event)

// LogSink writes events through a slog handler: one record per event, the
// event name as message, the device id and the attributes as fields, and
// the device clock's time as the record's time (under a time scale, the
// scaled time). The level is the event's (event.Name.Level).
func LogSink(h slog.Handler) Sink {
	return func(e Event) {
		level := e.Name.Level()
		if !h.Enabled(context.Background(), level) {
			return
		}
		r := slog.NewRecord(e.Time, level, string(e.Name), 0)
		r.AddAttrs(slog.String("device", e.Device))
		r.AddAttrs(e.Attrs...)
		_ = h.Handle(context.Background(), r)
	}
}
