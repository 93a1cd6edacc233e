package scs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawServer accepts on loopback and runs serve on each connection; it
// counts the connections.
func rawServer(t *testing.T, serve func(c net.Conn)) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return ln.Addr().String(), conns
}

// answer reads one request from br and writes a 200 with body, or with
// extra headers; it returns the request's bytes as they came.
func answer(t *testing.T, br *bufio.Reader, w io.Writer, body, extra string) []byte {
	var raw bytes.Buffer
	req, err := http.ReadRequest(bufio.NewReader(io.TeeReader(br, &raw)))
	if err != nil {
		return nil
	}
	_, _ = io.Copy(io.Discard, req.Body)
	_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\n"+extra+"Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	return raw.Bytes()
}

func dialTo(addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

func post(ctx context.Context, rt http.RoundTripper, addr, body string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/wsman", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	req.Header.Set("Authorization", `Digest username="admin"`)
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Every call of a session goes over its one connection, and each request
// is byte for byte what net/http's Transport (DisableCompression, as the
// SCS had it) writes for the same call.
func TestOneConnCarriesTheSessionAsTransportWould(t *testing.T) {
	got := make(chan []byte, 8)
	addr, conns := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			raw := answer(t, br, c, "answer "+strconv.Itoa(i), "")
			if raw == nil {
				return
			}
			got <- raw
		}
	})
	oc := newOneConn(dialTo(addr))
	defer oc.Close()
	for i := range 3 {
		out, err := post(context.Background(), oc, addr, "call "+strconv.Itoa(i))
		require.NoError(t, err)
		assert.Equal(t, "answer "+strconv.Itoa(i), out)
	}
	assert.Equal(t, int32(1), conns.Load(), "one connection for the session")
	mine := <-got

	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	_, err := post(context.Background(), tr, addr, "call 0")
	require.NoError(t, err)
	<-got
	<-got
	assert.Equal(t, string(<-got), string(mine))
}

// A connection that ends (the device closed it, said Connection: close,
// or a call's context cut it short) is not opened again: the session's
// staged changes went with it.
func TestOneConnIsNotOpenedTwice(t *testing.T) {
	hold := make(chan struct{})
	var nth atomic.Int32
	addr, conns := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		switch nth.Add(1) {
		case 1: // one answer, then the device closes
			answer(t, br, c, "a", "")
		case 2: // says it closes
			answer(t, br, c, "a", "Connection: close\r\n")
			answer(t, br, c, "b", "")
		case 3: // holds its answer
			_, _ = http.ReadRequest(br)
			<-hold
		}
	})
	defer close(hold)
	for _, name := range []string{"closed", "connection: close"} {
		oc := newOneConn(dialTo(addr))
		_, err := post(context.Background(), oc, addr, "x")
		require.NoError(t, err, name)
		_, err = post(context.Background(), oc, addr, "y")
		assert.ErrorIs(t, err, ErrConnectionLost, name)
		oc.Close()
	}

	oc := newOneConn(dialTo(addr))
	defer oc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := post(ctx, oc, addr, "x")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "cut short by its context")
	_, err = post(context.Background(), oc, addr, "y")
	assert.ErrorIs(t, err, ErrConnectionLost, "its answer could still come")
	assert.Equal(t, int32(3), conns.Load())

	// One that never opened is not tried again either.
	down := newOneConn(func(context.Context) (net.Conn, error) { return nil, errors.New("refused") })
	_, err = post(context.Background(), down, addr, "x")
	assert.ErrorContains(t, err, "refused")
	_, err = post(context.Background(), down, addr, "x")
	assert.ErrorIs(t, err, ErrConnectionLost)
}

// An operational session opens a new connection for the call after one
// that ended (the device said Connection: close, or closed it and a call
// found it closed, or a call's context cut it short), keeps one that is
// whole, and opens none once the session is closed.
func TestRedialConnOpensAgainBetweenCalls(t *testing.T) {
	hold := make(chan struct{})
	var nth atomic.Int32
	addr, conns := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		switch nth.Add(1) {
		case 1: // says it closes
			answer(t, br, c, "a", "Connection: close\r\n")
		case 2: // closes without saying
			answer(t, br, c, "b", "")
		case 3: // holds its answer
			_, _ = http.ReadRequest(br)
			<-hold
		default: // keeps the connection
			for answer(t, br, c, "ok", "") != nil {
			}
		}
	})
	defer close(hold)
	oc := newRedialConn(dialTo(addr))
	out, err := post(context.Background(), oc, addr, "x")
	require.NoError(t, err)
	assert.Equal(t, "a", out)
	out, err = post(context.Background(), oc, addr, "x")
	require.NoError(t, err)
	assert.Equal(t, "b", out)
	_, err = post(context.Background(), oc, addr, "x")
	assert.ErrorContains(t, err, "the connection to the device closed", "the call that finds it closed fails")
	assert.NotErrorIs(t, err, ErrConnectionLost)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = post(ctx, oc, addr, "y")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a call cut short still fails")
	assert.NotErrorIs(t, err, ErrConnectionLost)

	for _, body := range []string{"z", "w"} {
		out, err = post(context.Background(), oc, addr, body)
		require.NoError(t, err)
		assert.Equal(t, "ok", out)
	}
	assert.Equal(t, int32(4), conns.Load(), "a fourth connection, kept for both calls")

	oc.Close()
	_, err = post(context.Background(), oc, addr, "v")
	assert.ErrorIs(t, err, net.ErrClosed)
	assert.Equal(t, int32(4), conns.Load(), "none opened after Close")

	// One that failed to open is tried again at the next call.
	var tries atomic.Int32
	down := newRedialConn(func(context.Context) (net.Conn, error) {
		tries.Add(1)
		return nil, errors.New("refused")
	})
	for range 2 {
		_, err = post(context.Background(), down, addr, "x")
		assert.ErrorContains(t, err, "refused")
	}
	assert.Equal(t, int32(2), tries.Load())
}

// Calls take turns: a second call waits for the first's body to be
// closed, and gives up when its own context ends.
func TestOneConnCallsTakeTurns(t *testing.T) {
	addr, _ := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for answer(t, br, c, "ok", "") != nil {
		}
	})
	oc := newOneConn(dialTo(addr))
	defer oc.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/wsman", strings.NewReader("first"))
	resp, err := oc.RoundTrip(req)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = post(ctx, oc, addr, "second")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "waited its turn until its context ended")

	require.NoError(t, resp.Body.Close())
	out, err := post(context.Background(), oc, addr, "third")
	require.NoError(t, err, "the connection is whole: the second call never wrote")
	assert.Equal(t, "ok", out)
}

// After an answer that says Connection: close, the session waits for the
// device to close before it goes on: the device applies the call's change
// first, and the next connection must meet it applied.
func TestOneConnWaitsForTheDeviceToClose(t *testing.T) {
	var closed atomic.Bool
	addr, _ := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		answer(t, br, c, "done", "Connection: close\r\n")
		time.Sleep(100 * time.Millisecond) // the device re-arms
		closed.Store(true)
		c.Close()
	})
	oc := newOneConn(dialTo(addr))
	defer oc.Close()
	got, err := post(context.Background(), oc, addr, "commit")
	require.NoError(t, err)
	assert.Equal(t, "done", got)
	assert.True(t, closed.Load(), "the call returned before the device closed")
}
