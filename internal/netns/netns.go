// Package netns gives tests a network namespace of their own, with helpers
// to run commands in it and to open sockets and TAP devices inside it from
// the test process. Every test that uses it needs root; Need skips the test
// with a clear message otherwise.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/amtsim/amtsim/internal/peer"
	"github.com/amtsim/amtsim/nic"
)

// NS is a network namespace made for one test and removed after it.
type NS struct{ Name string }

// Need skips t unless it runs as root and every peer in tools works
// (internal/peer: a missing peer skips, or fails with CI=true).
func Need(t testing.TB, tools ...string) {
	t.Helper()
	peer.Root(t, "a network namespace and a TAP interface")
	peer.Need(t, append([]string{"ip"}, tools...)...)
}

// Run runs a command in the root namespace and fails t if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// New creates a namespace with its loopback up.
func New(t testing.TB) *NS {
	t.Helper()
	return NewAs(t, "")
}

// NewAs creates a namespace with its loopback up, one of several in a test
// told apart by role ("pod0", "pod1", ...).
func NewAs(t testing.TB, role string) *NS {
	t.Helper()
	name := strings.ToLower(t.Name())
	if role != "" {
		name = role + "-" + name
	}
	ns := &NS{Name: fmt.Sprintf("amtsim-%d-%s", os.Getpid(), name)}
	ns.Name = strings.NewReplacer("/", "-", " ", "-").Replace(ns.Name)
	if len(ns.Name) > 40 {
		ns.Name = ns.Name[:40]
	}
	Run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.Name).Run() })
	Run(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
	return ns
}

// Exec runs a command inside the namespace.
func (ns *NS) Exec(args ...string) (string, error) {
	out, err := ns.Command(args...).CombinedOutput()
	return string(out), err
}

// Command prepares a command to run inside the namespace.
func (ns *NS) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

// Do runs f on an OS thread that has entered the namespace. Sockets and
// file descriptors f opens stay in the namespace wherever they are used
// from afterwards.
func (ns *NS) Do(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is unlocked only once it is back home: if leaving the
		// namespace failed, it must die with this goroutine rather than
		// serve others.
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			ch <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", ns.Name))
		if err != nil {
			ch <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		ch <- ferr
	}()
	return <-ch
}

// TAP makes a TAP device dev in the namespace with the kernel side at
// addrs (CIDR), brings it up, and opens it for a device's NIC; the TAP
// closes with the test.
func (ns *NS) TAP(t testing.TB, dev string, addrs ...string) *nic.TAP {
	t.Helper()
	Run(t, "ip", "-n", ns.Name, "tuntap", "add", "dev", dev, "mode", "tap")
	for _, a := range addrs {
		Run(t, "ip", "-n", ns.Name, "addr", "add", a, "dev", dev)
	}
	Run(t, "ip", "-n", ns.Name, "link", "set", dev, "up")
	var tap *nic.TAP
	if err := ns.Do(func() (err error) {
		tap, err = nic.OpenTAP(nic.TAPOptions{Name: dev})
		return err
	}); err != nil {
		t.Fatalf("open TAP %s in %s: %v", dev, ns.Name, err)
	}
	t.Cleanup(func() { _ = tap.Close() })
	return tap
}

// Veth makes a veth pair in the namespace: dev for the devices, with no
// address, and peer for the kernel, at addrs (CIDR); both up.
func (ns *NS) Veth(t testing.TB, dev, peer string, addrs ...string) {
	t.Helper()
	Run(t, "ip", "-n", ns.Name, "link", "add", dev, "type", "veth", "peer", "name", peer)
	for _, a := range addrs {
		Run(t, "ip", "-n", ns.Name, "addr", "add", a, "dev", peer)
	}
	Run(t, "ip", "-n", ns.Name, "link", "set", dev, "up")
	Run(t, "ip", "-n", ns.Name, "link", "set", peer, "up")
}

// Packet opens a packet uplink on dev in the namespace; it closes with
// the test.
func (ns *NS) Packet(t testing.TB, dev string) *nic.Packet {
	t.Helper()
	var p *nic.Packet
	if err := ns.Do(func() (err error) {
		p, err = nic.OpenPacket(nic.PacketOptions{Name: dev})
		return err
	}); err != nil {
		t.Fatalf("open packet uplink on %s in %s: %v", dev, ns.Name, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}
