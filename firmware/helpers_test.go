package firmware

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// testPassword is a MEBx password that meets the strong policy.
const testPassword = "Sim-Pass1!"

// events records a device's events in order.
type events struct {
	mu   sync.Mutex
	all  []Event
	kick chan struct{}
}

func newEvents() *events { return &events{kick: make(chan struct{}, 1)} }

func (e *events) sink(ev Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

func (e *events) named(name string) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.all {
		if string(ev.Name) == name {
			out = append(out, ev)
		}
	}
	return out
}

func (e *events) snapshot() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.all...)
}

func (e *events) names() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.all {
		out = append(out, string(ev.Name))
	}
	return out
}

// wait blocks until at least n events named name have arrived.
func (e *events) wait(t *testing.T, name string, n int, within time.Duration) []Event {
	t.Helper()
	deadline := time.After(within)
	for {
		if got := e.named(name); len(got) >= n {
			return got
		}
		select {
		case <-e.kick:
		case <-deadline:
			t.Fatalf("waited %v for %d × %s; saw %v", within, n, name, e.names())
		}
	}
}

// setupSettings are MEBx settings of a device an IT department has put in
// setup mode: password changed, PID/PPS entered.
func setupSettings(t *testing.T, id identity.Identity) mebx.Settings {
	t.Helper()
	s := mebx.Defaults()
	require.NoError(t, s.SetPassword(testPassword))
	require.NoError(t, s.SetPIDPPS(id.PID, id.PPS))
	return s
}

func store(t *testing.T, s mebx.Settings) mebx.Store {
	t.Helper()
	st := mebx.NewMemStore()
	require.NoError(t, st.Save(s))
	return st
}

// helloServer is a Hello receiver on its own host on the segment.
type helloServer struct {
	got chan hello.Received
	rx  *hello.Receiver
}

func startHelloServer(t *testing.T, n *lan.Network, up nic.Uplink, stacks *nic.Stacks, addr netip.Prefix, port uint16) *helloServer {
	t.Helper()
	mac := net.HardwareAddr{0x02, 0xa0, 0, 0, 0, 0x02}
	var h *nic.Host
	var err error
	if n != nil {
		h, err = n.AddHost(mac, addr, nil)
	} else {
		var c *nic.NIC
		c, err = nic.New(nic.Options{MAC: mac, Uplink: up})
		require.NoError(t, err)
		h, err = stacks.Attach(c)
		require.NoError(t, err)
		err = h.SetAddress(addr, netip.Addr{})
	}
	require.NoError(t, err)
	t.Cleanup(h.Close)
	s := &helloServer{got: make(chan hello.Received, 64)}
	s.rx = hello.NewReceiver(hello.ReceiverOptions{Handle: func(r hello.Received) { s.got <- r }})
	_, err = h.Listen(port, s.rx.ServeConn)
	require.NoError(t, err)
	return s
}

func (s *helloServer) next(t *testing.T, within time.Duration) hello.Received {
	t.Helper()
	select {
	case r := <-s.got:
		return r
	case <-time.After(within):
		t.Fatalf("no Hello within %v", within)
	}
	return hello.Received{}
}

type testDevice struct {
	*Device
	ev *events
}

// bootDevice powers on a device with the given settings on up.
func bootDevice(t *testing.T, o Options, id identity.Identity, s mebx.Settings) *testDevice {
	t.Helper()
	ev := newEvents()
	if o.Store == nil {
		o.Store = store(t, s)
	} else {
		require.NoError(t, o.Store.Save(s))
	}
	o.Identity, o.Events = id, ev.sink
	if o.Clock == nil {
		o.Clock = clock.Scaled(2000)
	}
	d, err := New(o)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	t.Cleanup(d.PowerOff)
	require.NoError(t, d.PowerOn(ctx))
	return &testDevice{Device: d, ev: ev}
}

func startLAN(t *testing.T, o lan.NetworkOptions) (*lan.Network, *nic.Stacks) {
	t.Helper()
	n, err := lan.StartNetwork(o)
	require.NoError(t, err)
	t.Cleanup(n.Close)
	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)
	return n, stacks
}
