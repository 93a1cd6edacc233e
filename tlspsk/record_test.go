package tlspsk

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// halfConns returns a sealing and an opening side with the same keys.
func halfConns(t testing.TB, version uint16, s *suite) (*halfConn, *halfConn) {
	k := keys{mac: bytes.Repeat([]byte{1}, s.macLen), key: bytes.Repeat([]byte{2}, s.keyLen), iv: bytes.Repeat([]byte{3}, s.ivLen)}
	w, err := newHalfConn(version, s, k, true)
	require.NoError(t, err)
	r, err := newHalfConn(version, s, k, false)
	require.NoError(t, err)
	return w, r
}

// Every suite and version: a record opens; any flipped bit of it fails as
// bad_record_mac, whether it lands in the IV, the data, the MAC or the
// padding.
func TestRecordTamperingIsBadRecordMAC(t *testing.T) {
	for _, v := range []uint16{VersionTLS10, VersionTLS11, VersionTLS12} {
		for _, s := range suites {
			if s.tls12 && v < VersionTLS12 {
				continue
			}
			payload := []byte("GET /wsman HTTP/1.1\r\n")
			for pos := 0; ; pos++ {
				w, r := halfConns(t, v, s)
				rec, err := w.seal(recordApplicationData, payload, rand.Reader)
				require.NoError(t, err)
				body := rec[recordHeaderLen:]
				if pos >= len(body) {
					break
				}
				if s.stream || (v == VersionTLS10 && !s.aead) {
					// Chained state: check the untouched record once.
					if pos == 0 {
						got, a := r.open(recordApplicationData, append([]byte(nil), body...))
						require.Zero(t, a, "%s %x", s.name, v)
						assert.Equal(t, payload, got)
					}
					w, r = halfConns(t, v, s)
					rec, _ = w.seal(recordApplicationData, payload, rand.Reader)
					body = rec[recordHeaderLen:]
				}
				bad := append([]byte(nil), body...)
				bad[pos] ^= 0x40
				_, a := r.open(recordApplicationData, bad)
				assert.Equal(t, alertBadRecordMAC, a, "%s version %x: flipped byte %d of %d", s.name, v, pos, len(body))
			}
		}
	}
}

func TestRecordRoundTripAndSequence(t *testing.T) {
	w, r := halfConns(t, VersionTLS11, suiteByID(TLS_PSK_WITH_AES_128_CBC_SHA))
	for i := range 3 {
		rec, err := w.seal(recordApplicationData, []byte{byte(i)}, rand.Reader)
		require.NoError(t, err)
		got, a := r.open(recordApplicationData, rec[recordHeaderLen:])
		require.Zero(t, a)
		assert.Equal(t, []byte{byte(i)}, got)
	}
	// A replayed record carries an old sequence number: its MAC fails.
	w2, r2 := halfConns(t, VersionTLS11, suiteByID(TLS_PSK_WITH_AES_128_CBC_SHA))
	rec, _ := w2.seal(recordApplicationData, []byte("once"), rand.Reader)
	_, a := r2.open(recordApplicationData, rec[recordHeaderLen:])
	require.Zero(t, a)
	_, a = r2.open(recordApplicationData, rec[recordHeaderLen:])
	assert.Equal(t, alertBadRecordMAC, a, "replay")
}

func TestCheckPadding(t *testing.T) {
	const macLen = 20
	plain := append(make([]byte, macLen+5), 3, 3, 3, 3)
	n, ok := checkPadding(plain, macLen)
	assert.Equal(t, 4, n)
	assert.Equal(t, uint8(1), ok)
	plain[len(plain)-3] = 2
	_, ok = checkPadding(plain, macLen)
	assert.Equal(t, uint8(0), ok, "a padding byte that differs")
	short := append(make([]byte, 10), 200)
	n, ok = checkPadding(short, macLen)
	assert.Equal(t, uint8(0), ok, "padding longer than the record")
	assert.Equal(t, 1, n)
}

func FuzzRecordOpen(f *testing.F) {
	for _, id := range []uint16{TLS_PSK_WITH_AES_128_CBC_SHA, TLS_PSK_WITH_AES_128_GCM_SHA256, TLS_PSK_WITH_RC4_128_SHA} {
		w, _ := halfConns(f, VersionTLS12, suiteByID(id))
		rec, _ := w.seal(recordApplicationData, []byte("seed"), rand.Reader)
		f.Add(id, rec[recordHeaderLen:])
	}
	f.Add(TLS_PSK_WITH_3DES_EDE_CBC_SHA, []byte{})
	f.Fuzz(func(t *testing.T, id uint16, body []byte) {
		s := suiteByID(id)
		if s == nil {
			return
		}
		for _, v := range []uint16{VersionTLS10, VersionTLS12} {
			if s.tls12 && v < VersionTLS12 {
				continue
			}
			_, r := halfConns(t, v, s)
			// Any record is either opened or refused as bad_record_mac
			// or record_overflow; nothing panics.
			if _, a := r.open(recordApplicationData, append([]byte(nil), body...)); a != 0 && a != alertBadRecordMAC && a != alertRecordOverflow {
				t.Fatalf("%s: alert %v", s.name, a)
			}
		}
	})
}
