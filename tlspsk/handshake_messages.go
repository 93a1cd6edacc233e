package tlspsk

import (
	"encoding/binary"
	"errors"
)

// Handshake message types (RFC 5246 §7.4).
const (
	typeHelloRequest       uint8  = 0
	typeClientHello        uint8  = 1
	typeServerHello        uint8  = 2
	typeServerKeyExchange  uint8  = 12
	typeServerHelloDone    uint8  = 14
	typeClientKeyExchange  uint8  = 16
	typeFinished           uint8  = 20
	extRenegotiationInfo   uint16 = 0xff01
	maxHandshakeMessageLen        = 1 << 16
	maxPSKIdentityLen             = 128 // RFC 4279 §5.3: at least 128 must be supported
)

var errDecode = errors.New("tlspsk: malformed handshake message")

// reader walks a message body; any short read sets err and yields zeros.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) bytes(n int) []byte {
	if r.err || n > len(r.b) || n < 0 {
		r.err = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) vec8() []byte  { return r.bytes(int(r.u8())) }
func (r *reader) vec16() []byte { return r.bytes(int(r.u16())) }
func (r *reader) done() bool    { return !r.err && len(r.b) == 0 }

func appendU16(b []byte, v uint16) []byte { return append(b, byte(v>>8), byte(v)) }

// message frames a handshake body with its type and 24-bit length.
func message(typ uint8, body []byte) []byte {
	out := make([]byte, 4, 4+len(body))
	out[0] = typ
	out[1], out[2], out[3] = byte(len(body)>>16), byte(len(body)>>8), byte(len(body))
	return append(out, body...)
}

// appendRenegotiationInfo adds the extension block with an empty RFC 5746
// renegotiation_info, the only extension this TLS sends.
func appendRenegotiationInfo(b []byte) []byte {
	b = appendU16(b, 5)
	b = appendU16(b, extRenegotiationInfo)
	b = appendU16(b, 1)
	return append(b, 0)
}

// readExtensions reads the optional extension block that ends a hello
// (TLS 1.0 peers may leave it out) and notes renegotiation_info, which on
// an initial handshake must hold an empty renegotiated_connection.
func readExtensions(r *reader, secureRenegotiation *bool) bool {
	if len(r.b) == 0 {
		return !r.err
	}
	exts := &reader{b: r.vec16()}
	if !r.done() {
		return false
	}
	for len(exts.b) > 0 {
		typ, data := exts.u16(), exts.vec16()
		if exts.err {
			return false
		}
		if typ == extRenegotiationInfo {
			if len(data) != 1 || data[0] != 0 {
				return false
			}
			*secureRenegotiation = true
		}
	}
	return true
}

type clientHelloMsg struct {
	version      uint16
	random       []byte
	sessionID    []byte
	cipherSuites []uint16
	compression  []uint8
	// secureRenegotiation is true when the client sent the SCSV or an
	// empty renegotiation_info extension.
	secureRenegotiation bool
}

func (m *clientHelloMsg) marshal() []byte {
	b := appendU16(nil, m.version)
	b = append(b, m.random...)
	b = append(b, byte(len(m.sessionID)))
	b = append(b, m.sessionID...)
	b = appendU16(b, uint16(2*len(m.cipherSuites)))
	for _, s := range m.cipherSuites {
		b = appendU16(b, s)
	}
	b = append(b, byte(len(m.compression)))
	b = append(b, m.compression...)
	if m.secureRenegotiation {
		b = appendRenegotiationInfo(b)
	}
	return message(typeClientHello, b)
}

func (m *clientHelloMsg) unmarshal(body []byte) bool {
	r := &reader{b: body}
	m.version = r.u16()
	m.random = r.bytes(32)
	m.sessionID = r.vec8()
	if len(m.sessionID) > 32 {
		return false
	}
	cs := r.vec16()
	if len(cs)%2 != 0 || len(cs) == 0 {
		return false
	}
	m.cipherSuites = m.cipherSuites[:0]
	for i := 0; i < len(cs); i += 2 {
		id := binary.BigEndian.Uint16(cs[i:])
		if id == scsvRenegotiation {
			m.secureRenegotiation = true
		}
		m.cipherSuites = append(m.cipherSuites, id)
	}
	m.compression = r.vec8()
	if r.err || len(m.compression) == 0 {
		return false
	}
	return readExtensions(r, &m.secureRenegotiation)
}

type serverHelloMsg struct {
	version             uint16
	random              []byte
	sessionID           []byte
	cipherSuite         uint16
	secureRenegotiation bool
}

func (m *serverHelloMsg) marshal() []byte {
	b := appendU16(nil, m.version)
	b = append(b, m.random...)
	b = append(b, byte(len(m.sessionID)))
	b = append(b, m.sessionID...)
	b = appendU16(b, m.cipherSuite)
	b = append(b, 0) // null compression
	if m.secureRenegotiation {
		b = appendRenegotiationInfo(b)
	}
	return message(typeServerHello, b)
}

func (m *serverHelloMsg) unmarshal(body []byte) bool {
	r := &reader{b: body}
	m.version = r.u16()
	m.random = r.bytes(32)
	m.sessionID = r.vec8()
	m.cipherSuite = r.u16()
	if r.u8() != 0 || r.err || len(m.sessionID) > 32 {
		return false
	}
	return readExtensions(r, &m.secureRenegotiation)
}

// pskMsg is both ServerKeyExchange (psk_identity_hint) and
// ClientKeyExchange (psk_identity) of plain PSK: one opaque<0..2^16-1>.
type pskMsg struct {
	typ      uint8
	identity []byte
}

func (m *pskMsg) marshal() []byte {
	return message(m.typ, append(appendU16(nil, uint16(len(m.identity))), m.identity...))
}

func (m *pskMsg) unmarshal(body []byte) bool {
	r := &reader{b: body}
	m.identity = r.vec16()
	return r.done()
}

type finishedMsg struct{ verifyData []byte }

func (m *finishedMsg) marshal() []byte { return message(typeFinished, m.verifyData) }

func (m *finishedMsg) unmarshal(body []byte) bool {
	m.verifyData = body
	return len(body) == finishedLen
}
