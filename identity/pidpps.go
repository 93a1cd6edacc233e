package identity

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Errors for PID/PPS entry; MEBx answers them with PT_STATUS 0x2A and 0x2B.
var (
	ErrPIDFormat = errors.New("invalid PID format")
	ErrPPSFormat = errors.New("invalid PPS format")
)

// Checksum returns the check character of s: the sum of its ASCII codes
// modulo 36, written as 0–9 then A–Z (Intel's PID/PPS rule).
func Checksum(s string) byte {
	sum := 0
	for i := 0; i < len(s); i++ {
		sum += int(s[i])
	}
	return alphabet[sum%36]
}

// WithChecksum appends the check character to s.
func WithChecksum(s string) string { return s + string(Checksum(s)) }

// NormalizePID strips the display dash and upper-cases; it validates the
// result and returns ErrPIDFormat (wrapped) when it is not a valid PID.
func NormalizePID(s string) (string, error) {
	p := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", ""))
	if len(p) != 8 {
		return "", fmt.Errorf("%w: PID must be 8 characters from 0-9A-Z, got %d", ErrPIDFormat, len(p))
	}
	if err := checkAlphabet(p); err != nil {
		return "", fmt.Errorf("%w: %v", ErrPIDFormat, err)
	}
	if want := Checksum(p[:7]); p[7] != want {
		return "", fmt.Errorf("%w: checksum character is %q, want %q", ErrPIDFormat, p[7], want)
	}
	return p, nil
}

// NormalizePPS strips the display dashes and upper-cases; it validates the
// result and returns ErrPPSFormat (wrapped) when it is not a valid PPS.
func NormalizePPS(s string) (string, error) {
	p := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", ""))
	if len(p) != 32 {
		return "", fmt.Errorf("%w: PPS must be 32 characters from 0-9A-Z, got %d", ErrPPSFormat, len(p))
	}
	if err := checkAlphabet(p); err != nil {
		return "", fmt.Errorf("%w: %v", ErrPPSFormat, err)
	}
	for g := 0; g < 32; g += 4 {
		if want := Checksum(p[g : g+3]); p[g+3] != want {
			return "", fmt.Errorf("%w: group %d checksum character is %q, want %q", ErrPPSFormat, g/4+1, p[g+3], want)
		}
	}
	return p, nil
}

// Dashed formats a PID or PPS for display: a dash every 4 characters.
func Dashed(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			sb.WriteByte('-')
		}
		sb.WriteString(s[i:min(i+4, len(s))])
	}
	return sb.String()
}

func checkAlphabet(s string) error {
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(alphabet, rune(s[i])) {
			return fmt.Errorf("character %q at position %d is not in 0-9A-Z", s[i], i+1)
		}
	}
	return nil
}

// NewPIDPPS draws a fresh PID/PPS pair from r (crypto/rand for an SCS):
// what an SCS hands a device in SetTLSPSK. Both carry valid check
// characters.
func NewPIDPPS(r io.Reader) (pid, pps string, err error) {
	var b [31]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", "", fmt.Errorf("identity: new PID/PPS: %w", err)
	}
	p := make([]byte, 7)
	for i := range p {
		p[i] = alphabet[int(b[i])%36]
	}
	return WithChecksum(string(p)), ppsFrom(b[7:31]), nil
}
