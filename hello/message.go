// Package hello is the AMT setup-mode Hello: the message a device in setup
// mode sends to its Setup and Configuration Server (SCS), the schedule it
// sends it on, and a receiver for the server side.
//
// Layout (docs/protocol.md §3; Intel AMT SDK "Setup Mode Hello Messages",
// MeshCentral's parser): integers little-endian,
//
//	offset size field
//	0      u16  admin credentials set (0 or 1)
//	2      u16  version: 2 PSK, 3 PKI
//	4      u32  retry count, 0–14
//	8      16   device UUID in SMBIOS byte order
//	24     8    PID, ASCII, no dash                (version 2 only)
//	24     u8   N, then N × {u8 type, u8 length, hash} (version 3 only)
//
// The Hello carries neither the device's IP address nor its firmware
// versions: the SCS takes the address from the TCP connection.
package hello

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/amtsim/amtsim/identity"
)

// Version is the Hello's version field, which names the provisioning
// method the device offers.
type Version uint16

const (
	VersionPSK Version = 2 // TLS-PSK: PID/PPS
	VersionPKI Version = 3 // remote configuration: certificate hashes
)

func (v Version) String() string {
	switch v {
	case VersionPSK:
		return "PSK"
	case VersionPKI:
		return "PKI"
	}
	return fmt.Sprintf("Version(%d)", uint16(v))
}

// HashType names the algorithm of a trusted root certificate hash in a PKI
// Hello.
type HashType uint8

const (
	HashSHA1   HashType = 1
	HashSHA256 HashType = 2
	HashSHA384 HashType = 3
)

// Size is the digest length of the hash type, 0 for an unknown type.
func (t HashType) Size() int {
	switch t {
	case HashSHA1:
		return 20
	case HashSHA256:
		return 32
	case HashSHA384:
		return 48
	}
	return 0
}

func (t HashType) String() string {
	switch t {
	case HashSHA1:
		return "sha1"
	case HashSHA256:
		return "sha256"
	case HashSHA384:
		return "sha384"
	}
	return fmt.Sprintf("HashType(%d)", uint8(t))
}

// CertHash is one trusted root certificate hash of a PKI Hello.
type CertHash struct {
	Type HashType
	Hash []byte
}

// Sizes of the fixed parts.
const (
	HeaderLen = 24
	PSKLen    = HeaderLen + PIDLen // a whole version 2 Hello
	PIDLen    = 8
	// MaxRetry is the largest retry count a Hello carries.
	MaxRetry = 14
	// MaxLen bounds a version 3 Hello: header, count and 255 SHA-384 hashes.
	MaxLen = HeaderLen + 1 + 255*(2+48)
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("hello: malformed message")

// Message is one Hello.
type Message struct {
	// AdminSet is the "admin credentials set" flag: true once the MEBx
	// password has been changed from the factory one.
	AdminSet bool
	Version  Version
	Retry    uint32
	UUID     identity.UUID // canonical order; SMBIOS order on the wire
	PID      string        // version 2: 8 characters of 0-9A-Z, no dash
	Hashes   []CertHash    // version 3
}

// Marshal encodes m.
func (m *Message) Marshal() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	size := PSKLen
	if m.Version == VersionPKI {
		size = HeaderLen + 1
		for _, h := range m.Hashes {
			size += 2 + len(h.Hash)
		}
	}
	b := make([]byte, HeaderLen, size)
	if m.AdminSet {
		binary.LittleEndian.PutUint16(b[0:], 1)
	}
	binary.LittleEndian.PutUint16(b[2:], uint16(m.Version))
	binary.LittleEndian.PutUint32(b[4:], m.Retry)
	u := m.UUID.SMBIOSBytes()
	copy(b[8:24], u[:])
	if m.Version == VersionPSK {
		return append(b, m.PID...), nil
	}
	b = append(b, byte(len(m.Hashes)))
	for _, h := range m.Hashes {
		b = append(b, byte(h.Type), byte(len(h.Hash)))
		b = append(b, h.Hash...)
	}
	return b, nil
}

func (m *Message) check() error {
	if m.Retry > MaxRetry {
		return fmt.Errorf("hello: retry count %d is above %d", m.Retry, MaxRetry)
	}
	switch m.Version {
	case VersionPSK:
		if err := checkPID(m.PID); err != nil {
			return err
		}
		if len(m.Hashes) > 0 {
			return errors.New("hello: a PSK Hello carries no certificate hashes")
		}
	case VersionPKI:
		if len(m.Hashes) > 255 {
			return fmt.Errorf("hello: %d certificate hashes (at most 255)", len(m.Hashes))
		}
		for i, h := range m.Hashes {
			if h.Type.Size() == 0 || len(h.Hash) != h.Type.Size() {
				return fmt.Errorf("hello: hash %d: type %d with %d bytes", i, h.Type, len(h.Hash))
			}
		}
	default:
		return fmt.Errorf("hello: version %d is neither PSK (2) nor PKI (3)", uint16(m.Version))
	}
	return nil
}

func checkPID(pid string) error {
	if len(pid) != PIDLen {
		return fmt.Errorf("hello: PID %q is not %d characters", pid, PIDLen)
	}
	for i := 0; i < len(pid); i++ {
		if c := pid[i]; !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z') {
			return fmt.Errorf("hello: PID has %q at %d (alphabet 0-9A-Z)", c, i)
		}
	}
	return nil
}

// Unmarshal decodes exactly one Hello from b; trailing bytes are an error.
func (m *Message) Unmarshal(b []byte) error {
	n, err := m.decode(b)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("%w: %d bytes after a %d-byte %s Hello", ErrMalformed, len(b)-n, n, m.Version)
	}
	return nil
}

// Read reads one Hello from a stream, consuming no byte beyond it. A stream
// that ends early gives an error wrapping both ErrMalformed and
// io.ErrUnexpectedEOF; an empty stream gives io.EOF.
func Read(r io.Reader) (Message, error) {
	// Sized for a PSK Hello and grown hash by hash for a PKI one: a zeroed
	// MaxLen buffer (12.8 KB) per read was 40 KB of each provisioning's
	// allocation at 10k, where a device waiting its turn sends 3 Hellos.
	buf := make([]byte, PSKLen)
	if _, err := io.ReadFull(r, buf[:HeaderLen]); err != nil {
		if errors.Is(err, io.EOF) {
			return Message{}, io.EOF
		}
		return Message{}, truncated(err)
	}
	n := HeaderLen
	switch Version(binary.LittleEndian.Uint16(buf[2:])) {
	case VersionPSK:
		if _, err := io.ReadFull(r, buf[n:PSKLen]); err != nil {
			return Message{}, truncated(err)
		}
		n = PSKLen
	case VersionPKI:
		if _, err := io.ReadFull(r, buf[n:n+1]); err != nil {
			return Message{}, truncated(err)
		}
		count := int(buf[n])
		n++
		for range count {
			buf = grow(buf, n+2)
			if _, err := io.ReadFull(r, buf[n:n+2]); err != nil {
				return Message{}, truncated(err)
			}
			l := int(buf[n+1])
			if l > 48 {
				return Message{}, fmt.Errorf("%w: certificate hash of %d bytes", ErrMalformed, l)
			}
			n += 2
			buf = grow(buf, n+l)
			if _, err := io.ReadFull(r, buf[n:n+l]); err != nil {
				return Message{}, truncated(err)
			}
			n += l
		}
	}
	var m Message
	if err := m.Unmarshal(buf[:n]); err != nil {
		return Message{}, err
	}
	return m, nil
}

// grow returns b with at least n bytes, its contents kept.
func grow(b []byte, n int) []byte {
	if n <= len(b) {
		return b
	}
	return append(b, make([]byte, n-len(b))...)
}

func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %w", ErrMalformed, io.ErrUnexpectedEOF)
	}
	return err
}

// decode reads one Hello from the front of b and returns its length.
func (m *Message) decode(b []byte) (int, error) {
	if len(b) < HeaderLen {
		return 0, fmt.Errorf("%w: %d bytes, a Hello has at least %d", ErrMalformed, len(b), HeaderLen)
	}
	var out Message
	switch admin := binary.LittleEndian.Uint16(b[0:]); admin {
	case 0, 1:
		out.AdminSet = admin == 1
	default:
		return 0, fmt.Errorf("%w: admin-set field is %d, not 0 or 1", ErrMalformed, admin)
	}
	out.Version = Version(binary.LittleEndian.Uint16(b[2:]))
	out.Retry = binary.LittleEndian.Uint32(b[4:])
	if out.Retry > MaxRetry {
		return 0, fmt.Errorf("%w: retry count %d is above %d", ErrMalformed, out.Retry, MaxRetry)
	}
	out.UUID = identity.UUIDFromSMBIOS([16]byte(b[8:24]))
	n := HeaderLen
	switch out.Version {
	case VersionPSK:
		if len(b) < PSKLen {
			return 0, fmt.Errorf("%w: PSK Hello of %d bytes, want %d", ErrMalformed, len(b), PSKLen)
		}
		out.PID = string(b[HeaderLen:PSKLen])
		if err := checkPID(out.PID); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		n = PSKLen
	case VersionPKI:
		if len(b) < n+1 {
			return 0, fmt.Errorf("%w: PKI Hello without a hash count", ErrMalformed)
		}
		count := int(b[n])
		n++
		out.Hashes = make([]CertHash, 0, count)
		for i := range count {
			if len(b) < n+2 {
				return 0, fmt.Errorf("%w: hash %d of %d is cut off", ErrMalformed, i+1, count)
			}
			t, l := HashType(b[n]), int(b[n+1])
			if t.Size() == 0 || l != t.Size() {
				return 0, fmt.Errorf("%w: hash %d: type %d with length %d", ErrMalformed, i+1, t, l)
			}
			n += 2
			if len(b) < n+l {
				return 0, fmt.Errorf("%w: hash %d of %d is cut off", ErrMalformed, i+1, count)
			}
			out.Hashes = append(out.Hashes, CertHash{Type: t, Hash: append([]byte(nil), b[n:n+l]...)})
			n += l
		}
	default:
		return 0, fmt.Errorf("%w: version %d is neither PSK (2) nor PKI (3)", ErrMalformed, uint16(out.Version))
	}
	*m = out
	return n, nil
}
