// Package tlspsk is RFC 4279 plain-PSK TLS for TLS 1.0, 1.1 and 1.2: the
// server an AMT device runs on port 16993 in setup mode, and the client an
// SCS uses to reach it. Go's crypto/tls has no PSK suites, so this package
// carries a narrow TLS of its own, written from RFCs 2246, 4346, 5246, 4279,
// 5487 and 5746 with the standard library's primitives: a record layer
// (MAC-then-encrypt CBC with constant-time padding checks, explicit IVs from
// TLS 1.1, 1/n-1 record splitting on TLS 1.0, AES-GCM on TLS 1.2) and the
// PSK handshake (ClientHello, ServerHello, ServerKeyExchange with the
// identity hint, ServerHelloDone, ClientKeyExchange with the identity,
// ChangeCipherSpec, Finished). No certificates, no session resumption, no
// renegotiation.
package tlspsk

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Config configures either side.
type Config struct {
	// MinVersion and MaxVersion bound the protocol version; defaults TLS 1.0
	// and TLS 1.2. An AMT 5 device speaks TLS 1.0 only (AMT5Config).
	MinVersion, MaxVersion uint16
	// CipherSuites in order of preference; nil means DefaultSuites.
	CipherSuites []uint16

	// Client: the identity sent and the key.
	Identity string
	Key      []byte

	// Server: the hint sent in ServerKeyExchange (none when empty), and the
	// key lookup. GetKey returning an error or no key answers
	// unknown_psk_identity.
	IdentityHint string
	GetKey       func(identity string) ([]byte, error)

	// NoSecureRenegotiation leaves out RFC 5746 renegotiation_info, as AMT
	// firmware before AMT 7 did. Renegotiation itself is always refused.
	NoSecureRenegotiation bool

	// Rand is the source of randoms and IVs; default crypto/rand.
	Rand io.Reader
}

// AMT5Config is the profile of an AMT 5 device's TLS-PSK server: TLS 1.0,
// TLS_PSK_WITH_AES_128_CBC_SHA first (docs/protocol.md §5), no RFC 5746.
func AMT5Config(pid string, getKey func(identity string) ([]byte, error)) *Config {
	return &Config{
		MinVersion: VersionTLS10, MaxVersion: VersionTLS10,
		CipherSuites:          []uint16{TLS_PSK_WITH_AES_128_CBC_SHA, TLS_PSK_WITH_3DES_EDE_CBC_SHA},
		IdentityHint:          pid,
		GetKey:                getKey,
		NoSecureRenegotiation: true,
	}
}

func (c *Config) minVersion() uint16 {
	if c.MinVersion == 0 {
		return VersionTLS10
	}
	return c.MinVersion
}

func (c *Config) maxVersion() uint16 {
	if c.MaxVersion == 0 {
		return VersionTLS12
	}
	return c.MaxVersion
}

func (c *Config) suites() []uint16 {
	if c.CipherSuites == nil {
		return DefaultSuites
	}
	return c.CipherSuites
}

func (c *Config) rand() io.Reader {
	if c.Rand == nil {
		return rand.Reader
	}
	return c.Rand
}

// ConnectionState is what the handshake agreed.
type ConnectionState struct {
	Version     uint16
	CipherSuite uint16
	Identity    string // the PSK identity the client sent
	Hint        string // the identity hint the server sent
}

// Conn is a TLS-PSK connection. It implements net.Conn.
type Conn struct {
	conn     net.Conn
	cfg      *Config
	isClient bool
	br       *bufio.Reader

	handshakeMu   sync.Mutex
	handshakeDone bool
	handshakeErr  error
	state         ConnectionState

	in      halfConn
	readMu  sync.Mutex
	hand    []byte // handshake bytes read but not yet consumed
	pending []byte // application data read but not yet returned
	inBuf   []byte // the record being opened; payloads are slices of it
	readErr error  // sticky

	out      halfConn
	writeMu  sync.Mutex
	writeErr error
	outBuf   []byte // sealed records not yet written
	corked   bool   // hold records until uncorked (a client's second flight)
	closed   bool
}

// Server wraps conn as the server side.
func Server(conn net.Conn, cfg *Config) *Conn {
	return ServerReader(conn, bufio.NewReader(conn), cfg)
}

// ServerReader is Server reading conn through r, a reader over conn that
// may hold bytes already read from it (a ClientHello peeked to choose the
// handshake): the connection needs no buffer of its own.
func ServerReader(conn net.Conn, r *bufio.Reader, cfg *Config) *Conn {
	return &Conn{conn: conn, cfg: cfg, br: r}
}

// Client wraps conn as the client side.
func Client(conn net.Conn, cfg *Config) *Conn {
	return &Conn{conn: conn, cfg: cfg, isClient: true, br: bufio.NewReader(conn)}
}

// Handshake runs the handshake once; later calls return its result. ctx
// bounds it.
func (c *Conn) Handshake(ctx context.Context) error {
	c.handshakeMu.Lock()
	defer c.handshakeMu.Unlock()
	if c.handshakeDone || c.handshakeErr != nil {
		return c.handshakeErr
	}
	if d, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(d)
		defer c.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if c.isClient {
		c.handshakeErr = c.clientHandshake()
	} else {
		c.handshakeErr = c.serverHandshake()
	}
	if c.handshakeErr != nil && ctx.Err() != nil {
		c.handshakeErr = fmt.Errorf("tlspsk: handshake: %w (%w)", ctx.Err(), c.handshakeErr)
	}
	c.handshakeDone = c.handshakeErr == nil
	return c.handshakeErr
}

// ConnectionState returns what the handshake agreed.
func (c *Conn) ConnectionState() ConnectionState {
	c.handshakeMu.Lock()
	defer c.handshakeMu.Unlock()
	return c.state
}

// fail sends a fatal alert and returns the matching error.
func (c *Conn) fail(a alert, reason string) error {
	c.sendAlert(alertLevelError, a)
	return &AlertError{Description: uint8(a), Sent: true, Reason: reason}
}

func (c *Conn) sendAlert(level uint8, a alert) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.writeErr != nil {
		return
	}
	if c.writeRecordLocked(recordAlert, []byte{level, byte(a)}) == nil {
		_ = c.flushLocked()
	}
	if level == alertLevelError {
		c.writeErr = errors.New("tlspsk: connection failed")
	}
}

// writeRecordLocked protects one record of at most maxPlaintext and adds
// it to what the next flush sends.
func (c *Conn) writeRecordLocked(typ uint8, payload []byte) error {
	start := len(c.outBuf)
	// Room for the record before sealing, as readRecord sizes inBuf: append
	// would grow outBuf a step at a time, a copy each.
	if need := start + recordHeaderLen + len(payload) + maxRecordOverhead; cap(c.outBuf) < need {
		c.outBuf = append(make([]byte, 0, max(need, 2*cap(c.outBuf), recordBufMin)), c.outBuf...)
	}
	buf, err := c.out.sealTo(c.outBuf, typ, payload, c.cfg.rand())
	if err != nil {
		return err
	}
	if c.out.version == 0 {
		// Before a version is agreed, records say TLS 1.0 (RFC 5246 E.1).
		buf[start+1], buf[start+2] = 3, 1
	}
	c.outBuf = buf
	return nil
}

// setCork holds records back (on) until the next write after it is turned
// off, so that several messages leave as one flight.
func (c *Conn) setCork(on bool) {
	c.writeMu.Lock()
	c.corked = on
	c.writeMu.Unlock()
}

// flushLocked sends the records written since the last flush in one write:
// a flight (ChangeCipherSpec with its Finished) or a 1/n-1 pair leaves as
// one segment, as TLS stacks send them.
func (c *Conn) flushLocked() error {
	if len(c.outBuf) == 0 {
		return nil
	}
	_, err := c.conn.Write(c.outBuf)
	c.outBuf = c.outBuf[:0]
	return err
}

// writeRecord sends data as records of type typ, fragmenting as needed.
// A ChangeCipherSpec waits for the Finished that follows it.
func (c *Conn) writeRecord(typ uint8, data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.writeErr != nil {
		return c.writeErr
	}
	if err := c.sealAllLocked(typ, data); err != nil {
		c.writeErr = err
		return err
	}
	if typ == recordChangeCipherSpec || c.corked {
		return nil
	}
	if err := c.flushLocked(); err != nil {
		c.writeErr = err
		return err
	}
	return nil
}

// sealAllLocked protects data as records of type typ.
func (c *Conn) sealAllLocked(typ uint8, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), maxPlaintext)
		if typ == recordApplicationData && c.out.version == VersionTLS10 && c.out.block != nil && n > 1 {
			// 1/n-1 split: the first byte alone, so that the IV of the
			// rest is not predictable (the BEAST countermeasure).
			if err := c.writeRecordLocked(typ, data[:1]); err != nil {
				return err
			}
			data = data[1:]
			n = min(len(data), maxPlaintext)
		}
		if err := c.writeRecordLocked(typ, data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// readRecord reads and opens one record.
func (c *Conn) readRecord() (uint8, []byte, error) {
	if c.readErr != nil {
		return 0, nil, c.readErr
	}
	var hdr [recordHeaderLen]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("tlspsk: connection closed mid-record: %w", err)
		}
		c.readErr = err
		return 0, nil, err
	}
	typ := hdr[0]
	n := int(hdr[3])<<8 | int(hdr[4])
	if hdr[1] != 3 {
		c.readErr = c.fail(alertProtocolVersion, fmt.Sprintf("record version %d.%d", hdr[1], hdr[2]))
		return 0, nil, c.readErr
	}
	if n > maxCiphertext {
		c.readErr = c.fail(alertRecordOverflow, fmt.Sprintf("record of %d bytes", n))
		return 0, nil, c.readErr
	}
	if typ < recordChangeCipherSpec || typ > recordApplicationData {
		c.readErr = c.fail(alertUnexpectedMessage, fmt.Sprintf("record type %d", typ))
		return 0, nil, c.readErr
	}
	// One buffer serves every record: each caller is done with a payload
	// before it reads the next record. Sized for a few records' growth at
	// once (records grow from a handshake's tens of bytes to the
	// kilobytes of a certificate), not one allocation per larger record.
	if cap(c.inBuf) < n {
		c.inBuf = make([]byte, n, max(n, recordBufMin))
	}
	body := c.inBuf[:n]
	if _, err := io.ReadFull(c.br, body); err != nil {
		c.readErr = fmt.Errorf("tlspsk: connection closed mid-record: %w", err)
		return 0, nil, c.readErr
	}
	payload, a := c.in.open(typ, body)
	if a != 0 {
		c.readErr = c.fail(a, "record failed its integrity check")
		return 0, nil, c.readErr
	}
	if typ == recordAlert {
		if len(payload) != 2 {
			c.readErr = c.fail(alertDecodeError, "alert record of wrong size")
			return 0, nil, c.readErr
		}
		if alert(payload[1]) == alertCloseNotify {
			c.readErr = io.EOF
			return 0, nil, io.EOF
		}
		if payload[0] == alertLevelWarning {
			return typ, payload, nil
		}
		c.readErr = &AlertError{Description: payload[1]}
		return 0, nil, c.readErr
	}
	return typ, payload, nil
}

// readHandshake returns the next whole handshake message, header included.
func (c *Conn) readHandshake() ([]byte, error) {
	for {
		if len(c.hand) >= 4 {
			n := int(c.hand[1])<<16 | int(c.hand[2])<<8 | int(c.hand[3])
			if n > maxHandshakeMessageLen {
				return nil, c.fail(alertHandshakeFailure, fmt.Sprintf("handshake message of %d bytes", n))
			}
			if len(c.hand) >= 4+n {
				m := c.hand[: 4+n : 4+n]
				c.hand = c.hand[4+n:]
				return m, nil
			}
		}
		typ, payload, err := c.readRecord()
		if err != nil {
			return nil, err
		}
		switch typ {
		case recordHandshake:
			if len(payload) == 0 {
				return nil, c.fail(alertUnexpectedMessage, "empty handshake record")
			}
			c.hand = append(c.hand, payload...)
		case recordAlert: // a warning: ignore
		default:
			return nil, c.fail(alertUnexpectedMessage, fmt.Sprintf("record type %d during the handshake", typ))
		}
	}
}

// readChangeCipherSpec waits for ChangeCipherSpec; no handshake bytes may be
// pending across it.
func (c *Conn) readChangeCipherSpec() error {
	typ, payload, err := c.readRecord()
	if err != nil {
		return err
	}
	if typ != recordChangeCipherSpec || len(payload) != 1 || payload[0] != 1 || len(c.hand) != 0 {
		return c.fail(alertUnexpectedMessage, "expected ChangeCipherSpec")
	}
	return nil
}

// Read reads application data.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.Handshake(context.Background()); err != nil {
		return 0, err
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for len(c.pending) == 0 {
		typ, payload, err := c.readRecord()
		if err != nil {
			return 0, err
		}
		switch typ {
		case recordApplicationData:
			c.pending = payload
		case recordHandshake:
			// A HelloRequest or a new ClientHello: renegotiation, refused
			// with a warning that leaves the connection as it was.
			c.sendAlert(alertLevelWarning, alertNoRenegotiation)
		case recordAlert: // a warning
		default:
			c.readErr = c.fail(alertUnexpectedMessage, fmt.Sprintf("record type %d after the handshake", typ))
			return 0, c.readErr
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// Write writes application data.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.Handshake(context.Background()); err != nil {
		return 0, err
	}
	if err := c.writeRecord(recordApplicationData, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends close_notify (after a completed handshake) and closes the
// connection. After a fatal alert it first half-closes and drains what the
// peer still sends for a moment: closing a socket with unread data resets
// it, and the reset can destroy the alert before the peer reads it.
func (c *Conn) Close() error {
	c.writeMu.Lock()
	failed := c.writeErr != nil
	if !c.closed && c.writeErr == nil && c.out.s != nil {
		_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if c.writeRecordLocked(recordAlert, []byte{alertLevelWarning, byte(alertCloseNotify)}) == nil {
			_ = c.flushLocked()
		}
	}
	c.closed = true
	c.writeMu.Unlock()
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok && failed {
		_ = cw.CloseWrite()
		_ = c.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.Copy(io.Discard, io.LimitReader(c.conn, 1<<16))
	}
	return c.conn.Close()
}

// peerAlert turns a failed write during the handshake into the alert the
// peer sent before it hung up, when there is one to read.
func (c *Conn) peerAlert(err error) error {
	if err == nil {
		return nil
	}
	var ae *AlertError
	if errors.As(err, &ae) {
		return err
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	c.readErr = nil
	for range 4 {
		_, _, rerr := c.readRecord()
		if errors.As(rerr, &ae) {
			return rerr
		}
		if rerr != nil {
			break
		}
	}
	return err
}

func (c *Conn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
