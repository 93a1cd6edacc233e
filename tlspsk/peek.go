package tlspsk

import (
	"bufio"
	"encoding/binary"
	"fmt"
)

// PeekSuites reads the cipher suites of the ClientHello waiting on r
// without consuming a byte, so that a server that speaks more than one
// kind of TLS on a port (AMT's 16993 in setup: TLS-PSK for PID/PPS, X.509
// for remote configuration) can pick its handshake before either reads.
//
// It reads only the first record, which in practice holds the whole
// ClientHello; a hello cut across records yields the suites that record
// holds, or an error when it holds none. It accepts exactly: a handshake
// record (type 22, version 3.x, length 1–16384) whose body begins with a
// ClientHello header, client_version, 32 bytes of random, a session id of
// at most 32 bytes and a non-empty, even-length cipher suite list.
func PeekSuites(r *bufio.Reader) ([]uint16, error) {
	hdr, err := r.Peek(5)
	if err != nil {
		return nil, fmt.Errorf("tlspsk: peek record header: %w", err)
	}
	if hdr[0] != recordHandshake || hdr[1] != 3 {
		return nil, fmt.Errorf("%w: not a TLS handshake record (% x)", errDecode, hdr[:3])
	}
	n := int(binary.BigEndian.Uint16(hdr[3:]))
	if n == 0 || n > maxPlaintext {
		return nil, fmt.Errorf("%w: record length %d", errDecode, n)
	}
	if n > r.Size()-5 {
		n = r.Size() - 5
	}
	rec, err := r.Peek(5 + n)
	if err != nil {
		return nil, fmt.Errorf("tlspsk: peek ClientHello: %w", err)
	}
	return parseSuites(rec[5:])
}

// parseSuites reads the cipher suite list from the front of a ClientHello
// message (handshake header included), which may be cut off after it.
func parseSuites(b []byte) ([]uint16, error) {
	rd := &reader{b: b}
	if rd.u8() != typeClientHello {
		return nil, fmt.Errorf("%w: first handshake message is not a ClientHello", errDecode)
	}
	rd.bytes(3)  // message length: the message may continue past this record
	rd.u16()     // client_version
	rd.bytes(32) // random
	if sid := rd.vec8(); len(sid) > 32 {
		return nil, fmt.Errorf("%w: session id of %d bytes", errDecode, len(sid))
	}
	cs := rd.vec16()
	if rd.err || len(cs) == 0 || len(cs)%2 != 0 {
		return nil, fmt.Errorf("%w: ClientHello without a readable cipher suite list", errDecode)
	}
	out := make([]uint16, len(cs)/2)
	for i := range out {
		out[i] = binary.BigEndian.Uint16(cs[2*i:])
	}
	return out, nil
}

// IsPSKSuite reports whether id is one of the RFC 4279/5487 PSK suites.
func IsPSKSuite(id uint16) bool { return suiteByID(id) != nil }
