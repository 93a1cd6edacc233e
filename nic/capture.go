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
type Capture struct {
	mu     sync.Mutex
	w      *pcapgo.Writer
	buf    *bufio.Writer
	closer io.Closer
	err    error
	now    func() time.Time
}

const snapLen = 65536

// NewCapture writes a pcap header to w and returns a capture on it.
func NewCapture(w io.Writer) (*Capture, error) {
	bw := bufio.NewWriter(w)
	pw := pcapgo.NewWriter(bw)
	if err := pw.WriteFileHeader(snapLen, layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("pcap: header: %w", err)
	}
	c := &Capture{w: pw, buf: bw, now: time.Now}
	if cl, ok := w.(io.Closer); ok {
		c.closer = cl
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
	if c.err != nil {
		return
	}
	n := min(len(frame), snapLen)
	ci := gopacket.CaptureInfo{Timestamp: c.now(), CaptureLength: n, Length: len(frame)}
	c.err = c.w.WritePacket(ci, frame[:n])
}

// Flush writes buffered frames out, so a reader sees every frame so far.
func (c *Capture) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return c.buf.Flush()
}

// Close flushes and closes the underlying file, if it is one. It returns the
// first write error the capture met, if any.
func (c *Capture) Close() error {
	err := c.Flush()
	if c.closer != nil {
		if cerr := c.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
