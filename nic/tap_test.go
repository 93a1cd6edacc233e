package nic_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// netns is a network namespace made for one test and removed after it.
type netns struct{ name string }

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create a network namespace and a TAP interface (CI runs it as root)")
	}
	for _, tool := range []string{"ip", "ping", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (bash .ci/run installs it): %v", tool, err)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
	return string(out)
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	ns := &netns{name: fmt.Sprintf("amtsim-%d-%s", os.Getpid(), strings.ToLower(t.Name()))}
	if len(ns.name) > 40 {
		ns.name = ns.name[:40]
	}
	run(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.name).Run() })
	run(t, "ip", "-n", ns.name, "link", "set", "lo", "up")
	return ns
}

func (ns *netns) exec(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	return string(out), err
}

// openTAP opens the TAP named tap inside ns from this process: one locked OS
// thread enters the namespace, opens the device and leaves. The fd stays
// bound to the TAP wherever it is used from.
func (ns *netns) openTAP(t *testing.T, tap string) *nic.TAP {
	t.Helper()
	type result struct {
		tap *nic.TAP
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: if leaving the namespace failed, it
		// must die with this goroutine rather than serve others.
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", ns.name))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		tp, err := nic.OpenTAP(nic.TAPOptions{Name: tap})
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil && err == nil {
			err = fmt.Errorf("setns back: %w", serr)
		}
		if err == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{tap: tp, err: err}
	}()
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() { _ = r.tap.Close() })
	return r.tap
}

// TestTAPStaticDeviceAnswersPing: a device with a static address from its
// MEBx store, on a TAP inside a namespace, answers the kernel's ping, and
// its pcap decodes with tshark as ARP and ICMP.
func TestTAPStaticDeviceAnswersPing(t *testing.T) {
	needRoot(t)
	ns := newNetns(t)
	run(t, "ip", "-n", ns.name, "tuntap", "add", "dev", "amt0", "mode", "tap")
	run(t, "ip", "-n", ns.name, "addr", "add", "198.19.250.1/24", "dev", "amt0")
	run(t, "ip", "-n", ns.name, "link", "set", "amt0", "up")

	dir := t.TempDir()
	store := mebx.NewFileStore(filepath.Join(dir, "mebx.json"))
	s := mebx.Defaults()
	require.NoError(t, s.Set("password=P@ssw0rd!", "dhcp=off", "ip=198.19.250.10", "netmask=255.255.255.0", "gateway=198.19.250.1"))
	require.NoError(t, store.Save(s))
	s, err := store.Load()
	require.NoError(t, err)
	prefix, err := s.Prefix()
	require.NoError(t, err)

	id, err := identity.Of(1, 0, 0)
	require.NoError(t, err)
	tap := ns.openTAP(t, "amt0")
	pcapPath := filepath.Join(dir, "device.pcap")
	capture, err := nic.CreateCapture(pcapPath)
	require.NoError(t, err)
	c, err := nic.New(nic.Options{MAC: id.MAC, Uplink: tap, Capture: capture})
	require.NoError(t, err)
	stacks := nic.NewStacks(nic.StackOptions{})
	defer stacks.Close()
	h, err := stacks.Attach(c)
	require.NoError(t, err)
	require.NoError(t, h.SetAddress(prefix, s.Gateway))

	// A second device shares the TAP with its own MAC, like a PC on the
	// same switch.
	id2, err := identity.Of(1, 0, 1)
	require.NoError(t, err)
	c2, err := nic.New(nic.Options{MAC: id2.MAC, Uplink: tap})
	require.NoError(t, err)
	h2, err := stacks.Attach(c2)
	require.NoError(t, err)
	require.NoError(t, h2.SetAddress(netip.MustParsePrefix("198.19.250.11/24"), s.Gateway))
	out, err := ns.exec(t, "ping", "-c", "2", "-W", "2", "-i", "0.2", "198.19.250.11")
	require.NoError(t, err, "ping the second device: %s", out)
	neigh2, _ := ns.exec(t, "ip", "neigh", "show", "198.19.250.11")
	assert.Contains(t, strings.ToLower(neigh2), id2.MAC.String())

	out, err = ns.exec(t, "ping", "-c", "3", "-W", "2", "-i", "0.2", s.IP.String())
	require.NoError(t, err, "ping from the namespace: %s", out)
	assert.Contains(t, out, "3 received")
	neigh, _ := ns.exec(t, "ip", "neigh", "show", s.IP.String())
	assert.Contains(t, strings.ToLower(neigh), id.MAC.String(), "the kernel learned the device's MAC by ARP")

	require.NoError(t, capture.Flush())
	protos := run(t, "tshark", "-r", pcapPath, "-T", "fields", "-e", "frame.protocols")
	assert.Contains(t, protos, "eth:ethertype:arp")
	assert.Contains(t, protos, "eth:ethertype:ip:icmp")
	replies := run(t, "tshark", "-r", pcapPath, "-Y", fmt.Sprintf("icmp.type == 0 && ip.src == %s", s.IP), "-T", "fields", "-e", "ip.dst")
	assert.Equal(t, 3, strings.Count(replies, "198.19.250.1"), "three echo replies from the device: %q", replies)
	require.NoError(t, capture.Close())
	assert.Equal(t, uint64(0), c.Stats.TxErrors.Load())
}
