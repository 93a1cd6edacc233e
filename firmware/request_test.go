package firmware

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/wsman"
)

const curlPost = "POST /wsman HTTP/1.1\r\nHost: 198.18.0.10:16992\r\n" +
	"Authorization: Digest username=\"admin\", realm=\"Digest:AB\", nonce=\"n\", uri=\"/wsman\", " +
	"cnonce=\"c\", nc=00000001, qop=auth, response=\"0123\"\r\n" +
	"User-Agent: curl/7.88.1\r\nAccept: */*\r\nContent-Type: application/soap+xml;charset=UTF-8\r\n" +
	"Content-Length: 5\r\n\r\nhello"

func readAll(t *testing.T, raw string) []*request {
	t.Helper()
	br := bufio.NewReaderSize(strings.NewReader(raw), 4096)
	var out []*request
	for {
		r, err := readRequest(br, nil)
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		out = append(out, r)
	}
}

func TestReadRequest(t *testing.T) {
	rs := readAll(t, curlPost+
		"GET /index.htm HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"+
		"POST /wsman?x=1 HTTP/1.1\nHost: h\nTransfer-Encoding: Chunked\nConnection: TE, close\n\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"+
		"GET http://198.18.0.10:16992/ HTTP/1.0\r\n\r\n")
	require.Len(t, rs, 4)

	assert.Equal(t, "POST", rs[0].method)
	assert.Equal(t, "/wsman", rs[0].target)
	assert.Equal(t, "/wsman", rs[0].path)
	assert.True(t, strings.HasPrefix(rs[0].authorization, `Digest username="admin", realm="Digest:AB"`))
	assert.True(t, strings.HasSuffix(rs[0].authorization, `response="0123"`))
	assert.False(t, rs[0].close)
	assert.Equal(t, "hello", string(rs[0].body))

	assert.Equal(t, "GET", rs[1].method)
	assert.Equal(t, "/index.htm", rs[1].path)
	assert.False(t, rs[1].close, "HTTP/1.0 with keep-alive stays open")
	assert.Empty(t, rs[1].body)

	assert.Equal(t, "/wsman?x=1", rs[2].target)
	assert.Equal(t, "/wsman", rs[2].path)
	assert.True(t, rs[2].close)
	assert.Equal(t, "abcde", string(rs[2].body))

	assert.Equal(t, "http://198.18.0.10:16992/", rs[3].target)
	assert.Equal(t, "/", rs[3].path)
	assert.True(t, rs[3].close, "HTTP/1.0 closes by default")
}

func TestReadRequestRefuses(t *testing.T) {
	for name, raw := range map[string]string{
		"no version":            "GET /\r\n\r\n",
		"HTTP/2.0":              "GET / HTTP/2.0\r\n\r\n",
		"bad method":            "G(T / HTTP/1.1\r\n\r\n",
		"bad target":            "GET %zz HTTP/1.1\r\n\r\n",
		"space in name":         "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
		"continuation line":     "GET / HTTP/1.1\r\nX-A: 1\r\n  more\r\n\r\n",
		"control in value":      "GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
		"no colon":              "GET / HTTP/1.1\r\nHost\r\n\r\n",
		"two hosts":             "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"bad length":            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
		"two lengths":           "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello",
		"length and chunked":    "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"gzip":                  "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
		"trailer":               "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n",
		"short body":            "POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nhello",
		"body over the limit":   "POST / HTTP/1.1\r\nContent-Length: 153601\r\n\r\n",
		"headers without end":   "GET / HTTP/1.1\r\nHost: h\r\n",
		"too many header lines": "GET / HTTP/1.1\r\n" + strings.Repeat("X-A: 1\r\n", maxHeaderLines+1) + "\r\n",
		"line over the buffer":  "GET / HTTP/1.1\r\nX-A: " + strings.Repeat("a", 5000) + "\r\n\r\n",
	} {
		_, err := readRequest(bufio.NewReaderSize(strings.NewReader(raw), 4096), nil)
		assert.Error(t, err, name)
		assert.NotErrorIs(t, err, io.EOF, "%s: only an empty connection ends cleanly", name)
	}
}

// The device's reader against net/http's: whatever it accepts, ReadRequest
// accepts too and reads the same, and both leave the next request at the
// same place.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		curlPost,
		curlPost + curlPost,
		"GET / HTTP/1.0\r\n\r\n",
		"GET /index.htm HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"POST /wsman HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"POST /wsman HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"GET http://h:16992/a%20b?q HTTP/1.1\r\nConnection: close\r\n\r\n",
		"POST /EOI/GeneralInfo HTTP/1.1\r\nAuthorization: Digest a\r\nAuthorization: Digest b\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ourBR := bufio.NewReaderSize(bytes.NewReader(b), 4096)
		// As a connection reads its second request: into an array that
		// holds the first one's bytes, large enough for some bodies.
		ours, err := readRequest(ourBR, bytes.Repeat([]byte{'#'}, len(b)/2))
		if err != nil {
			return // the device may refuse more than net/http
		}
		theirBR := bufio.NewReaderSize(bytes.NewReader(b), 4096)
		req, err := http.ReadRequest(theirBR)
		require.NoError(t, err, "net/http refuses what the device took: %q", b)
		body, err := io.ReadAll(io.LimitReader(req.Body, wsman.MaxEnvelopeSize+1))
		require.NoError(t, err, "net/http cannot read the body the device read: %q", b)

		assert.Equal(t, req.Method, ours.method)
		assert.Equal(t, req.RequestURI, ours.target)
		assert.Equal(t, req.URL.Path, ours.path)
		assert.Equal(t, req.Header.Get("Authorization"), ours.authorization)
		assert.Equal(t, req.Close, ours.close)
		assert.Equal(t, string(body), string(ours.body))
		ourRest, _ := io.ReadAll(ourBR)
		theirRest, _ := io.ReadAll(theirBR)
		assert.Equal(t, string(theirRest), string(ourRest), "the next request starts elsewhere")
	})
}

// BenchmarkReadRequest reads a Digest-authorized WS-MAN POST (the request
// the device serves most) with the device's reader and with
// net/http.ReadRequest plus its body (read as the device did before), for
// comparison.
func BenchmarkReadRequest(b *testing.B) {
	raw := []byte(curlPost)
	rd := bytes.NewReader(raw)
	br := bufio.NewReaderSize(rd, 4096)
	b.Run("device", func(b *testing.B) {
		b.ReportAllocs()
		var body []byte // as serveHTTP keeps it for a connection
		for b.Loop() {
			rd.Reset(raw)
			br.Reset(rd)
			r, err := readRequest(br, body)
			if err != nil {
				b.Fatal(err)
			}
			body = r.body[:0]
		}
	})
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rd.Reset(raw)
			br.Reset(rd)
			req, err := http.ReadRequest(br)
			if err != nil {
				b.Fatal(err)
			}
			body := make([]byte, req.ContentLength)
			if _, err := io.ReadFull(req.Body, body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The answer that ends a connection says so and comes chunked; others carry
// Content-Length. net/http reads both back whole.
func TestResponseFraming(t *testing.T) {
	for _, closing := range []bool{false, true} {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		require.NoError(t, writeResponse(w, response{status: 200, contentType: "application/soap+xml", body: []byte("<a:Envelope/>"), server: ServerHeader}, closing))
		raw := b.String()
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Equal(t, "<a:Envelope/>", string(body))
		assert.Equal(t, closing, resp.Close)
		assert.Equal(t, closing, strings.Contains(raw, "Transfer-Encoding: chunked\r\n"), raw)
		assert.Equal(t, !closing, strings.Contains(raw, "Content-Length: 13\r\n"), raw)
		assert.Contains(t, raw, "Server: "+ServerHeader+"\r\n")
	}
}
