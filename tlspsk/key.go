package tlspsk

// AMTKey is the pre-shared key of an AMT device in setup mode: the 32
// characters of its PPS (no dashes) as ASCII bytes, unhashed (docs/protocol.md
// §5, MED). The identity is the PID. The firmware and the SCS both call
// this, so the two sides cannot drift apart.
func AMTKey(pps string) []byte { return []byte(pps) }

// premasterSecret builds the RFC 4279 §2 plain-PSK pre-master secret:
// uint16 N, N zero bytes, uint16 N, the PSK.
func premasterSecret(psk []byte) []byte {
	n := len(psk)
	out := make([]byte, 0, 4+2*n)
	out = append(out, byte(n>>8), byte(n))
	out = append(out, make([]byte, n)...)
	out = append(out, byte(n>>8), byte(n))
	return append(out, psk...)
}
