package hello

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Received is a Hello as the server saw it.
type Received struct {
	Message
	// From is the TCP peer: the device's address, the one the SCS connects
	// back to.
	From netip.AddrPort
	At   time.Time
}

// ReceiverOptions configure a Receiver.
type ReceiverOptions struct {
	// Handle is called with every Hello read. It runs on the connection's
	// goroutine; a slow handler slows that connection only.
	Handle func(Received)
	// OnError, when set, hears about connections that carried no valid
	// Hello (the error wraps ErrMalformed, or is a timeout or read error).
	OnError func(from netip.AddrPort, err error)
	// ReadTimeout bounds the wait for a Hello on one connection; default
	// 10 s.
	ReadTimeout time.Duration
	// Now is the clock stamped on Received.At; default time.Now.
	Now func() time.Time
	// MaxConns bounds the connections served at once (default 1024): one
	// past it is closed at once and counted, so that peers that connect
	// and send nothing cannot hold every descriptor for ReadTimeout.
	MaxConns int
	// OnRefused, when set, hears about each connection closed unread
	// because MaxConns were being served.
	OnRefused func(from netip.AddrPort)
	// OnAcceptError, when set, hears about accept failures that Serve
	// survives (out of descriptors, aborted connections), at most once per
	// ErrorInterval (default 10 s) with the count since the last report.
	OnAcceptError func(err error, count uint64)
	ErrorInterval time.Duration
}

// ReceiverStats count what the receiver saw.
type ReceiverStats struct {
	Conns     atomic.Uint64 // connections served
	Hellos    atomic.Uint64 // valid Hellos
	Malformed atomic.Uint64 // connections whose bytes were not a Hello
	Empty     atomic.Uint64 // connections closed before any byte
	Errors    atomic.Uint64 // timeouts and read errors
	// Refused counts connections closed unread because MaxConns were
	// being served; AcceptErrors accept failures survived.
	Refused      atomic.Uint64
	AcceptErrors atomic.Uint64
}

// Receiver reads Hellos from TCP connections: the server side of the Hello,
// for the reference SCS and for tests. A device writes one Hello and closes;
// the receiver reads one, then closes the connection itself.
type Receiver struct {
	o      ReceiverOptions
	Stats  ReceiverStats
	active atomic.Int64

	mu         sync.Mutex
	lastReport time.Time
	unreported uint64
}

// NewReceiver returns a receiver.
func NewReceiver(o ReceiverOptions) *Receiver {
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
	}
	if o.ErrorInterval <= 0 {
		o.ErrorInterval = 10 * time.Second
	}
	return &Receiver{o: o}
}

// ServeConn reads one Hello from c and closes c. It fits a callback-driven
// listener (nic.Host.Listen).
func (r *Receiver) ServeConn(c net.Conn) {
	defer c.Close()
	if r.active.Add(1) > int64(r.o.MaxConns) {
		r.active.Add(-1)
		r.Stats.Refused.Add(1)
		if r.o.OnRefused != nil {
			r.o.OnRefused(addrPort(c.RemoteAddr()))
		}
		return
	}
	defer r.active.Add(-1)
	r.Stats.Conns.Add(1)
	from := addrPort(c.RemoteAddr())
	_ = c.SetReadDeadline(time.Now().Add(r.o.ReadTimeout))
	m, err := Read(c)
	switch {
	case err == nil:
		r.Stats.Hellos.Add(1)
		if r.o.Handle != nil {
			r.o.Handle(Received{Message: m, From: from, At: r.o.Now()})
		}
		return
	case errors.Is(err, ErrMalformed):
		r.Stats.Malformed.Add(1)
	case errors.Is(err, io.EOF):
		r.Stats.Empty.Add(1)
		err = fmt.Errorf("hello: connection from %s closed without a Hello", from)
	default:
		r.Stats.Errors.Add(1)
		err = fmt.Errorf("hello: reading from %s: %w", from, err)
	}
	if r.o.OnError != nil {
		r.o.OnError(from, err)
	}
}

// Serve accepts connections on ln until ctx ends or ln is closed, serving
// each on its own goroutine. An accept failure other than the listener's
// closing (no descriptor left, a connection aborted) is counted, reported
// through OnAcceptError, and waited out with a backoff from 5 ms to 1 s:
// the receiver outlives a flood. It closes ln and waits for the
// connections it started before returning.
func (r *Receiver) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("hello: accept: %w", err)
			}
			r.acceptFailed(err)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.ServeConn(c)
		}()
	}
}

// acceptFailed counts an accept failure and reports it at most once per
// interval.
func (r *Receiver) acceptFailed(err error) {
	r.Stats.AcceptErrors.Add(1)
	r.mu.Lock()
	r.unreported++
	now := time.Now()
	report := now.Sub(r.lastReport) >= r.o.ErrorInterval
	n := r.unreported
	if report {
		r.lastReport, r.unreported = now, 0
	}
	r.mu.Unlock()
	if report && r.o.OnAcceptError != nil {
		r.o.OnAcceptError(err, n)
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if a == nil {
		// gonet's conns have no remote address once the peer has reset.
		return netip.AddrPort{}
	}
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
