package nic

import (
	"bytes"
	"errors"
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
	ring   *ring // NewRingCapture's: frames kept, nothing written
}

// ring holds the newest frames of a RingCapture within limit bytes.
type ring struct {
	limit, size int
	frames      []ringFrame
}

type ringFrame struct {
	at   time.Time
	data []byte
	len  int
}

// NewRingCapture keeps the newest frames, at most limit bytes of them, in
// memory and writes nothing until WriteTo: a capture of every device of a
// fleet whose memory stays bounded, written out for the devices that
// turn out to matter.
func NewRingCapture(limit int) *Capture {
	return &Capture{now: time.Now, ring: &ring{limit: limit}}
}

// WriteTo writes a ring capture's frames as a pcap file to w.
func (c *Capture) WriteTo(w io.Writer) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ring == nil {
		return 0, errors.New("pcap: WriteTo needs a ring capture")
	}
	cw := &countingWriter{w: w}
	pw := pcapgo.NewWriter(cw)
	if err := pw.WriteFileHeader(snapLen, layers.LinkTypeEthernet); err != nil {
		return cw.n, fmt.Errorf("pcap: header: %w", err)
	}
	for _, f := range c.ring.frames {
		if err := pw.WritePacket(gopacket.CaptureInfo{Timestamp: f.at, CaptureLength: len(f.data), Length: f.len}, f.data); err != nil {
			return cw.n, fmt.Errorf("pcap: %w", err)
		}
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
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
	if r := c.ring; r != nil {
		r.frames = append(r.frames, ringFrame{at: c.now(), data: append([]byte(nil), frame[:n]...), len: len(frame)})
		r.size += n
		drop := 0
		for r.size > r.limit && drop < len(r.frames)-1 {
			r.size -= len(r.frames[drop].data)
			drop++
		}
		if drop > 0 {
			r.frames = append(r.frames[:0], r.frames[drop:]...)
		}
		return
	}
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
