package digest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// Client answers Digest challenges for one user. It keeps the last
// challenge and counts its uses, so that requests after the first go out
// with credentials at once, as an SCS does. Safe for concurrent use.
type Client struct {
	Username string
	Password string
	// Rand makes client nonces; default crypto/rand.
	Rand io.Reader

	mu  sync.Mutex
	ch  *Challenge
	ha1 []byte
	nc  uint32
}

// Observe takes the challenge in a 401's WWW-Authenticate header.
func (c *Client) Observe(header string) error {
	ch, err := ParseChallenge(header)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil || c.ch.Realm != ch.Realm {
		c.ha1 = HA1(c.Username, ch.Realm, c.Password)
	}
	c.ch, c.nc = ch, 0
	return nil
}

// Realm is the realm of the last challenge, "" before the first.
func (c *Client) Realm() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		return ""
	}
	return c.ch.Realm
}

// Authorize returns the Authorization header for a request, or "" when no
// challenge has been seen yet.
func (c *Client) Authorize(method, uri string) (string, error) {
	var b [8]byte
	r := c.Rand
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("digest: cnonce: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		return "", nil
	}
	c.nc++
	a := &Authorization{Username: c.Username, Realm: c.ch.Realm, Nonce: c.ch.Nonce, URI: uri, Opaque: c.ch.Opaque,
		QOP: "auth", NC: fmt.Sprintf("%08x", c.nc), CNonce: hex.EncodeToString(b[:])}
	if c.ch.Algorithm != "" {
		a.Algorithm = c.ch.Algorithm
	}
	a.Response = response(c.ha1, method, uri, a.Nonce, a.NC, a.CNonce, a.QOP)
	return a.String(), nil
}

// Transport is an http.RoundTripper that authenticates with Digest: it
// sends credentials once it has a challenge and, on a 401, takes the new
// challenge and retries once (requests with a body need GetBody, as
// http.NewRequest sets for in-memory bodies).
type Transport struct {
	Client *Client
	Base   http.RoundTripper // default http.DefaultTransport
	// IgnoreStale is a client bug, for scenarios that must catch it: a 401
	// to a request that carried credentials ends the call, stale=true or
	// not. A client should take the fresh nonce of a stale challenge and
	// send again without asking anew for the password (RFC 7616 §3.3).
	// Never the default.
	IgnoreStale bool
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	var authorized bool
	send := func(r *http.Request) (*http.Response, error) {
		h, err := t.Client.Authorize(r.Method, r.URL.RequestURI())
		if err != nil {
			return nil, err
		}
		if h != "" {
			r.Header.Set("Authorization", h)
			authorized = true
		}
		return base.RoundTrip(r)
	}
	r2 := withOwnHeader(req)
	resp, err := send(r2)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || t.IgnoreStale && authorized {
		return resp, err
	}
	ch := resp.Header.Get("WWW-Authenticate")
	if ch == "" {
		return resp, nil
	}
	if err := t.Client.Observe(ch); err != nil {
		return resp, nil // not ours to answer; the caller sees the 401
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	r3 := withOwnHeader(req)
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, errors.New("digest: cannot resend a request body without GetBody")
		}
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		r3.Body = body
	}
	return send(r3)
}

// withOwnHeader is a shallow copy of req with a header map of its own, so
// that setting Authorization leaves req as the caller made it (a
// RoundTripper must not change its request). The values are shared, as
// nothing here changes one in place; Request.Clone's deep copy (URL,
// header values) was a third of this transport's allocation.
func withOwnHeader(req *http.Request) *http.Request {
	r := req.WithContext(req.Context())
	r.Header = make(http.Header, len(req.Header)+1)
	for k, v := range req.Header {
		r.Header[k] = v
	}
	return r
}
