package netns

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// As Linux 6.1 writes it (two protocols of the file).
const snmpSample = `Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 812
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 4010 0 158 3990 158 0 0 12 0
`

func TestSnmpField(t *testing.T) {
	v, err := snmpField(snmpSample, "Udp", "RcvbufErrors")
	require.NoError(t, err)
	assert.Equal(t, uint64(158), v)
	v, err = snmpField(snmpSample, "Ip", "InReceives")
	require.NoError(t, err)
	assert.Equal(t, uint64(812), v)
	for _, c := range []struct{ text, proto, field string }{
		{snmpSample, "Tcp", "RetransSegs"},                                 // no such protocol
		{snmpSample, "Udp", "Nothing"},                                     // no such field
		{"Udp: InDatagrams RcvbufErrors\nUdp: 1\n", "Udp", "RcvbufErrors"}, // values short
		{"Udp: RcvbufErrors\nUdp: -1\n", "Udp", "RcvbufErrors"},            // not a count
		{"Udp: RcvbufErrors\n", "Udp", "RcvbufErrors"},                     // no value line
	} {
		_, err := snmpField(c.text, c.proto, c.field)
		assert.Error(t, err, "%q %s %s", c.text, c.proto, c.field)
	}
}

// Any text gives a count or an error, never a panic, and a count is one
// the text spells.
func FuzzSnmpField(f *testing.F) {
	f.Add(snmpSample, "Udp", "RcvbufErrors")
	f.Add("Udp: a\nUdp: 1", "Udp", "a")
	f.Fuzz(func(t *testing.T, text, proto, field string) {
		v, err := snmpField(text, proto, field)
		if err == nil && !strings.Contains(text, strconv.FormatUint(v, 10)) {
			t.Fatalf("%d is not in %q", v, text)
		}
	})
}
