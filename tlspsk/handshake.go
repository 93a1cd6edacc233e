package tlspsk

import (
	"crypto/subtle"
	"fmt"
	"io"
)

// keySchedule derives the master secret and both directions' keys.
func keySchedule(version uint16, s *suite, pms, clientRandom, serverRandom []byte) (master []byte, client, server keys) {
	prf, _ := prfFor(version, s)
	master = make([]byte, masterSecretLen)
	prf(master, pms, "master secret", append(append([]byte(nil), clientRandom...), serverRandom...))
	// The IVs are the tail of the key block: TLS 1.1+ CBC derives them but
	// never uses them, which leaves the other keys where RFC 5246 puts them.
	n := 2*s.macLen + 2*s.keyLen + 2*s.ivLen
	kb := make([]byte, n)
	prf(kb, master, "key expansion", append(append([]byte(nil), serverRandom...), clientRandom...))
	take := func(k int) []byte { v := kb[:k:k]; kb = kb[k:]; return v }
	client.mac, server.mac = take(s.macLen), take(s.macLen)
	client.key, server.key = take(s.keyLen), take(s.keyLen)
	client.iv, server.iv = take(s.ivLen), take(s.ivLen)
	return master, client, server
}

// finished computes verify_data over the transcript so far.
func finished(version uint16, s *suite, master, transcript []byte, label string) []byte {
	prf, h := prfFor(version, s)
	th := h()
	th.Write(transcript)
	out := make([]byte, finishedLen)
	prf(out, master, label, th.Sum(nil))
	return out
}

func randomBytes(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("tlspsk: random: %w", err)
	}
	return b, nil
}

// switchOut sends ChangeCipherSpec and protects what follows with k.
func (c *Conn) switchOut(version uint16, s *suite, k keys) error {
	if err := c.writeRecord(recordChangeCipherSpec, []byte{1}); err != nil {
		return c.peerAlert(err)
	}
	hc, err := newHalfConn(version, s, k, true)
	if err != nil {
		return c.fail(alertInternalError, err.Error())
	}
	c.writeMu.Lock()
	c.out = *hc
	c.writeMu.Unlock()
	return nil
}

// switchIn waits for ChangeCipherSpec and expects protection with k after.
func (c *Conn) switchIn(version uint16, s *suite, k keys) error {
	if err := c.readChangeCipherSpec(); err != nil {
		return err
	}
	hc, err := newHalfConn(version, s, k, false)
	if err != nil {
		return c.fail(alertInternalError, err.Error())
	}
	c.in = *hc
	return nil
}

// readFinished reads the peer's Finished and checks it in constant time.
func (c *Conn) readFinished(want []byte) ([]byte, error) {
	msg, err := c.readHandshake()
	if err != nil {
		return nil, err
	}
	var fin finishedMsg
	if msg[0] != typeFinished {
		return nil, c.fail(alertUnexpectedMessage, fmt.Sprintf("handshake message %d, want Finished", msg[0]))
	}
	if !fin.unmarshal(msg[4:]) {
		return nil, c.fail(alertDecodeError, "Finished")
	}
	if subtle.ConstantTimeCompare(fin.verifyData, want) != 1 {
		return nil, c.fail(alertDecryptError, "Finished does not verify: the peers hold different keys")
	}
	return msg, nil
}

// expect reads the next handshake message and checks its type.
func (c *Conn) expect(typ uint8) ([]byte, error) {
	msg, err := c.readHandshake()
	if err != nil {
		return nil, err
	}
	if msg[0] != typ {
		return nil, c.fail(alertUnexpectedMessage, fmt.Sprintf("handshake message %d, want %d", msg[0], typ))
	}
	return msg, nil
}
