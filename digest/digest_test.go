package digest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/internal/peer"
)

const realm = "Digest:AF541D9BC94CFF7ADFA073F492F355E6"

// The worked example of RFC 2617 §3.5.
func TestRFC2617Example(t *testing.T) {
	ha1 := HA1("Mufasa", "testrealm@host.com", "Circle Of Life")
	got := response(ha1, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b", "auth")
	assert.Equal(t, "6629fae49393a05397450978507c4ef1", got)

	a, err := ParseAuthorization(`Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"`)
	require.NoError(t, err)
	assert.Equal(t, Authorization{Username: "Mufasa", Realm: "testrealm@host.com", Nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
		URI: "/dir/index.html", QOP: "auth", NC: "00000001", CNonce: "0a4f113b", Response: "6629fae49393a05397450978507c4ef1",
		Opaque: "5ccc069c403ebaf9f0171e9517f40e41"}, *a)
}

func TestDigestPasswordRoundTrip(t *testing.T) {
	dp := DigestPassword("admin", realm, "P@ssw0rd")
	ha1, err := ParseDigestPassword(dp)
	require.NoError(t, err)
	assert.Equal(t, HA1("admin", realm, "P@ssw0rd"), ha1)
	_, err = ParseDigestPassword("AAAA")
	assert.Error(t, err)
	_, err = ParseDigestPassword("not base64!")
	assert.Error(t, err)
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func users(name, password string) func(string) ([]byte, bool) {
	return func(u string) ([]byte, bool) {
		if u != name {
			return nil, false
		}
		return HA1(name, realm, password), true
	}
}

// challenged returns a server and a client that has seen its challenge.
func challenged(t *testing.T, o ServerOptions, password string) (*Server, *Client) {
	t.Helper()
	o.Realm = realm
	s := NewServer(o)
	ch, err := s.Challenge(false)
	require.NoError(t, err)
	c := &Client{Username: "admin", Password: password}
	require.NoError(t, c.Observe(ch.String()))
	assert.Equal(t, realm, c.Realm())
	return s, c
}

func authorize(t *testing.T, c *Client, method, uri string) *Authorization {
	t.Helper()
	h, err := c.Authorize(method, uri)
	require.NoError(t, err)
	a, err := ParseAuthorization(h)
	require.NoError(t, err)
	return a
}

func TestVerify(t *testing.T) {
	lookup := users("admin", "P@ssw0rd")
	t.Run("good, then counts up", func(t *testing.T) {
		s, c := challenged(t, ServerOptions{}, "P@ssw0rd")
		for range 3 {
			require.NoError(t, s.Verify(authorize(t, c, "POST", "/wsman"), "POST", "/wsman", lookup))
		}
	})
	t.Run("replay", func(t *testing.T) {
		s, c := challenged(t, ServerOptions{}, "P@ssw0rd")
		a := authorize(t, c, "POST", "/wsman")
		require.NoError(t, s.Verify(a, "POST", "/wsman", lookup))
		assert.ErrorIs(t, s.Verify(a, "POST", "/wsman", lookup), ErrReplay)
		older := authorize(t, c, "POST", "/wsman")
		newer := authorize(t, c, "POST", "/wsman")
		require.NoError(t, s.Verify(newer, "POST", "/wsman", lookup))
		assert.ErrorIs(t, s.Verify(older, "POST", "/wsman", lookup), ErrReplay, "a lower count after a higher one")
	})
	t.Run("wrong password", func(t *testing.T) {
		s, c := challenged(t, ServerOptions{}, "Wr0ng!pass")
		assert.ErrorIs(t, s.Verify(authorize(t, c, "POST", "/wsman"), "POST", "/wsman", lookup), ErrBadResponse)
	})
	t.Run("unknown user", func(t *testing.T) {
		s, c := challenged(t, ServerOptions{}, "P@ssw0rd")
		c.Username = "root"
		c.ha1 = HA1("root", realm, "P@ssw0rd")
		assert.ErrorIs(t, s.Verify(authorize(t, c, "POST", "/wsman"), "POST", "/wsman", lookup), ErrUnknownUser)
	})
	t.Run("empty response (CVE-2017-5689)", func(t *testing.T) {
		s, c := challenged(t, ServerOptions{}, "anything")
		a := authorize(t, c, "POST", "/wsman")
		a.Response = ""
		assert.ErrorIs(t, s.Verify(a, "POST", "/wsman", lookup), ErrEmptyResponse)
		// The opt-in quirk reproduces the bug.
		q, c := challenged(t, ServerOptions{AllowEmptyResponse: true}, "anything")
		a = authorize(t, c, "POST", "/wsman")
		a.Response = ""
		assert.NoError(t, q.Verify(a, "POST", "/wsman", lookup))
		a = authorize(t, c, "POST", "/wsman")
		a.Response = "0"
		assert.ErrorIs(t, q.Verify(a, "POST", "/wsman", lookup), ErrBadResponse, "only the empty string slips through")
	})
	t.Run("stale", func(t *testing.T) {
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s, c := challenged(t, ServerOptions{Now: clk.now, NonceLifetime: time.Minute}, "P@ssw0rd")
		require.NoError(t, s.Verify(authorize(t, c, "POST", "/wsman"), "POST", "/wsman", lookup))
		clk.t = clk.t.Add(61 * time.Second)
		assert.ErrorIs(t, s.Verify(authorize(t, c, "POST", "/wsman"), "POST", "/wsman", lookup), ErrStale)
		ch, err := s.Challenge(true)
		require.NoError(t, err)
		assert.Contains(t, ch.String(), `stale="true"`)
		require.NoError(t, c.Observe(ch.String()))
		assert.NoError(t, s.Verify(authorize(t, c, "POST", "/wsman"), "POST", "/wsman", lookup))
	})
	t.Run("nonce never issued", func(t *testing.T) {
		s, c := challenged(t, ServerOptions{}, "P@ssw0rd")
		c.ch.Nonce = "00112233445566778899aabbccddeeff"
		assert.ErrorIs(t, s.Verify(authorize(t, c, "POST", "/wsman"), "POST", "/wsman", lookup), ErrStale)
	})
	t.Run("realm, uri, qop, nc", func(t *testing.T) {
		s, c := challenged(t, ServerOptions{}, "P@ssw0rd")
		a := authorize(t, c, "POST", "/wsman")
		assert.ErrorIs(t, s.Verify(a, "POST", "/index.htm", lookup), ErrURI)
		a.Realm = "Digest:00000000000000000000000000000000"
		assert.ErrorIs(t, s.Verify(a, "POST", "/wsman", lookup), ErrRealm)
		a = authorize(t, c, "POST", "/wsman")
		a.QOP = ""
		assert.ErrorIs(t, s.Verify(a, "POST", "/wsman", lookup), ErrQOP)
		a = authorize(t, c, "POST", "/wsman")
		a.NC = "1"
		assert.ErrorIs(t, s.Verify(a, "POST", "/wsman", lookup), ErrBadResponse)
		assert.ErrorIs(t, s.Verify(nil, "POST", "/wsman", lookup), ErrNoCredentials)
	})
	t.Run("nonces are bounded", func(t *testing.T) {
		s := NewServer(ServerOptions{Realm: realm, MaxNonces: 4})
		first, err := s.Challenge(false)
		require.NoError(t, err)
		for range 10 {
			_, err := s.Challenge(false)
			require.NoError(t, err)
		}
		assert.Len(t, s.nonces, 4)
		c := &Client{Username: "admin", Password: "P@ssw0rd"}
		require.NoError(t, c.Observe(first.String()))
		assert.ErrorIs(t, s.Verify(authorize(t, c, "GET", "/"), "GET", "/", lookup), ErrStale, "the oldest was forgotten")
	})
}

func TestParseErrors(t *testing.T) {
	for _, h := range []string{
		"", "Basic YWRtaW46YWRtaW4=", `Digest username`, `Digest username="a`, `Digest username="a" realm="b"`,
		`Digest username="a", username="b"`, `Digest username="a\"`, `Digest =x`, `Digest a b=c`, "Digest " + strings.Repeat("a=b, ", 1000),
	} {
		_, err := ParseAuthorization(h)
		assert.ErrorIs(t, err, ErrMalformed, "%q", h)
	}
	var many []string
	for i := range maxParams + 1 {
		many = append(many, fmt.Sprintf("k%d=v", i))
	}
	_, err := ParseAuthorization("Digest " + strings.Join(many, ", "))
	assert.ErrorIs(t, err, ErrMalformed, "more parameters than any header has")
	_, err = ParseAuthorization("Digest " + strings.Join(many[:maxParams], ", "))
	assert.NoError(t, err, "unknown parameters are allowed up to the bound")
	_, err = ParseChallenge(`Digest nonce="x"`)
	assert.ErrorIs(t, err, ErrMalformed, "no realm")
	_, err = ParseChallenge(`Digest realm="x"`)
	assert.ErrorIs(t, err, ErrMalformed, "no nonce")
}

func TestQuotingRoundTrip(t *testing.T) {
	a := &Authorization{Username: `we"ird\user`, Realm: realm, Nonce: "n", URI: "/wsman", Response: "r", QOP: "auth", NC: "00000001", CNonce: "c"}
	b, err := ParseAuthorization(a.String())
	require.NoError(t, err)
	assert.Equal(t, *a, *b)
}

// digestHandler answers 200 "hello <user>" behind s.
func digestHandler(s *Server, lookup func(string) ([]byte, bool)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var a *Authorization
		if h := r.Header.Get("Authorization"); h != "" {
			a, _ = ParseAuthorization(h)
		}
		err := s.Verify(a, r.Method, r.URL.RequestURI(), lookup)
		if err != nil {
			ch, _ := s.Challenge(err == ErrStale)
			w.Header().Set("WWW-Authenticate", ch.String())
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "hello %s %s", a.Username, body)
	}
}

// The Transport logs in after one 401 and then sends credentials up front,
// with a body resent on the retry.
func TestTransport(t *testing.T) {
	s := NewServer(ServerOptions{Realm: realm})
	hits := 0
	h := digestHandler(s, users("admin", "P@ssw0rd"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++; h(w, r) }))
	defer srv.Close()
	hc := &http.Client{Transport: &Transport{Client: &Client{Username: "admin", Password: "P@ssw0rd"}}}
	for i := range 3 {
		resp, err := hc.Post(srv.URL+"/wsman", "application/soap+xml", bytes.NewReader([]byte(fmt.Sprint("body", i))))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, fmt.Sprint("hello admin body", i), string(b))
	}
	assert.Equal(t, 4, hits, "one 401, then three answers")

	// The caller's request is left as it was made: the credentials go on
	// the transport's copy (a RoundTripper must not change its request).
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/wsman", bytes.NewReader([]byte("body")))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/soap+xml")
	resp, err := hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, http.Header{"Content-Type": {"application/soap+xml"}}, req.Header)
}

// curl --digest, a client no one here wrote, logs in to our server; a
// wrong password gets 401.
func TestCurlDigest(t *testing.T) {
	peer.Need(t, "curl")
	s := NewServer(ServerOptions{Realm: realm})
	srv := httptest.NewServer(digestHandler(s, users("admin", "P@ssw0rd")))
	defer srv.Close()
	out, err := exec.Command("curl", "-sS", "--digest", "-u", "admin:P@ssw0rd", "-w", " %{http_code}", srv.URL+"/index.htm").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "hello admin  200", string(out))
	out, err = exec.Command("curl", "-sS", "--digest", "-u", "admin:wrong", "-w", "%{http_code}", srv.URL+"/index.htm").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "401", string(out))
}

// A nonce that expires between two requests: the Transport takes the
// stale challenge's fresh nonce and sends again, so the call succeeds;
// with IgnoreStale (the flaw scenarios catch) the 401 ends the call.
func TestTransportStaleNonce(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		now := time.Unix(1_700_000_000, 0)
		s := NewServer(ServerOptions{Realm: realm, NonceLifetime: time.Minute, Now: func() time.Time { return now }})
		var hits, stale int
		h := digestHandler(s, users("admin", "P@ssw0rd"))
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits++
			h(w, r)
			if strings.Contains(w.Header().Get("WWW-Authenticate"), `stale="true"`) {
				stale++
			}
		}))
		hc := &http.Client{Transport: &Transport{Client: &Client{Username: "admin", Password: "P@ssw0rd"}, IgnoreStale: ignore}}
		post := func() int {
			resp, err := hc.Post(srv.URL+"/wsman", "application/soap+xml", strings.NewReader("body"))
			require.NoError(t, err)
			resp.Body.Close()
			return resp.StatusCode
		}
		assert.Equal(t, http.StatusOK, post(), "ignore=%v: the first login takes the first challenge", ignore)
		now = now.Add(2 * time.Minute)
		if ignore {
			assert.Equal(t, http.StatusUnauthorized, post(), "the flaw gives up on the stale nonce")
			assert.Equal(t, 3, hits)
		} else {
			assert.Equal(t, http.StatusOK, post(), "sent again with the fresh nonce")
			assert.Equal(t, 4, hits, "401, 200, then 401 stale and 200")
		}
		assert.Equal(t, 1, stale, "ignore=%v: the device said stale once", ignore)
		srv.Close()
	}
}
