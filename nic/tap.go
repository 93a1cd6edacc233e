package nic

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// TAP is an uplink onto a Linux TAP interface. Many NICs may share one TAP,
// each with its own MAC, like PCs behind one switch port: one goroutine
// reads the TAP and hands each frame to the NIC it is addressed to (group
// frames to all of them).
type TAP struct {
	name string
	ifce *water.Interface
	demux

	done chan struct{}
	// closing is set before the fd is closed, so that the reader takes the
	// resulting error for a stop, not a fault.
	closing atomic.Bool
	created bool

	UplinkStats
}

// TAPOptions configure OpenTAP.
type TAPOptions struct {
	// Name of the TAP interface.
	Name string
	// Create makes the TAP when it does not exist, for this run only: the
	// kernel removes it when it is closed or the process dies. Without
	// Create a missing TAP is an error. A TAP that exists is never removed.
	Create bool
	// OnDuplicateMAC is told, once per MAC, that a frame from the wire
	// carried the source MAC of a device on this TAP.
	OnDuplicateMAC func(net.HardwareAddr)
}

// OpenTAP opens the TAP interface by name and starts its reader. The caller
// must be in the TAP's network namespace (for example, started with
// `ip netns exec`) and may need CAP_NET_ADMIN.
//
// A TAP that exists (an administrator's persistent one, on a bridge) is
// opened with its persist flag kept: water clears that flag unless told
// otherwise, and the kernel then deletes the interface at close, even
// after kill -9.
func OpenTAP(o TAPOptions) (*TAP, error) {
	if o.Name == "" {
		return nil, errors.New("tap: no interface name")
	}
	_, err := net.InterfaceByName(o.Name)
	exists := err == nil
	if !exists && !o.Create {
		return nil, fmt.Errorf("tap %s: no such interface in this network namespace (make one with `ip tuntap add dev %s mode tap` and put it on a bridge, or pass --create for one that lasts the run)", o.Name, o.Name)
	}
	ifce, err := water.New(water.Config{
		DeviceType:             water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: o.Name, Persist: exists},
	})
	if err != nil {
		return nil, fmt.Errorf("tap %s: open: %w", o.Name, err)
	}
	t := &TAP{name: o.Name, ifce: ifce, done: make(chan struct{}), created: !exists}
	t.demux = newDemux("tap "+o.Name, &t.UplinkStats, o.OnDuplicateMAC)
	if t.created {
		// A TAP made for the run is up at once; its kernel side is the
		// caller's to configure or bridge.
		if err := setUp(o.Name); err != nil {
			ifce.Close()
			return nil, fmt.Errorf("tap %s: %w", o.Name, err)
		}
	}
	go t.read()
	return t, nil
}

// Name is the interface name.
func (t *TAP) Name() string { return t.name }

// Created reports whether OpenTAP made the TAP (and its close removes it).
func (t *TAP) Created() bool { return t.created }

// Counts reads the TAP's counts.
func (t *TAP) Counts() UplinkCounts { return t.UplinkStats.read("tap:" + t.name) }

// TAPState is what the kernel says of a TAP's place in the network.
type TAPState struct {
	Up     bool
	Bridge string   // the bridge (master) it is a port of, if any
	Addrs  []string // the kernel side's addresses
	Routes int      // IPv4 routes through it
}

// Problems are what stands between the devices and a network: a TAP that
// is down, or one on no bridge with no address or route (frames reach the
// kernel and go no further).
func (s TAPState) Problems() []string {
	var out []string
	if !s.Up {
		out = append(out, "the interface is down: nothing reaches the devices until `ip link set <name> up`")
	}
	if s.Bridge == "" && !s.routable() {
		out = append(out, "the interface is on no bridge and has no address or route: the devices' frames reach only this host's kernel, which drops them")
	}
	return out
}

// routable reports whether the kernel side has an address other than a
// link-local one (which the kernel gives any interface that comes up) or a
// route.
func (s TAPState) routable() bool {
	for _, a := range s.Addrs {
		p, err := netip.ParsePrefix(a)
		if err == nil && !p.Addr().IsLinkLocalUnicast() {
			return true
		}
	}
	return s.Routes > 0
}

// State reads the TAP's state from the kernel.
func (t *TAP) State() (TAPState, error) {
	ifi, err := net.InterfaceByName(t.name)
	if err != nil {
		return TAPState{}, fmt.Errorf("tap %s: %w", t.name, err)
	}
	st := TAPState{Up: ifi.Flags&net.FlagUp != 0}
	if m, err := os.Readlink(filepath.Join("/sys/class/net", t.name, "master")); err == nil {
		st.Bridge = filepath.Base(m)
	}
	if as, err := ifi.Addrs(); err == nil {
		for _, a := range as {
			st.Addrs = append(st.Addrs, a.String())
		}
	}
	st.Routes = countRoutes(t.name)
	return st, nil
}

// countRoutes counts the IPv4 routes through dev (/proc/net/route).
func countRoutes(dev string) int {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return 0
	}
	n := 0
	for i, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 0 && f[0] == dev { // line 0 is the header
			n++
		}
	}
	return n
}

// setUp brings the named interface up (SIOCSIFFLAGS).
func setUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set up: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

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

// Attach implements Uplink.
func (t *TAP) Attach(p Port) (Attachment, error) {
	mac, err := t.attach(p)
	if err != nil {
		return nil, err
	}
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
	a.t.TxFrames.Add(1)
	return nil
}

func (a *tapAttachment) Detach() { a.t.detach(a.mac) }

// SetBroadcastFilter implements FilterAware.
func (a *tapAttachment) SetBroadcastFilter(f *BroadcastFilter) { a.t.setFilter(a.mac, f) }
