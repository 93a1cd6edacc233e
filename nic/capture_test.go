package nic

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/gopacket/pcapgo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countFrames reads the pcap file at path as it is now.
func countFrames(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	require.NoError(t, err, "the file is a pcap at any moment")
	n := 0
	for {
		if _, _, err := r.ReadPacketData(); err != nil {
			require.ErrorIs(t, err, io.EOF, "the file ends with a whole record (after %d)", n)
			return n
		}
		n++
	}
}

// Whatever the moment, the file on disk ends with a whole record: the
// buffer goes out when full in one write of whole records, never cut
// across a record as a byte-count buffer would.
func TestCaptureFileIsAlwaysWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.pcap")
	c, err := CreateCapture(path)
	require.NoError(t, err)
	defer c.Close()
	frame := make([]byte, 999) // records that do not divide the buffer
	frame[12], frame[13] = 0x08, 0x00
	last := 0
	for range 200 {
		c.write(frame)
		n := countFrames(t, path)
		require.GreaterOrEqual(t, n, last)
		last = n
	}
	assert.Positive(t, last, "full buffers were written out")
}

// A capture streams: its header is on disk at once, and frames reach the
// file within FlushEvery without a Flush or Close; frames after Close are
// dropped, not written into a closed file.
func TestCaptureStreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.pcap")
	c, err := CreateCapture(path)
	require.NoError(t, err)
	assert.Equal(t, 0, countFrames(t, path), "an empty capture is readable")

	frame := make([]byte, 60)
	frame[12], frame[13] = 0x08, 0x06
	c.write(frame)
	c.write(frame)
	require.Eventually(t, func() bool { return countFrames(t, path) == 2 }, 10*FlushEvery, FlushEvery/10,
		"the frames are on disk while the capture is still open")

	for range 1000 { // more than the buffer: written as it fills
		c.write(frame)
	}
	require.NoError(t, c.Close())
	assert.Equal(t, 1002, countFrames(t, path))
	c.write(frame)
	assert.NoError(t, c.Close())
	assert.Equal(t, 1002, countFrames(t, path))
}

// A ring capture keeps the newest frames within its limit and writes them
// as a pcap only when asked.
func TestRingCaptureKeepsTheNewest(t *testing.T) {
	c := NewRingCapture(10 * 64)
	w := &wire{}
	n, err := New(Options{MAC: testMAC, Uplink: w, Capture: c})
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, n.WriteRaw(numbered(i)))
	}
	var out bytes.Buffer
	size, err := c.WriteTo(&out)
	require.NoError(t, err)
	assert.Equal(t, int64(out.Len()), size)
	r, err := pcapgo.NewReader(&out)
	require.NoError(t, err)
	var got []int
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
		got = append(got, index(data))
	}
	assert.Equal(t, []int{90, 91, 92, 93, 94, 95, 96, 97, 98, 99}, got)
	_, err = (&Capture{}).WriteTo(io.Discard)
	assert.Error(t, err, "only a ring capture writes on demand")
}
