package digest

import (
	"errors"
	"fmt"
	"strings"
)

// ErrMalformed is wrapped by every header parse error.
var ErrMalformed = errors.New("digest: malformed header")

// maxHeader bounds what is parsed: AMT's own headers are a few hundred
// bytes, and a parser of outside bytes must not be led into large work.
const maxHeader = 4096

// Challenge is a WWW-Authenticate: Digest header (RFC 2617 §3.2.1).
type Challenge struct {
	Realm     string
	Nonce     string
	Opaque    string
	QOP       string // "auth"
	Algorithm string // "MD5" or empty
	Stale     bool
}

// String encodes the challenge as a header value, in the order AMT sends
// it.
func (c *Challenge) String() string {
	var b strings.Builder
	b.WriteString("Digest realm=")
	writeQuoted(&b, c.Realm)
	b.WriteString(", nonce=")
	writeQuoted(&b, c.Nonce)
	if c.Stale {
		b.WriteString(", stale=\"true\"")
	}
	if c.Algorithm != "" {
		b.WriteString(", algorithm=")
		b.WriteString(c.Algorithm)
	}
	if c.Opaque != "" {
		b.WriteString(", opaque=")
		writeQuoted(&b, c.Opaque)
	}
	if c.QOP != "" {
		b.WriteString(", qop=")
		writeQuoted(&b, c.QOP)
	}
	return b.String()
}

// ParseChallenge reads a WWW-Authenticate header value.
func ParseChallenge(h string) (*Challenge, error) {
	c := &Challenge{}
	hasRealm := false
	err := parse(h, func(key, val string) {
		switch key {
		case "realm":
			c.Realm, hasRealm = val, true
		case "nonce":
			c.Nonce = val
		case "opaque":
			c.Opaque = val
		case "qop":
			c.QOP = val
		case "algorithm":
			c.Algorithm = val
		case "stale":
			c.Stale = strings.EqualFold(val, "true")
		}
	})
	if err != nil {
		return nil, err
	}
	if !hasRealm {
		return nil, fmt.Errorf("%w: challenge without a realm", ErrMalformed)
	}
	if c.Nonce == "" {
		return nil, fmt.Errorf("%w: challenge without a nonce", ErrMalformed)
	}
	return c, nil
}

// Authorization is an Authorization: Digest header (RFC 2617 §3.2.2).
type Authorization struct {
	Username  string
	Realm     string
	Nonce     string
	URI       string
	Response  string
	Algorithm string
	Opaque    string
	QOP       string
	NC        string // 8 hex digits
	CNonce    string
}

// String encodes the header value.
func (a *Authorization) String() string {
	var b strings.Builder
	b.Grow(len(`Digest username="", realm="", nonce="", uri="", response="", algorithm=, opaque="", qop=, nc=, cnonce=""`) +
		len(a.Username) + len(a.Realm) + len(a.Nonce) + len(a.URI) + len(a.Response) + len(a.Algorithm) + len(a.Opaque) +
		len(a.QOP) + len(a.NC) + len(a.CNonce) + 8)
	b.WriteString("Digest username=")
	writeQuoted(&b, a.Username)
	b.WriteString(", realm=")
	writeQuoted(&b, a.Realm)
	b.WriteString(", nonce=")
	writeQuoted(&b, a.Nonce)
	b.WriteString(", uri=")
	writeQuoted(&b, a.URI)
	b.WriteString(", response=")
	writeQuoted(&b, a.Response)
	if a.Algorithm != "" {
		b.WriteString(", algorithm=")
		b.WriteString(a.Algorithm)
	}
	if a.Opaque != "" {
		b.WriteString(", opaque=")
		writeQuoted(&b, a.Opaque)
	}
	if a.QOP != "" {
		b.WriteString(", qop=")
		b.WriteString(a.QOP)
		b.WriteString(", nc=")
		b.WriteString(a.NC)
		b.WriteString(", cnonce=")
		writeQuoted(&b, a.CNonce)
	}
	return b.String()
}

// ParseAuthorization reads an Authorization header value. It checks syntax
// only; Server.Verify decides whether the credentials are good. Missing
// fields are left empty, so that an empty response reaches the check that
// refuses it (CVE-2017-5689) rather than being mistaken for a parse error.
func ParseAuthorization(h string) (*Authorization, error) {
	a := &Authorization{}
	err := parse(h, func(key, val string) {
		switch key {
		case "username":
			a.Username = val
		case "realm":
			a.Realm = val
		case "nonce":
			a.Nonce = val
		case "uri":
			a.URI = val
		case "response":
			a.Response = val
		case "algorithm":
			a.Algorithm = val
		case "opaque":
			a.Opaque = val
		case "qop":
			a.QOP = val
		case "nc":
			a.NC = val
		case "cnonce":
			a.CNonce = val
		}
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// maxParams bounds the parameters of one header: RFC 2617 defines ten.
const maxParams = 32

// parse splits `Digest k=v, k="v", …` into lower-case keys and unquoted
// values, handing each pair to set. A key given twice is an error: two
// answers to one question are a way to confuse a checker.
func parse(h string, set func(key, val string)) error {
	if len(h) > maxHeader {
		return fmt.Errorf("%w: %d bytes", ErrMalformed, len(h))
	}
	scheme, rest, _ := strings.Cut(strings.TrimLeft(h, " \t"), " ")
	if !strings.EqualFold(scheme, "Digest") {
		return fmt.Errorf("%w: scheme %q, want Digest", ErrMalformed, scheme)
	}
	var seen [maxParams]string
	n := 0
	s := rest
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		i := strings.IndexByte(s, '=')
		if i <= 0 {
			return fmt.Errorf("%w: parameter without a value near %q", ErrMalformed, clip(s))
		}
		key := strings.ToLower(strings.TrimRight(s[:i], " \t"))
		if !isToken(key) {
			return fmt.Errorf("%w: bad parameter name %q", ErrMalformed, clip(key))
		}
		s = strings.TrimLeft(s[i+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			if end := strings.IndexAny(s[1:], `"\\`); end >= 0 && s[1+end] == '"' {
				// The common case, no escapes: the value is a slice of h.
				val, s = s[1:1+end], s[2+end:]
			} else {
				var b strings.Builder
				j := 1
				for ; j < len(s) && s[j] != '"'; j++ {
					if s[j] == '\\' && j+1 < len(s) {
						j++
					}
					b.WriteByte(s[j])
				}
				if j >= len(s) {
					return fmt.Errorf("%w: unterminated quoted value for %s", ErrMalformed, key)
				}
				val, s = b.String(), s[j+1:]
			}
		} else {
			j := strings.IndexAny(s, ", \t")
			if j < 0 {
				j = len(s)
			}
			val, s = s[:j], s[j:]
		}
		for _, k := range seen[:n] {
			if k == key {
				return fmt.Errorf("%w: parameter %s given twice", ErrMalformed, key)
			}
		}
		if n == maxParams {
			return fmt.Errorf("%w: more than %d parameters", ErrMalformed, maxParams)
		}
		seen[n] = key
		n++
		set(key, val)
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if s[0] != ',' {
			return fmt.Errorf("%w: expected ',' near %q", ErrMalformed, clip(s))
		}
		s = s[1:]
	}
	return nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// writeQuoted writes s as a quoted-string: quote and backslash escaped.
func writeQuoted(b *strings.Builder, s string) {
	b.WriteByte('"')
	for {
		i := strings.IndexAny(s, `"\`)
		if i < 0 {
			break
		}
		b.WriteString(s[:i])
		b.WriteByte('\\')
		b.WriteByte(s[i])
		s = s[i+1:]
	}
	b.WriteString(s)
	b.WriteByte('"')
}

// clip keeps error messages short; the header may be hostile.
func clip(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}
