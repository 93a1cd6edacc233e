package firmware

import (
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/wsman"
)

// Faults switched while a device runs: what a scenario does to one device
// in mid-run. Each lasts until changed, power cycles included (a pulled
// cable stays pulled). None takes the device's lock, so each is safe to
// call from any goroutine, an event sink's on the device's own included:
// a fault set off by an event takes hold before the device's next frame.

// SetNetem impairs the device's frames from now on (Options.Egress and
// Ingress are the impairments it powers on with).
func (d *Device) SetNetem(egress, ingress nic.Netem) error {
	if err := egress.Validate(); err != nil {
		return fmt.Errorf("firmware %s: egress: %w", d.id, err)
	}
	if err := ingress.Validate(); err != nil {
		return fmt.Errorf("firmware %s: ingress: %w", d.id, err)
	}
	d.netem.Store(&[2]nic.Netem{egress, ingress})
	if n := d.live.Load(); n != nil {
		return n.SetNetem(egress, ingress)
	}
	return nil
}

// impairments are the netem settings a power-on gives the NIC.
func (d *Device) impairments() (egress, ingress nic.Netem) {
	if p := d.netem.Load(); p != nil {
		return p[0], p[1]
	}
	return d.o.Egress, d.o.Ingress
}

// SetLink plugs the cable in or pulls it out. With it out the NIC drops
// every frame both ways; the device's timers run on (DHCP renewals fail,
// Hellos fail to connect) as on the hardware.
func (d *Device) SetLink(up bool) {
	if d.cableOut.Swap(!up) == !up {
		return
	}
	n := d.live.Load()
	if n == nil {
		return
	}
	n.SetLink(up)
	if up {
		d.emit(event.LinkUp)
	} else {
		d.emit(event.LinkDown)
	}
}

// CutPower is the plug pulled: from its return the NIC passes no frame
// either way, so the device's peers see it gone at that instant. The
// owner's PowerOff (and PowerOn, for a cycle) follows; CutPower takes no
// lock, so an event sink may call it on the device's own goroutine.
func (d *Device) CutPower() {
	if n := d.live.Load(); n != nil {
		n.SetLink(false)
	}
}

// SkewClock moves the ME's real-time clock by d (negative: back), as a
// flat RTC battery or a bad time sync does: the AMT time the SCS reads and
// sets, certificate validity, and Digest nonce ages all follow it (a jump
// past a nonce's lifetime makes it stale). The Hello schedule runs on
// elapsed time and does not.
func (d *Device) SkewClock(by time.Duration) {
	d.skew.Add(int64(by))
}

// rtc is the ME's real-time clock.
func (d *Device) rtc() time.Time {
	return d.clock.Now().Add(time.Duration(d.skew.Load()))
}

// Answer is how a call fault changes the device's answer to a call.
type Answer string

const (
	// AnswerDelay holds the answer back for CallFault.Delay; the call is
	// carried out.
	AnswerDelay Answer = "delay"
	// AnswerHold holds the call back for CallFault.Delay before carrying
	// it out, then answers: firmware slow to do the work (a flash write
	// that takes seconds), so that an SCS's call timeout can fall before
	// the call has taken effect, and the call take effect after.
	AnswerHold Answer = "hold"
	// AnswerEmpty carries the call out and answers with no body: 200, or
	// CallFault.Status (AMT has been seen answering 400 with
	// Content-Length: 0).
	AnswerEmpty Answer = "empty"
	// AnswerFault refuses the call with a WS-MAN fault (wsman:InternalError)
	// without carrying it out.
	AnswerFault Answer = "fault"
	// AnswerDrop carries the call out and closes the connection without
	// an answer.
	AnswerDrop Answer = "drop"
)

// CallFault changes the device's answer to one named WS-MAN call
// (wsman.Header.CallName: "CommitChanges", "Get:AMT_GeneralSettings").
type CallFault struct {
	Call   string
	Answer Answer
	Delay  time.Duration // for AnswerDelay
	Status int           // for AnswerEmpty: the HTTP status (default 200)
	// Times is how many answers it changes before it disarms; 0 is every
	// one.
	Times int
}

// Validate says what is wrong with f.
func (f CallFault) Validate() error {
	if f.Call == "" {
		return errors.New("a call fault needs the call's name")
	}
	switch f.Answer {
	case AnswerDelay, AnswerHold:
		if f.Delay <= 0 {
			return fmt.Errorf("answer %q needs a positive delay", f.Answer)
		}
	case AnswerEmpty:
		if f.Status != 0 && (f.Status < 200 || f.Status > 599) {
			return fmt.Errorf("status %d is not an HTTP status", f.Status)
		}
	case AnswerFault, AnswerDrop:
	default:
		return fmt.Errorf("answer %q is none of delay, hold, empty, fault, drop", f.Answer)
	}
	if f.Times < 0 {
		return errors.New("times must not be negative")
	}
	return nil
}

// armedFault is a CallFault with the answers it has left.
type armedFault struct {
	CallFault
	left atomic.Int64 // for Times > 0
}

// SetCallFault arms f (replacing any armed fault); a zero CallFault
// disarms.
func (d *Device) SetCallFault(f CallFault) error {
	if f == (CallFault{}) {
		d.callFault.Store(nil)
		return nil
	}
	if err := f.Validate(); err != nil {
		return fmt.Errorf("firmware %s: %w", d.id, err)
	}
	a := &armedFault{CallFault: f}
	a.left.Store(int64(f.Times))
	d.callFault.Store(a)
	return nil
}

// faultFor returns the armed fault that body's call meets, if any, and
// uses up one of its answers. The envelope is parsed a second time only
// while a fault is armed.
func (d *Device) faultFor(body []byte) (CallFault, wsman.Header, bool) {
	a := d.callFault.Load()
	if a == nil {
		return CallFault{}, wsman.Header{}, false
	}
	env, err := wsman.ParseEnvelope(body)
	if err != nil || env.Header.CallName() != a.Call {
		return CallFault{}, wsman.Header{}, false
	}
	if a.Times > 0 && a.left.Add(-1) < 0 {
		return CallFault{}, wsman.Header{}, false
	}
	d.emit(event.FaultInjected, "call", a.Call, "answer", string(a.Answer))
	return a.CallFault, env.Header, true
}

// serveFaulted answers a /wsman request under call fault f.
func (d *Device) serveFaulted(sess *session, req *request, f CallFault, h wsman.Header) response {
	r := response{status: http.StatusOK, contentType: wsman.ContentType}
	out := sess.answerBuffer()
	if f.Answer == AnswerFault {
		sess.wsman().FaultTo(out, h, wsman.FaultInternal("The call failed (a fault injected by a scenario)."))
		r.status, r.body = http.StatusBadRequest, out.Bytes()
		return r
	}
	if f.Answer == AnswerHold {
		d.waitOn(f.Delay)
	}
	if sess.wsman().ServeTo(out, req.body) {
		r.status = http.StatusBadRequest
	}
	r.body = out.Bytes()
	switch f.Answer {
	case AnswerDelay:
		d.waitOn(f.Delay)
	case AnswerEmpty:
		r.body = nil
		if f.Status != 0 {
			r.status = f.Status
		}
	case AnswerDrop:
		r.drop = true
	}
	return r
}

// waitOn waits for wait to pass, or for the device to be powered off.
func (d *Device) waitOn(wait time.Duration) {
	d.mu.Lock()
	ctx := d.ctx
	d.mu.Unlock()
	if ctx == nil {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// NICStats are the counters of the NIC of this power cycle (nil while
// off): frames, and those lost to impairments or a pulled cable.
func (d *Device) NICStats() *nic.Counters {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nic == nil {
		return nil
	}
	return &d.nic.Stats
}
