package nic

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Capture writes frames as a pcap file (LINKTYPE_ETHERNET) that tshark and
// Wireshark read. One capture per device; a NIC records what it sends and
// what passes its MAC filter.
//
// The file streams: frames go through a small buffer (about bufSize per
// capture, however long the run) that is written out when it fills and
// within FlushEvery of the first frame it holds, always whole records, so
// the file is a whole pcap that tshark reads at any moment (a writer that
// cut a record across two writes left tshark a file "cut short in the
// middle of a packet"), and a killed process loses at most FlushEvery of
// frames. A timer exists only while the buffer holds frames.
type Capture struct {
	mu     sync.Mutex
	w      *pcapgo.Writer
	buf    bytes.Buffer // whole records not yet written
	out    io.Writer
	closer io.Closer
	err    error
	now    func() time.Time
	flush  *time.Timer // armed while buf holds frames
	closed bool
}

// FlushEvery bounds how long a frame waits in a capture's buffer.
const FlushEvery = 500 * time.Millisecond

// bufSize is each capture's buffer: once it holds this much it is written
// at once.
const bufSize = 16 << 10

const snapLen = 65536

// NewCapture writes a pcap header to w and returns a capture on it.
func NewCapture(w io.Writer) (*Capture, error) {
	c := &Capture{out: w, now: time.Now}
	c.w = pcapgo.NewWriter(&c.buf)
	if err := c.w.WriteFileHeader(snapLen, layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("pcap: header: %w", err)
	}
	if cl, ok := w.(io.Closer); ok {
		c.closer = cl
	}
	// The header is on disk at once: an empty capture is a readable one.
	if err := c.flushLocked(); err != nil {
		return nil, fmt.Errorf("pcap: header: %w", err)
	}
	return c, nil
}

// CreateCapture creates (or truncates) a pcap file at path.
func CreateCapture(path string) (*Capture, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("pcap: %w", err)
	}
	c, err := NewCapture(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

func (c *Capture) write(frame []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.closed {
		return
	}
	n := min(len(frame), snapLen)
	ci := gopacket.CaptureInfo{Timestamp: c.now(), CaptureLength: n, Length: len(frame)}
	if c.err = c.w.WritePacket(ci, frame[:n]); c.err != nil {
		return
	}
	if c.buf.Len() >= bufSize {
		_ = c.flushLocked()
		return
	}
	if c.flush == nil {
		c.flush = time.AfterFunc(FlushEvery, func() { _ = c.Flush() })
	}
}

// Flush writes buffered frames out, so a reader sees every frame so far.
func (c *Capture) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *Capture) flushLocked() error {
	if c.flush != nil {
		c.flush.Stop()
		c.flush = nil
	}
	if c.err != nil || c.buf.Len() == 0 {
		return c.err
	}
	// One write of whole records.
	if _, err := c.out.Write(c.buf.Bytes()); err != nil {
		c.err = err
		return err
	}
	c.buf.Reset()
	return nil
}

// Close flushes and closes the underlying file, if it is one. It returns the
// first write error the capture met, if any. Frames after Close are
// dropped.
func (c *Capture) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.err
	}
	c.closed = true
	err := c.flushLocked()
	if c.closer != nil {
		if cerr := c.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
