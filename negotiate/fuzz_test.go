package negotiate

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// FuzzParseAuthorization feeds the Negotiate header parser, and the
// acceptor behind it, what a peer may send. It must never panic; what it
// accepts must be an AP-REQ, and a header it refuses says ErrMalformed.
// The acceptor, with a key no fuzzed ticket was made with, must refuse
// everything.
func FuzzParseAuthorization(f *testing.F) {
	now := time.Now()
	good := header(f, defaultSpec(now))
	f.Add(good)
	f.Add("Negotiate " + base64.StdEncoding.EncodeToString(krb5Token(f, defaultSpec(now))))
	f.Add("Negotiate")
	f.Add("Negotiate YIIB")
	f.Add("Negotiate oYIBADCB")
	f.Add(good[:len(good)/3])
	f.Add(`Digest username="admin"`)
	s := settings(f)
	s.MasterKey = make([]byte, 16) // no fuzzed ticket opens with it
	f.Fuzz(func(t *testing.T, h string) {
		req, err := ParseAuthorization(h)
		if err != nil {
			if !strings.Contains(err.Error(), ErrMalformed.Error()) {
				t.Fatalf("refusal without ErrMalformed: %v", err)
			}
			if strings.Contains(err.Error(), errDecoderPanic.Error()) {
				t.Fatalf("a decoder panicked (the device survives it, but it is a bug to report): %v", err)
			}
			return
		}
		if req == nil {
			t.Fatal("accepted without an AP-REQ")
		}
		var a Acceptor
		if _, err := a.Accept(req, s, now); err == nil {
			t.Fatal("a ticket opened with the all-zero key")
		}
	})
}

// FuzzParseSID holds the two SID forms to each other: whatever parses
// prints as S-1-… and parses back to the same bytes.
func FuzzParseSID(f *testing.F) {
	for _, s := range []string{"AQUAAAAAAAUVAAAA3PTcO4M9K0aCi6YoAAIAAA==", "S-1-5-21-1-2-3-500", "S-1-0", "S-1-281474976710655-1", "AQ=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSID(in)
		if err != nil {
			return
		}
		back, err := ParseSID(s.String())
		if err != nil {
			t.Fatalf("%q → %s does not parse back: %v", in, s, err)
		}
		if !back.Equal(s) {
			t.Fatalf("%q → %s → %x, not %x", in, s, back, []byte(s))
		}
	})
}
