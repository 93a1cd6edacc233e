package digest

import "testing"

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
