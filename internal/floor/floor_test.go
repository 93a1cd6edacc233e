package floor

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every part of the floor is measured, on its own thread's clock, and the
// device's share is its decrypt and its side of the handshake.
func TestMeasure(t *testing.T) {
	f, err := Measure(5)
	require.NoError(t, err)
	assert.Positive(t, f.RSADecrypt)
	assert.Positive(t, f.RSASign)
	assert.Positive(t, f.PSKServer)
	assert.Positive(t, f.PSKClient)
	assert.Equal(t, f.RSADecrypt+f.PSKServer, f.Device())
	assert.Equal(t, f.Device()+f.RSASign+f.PSKClient, f.Total())
	// A private-key operation costs more than a PSK handshake's PRF and
	// MACs: a floor that said otherwise timed the wrong thing.
	assert.Greater(t, f.RSADecrypt, f.PSKServer)
}

// A segment costs something, and less than a TLS-PSK handshake, which
// sends several and computes a PRF besides.
func TestTCPSegment(t *testing.T) {
	seg, err := TCPSegment(50, 2000)
	require.NoError(t, err)
	assert.Positive(t, seg)
	f, err := Measure(5)
	require.NoError(t, err)
	assert.Less(t, seg, f.PSKServer+f.PSKClient)
}
