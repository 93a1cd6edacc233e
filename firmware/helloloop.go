package firmware

import (
	"context"
	"fmt"
	"net/netip"
	"runtime/pprof"
	"time"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// startHello arms the first Hello of this power cycle, due at once.
func (d *Device) startHello() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.on || d.helloOn {
		return
	}
	d.helloOn = true
	d.helloLoop++
	d.helloK, d.helloOffset = 0, 0
	d.helloStart = d.clock.Now()
	d.helloTimer = d.clock.AfterFunc(0, d.helloSlot)
}

// stopHello ends the Hello loop (the device left setup; arm's hello.off
// says why).
func (d *Device) stopHello() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.helloTimer != nil {
		d.helloTimer.Stop()
	}
	d.helloOn, d.helloHeld, d.helloTimer = false, false, nil
}

// holdHello counts admin sessions in setup. While one lasts, a due Hello
// waits; when the last ends, a waiting Hello goes out at once.
func (d *Device) holdHello(hold bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if hold {
		d.sessions++
		return
	}
	d.sessions--
	if d.sessions == 0 && d.helloHeld && d.on && d.helloOn {
		d.helloHeld = false
		d.helloTimer = d.clock.AfterFunc(0, d.helloSlot)
	}
}

// helloSlot is one due Hello: find the SCS, send, arm the next. A fleet's
// due Hellos take turns (Options.HelloGate): this one runs now or when its
// turn comes, and then only if its loop still runs (a power cycle, or a
// stop and a new start, may have come between).
func (d *Device) helloSlot() {
	d.mu.Lock()
	loop := d.helloLoop
	d.mu.Unlock()
	d.o.HelloGate.Do(func() {
		// Under the device's profile label (see accept).
		pprof.Do(context.Background(), deviceLabel, func(context.Context) { d.helloSlotLabeled(loop) })
	})
}

func (d *Device) helloSlotLabeled(loop uint64) {
	d.mu.Lock()
	if !d.on || !d.helloOn || d.helloLoop != loop {
		d.mu.Unlock()
		return
	}
	if d.sessions > 0 {
		// An SCS is provisioning the device: no Hello until it is done.
		d.helloHeld, d.helloTimer = true, nil
		d.mu.Unlock()
		return
	}
	d.work.Add(1)
	defer d.work.Done()
	k := d.helloK
	due := d.helloStart.Add(d.helloOffset)
	ctx, h, s := d.ctx, d.host, d.settings
	lease, bound := d.lease, d.bound
	d.mu.Unlock()
	if ctx.Err() != nil {
		return // the owner has stopped the device: it falls quiet until PowerOff
	}

	retry := d.sched.Retry(k)
	m := d.helloMessage(&s, retry)
	err := func() error {
		addr := h.Prefix()
		if !addr.IsValid() {
			return fmt.Errorf("no IPv4 address (lease lost)")
		}
		var dhcpLease *leaseInfo
		if s.DHCP && bound {
			dhcpLease = &leaseInfo{domain: lease.Domain, dns: lease.DNS}
		}
		scs, err := d.findSCS(ctx, s, dhcpLease)
		if err != nil {
			return err
		}
		return d.sendHello(ctx, scs, m, k, due)
	}()
	if ctx.Err() != nil {
		return // powered off meanwhile
	}
	if err != nil {
		d.Stats.HellosFailed.Add(1)
		d.emit(event.HelloFailed, "retry", retry, "n", k, "due", due, "err", err.Error())
	}

	d.mu.Lock()
	if !d.on || !d.helloOn {
		d.mu.Unlock()
		return
	}
	d.helloK = k + 1
	d.helloOffset += d.sched.Delay(k + 1)
	if !d.sched.Open(d.helloOffset) {
		d.helloOn = false
		d.helloTimer = nil
		d.mu.Unlock()
		d.emit(event.HelloStopped, "hellos", k+1, "after", d.sched.Window.String(),
			"reason", "Hello window closed; the device sends again after the next power-up")
		return
	}
	// Due times count from the first Hello, so slow slots do not stretch
	// the schedule.
	wait := max(d.helloStart.Add(d.helloOffset).Sub(d.clock.Now()), 0)
	d.helloTimer = d.clock.AfterFunc(wait, d.helloSlot)
	d.mu.Unlock()
}

// sendHello connects to the SCS, writes the Hello and closes: the SCS
// answers by connecting back, never on this connection.
func (d *Device) sendHello(ctx context.Context, scs netip.AddrPort, m hello.Message, k int, due time.Time) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	h := d.hostNow()
	if h == nil {
		return fmt.Errorf("powered off")
	}
	wait := clock.RealDuration(d.clock, clock.AtLeastReal(d.clock, d.o.ConnectTimeout, d.o.NetFloor))
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c, err := h.DialTCP(cctx, scs)
	if err != nil {
		return fmt.Errorf("connect to SCS %s: %w", scs, err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(wait))
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("write Hello to SCS %s: %w", scs, err)
	}
	d.Stats.HellosSent.Add(1)
	if m.Version == hello.VersionPKI {
		d.emit(event.HelloSent, "version", m.Version.String(), "retry", m.Retry, "n", k, "due", due, "scs", scs.String(),
			"from", c.LocalAddr().String(), "hashes", len(m.Hashes), "admin_set", m.AdminSet)
		return nil
	}
	d.emit(event.HelloSent, "version", m.Version.String(), "retry", m.Retry, "n", k, "due", due, "scs", scs.String(),
		"from", c.LocalAddr().String(), "pid", m.PID, "admin_set", m.AdminSet)
	return nil
}

// helloMessage is the Hello settings s call for: the PSK Hello with the
// PID, or the PKI Hello with the active certificate hashes in table order
// (docs/protocol.md §11), whichever the profile picks.
func (d *Device) helloMessage(s *mebx.Settings, retry uint32) hello.Message {
	m := hello.Message{AdminSet: s.PasswordChanged(), Version: d.prof.helloVersion(s), Retry: retry, UUID: d.o.Identity.UUID}
	if m.Version != hello.VersionPKI {
		m.Version, m.PID = hello.VersionPSK, s.PID
		return m
	}
	for _, h := range s.PKI.Active() {
		if len(m.Hashes) == 255 {
			break
		}
		m.Hashes = append(m.Hashes, hello.CertHash{Type: h.Algorithm, Hash: h.Hash})
	}
	return m
}

func (d *Device) hostNow() *nic.Host {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.on {
		return nil
	}
	return d.host
}
