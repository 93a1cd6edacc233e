package firmware

import (
	"bufio"
	"bytes"
	"sync"

	"github.com/amtsim/amtsim/wsman"
)

// BufferPool lends the device's connections what they read and write
// through: the reader the ClientHello is peeked at with, the HTTP reader
// and writer, the array request bodies are read into, the answer buffer
// and the WS-MAN parser's node arrays, about 40 KB a connection. A
// connection keeps them for its life and gives them back when it closes,
// so that a fleet's devices, a few of them in a session at any time, share
// a few sets rather than each session making its own (they were an eighth
// of all a provisioning allocated). A fleet makes one pool for all its
// devices (Options.Buffers); New makes one for a device given none.
type BufferPool struct{ p sync.Pool }

// NewBufferPool returns an empty pool.
func NewBufferPool() *BufferPool { return &BufferPool{} }

// connBuffers is one connection's set.
type connBuffers struct {
	peek *bufio.Reader // setupTLS's: the TLS layer reads through it after the peek
	br   *bufio.Reader
	bw   *bufio.Writer
	body []byte // see readRequest
	out  bytes.Buffer
	ps   wsman.Parser
}

// keptAnswer is the largest answer buffer a set goes back to the pool
// with; a larger one (an enumeration of many certificates) is dropped.
const keptAnswer = 32 << 10

func (p *BufferPool) get() *connBuffers {
	if b, ok := p.p.Get().(*connBuffers); ok {
		return b
	}
	return &connBuffers{peek: bufio.NewReaderSize(nil, 4096), br: bufio.NewReaderSize(nil, 4096), bw: bufio.NewWriterSize(nil, 4096)}
}

// put takes back a set whose connection is closed and whose every user has
// returned: nothing may read or write through it after.
func (p *BufferPool) put(b *connBuffers) {
	// Reset to nil drops the set's hold on the connection and on what it
	// had buffered.
	b.peek.Reset(nil)
	b.br.Reset(nil)
	b.bw.Reset(nil)
	if cap(b.body) > keptBody {
		b.body = nil
	}
	if b.out.Cap() > keptAnswer {
		b.out = bytes.Buffer{}
	}
	b.out.Reset()
	p.p.Put(b)
}
