package scs

import (
	"bufio"
	"sync"

	"github.com/amtsim/amtsim/wsman"
)

// BufferPool lends setup sessions what their one connection reads and
// writes through: the TLS-PSK record reader, the HTTP reader and writer,
// and the WS-MAN client's parser and answer array, about 35 KB a session.
// A session keeps its set until it is closed with no call under way, then
// gives it back, so that a server's sessions, a few at a time, share a few
// sets. A Server makes one for its sessions (Target.Buffers); a session
// given none makes its own.
type BufferPool struct{ p sync.Pool }

// NewBufferPool returns an empty pool.
func NewBufferPool() *BufferPool { return &BufferPool{} }

// sessionBuffers is one session's set.
type sessionBuffers struct {
	tls *bufio.Reader // TLS-PSK reads records through it
	br  *bufio.Reader // the answers, through TLS when there is TLS
	bw  *bufio.Writer
	ws  wsman.Scratch
}

func (p *BufferPool) get() *sessionBuffers {
	if b, ok := p.p.Get().(*sessionBuffers); ok {
		return b
	}
	return &sessionBuffers{tls: bufio.NewReaderSize(nil, 4<<10), br: bufio.NewReaderSize(nil, 4<<10), bw: bufio.NewWriterSize(nil, 4<<10)}
}

// put takes back a set no one reads or writes through any more.
func (p *BufferPool) put(b *sessionBuffers) {
	// Reset to nil drops the set's hold on the connection.
	b.tls.Reset(nil)
	b.br.Reset(nil)
	b.bw.Reset(nil)
	p.p.Put(b)
}
