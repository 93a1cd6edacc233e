package digest

import (
	"crypto/md5"
	"encoding/hex"
	"strings"
	"testing"
)

func FuzzParseAuthorization(f *testing.F) {
	f.Add(`Digest username="admin", realm="Digest:AF541D9BC94CFF7ADFA073F492F355E6", nonce="abc", uri="/wsman", response="0123", qop=auth, nc=00000001, cnonce="x"`)
	f.Add(`Digest username="", response=""`)
	f.Add(`Digest username="a\"b", realm=x`)
	f.Add(`digest a=b,,`)
	f.Fuzz(func(t *testing.T, h string) {
		a, err := ParseAuthorization(h)
		if err != nil {
			return
		}
		// What parses re-encodes to the same fields (when it had qop, as
		// String writes nc and cnonce only with it).
		if a.QOP == "" && (a.NC != "" || a.CNonce != "") || !isToken(a.QOP) && a.QOP != "" ||
			!isToken(a.NC) && a.NC != "" || !isToken(a.Algorithm) && a.Algorithm != "" {
			return
		}
		b, err := ParseAuthorization(a.String())
		if err != nil {
			t.Fatalf("re-encoded %q does not parse: %v", a.String(), err)
		}
		if *a != *b {
			t.Fatalf("round trip: %+v → %+v", *a, *b)
		}
	})
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(`Digest realm="Digest:AF541D9BC94CFF7ADFA073F492F355E6", nonce="abc", stale="true", qop="auth"`)
	f.Add(`Digest realm=x, nonce=y, algorithm=MD5`)
	f.Fuzz(func(t *testing.T, h string) {
		c, err := ParseChallenge(h)
		if err != nil || !isToken(c.Algorithm) && c.Algorithm != "" {
			return
		}
		d, err := ParseChallenge(c.String())
		if err != nil {
			t.Fatalf("re-encoded %q does not parse: %v", c.String(), err)
		}
		if *c != *d {
			t.Fatalf("round trip: %+v → %+v", *c, *d)
		}
	})
}

// FuzzResponse holds response, which builds its hash inputs in one array,
// to RFC 2617's formula written out plainly, for long fields too.
func FuzzResponse(f *testing.F) {
	f.Add("GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b", "auth")
	f.Add("POST", "/wsman", "n", "", "", "")
	f.Add("POST", strings.Repeat("/long", 100), strings.Repeat("n", 300), "ffffffff", strings.Repeat("c", 64), "auth")
	ha1 := HA1("Mufasa", "testrealm@host.com", "Circle Of Life")
	f.Fuzz(func(t *testing.T, method, uri, nonce, nc, cnonce, qop string) {
		hexMD5 := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
		want := hex.EncodeToString(ha1) + ":" + nonce + ":"
		if qop != "" {
			want += nc + ":" + cnonce + ":" + qop + ":"
		}
		want = hexMD5(want + hexMD5(method+":"+uri))
		if got := response(ha1, method, uri, nonce, nc, cnonce, qop); got != want {
			t.Fatalf("response %s, RFC 2617 %s", got, want)
		}
	})
}
