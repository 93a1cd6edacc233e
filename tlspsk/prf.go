package tlspsk

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
)

// pHash is P_hash of RFC 2246 §5: HMAC-hash expanded to fill out.
func pHash(out, secret, seed []byte, h func() hash.Hash) {
	mac := hmac.New(h, secret)
	mac.Write(seed)
	a := mac.Sum(nil) // A(1)
	for n := 0; n < len(out); {
		mac.Reset()
		mac.Write(a)
		mac.Write(seed)
		n += copy(out[n:], mac.Sum(nil))
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(a[:0])
	}
}

// prf10 is the TLS 1.0 and 1.1 PRF: P_MD5 on the first half of the secret
// XOR P_SHA-1 on the second (halves overlap by a byte when odd).
func prf10(out, secret []byte, label string, seed []byte) {
	ls := append([]byte(label), seed...)
	half := (len(secret) + 1) / 2
	pHash(out, secret[:half], ls, md5.New)
	tmp := make([]byte, len(out))
	pHash(tmp, secret[len(secret)-half:], ls, sha1.New)
	for i := range out {
		out[i] ^= tmp[i]
	}
}

// prf12 is the TLS 1.2 PRF with the suite's hash (RFC 5246 §5).
func prf12(h func() hash.Hash) func(out, secret []byte, label string, seed []byte) {
	return func(out, secret []byte, label string, seed []byte) {
		pHash(out, secret, append([]byte(label), seed...), h)
	}
}

const (
	masterSecretLen = 48
	finishedLen     = 12
)

// prfFor returns the PRF and the handshake hash for a version and suite.
func prfFor(version uint16, s *suite) (prf func(out, secret []byte, label string, seed []byte), transcript func() hash.Hash) {
	if version < VersionTLS12 {
		return prf10, newMD5SHA1
	}
	if s.sha384 {
		return prf12(sha512.New384), sha512.New384
	}
	return prf12(sha256.New), sha256.New
}

// md5sha1 is the TLS 1.0/1.1 handshake hash: MD5 and SHA-1 side by side.
type md5sha1 struct{ md5, sha1 hash.Hash }

func newMD5SHA1() hash.Hash { return &md5sha1{md5.New(), sha1.New()} }

func (h *md5sha1) Write(p []byte) (int, error) { h.md5.Write(p); return h.sha1.Write(p) }
func (h *md5sha1) Sum(b []byte) []byte         { return h.sha1.Sum(h.md5.Sum(b)) }
func (h *md5sha1) Reset()                      { h.md5.Reset(); h.sha1.Reset() }
func (h *md5sha1) Size() int                   { return md5.Size + sha1.Size }
func (h *md5sha1) BlockSize() int              { return sha1.BlockSize }
