package fleet

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// HelloLANOptions configure StartHelloLAN.
type HelloLANOptions struct {
	// Log receives hello.received and hello.bad for each Hello read.
	Log *slog.Logger
	LAN lan.NetworkOptions
}

// HelloLAN is the embedded LAN with a Hello listener at the
// ProvisionServer address and no SCS behind it: `amtsim run`'s network,
// where devices are followed to their Hello and no further.
type HelloLAN struct {
	Net    *lan.Network
	Stacks *nic.Stacks
	addr   netip.AddrPort

	mu    sync.Mutex
	heard map[identity.UUID]bool
}

// StartHelloLAN starts the LAN and its Hello listener.
func StartHelloLAN(o HelloLANOptions) (*HelloLAN, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	netw, err := lan.StartNetwork(o.LAN)
	if err != nil {
		return nil, err
	}
	h := &HelloLAN{Net: netw, Stacks: nic.NewStacks(nic.StackOptions{}), addr: netip.AddrPortFrom(netw.SCS(), mebx.DefaultSCSPort),
		heard: map[identity.UUID]bool{}}
	host, err := netw.AddSCSHost()
	if err != nil {
		h.Close()
		return nil, err
	}
	rx := hello.NewReceiver(hello.ReceiverOptions{
		MaxConns: nic.ListenBacklog,
		Handle: func(r hello.Received) {
			h.mu.Lock()
			h.heard[r.UUID] = true
			h.mu.Unlock()
			o.Log.Info(string(event.HelloReceived), "from", r.From.String(), "version", r.Version.String(), "retry", r.Retry,
				"uuid", r.UUID.String(), "pid", r.PID, "admin_set", r.AdminSet)
		},
		OnError: func(from netip.AddrPort, err error) {
			o.Log.Warn(string(event.HelloBad), "from", from.String(), "err", err.Error())
		},
	})
	if _, err := host.Listen(mebx.DefaultSCSPort, rx.ServeConn); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Addr is the Hello listener's address.
func (h *HelloLAN) Addr() netip.AddrPort { return h.addr }

// NewFleet makes a fleet on the LAN (o's Uplink and Stacks are set here).
func (h *HelloLAN) NewFleet(ctx context.Context, o Options) (*Fleet, error) {
	o.Uplink, o.Stacks = h.Net.Segment, h.Stacks
	return New(ctx, o)
}

// WaitReceived returns nil once the listener has read a Hello from every
// device of f that sent one, or ctx's error: a Hello on the wire is not
// yet a Hello read.
func (h *HelloLAN) WaitReceived(ctx context.Context, f *Fleet) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		all := true
		h.mu.Lock()
		for i, d := range f.devs {
			if d.Stats.HellosSent.Load() > 0 && !h.heard[f.ids[i].UUID] {
				all = false
				break
			}
		}
		h.mu.Unlock()
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close stops the LAN; stop fleets on it first.
func (h *HelloLAN) Close() {
	h.Stacks.Close()
	h.Net.Close()
}
