package hello

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/identity"
)

// The receiver on a loopback socket: good Hellos arrive with the sender's
// address, bad ones are counted and reported, and Serve stops with ctx.
func TestReceiverServe(t *testing.T) {
	got := make(chan Received, 4)
	errs := make(chan error, 4)
	r := NewReceiver(ReceiverOptions{
		Handle:      func(h Received) { got <- h },
		OnError:     func(_ netip.AddrPort, err error) { errs <- err },
		ReadTimeout: 300 * time.Millisecond,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()

	id, _ := identity.Of(3, 1, 4)
	m := Message{AdminSet: true, Version: VersionPSK, Retry: 2, UUID: id.UUID, PID: id.PID}
	b, err := m.Marshal()
	require.NoError(t, err)
	send := func(p []byte) string {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write(p)
		require.NoError(t, err)
		return c.LocalAddr().String()
	}

	from := send(b)
	select {
	case h := <-got:
		assert.Equal(t, m, h.Message)
		assert.Equal(t, from, h.From.String())
	case <-time.After(5 * time.Second):
		t.Fatal("no Hello")
	}

	bad := append([]byte(nil), b...)
	bad[2] = 9
	send(bad)
	select {
	case err := <-errs:
		assert.ErrorIs(t, err, ErrMalformed)
	case <-time.After(5 * time.Second):
		t.Fatal("malformed Hello not reported")
	}

	send(nil) // connect and close: no Hello
	select {
	case err := <-errs:
		assert.ErrorContains(t, err, "without a Hello")
	case <-time.After(5 * time.Second):
		t.Fatal("empty connection not reported")
	}

	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not stop")
	}
	assert.Equal(t, uint64(1), r.Stats.Hellos.Load())
	assert.Equal(t, uint64(1), r.Stats.Malformed.Load())
	assert.Equal(t, uint64(1), r.Stats.Empty.Load())
}

// A connection whose peer reset before it was served has no remote
// address (gonet returns nil): the receiver counts it as a failed read
// rather than crash.
func TestReceiverConnWithoutRemoteAddr(t *testing.T) {
	errs := make(chan error, 1)
	r := NewReceiver(ReceiverOptions{OnError: func(_ netip.AddrPort, err error) { errs <- err }, ReadTimeout: time.Second})
	a, b := net.Pipe()
	b.Close()
	r.ServeConn(noAddrConn{a})
	select {
	case err := <-errs:
		assert.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("no error reported")
	}
}

type noAddrConn struct{ net.Conn }

func (noAddrConn) RemoteAddr() net.Addr { return nil }

// Past MaxConns a connection is closed unread and reported; once one of
// those being served ends, the next is served again.
func TestReceiverRefusesPastMaxConns(t *testing.T) {
	got := make(chan Received, 1)
	refused := make(chan struct{}, 1)
	r := NewReceiver(ReceiverOptions{MaxConns: 2, ReadTimeout: 10 * time.Second,
		Handle: func(h Received) { got <- h }, OnRefused: func(netip.AddrPort) { refused <- struct{}{} }})
	var held []net.Conn
	served := make(chan struct{}, 2)
	for range 2 {
		a, b := net.Pipe()
		held = append(held, b)
		go func() { r.ServeConn(a); served <- struct{}{} }()
	}
	require.Eventually(t, func() bool { return r.Stats.Conns.Load() == 2 }, 5*time.Second, time.Millisecond)

	a, b := net.Pipe()
	r.ServeConn(a) // refused at once: it returns without reading
	_, err := b.Read(make([]byte, 1))
	assert.Error(t, err, "a refused connection is closed")
	assert.Equal(t, uint64(1), r.Stats.Refused.Load())
	select {
	case <-refused:
	default:
		t.Fatal("OnRefused was not called")
	}

	held[0].Close() // that one ends without a Hello, freeing its place
	<-served
	id, _ := identity.Of(3, 1, 4)
	m := Message{Version: VersionPSK, UUID: id.UUID, PID: id.PID}
	msg, err := m.Marshal()
	require.NoError(t, err)
	a, b = net.Pipe()
	go func() { _, _ = b.Write(msg); b.Close() }()
	r.ServeConn(a)
	select {
	case h := <-got:
		assert.Equal(t, m, h.Message)
	default:
		t.Fatal("the connection after a freed place was not served")
	}
	assert.Equal(t, uint64(1), r.Stats.Refused.Load())
	held[1].Close()
	<-served
}
