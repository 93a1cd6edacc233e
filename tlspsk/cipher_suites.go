package tlspsk

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rc4"
)

// Protocol versions.
const (
	VersionTLS10 uint16 = 0x0301
	VersionTLS11 uint16 = 0x0302
	VersionTLS12 uint16 = 0x0303
)

// RFC 4279 and RFC 5487 PSK cipher suites.
const (
	TLS_PSK_WITH_RC4_128_SHA        uint16 = 0x008A
	TLS_PSK_WITH_3DES_EDE_CBC_SHA   uint16 = 0x008B
	TLS_PSK_WITH_AES_128_CBC_SHA    uint16 = 0x008C
	TLS_PSK_WITH_AES_256_CBC_SHA    uint16 = 0x008D
	TLS_PSK_WITH_AES_128_GCM_SHA256 uint16 = 0x00A8
	TLS_PSK_WITH_AES_256_GCM_SHA384 uint16 = 0x00A9

	// scsvRenegotiation is TLS_EMPTY_RENEGOTIATION_INFO_SCSV (RFC 5746).
	scsvRenegotiation uint16 = 0x00FF
)

// suite describes one cipher suite's record protection.
type suite struct {
	id     uint16
	name   string
	keyLen int
	ivLen  int // CBC block size, the AEAD's implicit salt, or 0 for RC4
	macLen int // HMAC-SHA1 for the non-AEAD suites
	aead   bool
	tls12  bool // only in TLS 1.2 (AEAD suites)
	sha384 bool // PRF and Finished hash SHA-384
	block  func(key []byte) (cipher.Block, error)
	stream bool
}

var suites = []*suite{
	{id: TLS_PSK_WITH_AES_128_CBC_SHA, name: "TLS_PSK_WITH_AES_128_CBC_SHA", keyLen: 16, ivLen: 16, macLen: 20, block: aes.NewCipher},
	{id: TLS_PSK_WITH_AES_256_CBC_SHA, name: "TLS_PSK_WITH_AES_256_CBC_SHA", keyLen: 32, ivLen: 16, macLen: 20, block: aes.NewCipher},
	{id: TLS_PSK_WITH_3DES_EDE_CBC_SHA, name: "TLS_PSK_WITH_3DES_EDE_CBC_SHA", keyLen: 24, ivLen: 8, macLen: 20, block: des.NewTripleDESCipher},
	{id: TLS_PSK_WITH_RC4_128_SHA, name: "TLS_PSK_WITH_RC4_128_SHA", keyLen: 16, macLen: 20, stream: true},
	{id: TLS_PSK_WITH_AES_128_GCM_SHA256, name: "TLS_PSK_WITH_AES_128_GCM_SHA256", keyLen: 16, ivLen: 4, aead: true, tls12: true, block: aes.NewCipher},
	{id: TLS_PSK_WITH_AES_256_GCM_SHA384, name: "TLS_PSK_WITH_AES_256_GCM_SHA384", keyLen: 32, ivLen: 4, aead: true, tls12: true, sha384: true, block: aes.NewCipher},
}

func suiteByID(id uint16) *suite {
	for _, s := range suites {
		if s.id == id {
			return s
		}
	}
	return nil
}

// SuiteName names a suite id.
func SuiteName(id uint16) string {
	if s := suiteByID(id); s != nil {
		return s.name
	}
	return "unknown"
}

// DefaultSuites are offered and accepted when Config.CipherSuites is nil:
// every suite but RC4, strongest first.
var DefaultSuites = []uint16{
	TLS_PSK_WITH_AES_128_GCM_SHA256, TLS_PSK_WITH_AES_256_GCM_SHA384,
	TLS_PSK_WITH_AES_128_CBC_SHA, TLS_PSK_WITH_AES_256_CBC_SHA, TLS_PSK_WITH_3DES_EDE_CBC_SHA,
}

// newRC4 is kept apart so the deprecation lives in one place.
func newRC4(key []byte) (cipher.Stream, error) { return rc4.NewCipher(key) }
