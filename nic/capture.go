package nic

import (
	"bufio"
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
// The file streams: frames go through a small buffer (bufSize per capture,
// however long the run) that is flushed within FlushEvery of the first
// frame it holds, so the file is a whole pcap that tshark reads at any
// moment, and loses at most that much if the process is killed. A timer
// exists only while the buffer holds frames.
type Capture struct {
	mu     sync.Mutex
	w      *pcapgo.Writer
	buf    *bufio.Writer
	closer io.Closer
	err    error
	now    func() time.Time
	flush  *time.Timer // armed while buf holds frames
	closed bool
}

// FlushEvery bounds how long a frame waits in a capture's buffer.
const FlushEvery = 500 * time.Millisecond

// bufSize is each capture's buffer: a full one is written at once.
const bufSize = 16 << 10

const snapLen = 65536

// NewCapture writes a pcap header to w and returns a capture on it.
func NewCapture(w io.Writer) (*Capture, error) {
	bw := bufio.NewWriterSize(w, bufSize)
	pw := pcapgo.NewWriter(bw)
	if err := pw.WriteFileHeader(snapLen, layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("pcap: header: %w", err)
	}
	c := &Capture{w: pw, buf: bw, now: time.Now}
	if cl, ok := w.(io.Closer); ok {
		c.closer = cl
	}
	// The header is on disk at once: an empty capture is a readable one.
	if err := bw.Flush(); err != nil {
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
	c.err = c.w.WritePacket(ci, frame[:n])
	if c.err == nil && c.buf.Buffered() > 0 && c.flush == nil {
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
	if c.err != nil {
		return c.err
	}
	c.err = c.buf.Flush()
	return c.err
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
