package scs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// oneConn is the http.RoundTripper of a session: every call goes over the
// one connection it opens at the first, one call at a time, on the
// caller's goroutine. A setup session is one connection (the device
// stages its changes per connection), so net/http's Transport had nothing
// to pool, and it cost a reader and a writer goroutine per connection and
// two channel hand-offs per call (net/http's persistConn loops were about
// 5% of a 10k BenchmarkFleetProvisioning's CPU, much of it switching).
//
// The request goes out as net/http's Transport writes it (Request.Write:
// the same request line and headers, no Accept-Encoding, as with
// DisableCompression). A setup session's connection opens once: a call
// that finds it closed or broken fails with ErrConnectionLost, and so does
// every call after one cut short by its context (its answer may still be
// on the way). An operational session's (redial) holds nothing per
// connection, so the call after such a one opens a new connection, as
// net/http's Transport would; a call cut short still fails.
type oneConn struct {
	open   func(ctx context.Context) (net.Conn, error) // dials (and does TLS)
	redial bool

	turn chan struct{} // held from a call's start until its body is closed

	mu     sync.Mutex
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	opened bool
	dead   bool
	closed bool // by Close: no redial
}

func newOneConn(open func(ctx context.Context) (net.Conn, error)) *oneConn {
	return &oneConn{open: open, turn: make(chan struct{}, 1)}
}

// newRedialConn is newOneConn for an operational session.
func newRedialConn(open func(ctx context.Context) (net.Conn, error)) *oneConn {
	return &oneConn{open: open, redial: true, turn: make(chan struct{}, 1)}
}

// RoundTrip implements http.RoundTripper.
func (o *oneConn) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	select {
	case o.turn <- struct{}{}:
	case <-ctx.Done():
		closeBody()
		return nil, ctx.Err()
	}
	c, err := o.conn(ctx)
	if err != nil {
		<-o.turn
		closeBody()
		return nil, err
	}
	// The call's context bounds it: when it ends (its deadline too), a
	// deadline in the past cuts a blocked read or write short. No deadline
	// is set otherwise: on a gVisor connection each is a runtime timer.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		o.kill()
		<-o.turn
		if cerr := cutShort(ctx, err); cerr != nil {
			return nil, fmt.Errorf("%w (%v)", cerr, err)
		}
		// Closed by the device, between calls or during this one.
		if o.redial {
			return nil, fmt.Errorf("the connection to the device closed: %w", err)
		}
		return nil, fmt.Errorf("%w: %v", ErrConnectionLost, err)
	}
	err = req.Write(o.bw)
	closeBody()
	if err == nil {
		err = o.bw.Flush()
	}
	if err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(o.br, req)
	if err != nil {
		return fail(err)
	}
	resp.Body = &oneConnBody{o: o, ctx: ctx, rc: resp.Body, stop: stop, last: resp.Close}
	return resp, nil
}

// conn is the connection, opened at the first call (and, redialling, at
// the first after it closed).
func (o *oneConn) conn(ctx context.Context) (net.Conn, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, fmt.Errorf("%w: the session is closed", net.ErrClosed)
	}
	if o.redial && (o.dead || o.c == nil) {
		o.dead, o.opened, o.c, o.br, o.bw = false, false, nil, nil, nil
	}
	switch {
	case o.dead:
		return nil, ErrConnectionLost
	case o.c != nil:
		return o.c, nil
	case o.opened:
		return nil, ErrConnectionLost // it failed to open
	}
	o.opened = true
	c, err := o.open(ctx)
	if err != nil {
		return nil, err
	}
	o.c, o.br, o.bw = c, bufio.NewReaderSize(c, 4<<10), bufio.NewWriterSize(c, 4<<10)
	return c, nil
}

// kill closes the connection (for good, unless redialling).
func (o *oneConn) kill() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dead = true
	if o.c != nil {
		o.c.Close()
	}
}

// Close ends the session's connection, for good.
func (o *oneConn) Close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.kill()
}

// oneConnBody is an answer's body: closing it ends the call (the rest of
// the body is read, so the next answer starts where it should).
type oneConnBody struct {
	o    *oneConn
	ctx  context.Context
	rc   io.ReadCloser
	stop func() bool
	last bool // the device said Connection: close
	done bool
}

func (b *oneConnBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		if cerr := cutShort(b.ctx, err); cerr != nil {
			err = fmt.Errorf("%w (%v)", cerr, err)
		}
	}
	return n, err
}

// cutShort is the context's error when it, rather than the device, ended
// a read or write that failed with err (a deadline the connection had
// before the call, passed a moment before the context's, counts too).
func cutShort(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	var ne net.Error
	if d, ok := ctx.Deadline(); ok && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

func (b *oneConnBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	// net/http's body reads itself to its end on Close.
	err := b.rc.Close()
	b.stop()
	if err == nil && b.last && b.ctx.Err() == nil {
		b.o.awaitClose()
	}
	if err != nil || b.last || b.ctx.Err() != nil {
		b.o.kill()
	}
	<-b.o.turn
	return nil
}

// closeWait bounds how long a session waits for a device that said
// Connection: close to close.
const closeWait = time.Second

// awaitClose waits, up to closeWait, for the device to close a connection
// it said it would close, before the session closes its side. A device
// applies what the call changed (a commit re-arms its ports and its Hello
// loop) before it closes, so the session's next connection meets the
// device as the change left it, in every run alike, rather than racing it.
func (o *oneConn) awaitClose() {
	o.mu.Lock()
	c, br := o.c, o.br
	o.mu.Unlock()
	if c == nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(closeWait))
	_, _ = br.ReadByte() // EOF (or an alert) once the device has closed
}
