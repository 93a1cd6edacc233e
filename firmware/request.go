package firmware

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"github.com/amtsim/amtsim/wsman"
)

// request is one HTTP request as the device's web server reads it: the
// request line, the headers it acts on, and the body.
type request struct {
	method string
	target string // the request-target as sent: Digest's uri must equal it
	path   string
	// authorization is the first Authorization header, as Header.Get has it.
	authorization string
	// close: the client asked for the connection to end after this
	// request, or spoke HTTP/1.0 without keep-alive.
	close bool
	body  []byte
}

// maxHeaderLines bounds the header lines of one request (and the trailer
// lines of a chunked body).
const maxHeaderLines = 64

// errBodyTooLarge is a body over wsman.MaxEnvelopeSize.
var errBodyTooLarge = fmt.Errorf("body over %d bytes", wsman.MaxEnvelopeSize)

// readRequest reads one request from br. It is the device's own reader
// rather than net/http.ReadRequest, which builds a header map, a URL and a
// body reader for every request the device answers. It accepts no more than
// ReadRequest does and reads the same from what both accept (method,
// target, path, Authorization, the connection's fate, body, and where the
// next request starts); FuzzReadRequest holds it to that. It refuses some
// of what ReadRequest takes that no AMT client sends: HTTP other than 1.0
// and 1.1, header continuation lines, a line longer than br's buffer, a
// Content-Length beside a Transfer-Encoding.
//
// A body framed by Content-Length is read into buf when it fits (buf's
// contents are overwritten), so that a connection reads every request into
// one array; the caller must be done with one request's body before it
// passes that array for the next.
func readRequest(br *bufio.Reader, buf []byte) (*request, error) {
	line, err := readLine(br)
	if err != nil {
		return nil, err
	}
	r := &request{}
	var http10 bool
	if r.method, r.target, http10, err = parseRequestLine(line); err != nil {
		return nil, err
	}
	if r.path, err = requestPath(r.target); err != nil {
		return nil, err
	}

	var (
		length                           int64  = -1
		cl                               string // the Content-Length as written
		chunked, sawTE, sawHost, sawAuth bool
		keepAlive                        bool
	)
	for n := 0; ; n++ {
		line, err := readLine(br)
		if err != nil {
			return nil, noEOF(err)
		}
		if len(line) == 0 {
			break
		}
		if n == maxHeaderLines {
			return nil, fmt.Errorf("more than %d header lines", maxHeaderLines)
		}
		name, value, err := parseHeaderLine(line)
		if err != nil {
			return nil, err
		}
		switch {
		case asciiEqualFold(name, "Authorization"):
			if !sawAuth {
				r.authorization, sawAuth = string(value), true
			}
		case asciiEqualFold(name, "Content-Length"):
			// A repeat must be written the same (net/http compares the
			// text, so "5" and "05" differ).
			if length >= 0 {
				if string(value) != cl {
					return nil, errors.New("Content-Length given twice, with different values")
				}
				continue
			}
			n, err := strconv.ParseUint(string(value), 10, 63)
			if err != nil {
				return nil, fmt.Errorf("bad Content-Length %q", clip(string(value)))
			}
			length, cl = int64(n), string(value)
		case asciiEqualFold(name, "Transfer-Encoding"):
			if sawTE || http10 || !asciiEqualFold(value, "chunked") {
				return nil, fmt.Errorf("unsupported Transfer-Encoding %q", clip(string(value)))
			}
			sawTE, chunked = true, true
		case asciiEqualFold(name, "Connection"):
			forEachToken(value, func(tok []byte) {
				r.close = r.close || asciiEqualFold(tok, "close")
				keepAlive = keepAlive || asciiEqualFold(tok, "keep-alive")
			})
		case asciiEqualFold(name, "Host"):
			if sawHost {
				return nil, errors.New("too many Host headers")
			}
			sawHost = true
		}
	}
	if http10 && !keepAlive {
		r.close = true
	}

	switch {
	case chunked && length >= 0:
		// RFC 9112 §6.1: a request with both may be an attempt to smuggle one.
		return nil, errors.New("both Content-Length and Transfer-Encoding")
	case chunked:
		r.body, err = readChunked(br)
	case length > wsman.MaxEnvelopeSize:
		return nil, errBodyTooLarge
	case length > 0:
		if int64(cap(buf)) >= length {
			r.body = buf[:length]
		} else {
			r.body = make([]byte, length)
		}
		_, err = io.ReadFull(br, r.body)
	}
	if err != nil {
		return nil, noEOF(err)
	}
	return r, nil
}

// readLine reads a line ended by LF (CRLF or a bare LF, as net/textproto
// takes them), without the ending.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("line longer than %d bytes", br.Size())
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// noEOF turns an EOF inside a request into io.ErrUnexpectedEOF: only an EOF
// before the request line is a clean end of the connection.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseRequestLine splits "METHOD target HTTP/1.x".
func parseRequestLine(line []byte) (method, target string, http10 bool, err error) {
	m, rest, ok1 := bytes.Cut(line, []byte{' '})
	t, proto, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || len(m) == 0 || len(t) == 0 {
		return "", "", false, fmt.Errorf("malformed request line %q", clip(string(line)))
	}
	for _, c := range m {
		if !isTokenByte(c) {
			return "", "", false, fmt.Errorf("invalid method %q", clip(string(m)))
		}
	}
	switch string(proto) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		http10 = true
	default:
		return "", "", false, fmt.Errorf("unsupported HTTP version %q", clip(string(proto)))
	}
	// The methods and targets AMT serves are written without a copy.
	switch string(m) {
	case "POST":
		method = "POST"
	case "GET":
		method = "GET"
	default:
		method = string(m)
	}
	switch string(t) {
	case "/wsman":
		target = "/wsman"
	default:
		target = string(t)
	}
	return method, target, http10, nil
}

// requestPath is the path of a request-target, as url.ParseRequestURI reads
// it. A plain origin-form path (what AMT clients send) is its own path.
func requestPath(target string) (string, error) {
	if target[0] == '/' {
		plain := true
		for i := 0; i < len(target) && plain; i++ {
			plain = isPlainPathByte(target[i])
		}
		if plain {
			return target, nil
		}
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return "", fmt.Errorf("bad request-target: %w", err)
	}
	return u.Path, nil
}

// isPlainPathByte: a byte that url.ParseRequestURI keeps as it is in a path
// (no escapes, no query or fragment).
func isPlainPathByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("/-._~!$&'()*+,;=:@", c) >= 0
}

// parseHeaderLine splits "Name: value" and trims the value, with
// net/textproto's rules for what a name and a value may hold.
func parseHeaderLine(line []byte) (name, value []byte, err error) {
	name, value, ok := bytes.Cut(line, []byte{':'})
	if !ok || len(name) == 0 {
		return nil, nil, fmt.Errorf("malformed header line %q", clip(string(line)))
	}
	for _, c := range name {
		if !isTokenByte(c) {
			return nil, nil, fmt.Errorf("malformed header line %q", clip(string(line)))
		}
	}
	for _, c := range value {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return nil, nil, fmt.Errorf("malformed header line %q", clip(string(line)))
		}
	}
	return name, bytes.Trim(value, " \t"), nil
}

// readChunked reads a chunked body. No AMT client sends trailers, so the
// body must end with the empty line.
func readChunked(br *bufio.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(httputil.NewChunkedReader(br), wsman.MaxEnvelopeSize+1))
	if err != nil {
		return nil, err
	}
	if len(body) > wsman.MaxEnvelopeSize {
		return nil, errBodyTooLarge
	}
	// The body ends with CRLF (net/http refuses a lone LF at the end of
	// its input there).
	if end, err := br.Peek(2); err != nil || string(end) != "\r\n" {
		return nil, errors.New("chunked body without its final CRLF (or with a trailer)")
	}
	_, _ = br.Discard(2)
	return body, nil
}

// forEachToken calls f with each comma-separated, trimmed, non-empty token
// of a header value.
func forEachToken(v []byte, f func([]byte)) {
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte{','})
		if tok = bytes.Trim(tok, " \t"); len(tok) > 0 {
			f(tok)
		}
	}
}

// isTokenByte: RFC 9110's tchar.
func isTokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func asciiEqualFold[S ~string | ~[]byte](b S, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// clip shortens what an error quotes from the network.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
