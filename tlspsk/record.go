package tlspsk

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"
	"io"
)

// Record content types (RFC 5246 §6.2.1).
const (
	recordChangeCipherSpec uint8 = 20
	recordAlert            uint8 = 21
	recordHandshake        uint8 = 22
	recordApplicationData  uint8 = 23
)

const (
	recordHeaderLen = 5
	maxPlaintext    = 1 << 14
	// maxCiphertext bounds a protected record: 2^14 + 2048 (RFC 5246 §6.2.3).
	maxCiphertext = maxPlaintext + 2048
	// maxRecordOverhead is the most protection adds to a payload: an
	// explicit CBC IV, the longest MAC (SHA-384) and a block of padding.
	maxRecordOverhead = 16 + 48 + 16
	// recordBufMin is the least a connection's record buffers start with:
	// a flight of handshake records or a WS-MAN request fits.
	recordBufMin = 4096
)

// halfConn is one direction's record protection state.
type halfConn struct {
	version uint16
	s       *suite // nil while the null cipher is in force
	mac     hash.Hash
	block   cipher.Block
	cbc     cipher.BlockMode // TLS 1.0 only: the IV chains across records
	stream  cipher.Stream
	aead    cipher.AEAD
	salt    []byte
	seq     uint64
	// macBuf holds the MAC open computes to compare with the record's:
	// a slice of it given to the hash stays here rather than being made
	// anew for every record.
	macBuf [64]byte
}

// keys are one direction's key material from the key block.
type keys struct{ mac, key, iv []byte }

// newHalfConn prepares protection for s with k.
func newHalfConn(version uint16, s *suite, k keys, encrypt bool) (*halfConn, error) {
	hc := &halfConn{version: version, s: s}
	switch {
	case s.aead:
		b, err := s.block(k.key)
		if err != nil {
			return nil, err
		}
		if hc.aead, err = cipher.NewGCM(b); err != nil {
			return nil, err
		}
		hc.salt = k.iv
		return hc, nil
	case s.stream:
		st, err := newRC4(k.key)
		if err != nil {
			return nil, err
		}
		hc.stream = st
	default:
		b, err := s.block(k.key)
		if err != nil {
			return nil, err
		}
		hc.block = b
		if version == VersionTLS10 {
			if encrypt {
				hc.cbc = cipher.NewCBCEncrypter(b, k.iv)
			} else {
				hc.cbc = cipher.NewCBCDecrypter(b, k.iv)
			}
		}
	}
	hc.mac = hmac.New(sha1.New, k.mac)
	return hc, nil
}

var errSeqOverflow = errors.New("tlspsk: record sequence number wrapped")

// macOf computes the record MAC of RFC 5246 §6.2.3.1.
// The result is in hc.macBuf, good until the next call.
func (hc *halfConn) macOf(typ uint8, payload []byte) []byte {
	return hc.appendMAC(hc.macBuf[:0], typ, payload)
}

// appendMAC appends the record MAC of payload to b.
func (hc *halfConn) appendMAC(b []byte, typ uint8, payload []byte) []byte {
	var hdr [13]byte
	binary.BigEndian.PutUint64(hdr[:8], hc.seq)
	hdr[8] = typ
	binary.BigEndian.PutUint16(hdr[9:], hc.version)
	binary.BigEndian.PutUint16(hdr[11:], uint16(len(payload)))
	hc.mac.Reset()
	hc.mac.Write(hdr[:])
	hc.mac.Write(payload)
	return hc.mac.Sum(b)
}

// seal protects payload and returns the whole record. rnd supplies explicit
// IVs.
func (hc *halfConn) seal(typ uint8, payload []byte, rnd io.Reader) ([]byte, error) {
	return hc.sealTo(nil, typ, payload, rnd)
}

// sealTo appends the protected record to dst and returns the extended
// slice; the record is built in place, so a connection that reuses dst
// allocates nothing per record.
func (hc *halfConn) sealTo(dst []byte, typ uint8, payload []byte, rnd io.Reader) ([]byte, error) {
	start := len(dst)
	rec := append(dst, typ, byte(hc.version>>8), byte(hc.version), 0, 0)
	if hc == nil || hc.s == nil {
		rec = append(rec, payload...)
		binary.BigEndian.PutUint16(rec[start+3:], uint16(len(payload)))
		return rec, nil
	}
	if hc.seq == ^uint64(0) {
		return nil, errSeqOverflow
	}
	switch {
	case hc.aead != nil:
		var explicit [8]byte
		binary.BigEndian.PutUint64(explicit[:], hc.seq)
		var nonce [12]byte
		n := copy(nonce[:], hc.salt)
		copy(nonce[n:], explicit[:])
		var ad [13]byte
		binary.BigEndian.PutUint64(ad[:8], hc.seq)
		ad[8] = typ
		binary.BigEndian.PutUint16(ad[9:], hc.version)
		binary.BigEndian.PutUint16(ad[11:], uint16(len(payload)))
		rec = append(rec, explicit[:]...)
		rec = hc.aead.Seal(rec, nonce[:n+len(explicit)], payload, ad[:])
	case hc.stream != nil:
		body := len(rec)
		rec = append(rec, payload...)
		rec = hc.appendMAC(rec, typ, payload)
		hc.stream.XORKeyStream(rec[body:], rec[body:])
	default:
		bs := hc.block.BlockSize()
		var iv []byte
		if hc.cbc == nil {
			// TLS 1.1+: an explicit, random IV ahead of the body.
			ivAt := len(rec)
			rec = append(rec, make([]byte, bs)...)
			iv = rec[ivAt:]
			if _, err := io.ReadFull(rnd, iv); err != nil {
				return nil, err
			}
		}
		body := len(rec)
		rec = append(rec, payload...)
		rec = hc.appendMAC(rec, typ, payload)
		pad := bs - (len(rec)-body)%bs // 1..bs bytes, each holding pad-1
		for range pad {
			rec = append(rec, byte(pad-1))
		}
		if hc.cbc != nil {
			hc.cbc.CryptBlocks(rec[body:], rec[body:])
		} else {
			cipher.NewCBCEncrypter(hc.block, iv).CryptBlocks(rec[body:], rec[body:])
		}
	}
	hc.seq++
	binary.BigEndian.PutUint16(rec[start+3:], uint16(len(rec)-start-recordHeaderLen))
	return rec, nil
}

// open removes the protection of one record's body. Every failure of a
// protected record is bad_record_mac, and a bad padding costs as much as a
// bad MAC, so a peer learns nothing from which check failed. It decrypts in
// place: the payload it returns is a slice of body.
func (hc *halfConn) open(typ uint8, body []byte) ([]byte, alert) {
	if hc == nil || hc.s == nil {
		if len(body) > maxPlaintext {
			return nil, alertRecordOverflow
		}
		return body, 0
	}
	if hc.seq == ^uint64(0) {
		return nil, alertInternalError
	}
	var payload []byte
	switch {
	case hc.aead != nil:
		if len(body) < 8+hc.aead.Overhead() {
			return nil, alertBadRecordMAC
		}
		var nonce [12]byte
		copy(nonce[copy(nonce[:], hc.salt):], body[:8])
		var ad [13]byte
		binary.BigEndian.PutUint64(ad[:8], hc.seq)
		ad[8] = typ
		binary.BigEndian.PutUint16(ad[9:], hc.version)
		binary.BigEndian.PutUint16(ad[11:], uint16(len(body)-8-hc.aead.Overhead()))
		var err error
		if payload, err = hc.aead.Open(body[8:8], nonce[:], body[8:], ad[:]); err != nil {
			return nil, alertBadRecordMAC
		}
	case hc.stream != nil:
		macLen := hc.s.macLen
		if len(body) < macLen {
			return nil, alertBadRecordMAC
		}
		plain := body
		hc.stream.XORKeyStream(plain, plain)
		payload = plain[:len(plain)-macLen]
		if !hmac.Equal(hc.macOf(typ, payload), plain[len(payload):]) {
			return nil, alertBadRecordMAC
		}
	default:
		bs, macLen := hc.block.BlockSize(), hc.s.macLen
		explicit := 0
		if hc.cbc == nil {
			explicit = bs
		}
		if len(body)%bs != 0 || len(body) < explicit+roundUp(macLen+1, bs) {
			return nil, alertBadRecordMAC
		}
		plain := body[explicit:]
		if hc.cbc != nil {
			hc.cbc.CryptBlocks(plain, plain)
		} else {
			cipher.NewCBCDecrypter(hc.block, body[:bs]).CryptBlocks(plain, plain)
		}
		padLen, good := checkPadding(plain, macLen)
		n := len(plain) - macLen - padLen
		payload = plain[:n]
		macOK := subtle.ConstantTimeCompare(hc.macOf(typ, payload), plain[n:n+macLen])
		if macOK&int(good) != 1 {
			return nil, alertBadRecordMAC
		}
	}
	if len(payload) > maxPlaintext {
		return nil, alertRecordOverflow
	}
	hc.seq++
	return payload, 0
}

// checkPadding reads the CBC padding of plain in constant time: it returns
// the bytes to strip (padding and its length byte) and 1 when the padding is
// well formed and leaves room for the MAC. On a bad padding it returns a
// length of 1 and 0, so that the MAC is still computed over a full record.
func checkPadding(plain []byte, macLen int) (int, uint8) {
	last := int(plain[len(plain)-1])
	// good is 0xff when last+1+macLen fits.
	good := byte(int32(len(plain)-macLen-1-last)>>31) ^ 0xff
	toCheck := min(256, len(plain))
	for i := 1; i <= toCheck; i++ {
		// mask is 0xff for the bytes that belong to the padding.
		mask := byte(int32(last-i+1)>>31) ^ 0xff
		b := plain[len(plain)-i]
		good &^= mask & (byte(last) ^ b)
	}
	// Fold good to one bit: 0xff → 1, anything else → 0.
	good &= good >> 4
	good &= good >> 2
	good &= good >> 1
	ok := good & 1
	n := subtle.ConstantTimeSelect(int(ok), last+1, 1)
	return n, ok
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }
