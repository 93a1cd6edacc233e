// Package digest is RFC 2617 HTTP Digest authentication as Intel AMT speaks
// it: MD5, qop="auth", a realm of the form "Digest:<32 upper-case hex>",
// nonces that expire (answered with stale=true) and nonce counts that only
// go up, so a replayed response is refused. The device's web server and
// the SCS's client share it.
//
// AMT stores a Digest password as H(A1) = MD5(user ":" realm ":" password)
// and receives it from an SCS as base64 of those 16 bytes (docs/protocol.md §6);
// HA1 and DigestPassword compute both forms.
package digest

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// HA1 is MD5(user ":" realm ":" password), the form AMT keeps.
func HA1(user, realm, password string) []byte {
	h := md5.Sum([]byte(user + ":" + realm + ":" + password))
	return h[:]
}

// DigestPassword is the DigestPassword parameter of AMT's ACL methods:
// base64 of HA1.
func DigestPassword(user, realm, password string) string {
	return base64.StdEncoding.EncodeToString(HA1(user, realm, password))
}

// ParseDigestPassword decodes a DigestPassword parameter into HA1. The
// documented form is base64 of the 16 bytes (Intel's class reference, and
// Intel's own RPS sends it so); 32 hexadecimal characters of the same
// bytes are taken too, as MeshCentral sends them and as AMT must accept,
// since MeshCentral logs in with that password afterwards on real devices
// (MED, docs/protocol.md §6). 32 characters of hex are also valid base64,
// but of 24 bytes, never an HA1, so the two forms cannot be confused.
func ParseDigestPassword(s string) ([]byte, error) {
	if len(s) == 2*md5.Size {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("digest: DigestPassword is neither base64 nor hex: %w", err)
	}
	if len(b) != md5.Size {
		return nil, fmt.Errorf("digest: DigestPassword of %d bytes, want %d", len(b), md5.Size)
	}
	return b, nil
}

// response is the request-digest of RFC 2617 §3.2.2.1 with qop=auth (or
// the RFC 2069 form when qop is empty).
func response(ha1 []byte, method, uri, nonce, nc, cnonce, qop string) string {
	// Both hashes' input is built in one array, on the stack for the
	// lengths AMT's peers send, rather than from concatenated strings.
	var scratch [384]byte
	a2 := append(append(append(scratch[:0], method...), ':'), uri...)
	ha2 := md5.Sum(a2)
	kd := hex.AppendEncode(scratch[:0], ha1)
	kd = append(append(append(kd, ':'), nonce...), ':')
	if qop != "" {
		kd = append(append(append(append(append(append(kd, nc...), ':'), cnonce...), ':'), qop...), ':')
	}
	r := md5.Sum(hex.AppendEncode(kd, ha2[:]))
	return hex.EncodeToString(r[:])
}

// Reasons Verify refuses credentials. Each wraps into the returned error.
var (
	ErrNoCredentials = errors.New("digest: no credentials")
	ErrUnknownUser   = errors.New("digest: unknown user")
	ErrBadResponse   = errors.New("digest: wrong response")
	ErrEmptyResponse = errors.New("digest: empty response")
	ErrStale         = errors.New("digest: nonce expired or unknown")
	ErrReplay        = errors.New("digest: nonce count not above the last one (replay)")
	ErrRealm         = errors.New("digest: wrong realm")
	ErrQOP           = errors.New("digest: qop must be auth")
	ErrURI           = errors.New("digest: uri does not match the request")
	// ErrLocked: too many failures in a row; every login is refused until
	// the backoff ends, the right one too.
	ErrLocked = errors.New("digest: login blocked after repeated failures")
)
