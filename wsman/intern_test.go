package wsman

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A listed word comes back without a copy, any other with one, and both
// equal to the bytes they came from, wherever those bytes are.
func TestInternCopiesOnlyUnknownWords(t *testing.T) {
	for _, w := range []string{"a:Envelope", "c:Selector", NSSoap, ActionPut, Anonymous, GeneralSettings, "InstanceID"} {
		b := []byte(w)
		assert.Equal(t, w, intern(b))
		assert.Zero(t, testing.AllocsPerRun(100, func() { _ = intern(b) }), w)
	}
	for _, w := range []string{"h:HostName", "a:Envelop", NSSoap + "/", "optiplex"} {
		b := []byte(w)
		s := intern(b)
		assert.Equal(t, w, s)
		b[0] = 'X' // the string is a copy: the buffer's reuse does not reach it
		assert.Equal(t, w, s)
		assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = intern(b) }), w)
	}
}
