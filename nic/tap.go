package nic

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/songgao/water"
)

// TAP is an uplink onto a Linux TAP interface. Many NICs may share one TAP,
// each with its own MAC, like PCs behind one switch port: one goroutine
// reads the TAP and hands each frame to the NIC it is addressed to (group
// frames to all of them).
type TAP struct {
	name string
	ifce *water.Interface

	mu    sync.RWMutex
	ports map[[6]byte]Port

	done chan struct{}
	// closing is set before the fd is closed, so that the reader takes the
	// resulting error for a stop, not a fault.
	closing atomic.Bool

	RxFrames, RxUnknown, ReadErrors, WriteErrors atomic.Uint64
}

// TAPOptions configure OpenTAP.
type TAPOptions struct {
	// Name of an existing (persistent) TAP interface, or of one to create.
	Name string
}

// OpenTAP opens the TAP interface by name and starts its reader. The caller
// must be in the TAP's network namespace (for example, started with
// `ip netns exec`) and may need CAP_NET_ADMIN.
func OpenTAP(o TAPOptions) (*TAP, error) {
	if o.Name == "" {
		return nil, errors.New("tap: no interface name")
	}
	ifce, err := water.New(water.Config{
		DeviceType:             water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: o.Name},
	})
	if err != nil {
		return nil, fmt.Errorf("tap %s: open: %w", o.Name, err)
	}
	t := &TAP{name: o.Name, ifce: ifce, ports: map[[6]byte]Port{}, done: make(chan struct{})}
	go t.read()
	return t, nil
}

// Name is the interface name.
func (t *TAP) Name() string { return t.name }

func (t *TAP) read() {
	defer close(t.done)
	buf := make([]byte, 65536)
	for {
		n, err := t.ifce.Read(buf)
		if err != nil {
			if t.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.ReadErrors.Add(1)
			continue
		}
		t.dispatch(buf[:n])
	}
}

func (t *TAP) dispatch(frame []byte) {
	if len(frame) < 14 {
		t.RxUnknown.Add(1)
		return
	}
	t.RxFrames.Add(1)
	t.mu.RLock()
	defer t.mu.RUnlock()
	if frame[0]&1 != 0 {
		for _, p := range t.ports {
			p.DeliverFrame(frame)
		}
		return
	}
	if p, ok := t.ports[[6]byte(frame[:6])]; ok {
		p.DeliverFrame(frame)
		return
	}
	t.RxUnknown.Add(1)
}

// Attach implements Uplink.
func (t *TAP) Attach(p Port) (Attachment, error) {
	mac := [6]byte(p.HardwareAddr())
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.ports[mac]; dup {
		return nil, fmt.Errorf("tap %s: MAC %v is already attached", t.name, p.HardwareAddr())
	}
	t.ports[mac] = p
	return &tapAttachment{t: t, mac: mac}, nil
}

// Close stops the reader and closes the interface.
func (t *TAP) Close() error {
	t.closing.Store(true)
	err := t.ifce.Close()
	<-t.done
	return err
}

type tapAttachment struct {
	t   *TAP
	mac [6]byte
}

func (a *tapAttachment) Send(frame []byte) error {
	// A TAP write carries exactly one frame, so concurrent writers do not
	// interleave.
	if _, err := a.t.ifce.Write(frame); err != nil {
		a.t.WriteErrors.Add(1)
		return fmt.Errorf("tap %s: write: %w", a.t.name, err)
	}
	return nil
}

func (a *tapAttachment) Detach() {
	a.t.mu.Lock()
	delete(a.t.ports, a.mac)
	a.t.mu.Unlock()
}
