package firmware

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A connection's buffers come from the device's pool and go back when it
// closes; the next connection reads through them from its own start. The
// first peer leaves a request half sent behind its first one: were it still
// buffered, a later connection would read it as the start of its own
// request and be answered 400; were the reader still on the closed
// connection, it would get no answer.
func TestPooledConnectionBuffersStartEmpty(t *testing.T) {
	r := newRig(t, 21)
	exchange := func(raw string) *http.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := r.peer.DialTCP(ctx, netip.AddrPortFrom(r.d.Addr(), PortHTTP))
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		_, err = io.WriteString(c, raw)
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	const get = "GET /index.htm HTTP/1.1\r\nHost: amt\r\n\r\n"
	first := exchange(get + "POST /wsman HTTP/1.1\r\nContent-Length: 900\r\n\r\n<a:Envelope")
	require.NotEqual(t, http.StatusBadRequest, first.StatusCode)
	for range 3 {
		assert.Equal(t, first.StatusCode, exchange(get).StatusCode, "a later connection reads only its own bytes")
	}
}
